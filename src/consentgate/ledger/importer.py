"""Bulk, all-or-nothing, idempotent append of events.

One transaction per import: either every line is accepted and the whole batch is
committed, or the first bad line raises an `EventError` naming the line, the field,
what was expected and what was found, and nothing is kept. Events whose `event_id`
is already stored are skipped when their content is identical; a stored id with
different content is an error (an id never silently means two things).

Large files are parsed by worker processes (validation is CPU-bound Python) while
this process writes the rows they return, in file order.
"""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import sys
from collections import deque
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType
from typing import IO

import orjson
import psycopg
from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from consentgate.domain.errors import EventError, InputError
from consentgate.ledger.parsing import ChunkResult, LineError, Row, parse_lines, set_purposes
from consentgate.ledger.rows import COLUMNS

__all__ = ["ImportResult", "append_rows", "import_stream"]

BLOCK = 1 << 20  # bytes of whole lines per batch (and per worker task)
PARALLEL_FROM = 4 << 20  # files larger than this many bytes are parsed in worker processes


@dataclass(frozen=True, slots=True)
class ImportResult:
    """What one import did: events read, events added, duplicates skipped."""

    read: int
    added: int

    @property
    def duplicates(self) -> int:
        return self.read - self.added


def _chunks(stream: IO[bytes]) -> Iterator[tuple[int, bytes]]:
    """(first line number, block of whole lines) for successive blocks of the stream."""
    lineno = 1
    carry = b""
    while block := stream.read(BLOCK):
        block = carry + block
        cut = block.rfind(b"\n") + 1
        if cut == 0:
            carry = block
            continue
        carry = block[cut:]
        yield lineno, block[:cut]
        lineno += block.count(b"\n", 0, cut)
    if carry:
        yield lineno, carry


def _parsed(
    stream: IO[bytes], purposes: Collection[str], parallel: bool
) -> Iterator[tuple[ChunkResult, int]]:
    if not parallel:
        set_purposes(frozenset(purposes))
        for first, block in _chunks(stream):
            yield parse_lines((first, block)), len(block)
        return
    ctx = multiprocessing.get_context("spawn")  # safe beside threads, unlike fork
    # The writer (this process) needs a core of its own: on 2 cores one parser keeps
    # pace with it, while two would take turns with it on the same cores. (Having the
    # writer parse a share of the blocks too measured slower: it is the bottleneck.)
    workers = max(1, min(4, (os.cpu_count() or 2) - 1))
    set_purposes(frozenset(purposes))
    with ProcessPoolExecutor(
        workers, mp_context=ctx, initializer=set_purposes, initargs=(frozenset(purposes),)
    ) as pool:
        pending: deque[tuple[Future[ChunkResult], int]] = deque()
        for task in _chunks(stream):
            with _main_hidden():
                pending.append((pool.submit(parse_lines, task), len(task[1])))
            if len(pending) > 2 * workers + 1:  # bounded read-ahead keeps memory flat
                job, size = pending.popleft()
                yield job.result(), size
        while pending:
            job, size = pending.popleft()
            yield job.result(), size


@contextmanager
def _main_hidden() -> Iterator[None]:
    """Start parser processes without the caller's main module.

    A spawned process normally re-runs the parent's `__main__` script first; a user
    script that imports events at top level (no `if __name__ == "__main__"` guard)
    would then run again in the parser, and fail or repeat its work. The parsers
    need only consentgate's own code, so while a task is submitted (which is when
    the pool starts a process) `__main__` is an empty module."""
    main = sys.modules["__main__"]
    sys.modules["__main__"] = ModuleType("__mp_main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


def import_stream(
    conn: Connection,
    stream: IO[bytes],
    *,
    purposes: Collection[str],
    name: str,
    size_hint: int = 0,
    progress: Callable[[int], None] | None = None,
) -> ImportResult:
    """Validate and append every line of a JSON Lines stream in the caller's transaction."""
    read = added = done = 0
    for result, size in _parsed(stream, purposes, parallel=size_hint > PARALLEL_FROM):
        if isinstance(result, LineError):
            raise result.error(name)
        linenos, rows = result
        added += append_rows(conn, rows, linenos=linenos, name=name)
        read += len(rows)
        done += size
        if progress:
            progress(done)
    return ImportResult(read=read, added=added)


def append_rows(
    conn: Connection,
    rows: Sequence[Row],
    *,
    linenos: Sequence[int] = (),
    name: str = "<input>",
) -> int:
    """Insert rows (COLUMNS order); return how many were new.

    The ids of the batch are looked up first (one query): stored ids and ids repeated
    within the batch are checked for identical content and dropped, and only new
    events are written, by a plain insert (SQLite) or COPY (PostgreSQL).
    """
    if not rows:
        return 0
    new = _new_rows(conn, rows, linenos or range(1, len(rows) + 1), name)
    if new:
        if conn.dialect.name == "postgresql":
            _copy_postgres(conn, new)
        else:
            _insert_sqlite(conn, new)
    return len(new)


def _insert_sqlite(conn: Connection, rows: Sequence[Row]) -> None:
    cols = ", ".join(COLUMNS)
    marks = ", ".join("?" for _ in COLUMNS)
    cur = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cur.executemany(f"INSERT INTO events ({cols}) VALUES ({marks})", rows)
    except sqlite3.IntegrityError as err:
        raise IntegrityError("INSERT INTO events", None, err) from err
    finally:
        cur.close()


def _copy_postgres(conn: Connection, rows: Sequence[Row]) -> None:
    """COPY in binary: the cheapest way into PostgreSQL, on the client and the server.
    Rows arrive in batch order, so sequence numbers follow the file."""
    cur = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        with cur.copy(_COPY_SQL) as copy:
            copy.set_types(_PG_TYPES)
            for row in rows:
                copy.write_row(row)
    except psycopg.errors.UniqueViolation as err:
        raise IntegrityError("COPY events", None, err) from err
    finally:
        cur.close()


_BIGINT = frozenset({"id_key", "at_us", "recorded_us"})
_PG_TYPES = ["int8" if name in _BIGINT else "text" for name in COLUMNS]
_COPY_SQL = f"COPY events ({', '.join(COLUMNS)}) FROM STDIN (FORMAT BINARY)"


def _new_rows(
    conn: Connection, rows: Sequence[Row], linenos: Iterable[int], name: str
) -> list[Row]:
    """The rows whose id is not stored yet, each id once. A repeated id must carry
    the content it was stored (or first given) with: an id never means two things."""
    known = _stored(conn, [row[0] for row in rows])
    new: list[Row] = []
    for lineno, row in zip(linenos, rows, strict=False):
        seen = known.get(row[0])
        if seen is None:
            known[row[0]] = (row[1], row[2])
            new.append(row)
        elif seen != (row[1], row[2]):
            raise _conflict(seen[0], row, lineno, name)
    return new


def _stored(conn: Connection, keys: list[int]) -> dict[int, tuple[str, str]]:
    """id_key -> (event_id, content_sha256) of the stored events among `keys`."""
    cur = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        if conn.dialect.name == "postgresql":
            cur.execute(
                "SELECT id_key, event_id, content_sha256 FROM events "
                "WHERE id_key = ANY(%b::bigint[])",
                [keys],
            )
        else:
            cur.execute(
                "SELECT id_key, event_id, content_sha256 FROM events "
                "WHERE id_key IN (SELECT value FROM json_each(?))",
                [orjson.dumps(keys).decode()],
            )
        return {key: (event_id, digest) for key, event_id, digest in cur.fetchall()}
    finally:
        cur.close()


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
