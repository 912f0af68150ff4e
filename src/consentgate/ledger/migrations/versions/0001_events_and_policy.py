"""Events and policy versions.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

Seq = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("seq", Seq, primary_key=True, autoincrement=True),
        sa.Column("id_key", sa.BigInteger, nullable=False, unique=True),
        sa.Column("event_id", sa.String(256), nullable=False),
        sa.Column("content_sha256", sa.String(64), nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("subject", sa.String(256), nullable=False),
        sa.Column("at_us", sa.BigInteger, nullable=False),
        sa.Column("purpose", sa.String(256)),
        sa.Column("choice", sa.String(16)),
        sa.Column("signal", sa.String(16)),
        sa.Column("region", sa.String(16)),
        sa.Column("birth_date", sa.String(10)),
        sa.Column("source", sa.String(256)),
        sa.Column("notice_version", sa.String(256)),
        sa.Column("evidence", sa.Text),
        sa.Column("recorded_us", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_events_subject_at", "events", ["subject", "at_us"])
    op.create_table(
        "policy_versions",
        sa.Column("id", Seq, primary_key=True, autoincrement=True),
        sa.Column("version", sa.String(256), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("effective_us", sa.BigInteger, nullable=False),
        sa.Column("applied_us", sa.BigInteger, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("policy_versions")
    op.drop_index("ix_events_subject_at", "events")
    op.drop_table("events")
