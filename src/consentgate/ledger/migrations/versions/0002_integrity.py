"""Tamper-evident ledger: hash chain, Merkle frontier, checkpoints, pseudonyms and
per-subject keys (docs/integrity.md).

Events of a version-1 ledger are appended again, in their order, through the
current writer, so they get pseudonyms, sealed personal fields and chain hashes.

Revision ID: 0002
Revises: 0001
"""

import os
import uuid

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

Seq = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.drop_index("ix_events_subject_at", "events")
    op.rename_table("events", "events_v1")
    op.create_table(
        "events",
        sa.Column("seq", Seq, primary_key=True, autoincrement=False),
        sa.Column("id_key", sa.BigInteger, nullable=False, unique=True),
        sa.Column("event_id", sa.String(256), nullable=False),
        sa.Column("content_sha256", sa.String(64), nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("subject", sa.BigInteger, nullable=False),
        sa.Column("at_us", sa.BigInteger, nullable=False),
        sa.Column("purpose", sa.String(256)),
        sa.Column("choice", sa.String(16)),
        sa.Column("signal", sa.String(16)),
        sa.Column("source", sa.String(256)),
        sa.Column("notice_version", sa.String(256)),
        sa.Column("region", sa.String(16)),
        sa.Column("birth_date", sa.String(10)),
        sa.Column("sealed", sa.LargeBinary),
        sa.Column("recorded_us", sa.BigInteger, nullable=False),
        sa.Column("prev_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("hash", sa.LargeBinary(32), nullable=False),
    )
    op.create_index("ix_events_subject_at", "events", ["subject", "at_us"])
    op.create_table(
        "subjects",
        sa.Column("pseudonym", Seq, primary_key=True, autoincrement=False),
        sa.Column("subject", sa.String(256)),
        sa.Column("key", sa.LargeBinary(32)),
        sa.Column("erased_us", sa.BigInteger),
    )
    head = op.create_table(
        "ledger_head",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("hash", sa.LargeBinary(32), nullable=False),
        sa.Column("frontier", sa.LargeBinary, nullable=False),
        sa.CheckConstraint("id = 1", name="ck_ledger_head_single_row"),
    )
    op.create_table(
        "checkpoints",
        sa.Column("size", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("root", sa.LargeBinary(32), nullable=False),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("created_us", sa.BigInteger, nullable=False),
    )
    meta = op.create_table(
        "ledger_meta",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    op.bulk_insert(head, [{"id": 1, "size": 0, "hash": bytes(32), "frontier": b""}])
    op.bulk_insert(
        meta,
        [
            {"name": "ledger_id", "value": str(uuid.uuid4())},
            {"name": "pseudonym_key", "value": os.urandom(32).hex()},
        ],
    )
    from consentgate.ledger.chain import rechain_version_1

    rechain_version_1(op.get_bind(), "events_v1")
    op.drop_table("events_v1")


def downgrade() -> None:
    raise NotImplementedError("a hash-chained ledger cannot be turned back into version 1")
