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
from collections import deque
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from typing import IO

from sqlalchemy import Connection, bindparam, select

from consentgate.domain.errors import EventError
from consentgate.ledger.parsing import ChunkResult, LineError, Row, parse_lines, set_purposes
from consentgate.ledger.rows import COLUMNS
from consentgate.ledger.schema import events

__all__ = ["ImportResult", "append_rows", "import_stream"]

BLOCK = 1 << 20  # bytes of whole lines per batch (and per worker task)
WRITER_SHARE = 6  # with one parser process, the writer parses one block in this many
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
    # pace with it, while two would take turns with it on the same cores.
    workers = max(1, min(4, (os.cpu_count() or 2) - 1))
    # Writing a row costs less than parsing it, so with a single parser the writer
    # also parses every WRITER_SHARE-th block itself while the parser works ahead.
    share = WRITER_SHARE if workers == 1 else 0
    set_purposes(frozenset(purposes))
    with ProcessPoolExecutor(
        workers, mp_context=ctx, initializer=set_purposes, initargs=(frozenset(purposes),)
    ) as pool:
        pending: deque[tuple[Future[ChunkResult] | tuple[int, bytes], int]] = deque()
        for i, task in enumerate(_chunks(stream)):
            mine = share and i % share == share - 1
            pending.append((task if mine else pool.submit(parse_lines, task), len(task[1])))
            if len(pending) > 2 * workers + 1:  # bounded read-ahead keeps memory flat
                yield _outcome(*pending.popleft())
        while pending:
            yield _outcome(*pending.popleft())


def _outcome(job: Future[ChunkResult] | tuple[int, bytes], size: int) -> tuple[ChunkResult, int]:
    if isinstance(job, Future):
        return job.result(), size
    return parse_lines(job), size


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
    """Insert rows (COLUMNS order); return how many were new."""
    if conn.dialect.name == "postgresql":
        added = _insert_postgres(conn, rows)
    else:
        added = _insert_sqlite(conn, rows)
    if added < len(rows):
        _check_same_content(conn, rows, linenos or range(1, len(rows) + 1), name)
    return added


def _insert_sqlite(conn: Connection, rows: Sequence[Row]) -> int:
    cols = ", ".join(COLUMNS)
    marks = ", ".join("?" for _ in COLUMNS)
    sql = f"INSERT INTO events ({cols}) VALUES ({marks}) ON CONFLICT (id_key) DO NOTHING"
    cur = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cur.executemany(sql, rows)
        return int(cur.rowcount)
    finally:
        cur.close()


def _insert_postgres(conn: Connection, rows: Sequence[Row]) -> int:
    """One INSERT per batch from column arrays, sent in binary (`%b`: text format
    spends most of its time quoting array literals); unnest
    keeps the batch's order, so sequence numbers follow the file."""
    cols = ", ".join(COLUMNS)
    arrays = ", ".join(f"%b::{'bigint' if name in _BIGINT else 'text'}[]" for name in COLUMNS)
    sql = (
        f"INSERT INTO events ({cols}) SELECT * FROM unnest({arrays}) "
        "ON CONFLICT (id_key) DO NOTHING"
    )
    cur = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cur.execute(sql, [list(column) for column in zip(*rows, strict=True)])
        return int(cur.rowcount)
    finally:
        cur.close()


_BIGINT = frozenset({"id_key", "at_us", "recorded_us"})


def _check_same_content(
    conn: Connection, rows: Sequence[Row], linenos: Iterable[int], name: str
) -> None:
    """Every row not added must match a stored event: same id, same content."""
    keys = list({row[0] for row in rows})
    stored: dict[int, tuple[str, str]] = {}
    query = select(events.c.id_key, events.c.event_id, events.c.content_sha256).where(
        events.c.id_key.in_(bindparam("keys", expanding=True))
    )
    for start in range(0, len(keys), 900):
        for key, event_id, digest in conn.execute(query, {"keys": keys[start : start + 900]}):
            stored[key] = (event_id, digest)
    for lineno, row in zip(linenos, rows, strict=False):
        if stored.get(row[0]) == (row[1], row[2]):
            continue
        if row[0] in stored and stored[row[0]][0] != row[1]:
            raise EventError(
                "event_id",
                f"an id whose key differs from stored id {stored[row[0]][0]!r} (a 64-bit key "
                "collision; give this event another event_id)",
                row[1],
            ).located(f"{name}:{lineno}")
        raise EventError(
            "event_id",
            "an id not yet used, or the same content as the stored event with that id",
            row[1],
        ).located(f"{name}:{lineno}")
