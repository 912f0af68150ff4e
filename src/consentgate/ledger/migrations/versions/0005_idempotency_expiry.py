"""Idempotency keys expire: an index on when each was stored, so expired ones are
found and deleted without scanning the table.

Revision ID: 0005
Revises: 0004
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_idempotent_requests_created", "idempotent_requests", ["created_us"])


def downgrade() -> None:
    op.drop_index("ix_idempotent_requests_created", table_name="idempotent_requests")
