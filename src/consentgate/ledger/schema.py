"""The ledger's tables (SQLAlchemy Core). One schema for SQLite and PostgreSQL.

Instants are stored as whole microseconds since the Unix epoch (UTC) in BIGINT
columns: exact, comparable in SQL on every backend, and cheap to index.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Integer, MetaData, String, Table, Text

__all__ = ["events", "metadata", "policy_versions"]

metadata = MetaData()

# SQLite aliases the row id only for INTEGER PRIMARY KEY; PostgreSQL wants BIGINT.
SeqType = BigInteger().with_variant(Integer(), "sqlite")

events = Table(
    "events",
    metadata,
    Column("seq", SeqType, primary_key=True, autoincrement=True),
    # id_key: the first 8 bytes of SHA-256(event_id) as a signed integer. Its unique
    # index is a tenth the size of one on the id text, so bulk imports stay in cache.
    Column("id_key", BigInteger, nullable=False, unique=True),
    Column("event_id", String(256), nullable=False),
    Column("content_sha256", String(64), nullable=False),
    Column("type", String(16), nullable=False),
    Column("subject", String(256), nullable=False),
    Column("at_us", BigInteger, nullable=False),
    Column("purpose", String(256)),
    Column("choice", String(16)),
    Column("signal", String(16)),
    Column("region", String(16)),
    Column("birth_date", String(10)),
    Column("source", String(256)),
    Column("notice_version", String(256)),
    Column("evidence", Text),
    Column("recorded_us", BigInteger, nullable=False),
    Index("ix_events_subject_at", "subject", "at_us"),
)

policy_versions = Table(
    "policy_versions",
    metadata,
    Column("id", SeqType, primary_key=True, autoincrement=True),
    Column("version", String(256), nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("effective_us", BigInteger, nullable=False),
    Column("applied_us", BigInteger, nullable=False),
    Column("text", Text, nullable=False),
)
