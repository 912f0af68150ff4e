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
import sys
from collections import deque
from collections.abc import Callable, Collection, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType
from typing import IO

from sqlalchemy import Connection

from consentgate.ledger.chain import Appender, Head
from consentgate.ledger.parsing import ChunkResult, LineError, parse_lines, set_context

__all__ = ["ImportResult", "import_stream", "main_hidden"]

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
    stream: IO[bytes], purposes: Collection[str], secret: bytes, parallel: bool
) -> Iterator[tuple[ChunkResult, int]]:
    context = (frozenset(purposes), secret)
    set_context(*context)
    if not parallel:
        for first, block in _chunks(stream):
            yield parse_lines((first, block)), len(block)
        return
    ctx = multiprocessing.get_context("spawn")  # safe beside threads, unlike fork
    # The writer (this process) needs a core of its own: on 2 cores one parser keeps
    # pace with it, while two would take turns with it on the same cores. (Having the
    # writer parse a share of the blocks too measured slower: it is the bottleneck.)
    workers = max(1, min(4, (os.cpu_count() or 2) - 1))
    with ProcessPoolExecutor(
        workers, mp_context=ctx, initializer=set_context, initargs=context
    ) as pool:
        pending: deque[tuple[Future[ChunkResult], int]] = deque()
        for task in _chunks(stream):
            with main_hidden():
                pending.append((pool.submit(parse_lines, task), len(task[1])))
            if len(pending) > 2 * workers + 1:  # bounded read-ahead keeps memory flat
                job, size = pending.popleft()
                yield job.result(), size
        while pending:
            job, size = pending.popleft()
            yield job.result(), size


@contextmanager
def main_hidden() -> Iterator[None]:
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
    secret: bytes,
    name: str,
    size_hint: int = 0,
    progress: Callable[[int], None] | None = None,
    hashing: bool = True,
) -> tuple[ImportResult, Head]:
    """Validate and append every line of a JSON Lines stream in the caller's (write)
    transaction; return what was done and the new chain head."""
    read = done = 0
    appender = Appender(conn, secret, hashing=hashing, bulk=True)
    parsed = _parsed(stream, purposes, secret, parallel=size_hint > PARALLEL_FROM)
    for result, size in parsed:
        if isinstance(result, LineError):
            raise result.error(name)
        linenos, rows = result
        appender.append(rows, linenos, name)
        read += len(rows)
        done += size
        if progress:
            progress(done)
    head = appender.finish()
    return ImportResult(read=read, added=appender.added), head
