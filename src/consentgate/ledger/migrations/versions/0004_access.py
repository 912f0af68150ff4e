"""HTTP access: API keys (hashed), the audit log, idempotent requests, the last
Global Privacy Control state seen per member, and the member-session signing key.

Revision ID: 0004
Revises: 0003
"""

import os

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

Seq = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("key_id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("scopes", sa.String(128), nullable=False),
        sa.Column("secret_sha256", sa.LargeBinary(32), nullable=False),
        sa.Column("created_us", sa.BigInteger, nullable=False),
        sa.Column("revoked_us", sa.BigInteger),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", Seq, primary_key=True, autoincrement=True),
        sa.Column("at_us", sa.BigInteger, nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("subject", sa.BigInteger),
        sa.Column("detail", sa.Text, nullable=False),
    )
    op.create_index("ix_audit_log_subject", "audit_log", ["subject"])
    op.create_table(
        "idempotent_requests",
        sa.Column("actor", sa.String(64), primary_key=True),
        sa.Column("idem_key", sa.String(256), primary_key=True),
        sa.Column("request_sha256", sa.String(64), nullable=False),
        sa.Column("response", sa.Text, nullable=False),
        sa.Column("created_us", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "gpc_seen",
        sa.Column("subject", Seq, primary_key=True, autoincrement=False),
        sa.Column("on", sa.Boolean, nullable=False),
        sa.Column("changed_us", sa.BigInteger, nullable=False),
    )
    meta = sa.table("ledger_meta", sa.column("name"), sa.column("value"))
    op.bulk_insert(meta, [{"name": "session_key", "value": os.urandom(32).hex()}])


def downgrade() -> None:
    op.execute("DELETE FROM ledger_meta WHERE name = 'session_key'")
    for table in ("gpc_seen", "idempotent_requests", "audit_log", "api_keys"):
        op.drop_table(table)
