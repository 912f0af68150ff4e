"""The ledger's tables (SQLAlchemy Core). One schema for SQLite and PostgreSQL.

Instants are stored as whole microseconds since the Unix epoch (UTC) in BIGINT
columns: exact, comparable in SQL on every backend, and cheap to index.

Members appear in `events` only by their keyed pseudonym (`subject`, a 64-bit
integer); `subjects` maps a pseudonym to the member id and the member's own key, and
loses both when the member is erased. Personal fields live in `events.sealed`,
encrypted with that key; `region` and `birth_date` are also kept in clear for the
set-based decisions, outside the hashed content, and are cleared on erasure.
See docs/integrity.md.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

__all__ = [
    "api_keys",
    "audit_log",
    "checkpoints",
    "events",
    "gpc_seen",
    "idempotent_requests",
    "ledger_head",
    "ledger_meta",
    "metadata",
    "policy_versions",
    "subjects",
]

metadata = MetaData()

# SQLite aliases the row id only for INTEGER PRIMARY KEY; PostgreSQL wants BIGINT.
SeqType = BigInteger().with_variant(Integer(), "sqlite")

events = Table(
    "events",
    metadata,
    # The position in the hash chain, assigned by the writer holding the head lock:
    # 1, 2, 3, ... without gaps. Being the primary key, one position holds one event,
    # so two writers can never both extend the same head (no fork).
    Column("seq", SeqType, primary_key=True, autoincrement=False),
    # id_key: the first 8 bytes of SHA-256(event_id) as a signed integer. Its unique
    # index (ux_events_id_key) is a tenth the size of one on the id text.
    Column("id_key", BigInteger, nullable=False),
    Column("event_id", String(256), nullable=False),
    Column("content_sha256", String(64), nullable=False),
    Column("type", String(16), nullable=False),
    Column("subject", BigInteger, nullable=False),  # keyed pseudonym of the member
    Column("at_us", BigInteger, nullable=False),
    Column("purpose", String(256)),
    Column("choice", String(16)),
    Column("signal", String(16)),
    Column("source", String(256)),
    Column("notice_version", String(256)),
    Column("region", String(16)),  # clear copy of a sealed field; cleared on erasure
    Column("birth_date", String(10)),  # clear copy of a sealed field; cleared on erasure
    Column("sealed", LargeBinary),  # personal fields, AES-256-GCM with the member's key
    Column("recorded_us", BigInteger, nullable=False),
    Column("prev_hash", LargeBinary(32), nullable=False),
    Column("hash", LargeBinary(32), nullable=False),
    Index("ix_events_subject_at", "subject", "at_us"),
    # A named index, not a constraint, so that a bulk import into an empty ledger can
    # drop it and build it once at the end (migration 0006).
    Index("ux_events_id_key", "id_key", unique=True),
)

subjects = Table(
    "subjects",
    metadata,
    Column("pseudonym", SeqType, primary_key=True, autoincrement=False),
    Column("subject", String(256)),  # NULL once erased
    Column("key", LargeBinary(32)),  # NULL once erased: the sealed fields are lost
    Column("erased_us", BigInteger),
)

ledger_head = Table(
    "ledger_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("size", BigInteger, nullable=False),
    Column("hash", LargeBinary(32), nullable=False),
    Column("frontier", LargeBinary, nullable=False),  # Merkle subtree roots (RootBuilder)
    CheckConstraint("id = 1", name="ck_ledger_head_single_row"),
)

checkpoints = Table(
    "checkpoints",
    metadata,
    Column("size", BigInteger, primary_key=True, autoincrement=False),
    Column("root", LargeBinary(32), nullable=False),
    Column("note", Text, nullable=False),  # the signed checkpoint, as written to the log
    Column("created_us", BigInteger, nullable=False),
)

ledger_meta = Table(
    "ledger_meta",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", Text, nullable=False),
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

# -- HTTP access (migration 0004) ------------------------------------------------------

api_keys = Table(
    "api_keys",
    metadata,
    Column("key_id", String(32), primary_key=True),  # public part of the key
    Column("name", String(256), nullable=False),
    Column("scopes", String(128), nullable=False),  # space-separated, sorted
    Column("secret_sha256", LargeBinary(32), nullable=False),  # the secret is never stored
    Column("created_us", BigInteger, nullable=False),
    Column("revoked_us", BigInteger),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", SeqType, primary_key=True, autoincrement=True),
    Column("at_us", BigInteger, nullable=False),
    Column("actor", String(64), nullable=False),  # "key:<key_id>"
    Column("action", String(64), nullable=False),
    Column("subject", BigInteger),  # the member's keyed pseudonym, never their id
    Column("detail", Text, nullable=False),
    Index("ix_audit_log_subject", "subject"),
)

idempotent_requests = Table(
    "idempotent_requests",
    metadata,
    Column("actor", String(64), primary_key=True),
    Column("idem_key", String(256), primary_key=True),
    Column("request_sha256", String(64), nullable=False),
    Column("response", Text, nullable=False),  # the JSON answered the first time
    Column("created_us", BigInteger, nullable=False),
    Index("ix_idempotent_requests_created", "created_us"),  # expiry (batch.IDEMPOTENCY_US)
)

gpc_seen = Table(
    "gpc_seen",
    metadata,
    Column("subject", SeqType, primary_key=True, autoincrement=False),  # pseudonym
    Column("on", Boolean, nullable=False),  # the last Sec-GPC state seen on their requests
    Column("changed_us", BigInteger, nullable=False),
)
