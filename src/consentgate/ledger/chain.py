"""The hash chain: how events are appended, and the bytes each link commits to.

Every stored event at position `seq` (1, 2, 3, ...) carries `prev_hash` (the `hash`
of `seq - 1`; 32 zero bytes for the first) and
`hash = SHA-256(prev_hash || entry)`, where `entry` is the canonical JSON of the
stored event (`entry_bytes`). The Merkle tree of RFC 9162 is built over the chain
hashes (leaf `i` is `hash` of `seq = i + 1`), and its frontier is kept in
`ledger_head` so a signed checkpoint of any size costs O(log n).

One writer at a time: the head row is taken under an explicit lock (SQLite's
`BEGIN IMMEDIATE`, PostgreSQL's `SELECT ... FOR UPDATE`) before anything is read,
and `seq` is the primary key, so a second writer can never extend the same head.
"""

from __future__ import annotations

import _sqlite3
import hashlib
import os
import sys
import time
from base64 import b64encode
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Connection

from consentgate.domain.errors import EventError, InputError, StorageError
from consentgate.ledger.merkle import RootBuilder, leaf_hash
from consentgate.ledger.rows import COLUMNS
from consentgate.ledger.schema import events
from consentgate.ledger.sealing import keyed, new_keys, seal

try:  # the compiled loop of Appender.append (optional; the same as the Python loop)
    from consentgate.ledger import _append
except ImportError:  # pragma: no cover - built wherever a C compiler and OpenSSL are
    _append = None  # type: ignore[assignment]

#: Set to "1" to run imports in Python alone (also turns off parsing._lineparse).
NO_NATIVE_ENV = "CONSENTGATE_PYTHON_IMPORT"

__all__ = [
    "ENTRY_COLUMNS",
    "ENTRY_KEYS",
    "GENESIS",
    "Appender",
    "Head",
    "chain_rows",
    "encode_entry",
    "entry_bytes",
    "entry_of",
    "entry_parts",
    "ids_commitment",
    "lock_head",
    "pseudonym_key",
    "read_head",
    "splice",
]

GENESIS = bytes(32)
Row = tuple[Any, ...]
_KEY_CACHE = 300_000  # subject keys remembered by one writer before it starts afresh
#: The most ids and member keys (~60 and ~150 bytes each) a bulk import remembers
#: before it builds the indexes and goes on as usual.
BULK_REMEMBERS = 12_000_000


#: The keys of an entry, in code-point order, and the `events` columns they come from
#: (`ids` is made from `event_id`, `content_sha256` and `id_key`; see `ids_commitment`).
ENTRY_KEYS = (
    "at_us", "choice", "ids", "notice_version", "purpose", "recorded_us", "sealed", "seq",
    "signal", "source", "subject", "type",
)  # fmt: skip
ENTRY_COLUMNS = (
    "at_us", "choice", "content_sha256", "notice_version", "purpose", "recorded_us", "sealed",
    "seq", "signal", "source", "subject", "type", "event_id", "id_key",
)  # fmt: skip
_IDS, _EVENT_ID, _ID_KEY = 2, 12, 13


def ids_commitment(secret: bytes, event_id: str, digest: str, key: int) -> str:
    """HMAC-SHA256 (hex) under the ledger's pseudonym key of the event's id, its
    content digest and id key. Both are plain SHA-256 values of the clear content,
    member id included: in the chain they would let anyone holding an exported entry
    confirm a guessed member id after an erasure. The keyed commitment binds them
    without revealing them (docs/integrity.md)."""
    return keyed(secret)(f"{event_id}\n{digest}\n{key}".encode()).hex()


def encode_entry(values: Sequence[Any], secret: bytes) -> bytes:
    """The canonical bytes of a stored event from its ENTRY_COLUMNS values (further
    values are ignored): a JSON object with every key of ENTRY_KEYS in that (sorted)
    order, no spaces, integers in decimal, text as JSON strings in UTF-8, `sealed` in
    standard base64, absent values as null (docs/integrity.md)."""
    obj = dict(zip(ENTRY_KEYS, values, strict=False))
    obj["ids"] = ids_commitment(secret, values[_EVENT_ID], values[_IDS], values[_ID_KEY])
    sealed = obj["sealed"]
    if sealed is not None:
        obj["sealed"] = b64encode(sealed).decode()
    return orjson.dumps(obj)


def entry_bytes(
    secret: bytes,
    seq: int,
    key: int,
    event_id: str,
    digest: str,
    kind: str,
    subject: int,
    at_us: int,
    purpose: str | None,
    choice: str | None,
    signal: str | None,
    source: str | None,
    notice_version: str | None,
    sealed: bytes | None,
    recorded_us: int,
) -> bytes:
    """`encode_entry` of an event's stored values, by name."""
    return encode_entry(
        (at_us, choice, digest, notice_version, purpose, recorded_us, sealed, seq, signal,
         source, subject, kind, event_id, key),
        secret,
    )  # fmt: skip


def entry_of(row: Sequence[Any], secret: bytes) -> bytes:
    """`entry_bytes` of a stored row in COLUMNS order."""
    return entry_bytes(
        secret, row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7], row[8], row[9],
        row[10], row[11], row[14], row[15],
    )  # fmt: skip


def entry_parts(
    secret: bytes,
    key: int,
    event_id: str,
    digest: str,
    kind: str,
    subject: int,
    at_us: int,
    purpose: str | None,
    choice: str | None,
    signal: str | None,
    source: str | None,
    notice_version: str | None,
    recorded_us: int,
) -> tuple[bytes, bytes]:
    """The entry without its two writer-assigned values, `sealed` and `seq`, which sit
    side by side in key order: `head + SEALED + b',"seq":' + SEQ + tail` is exactly
    `entry_bytes` (the parser prepares the parts; the writer only splices)."""
    ids = ids_commitment(secret, event_id, digest, key)
    first = orjson.dumps(
        {"at_us": at_us, "choice": choice, "ids": ids, "notice_version": notice_version,
         "purpose": purpose, "recorded_us": recorded_us}
    )  # fmt: skip
    last = orjson.dumps({"signal": signal, "source": source, "subject": subject, "type": kind})
    return first[:-1] + b',"sealed":', b"," + last[1:]


def splice(head: bytes, sealed: bytes | None, seq: int, tail: bytes) -> bytes:
    """`entry_bytes` from `entry_parts` and the writer's values."""
    value = b"null" if sealed is None else b'"' + b64encode(sealed) + b'"'
    return b"".join((head, value, b',"seq":', str(seq).encode(), tail))


@dataclass(slots=True)
class Head:
    """The end of the chain: its size, last hash, and the Merkle frontier."""

    size: int
    hash: bytes
    tree: RootBuilder

    def root(self) -> bytes:
        return self.tree.root()


def read_head(conn: Connection, *, lock: bool = False) -> Head:
    """The chain head; with `lock`, taken for writing (PostgreSQL row lock; on SQLite
    the caller's transaction began IMMEDIATE, which already holds the write lock)."""
    sql = "SELECT size, hash, frontier FROM ledger_head WHERE id = 1"
    if lock and conn.dialect.name == "postgresql":
        sql += " FOR UPDATE"
    row = conn.exec_driver_sql(sql).one_or_none()
    if row is None:
        raise StorageError("the ledger has no chain head: run `consentgate init`")
    size, last, frontier = int(row[0]), bytes(row[1]), bytes(row[2])
    return Head(size, last, RootBuilder.restore(size, frontier))


def check_durable(conn: Connection) -> None:
    """Refuse to write unless a commit survives a crash (power loss on SQLite)."""
    if conn.dialect.name == "postgresql":
        fsync, commit = conn.exec_driver_sql(
            "SELECT current_setting('fsync'), current_setting('synchronous_commit')"
        ).one()
        if fsync != "on" or commit == "off":
            raise StorageError(
                "refusing to write: PostgreSQL is not durable "
                f"(fsync = {fsync}, synchronous_commit = {commit}; both must be on)"
            )
        return
    sync = conn.exec_driver_sql("PRAGMA synchronous").scalar()
    journal = str(conn.exec_driver_sql("PRAGMA journal_mode").scalar()).lower()
    if journal in ("off", "memory") or sync is None or int(sync) < 2:
        names = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
        raise StorageError(
            "refusing to write: SQLite is not durable "
            f"(journal_mode = {journal}, synchronous = {names.get(int(sync or 0), sync)}; "
            "expected synchronous FULL or EXTRA, and a journal on disk, as consentgate sets)"
        )


def lock_head(conn: Connection) -> Head:
    """Check durability and take the chain head for writing."""
    check_durable(conn)
    return read_head(conn, lock=True)


def save_head(conn: Connection, head: Head) -> None:
    conn.exec_driver_sql(
        "UPDATE ledger_head SET size = %(s)s, hash = %(h)s, frontier = %(f)s WHERE id = 1"
        if conn.dialect.name == "postgresql"
        else "UPDATE ledger_head SET size = :s, hash = :h, frontier = :f WHERE id = 1",
        {"s": head.size, "h": head.hash, "f": head.tree.state()},
    )


def chain_rows(
    new: Sequence[Row], keys: dict[int, bytes | None], head: Head, hashing: bool
) -> tuple[list[Row], dict[int, int]]:
    """Seal, position and hash parsed events after `head` (advanced in place): the
    stored rows, and {pseudonym: recorded_us} of the erasures among them, which take
    their member's key out of `keys`. The Python twin of _append.append_rows."""
    seq, prev, tree = head.size, head.hash, head.tree
    erased: dict[int, int] = {}
    out: list[Row] = []
    sha256 = hashlib.sha256
    for r in new:
        ps = r[5]
        key = keys[ps]
        sealed = region = born = None
        if key is not None:
            if r[14] is not None:
                sealed = seal(key, r[14], r[2].encode())
            region, born = r[12], r[13]
        seq += 1
        if hashing:
            digest = sha256(prev + splice(r[16], sealed, seq, r[17])).digest()
            tree.append(leaf_hash(digest))
        else:
            digest = GENESIS
        out.append(
            (seq, r[0], r[1], r[2], r[3], ps, r[6], r[7], r[8], r[9], r[10], r[11],
             region, born, sealed, r[15], prev, digest)
        )  # fmt: skip
        prev = digest
        if r[3] == "erasure" and key is not None:
            keys[ps] = None
            erased[ps] = r[15]
    head.size, head.hash = seq, prev
    return out, erased


def _sqlite_handle(conn: Connection) -> tuple[Any, type, str, str] | None:
    """What `_append.append_sqlite` needs to reach the SQLite handle of `conn`: the
    driver's connection, the file of Python's `_sqlite3` module and the database file;
    None where it is not built, turned off, or the driver is not CPython 3.11-3.13's
    own `sqlite3` (whose connection object starts with the handle)."""
    if _append is None or os.environ.get(NO_NATIVE_ENV) == "1" or conn.dialect.name != "sqlite":
        return None
    driver = conn.connection.driver_connection
    module = getattr(_sqlite3, "__file__", "")
    if type(driver) is not _sqlite3.Connection or not module:
        return None
    if sys.version_info[:2] not in _HANDLE_PYTHONS:
        return None
    rows = conn.exec_driver_sql("PRAGMA database_list").all()
    path = next((str(file) for _, name, file in rows if name == "main"), "")
    return (driver, _sqlite3.Connection, module, path) if path else None


_HANDLE_PYTHONS = ((3, 11), (3, 12), (3, 13))


class Appender:
    """Appends parsed events (`rows.PARSED` order) to the chain, in one transaction.

    Holds the head lock from construction; `finish()` stores the new head. Ids
    already stored, or repeated in the input, are checked for identical content and
    skipped. Personal fields are sealed with the member's key (created on first
    sight); an erasure destroys the key and the clear copies in the same transaction.

    `bulk=True` (a file import) on an empty ledger drops the two secondary indexes
    of `events` and builds them once in `finish()`, which is 1.5 x cheaper than
    keeping them up to date row by row; meanwhile the ids and member keys of the
    import are remembered in memory, and an erasure's clearing of earlier clear
    copies waits for the subject index. An id seen twice, or an import too large to
    remember, builds the indexes there and then and goes on as usual. All in the one
    transaction: a failed import leaves the indexes as they were. Two member ids
    sharing a 64-bit pseudonym (odds ~n²/2⁶⁵) are caught only when a member is looked
    up in `subjects`: not for a cached member, nor in bulk mode. (On PostgreSQL,
    dropping an index locks the table: readers of the empty ledger wait for the
    import to commit. SQLite's readers go on with their snapshot.)
    """

    def __init__(
        self, conn: Connection, secret: bytes, *, hashing: bool = True, bulk: bool = False
    ) -> None:
        # hashing=False stores zero hashes and no Merkle frontier: only for measuring
        # what the chain costs (bench/integrity.py); such a ledger never verifies.
        self.hashing = hashing
        self.secret = secret
        self.conn = conn
        self.pg = conn.dialect.name == "postgresql"
        self.head = lock_head(conn)
        self.start = self.head.size
        self._keys: dict[int, bytes | None] = {}  # pseudonym -> key (None: erased)
        self._cur = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        self._bulk: set[int] | None = None  # in bulk mode: the id keys appended so far
        self._erased_later: list[int] = []  # in bulk mode: whose clear copies to clear
        # A file import on SQLite: the compiled loop inserts through this handle.
        self._handle = _sqlite_handle(conn) if bulk else None
        if bulk and self.head.size == 0:
            self._enter_bulk()

    @property
    def added(self) -> int:
        return self.head.size - self.start

    def append(self, parsed: Sequence[Row], linenos: Sequence[int] = (), name: str = "") -> int:
        """Append the new events among `parsed`; return how many were added."""
        new = self._new_rows(parsed, linenos or range(1, len(parsed) + 1), name or "<input>")
        if not new:
            return 0
        head = self.head
        native = _append is not None and os.environ.get(NO_NATIVE_ENV) != "1"
        # In bulk mode every member of the ledger came with this import and is in
        # `_keys`: the compiled loop makes keys for the others itself (create).
        create = self._bulk is not None and native
        keys, fresh = (self._keys, []) if create else self._keys_for(new, name)
        frontier = head.tree.frontier() if self.hashing else []
        if self._handle is not None:  # SQLite: the compiled loop inserts the rows too
            assert _append is not None
            done = _append.append_sqlite(
                *self._handle, _INSERT_EVENTS, new, keys, head.size, head.hash, frontier,
                self.hashing, create,
            )  # fmt: skip
            if done is not None:
                count, head.hash, erased, made = done
                self._advance(count)
                self._write(fresh + made, [], erased)
                return count
            self._handle = None  # it could not take the handle (and changed nothing)
        if native:
            assert _append is not None
            out, head.hash, erased, made = _append.append_rows(
                new, keys, head.size, head.hash, frontier, self.hashing, create
            )
            fresh += made
            self._advance(len(out))
        else:
            out, erased = chain_rows(new, keys, head, self.hashing)
        self._write(fresh, out, erased)
        return len(out)

    def _advance(self, count: int) -> None:
        """Count `count` events appended by a compiled loop (which kept the frontier)."""
        if self.hashing:
            self.head.tree.advance(count)
        self.head.size += count

    def _write(self, fresh: list[Row], out: list[Row], erased: dict[int, int]) -> None:
        """Store new members' keys, the events, and what erasures destroy."""
        if fresh:
            self._insert_subjects(fresh)
        if out:
            self._insert(out)
        for ps, when in erased.items():
            self._erase(ps, when)

    def finish(self) -> Head:
        """Store the new head (same transaction); return it."""
        if self._bulk is not None:
            self._leave_bulk()
        self._cur.close()
        if self.added:
            save_head(self.conn, self.head)
        return self.head

    def _enter_bulk(self) -> None:
        if self._cur.execute("SELECT 1 FROM subjects LIMIT 1").fetchone() is not None:
            return  # members without events (not written by consentgate): the usual way
        for index in events.indexes:
            index.drop(self.conn)
        self._bulk = set()

    def _leave_bulk(self) -> None:
        self._bulk = None
        cur = self._cur
        if self.pg:  # sort in memory (this transaction only)
            cur.execute("SET LOCAL maintenance_work_mem = '512MB'")
        else:  # SQLite sorts for CREATE INDEX with helper threads when allowed to
            cur.execute(f"PRAGMA threads = {min(4, os.cpu_count() or 1)}")
        for index in events.indexes:
            index.create(self.conn)
        if not self.pg:
            cur.execute("PRAGMA threads = 0")
        if self._erased_later:
            self._clear_copies(self._erased_later)
            self._erased_later = []

    # -- helpers ---------------------------------------------------------------------

    def _new_rows(self, rows: Sequence[Row], linenos: Iterable[int], name: str) -> list[Row]:
        """The rows whose id is not stored yet, each id once. A repeated id must carry
        the content it was stored (or first given) with: an id never means two things."""
        ids = [row[0] for row in rows]
        bulk = self._bulk
        if bulk is not None:
            remembered = len(bulk) + len(ids) + len(self._keys)  # ids and member keys
            if remembered > BULK_REMEMBERS or not bulk.isdisjoint(ids):
                self._leave_bulk()
                bulk = None
            elif len(batch := set(ids)) == len(ids):  # the usual case: all new
                bulk.update(batch)
                return list(rows)
        known = {} if bulk is not None else self._stored(ids)
        new: list[Row] = []
        for lineno, row in zip(linenos, rows, strict=False):
            seen = known.get(row[0])
            if seen is None:
                known[row[0]] = (row[1], row[2])
                new.append(row)
            elif seen != (row[1], row[2]):
                raise _conflict(seen[0], row, lineno, name)
        if bulk is not None:
            bulk.update(known)
        return new

    def _stored(self, keys: list[int]) -> dict[int, tuple[str, str]]:
        """id_key -> (event_id, content_sha256) of the stored events among `keys`."""
        rows = self._select_in("id_key, event_id, content_sha256 FROM events", "id_key", keys)
        return {key: (event_id, digest) for key, event_id, digest in rows}

    def _in(self, column: str, values: list[int]) -> tuple[str, list[Any]]:
        """The condition that `column` is one of the integers `values`, and its one
        parameter (PostgreSQL: a binary array; SQLite: a JSON array, so no limit on
        parameters)."""
        if self.pg:
            return f"{column} = ANY(%b::bigint[])", [values]
        return f"{column} IN (SELECT value FROM json_each(?))", [orjson.dumps(values).decode()]

    def _select_in(self, what: str, column: str, values: list[int]) -> list[Any]:
        """`SELECT what WHERE column` is one of the integers `values`, in one query."""
        where, params = self._in(column, values)
        self._cur.execute(f"SELECT {what} WHERE {where}", params)
        return list(self._cur.fetchall())

    def _clear_copies(self, pseudonyms: list[int]) -> None:
        """Clear the clear copies of sealed fields on these (erased) members' events."""
        where, params = self._in("subject", pseudonyms)
        self._cur.execute(
            f"UPDATE events SET region = NULL, birth_date = NULL WHERE {where} "
            "AND (region IS NOT NULL OR birth_date IS NOT NULL)",
            params,
        )

    def _keys_for(
        self, rows: Sequence[Row], name: str
    ) -> tuple[dict[int, bytes | None], list[Row]]:
        """Each member's key (None once erased), creating keys for new members; and
        the (pseudonym, member id, key) rows of the new members, to store."""
        cache = self._keys
        if len(cache) > _KEY_CACHE and self._bulk is None:
            cache.clear()
        wanted = {r[5]: r[4] for r in rows if r[5] not in cache}
        if not wanted:
            return cache, []
        # In bulk mode every member of the ledger came with this import, and is cached.
        found = (
            []
            if self._bulk is not None
            else self._select_in("pseudonym, subject, key FROM subjects", "pseudonym", list(wanted))
        )
        for ps, subject, key in found:
            if key is not None and subject != wanted[ps]:
                raise EventError(
                    "subject",
                    f"a member id whose 64-bit pseudonym is not already taken by {subject!r}",
                    wanted[ps],
                ).located(name)
            cache[ps] = None if key is None else bytes(key)
            del wanted[ps]
        keys = new_keys(len(wanted))
        fresh: list[Row] = [
            (ps, subject, key) for (ps, subject), key in zip(wanted.items(), keys, strict=True)
        ]
        cache.update((ps, key) for ps, _, key in fresh)
        return cache, fresh

    def _insert_subjects(self, fresh: list[Row]) -> None:
        cur = self._cur
        if self.pg:
            with cur.copy(
                "COPY subjects (pseudonym, subject, key) FROM STDIN (FORMAT BINARY)"
            ) as copy:
                copy.set_types(["int8", "text", "bytea"])
                for item in fresh:
                    copy.write_row(item)
        else:
            cur.executemany(
                "INSERT INTO subjects (pseudonym, subject, key) VALUES (?, ?, ?)", fresh
            )

    def _insert(self, rows: list[Row]) -> None:
        cur = self._cur
        if self.pg:
            with cur.copy(_COPY_EVENTS) as copy:
                copy.set_types(_PG_TYPES)
                for row in rows:
                    copy.write_row(row)
        else:
            cur.executemany(_INSERT_EVENTS, rows)

    def _erase(self, ps: int, when_us: int) -> None:
        """Destroy the member's key and id, and the clear copies of sealed fields."""
        mark = "%s" if self.pg else "?"
        cur = self._cur
        cur.execute(
            f"UPDATE subjects SET subject = NULL, key = NULL, erased_us = {mark} "
            f"WHERE pseudonym = {mark}",
            [when_us, ps],
        )
        if self._bulk is not None:  # no subject index yet: cleared in _leave_bulk
            self._erased_later.append(ps)
        else:
            self._clear_copies([ps])


def _conflict(stored_id: str, row: Row, lineno: int, name: str) -> InputError:
    if stored_id != row[1]:
        return EventError(
            "event_id",
            f"an id whose key differs from stored id {stored_id!r} (a 64-bit key "
            "collision; give this event another event_id)",
            row[1],
        ).located(f"{name}:{lineno}")
    return EventError(
        "event_id",
        "an id not yet used, or the same content as the stored event with that id",
        row[1],
    ).located(f"{name}:{lineno}")


_BINARY = frozenset({"sealed", "prev_hash", "hash"})
_BIGINT = frozenset({"seq", "id_key", "subject", "at_us", "recorded_us"})
_PG_TYPES = ["int8" if c in _BIGINT else "bytea" if c in _BINARY else "text" for c in COLUMNS]
_COPY_EVENTS = f"COPY events ({', '.join(COLUMNS)}) FROM STDIN (FORMAT BINARY)"
_INSERT_EVENTS = (
    f"INSERT INTO events ({', '.join(COLUMNS)}) VALUES ({', '.join('?' for _ in COLUMNS)})"
)


def now_us() -> int:
    return time.time_ns() // 1_000


def pseudonym_key(conn: Connection) -> bytes:
    """The ledger's pseudonym key, as stored in `ledger_meta`."""
    value = conn.exec_driver_sql("SELECT value FROM ledger_meta WHERE name = 'pseudonym_key'")
    return bytes.fromhex(value.scalar_one())


def rechain_version_1(conn: Connection, table: str) -> None:
    """Append the events of a version-1 `table` (clear member ids and evidence, no
    chain) to the empty chain, in their order (migration 0002)."""
    from consentgate.domain.events import validate_event
    from consentgate.domain.timeutil import format_ts, from_micros
    from consentgate.ledger.parsing import row_of

    secret = pseudonym_key(conn)
    fields = ("purpose", "choice", "signal", "region", "birth_date", "source", "notice_version")
    query = (
        "SELECT seq, event_id, type, subject, at_us, evidence, recorded_us, "
        f"{', '.join(fields)} FROM {table} ORDER BY seq"
    )
    appender = Appender(conn, secret)
    batch: list[Row] = []
    seqs: list[int] = []  # errors name the version-1 row as `table:seq`
    for row in conn.exec_driver_sql(query).all():
        seq, event_id, kind, subject, at_us, evidence, recorded_us, *values = row
        obj: dict[str, Any] = {"type": kind, "subject": subject, "event_id": event_id}
        obj["at"] = format_ts(from_micros(at_us))
        obj.update((k, v) for k, v in zip(fields, values, strict=True) if v is not None)
        obj.update(orjson.loads(evidence) if evidence else {})
        try:
            valid = validate_event(obj)
        except InputError as err:
            raise err.located(f"{table}:{seq}") from None
        batch.append(row_of(valid, secret, recorded_us))
        seqs.append(seq)
        if len(batch) >= 10_000:
            appender.append(batch, seqs, name=table)
            batch, seqs = [], []
    appender.append(batch, seqs, name=table)
    appender.finish()
