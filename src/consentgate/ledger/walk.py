"""The chain walk of `verify`: every event in order, in one process or in several.

Each range of positions (aligned to CHUNK leaves, so its Merkle subtrees are whole)
is walked by `walk` (in a worker process through `walk_range`): links, entry hashes,
the Merkle subtrees, sealed personal fields. `combine` joins the segments in order,
checks the links between them, keeps the first break, and rebuilds the Merkle roots
at the checkpoint sizes and of the whole verified chain.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import sqlite3
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import orjson
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Engine, create_engine

from consentgate.ledger import merkle
from consentgate.ledger.chain import ENTRY_COLUMNS, GENESIS, encode_entry
from consentgate.ledger.importer import main_hidden
from consentgate.ledger.report import Problem, VerifyReport
from consentgate.ledger.sealing import SealError, keyed, unseal

NO_NATIVE_ENV = "CONSENTGATE_PYTHON_WALK"  # set (to anything): verify walks in Python
_native: ModuleType | None
try:  # the compiled walk (setup.py); without it the Python loop does all the work
    from consentgate.ledger import _chainwalk as _native
except ImportError:  # pragma: no cover - built wherever a C compiler and the headers are
    _native = None
if os.environ.get(NO_NATIVE_ENV):  # the Python loop alone (a baseline; a second opinion)
    _native = None

_BATCH = 20_000
_CIPHERS = 50_000  # AES-GCM key schedules kept by one walk (members have several events)
CHUNK = 1 << 16  # leaves per Merkle subtree a worker folds on its own (ranges align to it)
PARALLEL_FROM = 400_000  # events; smaller ledgers are walked in this process alone


def compare_roots(
    size: int, root: bytes, wanted: dict[int, list[tuple[str, bytes]]], report: VerifyReport
) -> None:
    for label, claimed in wanted.get(size, ()):
        if claimed != root:
            report.problems.append(
                Problem(
                    size if size else None,
                    f"{label}: the Merkle root of the first {size} events differs "
                    "from the checkpoint's (the ledger was rewritten)",
                )
            )
        elif label.startswith("stored"):
            report.checkpoints += 1


#: Columns read per event: the entry's, then the link, then the clear copies.
_WALKED = (*ENTRY_COLUMNS, "prev_hash", "hash", "region", "birth_date")
_SEQ, _SEALED, _DIGEST, _SUBJECT, _TYPE = (
    ENTRY_COLUMNS.index(c) for c in ("seq", "sealed", "content_sha256", "subject", "type")
)
_PREV, _HASH, _REGION, _BORN = range(len(ENTRY_COLUMNS), len(_WALKED))
ERASED = object()  # `keys` value of a member whose key and id were destroyed


@dataclass(slots=True)
class Segment:
    """What walking the events from `start` on found (picklable, from a worker)."""

    start: int
    first_seq: int | None  # the position of the first event walked, if any
    first_prev: bytes | None  # the stored prev_hash of the first event, if any
    good: int  # the last position that verified (start - 1 if none)
    last: bytes  # the hash at `good` (first_prev when none verified)
    broke: Problem | None  # the chain break that stopped the walk
    problems: list[Problem]  # of personal data
    chunks: list[bytes]  # roots of the complete CHUNK-leaf subtrees, in order
    partial: dict[int, tuple[int, bytes]]  # size -> (chunks done, open subtree roots)
    erased: set[int]
    rowless: dict[int, int]


def walk(
    cur: Any,
    dialect: str,
    start: int,
    end: int,
    sizes: set[int],
    keys: dict[int, Any],
    secret: bytes,
    chunk: int,
    path: str | None = None,
) -> Segment:
    """One pass over the events from `start` to `end`, in order: the chain (stops at
    its first break), the Merkle subtrees of its CHUNK-aligned part, the open subtrees
    at each of `sizes`, and the sealed personal fields.

    With the compiled walk and the SQLite file at `path`, `_chainwalk.walk_file` takes
    the rows for as long as every one is sound; from the first other row on (if any),
    the Python loop below reads them through `cur` and names what is wrong."""
    report = VerifyReport()
    prev: bytes | None = GENESIS if start == 1 else None
    first_prev: bytes | None = None
    first_seq: int | None = None
    expected = start
    erased: set[int] = set()
    rowless: dict[int, int] = {}
    chunks: list[bytes] = []
    partial: dict[int, tuple[int, bytes]] = {}
    stack: list[bytes] = []
    if _native is not None and path is not None:
        above = " AND seq >= ?1" if start > 1 else ""
        sql = f"SELECT {', '.join(_WALKED)} FROM events WHERE seq <= ?2{above} ORDER BY seq"
        seen: set[int] = set()  # erasures it saw: kept only if it returns
        try:
            _, first_seq, first_prev, prev, expected, stack, chunks, partial, stopped = (
                _native.walk_file(
                    path, sql, start, end, secret, keys, ERASED, seen, prev, sizes, chunk
                )
            )
            erased |= seen
        except OSError:  # SQLite could not open or read the file: all of it in Python
            stopped = True
        if not stopped:
            return _segment(start, first_seq, first_prev, expected, prev, None, report,
                            chunks, stack, partial, erased, rowless)  # fmt: skip
    # From the first row the compiled walk did not take: it took start..expected-1 in
    # order (`expected` is still `start` if it took none; a row below `start` stops it
    # at once, and the first range's query has no lower bound).
    cur.execute(range_sql(dialect, expected, end), bounds(expected, end))
    sha256 = hashlib.sha256
    encode = encode_entry
    broke: Problem | None = None
    ciphers: dict[bytes, Any] = {}
    while rows := cur.fetchmany(_BATCH):
        for row in rows:
            if row[_TYPE] == "erasure":
                erased.add(row[_SUBJECT])
            if row[_SUBJECT] not in keys and row[_SUBJECT] not in rowless:
                rowless[row[_SUBJECT]] = row[_SEQ]
            if row[_SEALED] is not None or row[_REGION] is not None or row[_BORN] is not None:
                _check_personal(row, keys, report, ciphers)
            if broke is not None:
                continue
            seq = row[_SEQ]
            if first_seq is None:
                first_seq = seq
            if prev is None:  # the first event of a later range: main checks the link
                first_prev = prev = _blob(row[_PREV])
            problem = None
            if seq != expected:
                problem = (
                    Problem(expected, f"missing (the next stored event is seq {seq})")
                    if seq > expected
                    else Problem(seq, f"seq {seq} is not a position (positions start at 1)")
                )
            elif row[_PREV] != prev:
                problem = Problem(
                    seq,
                    f"prev_hash is not the hash of seq {seq - 1} (one of the two events was "
                    f"altered): {_short(row[_PREV])} != {_short(prev)}",
                )
            else:
                stored = row[_HASH]
                try:
                    computed = sha256(prev + encode(row, secret)).digest()
                except (TypeError, ValueError, AttributeError) as err:
                    broke = Problem(seq, f"a stored value of the wrong type ({str(err)[:80]})")
                    continue
                if computed != stored:
                    problem = Problem(
                        seq,
                        "the stored content does not hash to the stored hash (an edited "
                        f"field or hash): stored {_short(stored)}, content "
                        f"hashes to {_short(computed)}",
                    )
            if problem is not None:
                broke = problem
                continue
            # RootBuilder.append within the chunk, inlined.
            leaf = sha256(b"\x00" + computed).digest()
            pos = (seq - 1) % chunk
            while pos & 1:
                leaf = sha256(b"\x01" + stack.pop() + leaf).digest()
                pos >>= 1
            if seq % chunk == 0:
                chunks.append(leaf)  # the chunk is complete: its root
            else:
                stack.append(leaf)
            prev = computed
            expected = seq + 1
            if seq in sizes:
                partial[seq] = (len(chunks), b"".join(stack))
    return _segment(start, first_seq, first_prev, expected, prev, broke, report, chunks,
                    stack, partial, erased, rowless)  # fmt: skip


def _blob(value: Any) -> bytes:
    """A stored hash as bytes (a value of another type, put there behind the ledger's
    back, becomes bytes that match no hash)."""
    return value if isinstance(value, bytes) else b"not a hash: " + repr(value).encode()


def _short(value: Any) -> str:
    """The start of a stored hash, for a report."""
    if isinstance(value, bytes):
        return value.hex()[:16] + "..."
    return f"{value!r:.24} (not a hash)"


def _segment(
    start: int,
    first_seq: int | None,
    first_prev: bytes | None,
    expected: int,
    prev: bytes | None,
    broke: Problem | None,
    report: VerifyReport,
    chunks: list[bytes],
    stack: list[bytes],
    partial: dict[int, tuple[int, bytes]],
    erased: set[int],
    rowless: dict[int, int],
) -> Segment:
    partial[expected - 1] = (len(chunks), b"".join(stack))
    return Segment(
        start=start,
        first_seq=first_seq,
        first_prev=first_prev,
        good=expected - 1,
        last=prev if prev is not None else GENESIS,
        broke=broke,
        problems=report.problems,
        chunks=chunks,
        partial=partial,
        erased=erased,
        rowless=rowless,
    )


def combine(
    segments: list[Segment], wanted: dict[int, list[tuple[str, bytes]]], report: VerifyReport
) -> tuple[merkle.RootBuilder, bytes, set[int], dict[int, int]]:
    """Join the segments in order: the links between them, the first chain break, the
    Merkle roots at the wanted sizes and of the whole verified chain."""
    upper = merkle.RootBuilder()  # a tree whose leaves are the chunk roots
    last, good = GENESIS, 0
    erased: set[int] = set()
    rowless: dict[int, int] = {}
    broken = False
    for segment in segments:
        erased |= segment.erased
        for ps, seq in segment.rowless.items():
            rowless.setdefault(ps, seq)
        report.problems += segment.problems
        if broken:
            continue
        if segment.first_seq is not None and good < segment.start - 1:
            # The previous range ended early: its last events are missing.
            report.problems.append(
                Problem(good + 1, f"missing (the next stored event is seq {segment.first_seq})")
            )
            broken = True
            continue
        first_prev = segment.first_prev
        if segment.start > 1 and segment.first_seq == segment.start and first_prev != last:
            assert first_prev is not None  # set with first_seq
            report.problems.append(
                Problem(
                    segment.start,
                    f"prev_hash is not the hash of seq {segment.start - 1} (one of the two "
                    f"events was altered): {first_prev.hex()[:16]}... != "
                    f"{last.hex()[:16]}...",
                )
            )
            broken = True
            continue
        for size, (done, open_roots) in sorted(segment.partial.items()):
            if size in wanted and size >= segment.start:
                below = upper.copy()
                below.extend(segment.chunks[:done])
                compare_roots(size, _fold(below, open_roots), wanted, report)
        upper.extend(segment.chunks)
        good, last = segment.good, segment.last
        if segment.broke is not None:
            report.problems.append(segment.broke)
            broken = True
    tree = _tree_at(segments, good)
    if 0 in wanted:
        compare_roots(0, merkle.EMPTY_ROOT, wanted, report)
    return tree, last, erased, rowless


def _fold(upper: merkle.RootBuilder, open_roots: bytes) -> bytes:
    """The root of a tree whose complete chunks are in `upper`, followed by the open
    subtree roots of the chunk in progress (all smaller than a chunk)."""
    roots = upper.state() + open_roots
    nodes = [roots[i : i + 32] for i in range(0, len(roots), 32)]
    if not nodes:
        return merkle.EMPTY_ROOT
    h = nodes[-1]
    for left in reversed(nodes[:-1]):
        h = hashlib.sha256(b"\x01" + left + h).digest()
    return h


def _tree_at(segments: list[Segment], good: int) -> merkle.RootBuilder:
    """The Merkle tree of the first `good` events, from the segments that hold them
    (`good` is where one of them stopped, or 0)."""
    upper = merkle.RootBuilder()
    for segment in segments:
        if segment.start > good:
            break
        if good <= segment.good:
            done, open_roots = segment.partial.get(good, (len(segment.chunks), b""))
            upper.extend(segment.chunks[:done])
            return merkle.RootBuilder.restore(good, upper.state() + open_roots)
        upper.extend(segment.chunks)
    return merkle.RootBuilder.restore(good, upper.state())


def walk_range(
    url: str, secret: bytes, start: int, end: int, sizes: set[int], chunk: int
) -> Segment:
    """`walk` in a worker process, over its own connection."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with lenient_cursor(conn.connection.driver_connection) as cur:
                keys = load_keys(cur, secret, VerifyReport(), check=False)  # main checks
                path = sqlite_file(engine)
                return walk(cur, conn.dialect.name, start, end, sizes, keys, secret, chunk, path)
    finally:
        engine.dispose()


@contextmanager
def lenient_cursor(driver: Any) -> Iterator[Any]:
    """A cursor of the driver connection. On SQLite, text that is not UTF-8 (written
    behind the ledger's back) is read with surrogate escapes instead of failing the
    fetch, so that the walk reports the event holding it."""
    sqlite = isinstance(driver, sqlite3.Connection)
    saved = driver.text_factory if sqlite else None
    if sqlite:
        driver.text_factory = _lenient_text
    cur = driver.cursor()
    try:
        yield cur
    finally:
        cur.close()
        if sqlite:
            driver.text_factory = saved


def _lenient_text(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def sqlite_file(engine: Engine) -> str | None:
    """The file of a SQLite ledger, for the compiled walk (None: another database, or
    a SQLite URI, which the compiled walk does not open)."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or database in (None, "", ":memory:"):
        return None
    if database.startswith("file:") or engine.url.query:
        return None
    return database


def range_sql(dialect: str, start: int, end: int | None) -> str:
    """The walked columns of the events of one range. The first range has no lower
    bound, so a position moved below 1 is seen (and reported)."""
    conditions = []
    if start > 1:
        conditions.append("seq >= " + _mark(dialect, "start"))
    if end is not None:
        conditions.append("seq <= " + _mark(dialect, "end"))
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    return f"SELECT {', '.join(_WALKED)} FROM events{where} ORDER BY seq"


def _mark(dialect: str, name: str) -> str:
    return f"%({name})s" if dialect == "postgresql" else f":{name}"


def bounds(start: int, end: int | None) -> dict[str, int]:
    bounds = {"start": start} if start > 1 else {}
    return bounds if end is None else {**bounds, "end": end}


def workers_for(engine: Engine, events: int) -> int:
    if events < PARALLEL_FROM:
        return 1
    if engine.dialect.name == "sqlite" and engine.url.database in (None, "", ":memory:"):
        return 1
    return max(1, min(4, os.cpu_count() or 1))


def ranges(events: int, workers: int, chunk: int) -> list[tuple[int, int]]:
    """Contiguous, CHUNK-aligned position ranges, one per worker; the first one is
    walked by this process. `events` is the largest position in this process's
    snapshot: workers (and the compiled walk) read their own, later snapshots, so the
    last range ends there, and events a writer appends meanwhile are not mistaken for
    events beyond the head. (Events stored beyond the head before the snapshot are
    within it: the head check reports them.)"""
    chunks = -(-events // chunk)
    per = max(1, -(-chunks // workers))
    starts = [1 + i * per * chunk for i in range(workers) if i * per < chunks] or [1]
    ends = [start - 1 for start in starts[1:]] + [events]
    return list(zip(starts, ends, strict=True))


@contextmanager
def pool(workers: int) -> Iterator[Any]:
    if workers <= 1:
        yield _InProcess()
        return
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers - 1, mp_context=ctx) as pool, main_hidden():
        yield pool


class _InProcess:
    def submit(self, fn: Any, *args: Any) -> Any:
        raise AssertionError("a single range needs no worker")


def _check_personal(
    row: Any, keys: dict[int, Any], report: VerifyReport, ciphers: dict[bytes, Any]
) -> None:
    """Sealed fields open and agree with their clear copies; an erased member keeps none."""
    seq, sealed, region, born = row[_SEQ], row[_SEALED], row[_REGION], row[_BORN]
    key = keys.get(row[_SUBJECT])
    if key is None:
        return  # no row in subjects: reported once, at the member's first event
    if key is ERASED:
        if region is not None or born is not None:
            report.problems.append(
                Problem(seq, "personal data of an erased member remains in clear")
            )
        return
    opened: dict[str, str] = {}
    if sealed is not None:
        if not isinstance(sealed, bytes):
            report.problems.append(
                Problem(seq, f"a stored value of the wrong type (sealed: {type(sealed).__name__})")
            )
            return
        cipher = ciphers.get(key)
        if cipher is None:
            if len(ciphers) >= _CIPHERS:
                ciphers.clear()
            with suppress(ValueError, TypeError):  # a key of the wrong kind: unseal says so
                cipher = ciphers[key] = AESGCM(key)
        try:
            plain = unseal(cipher or key, sealed, row[_DIGEST].encode())
        except SealError as err:
            report.problems.append(Problem(seq, str(err)))
            return
        except (TypeError, ValueError, AttributeError) as err:
            report.problems.append(
                Problem(seq, f"a stored value of the wrong type ({str(err)[:80]})")
            )
            return
        try:
            value = orjson.loads(plain)
        except orjson.JSONDecodeError:
            value = None
        if not isinstance(value, dict):
            report.problems.append(Problem(seq, "the sealed fields are not a JSON object"))
            return
        opened = value
    if (opened.get("region"), opened.get("birth_date")) != (region, born):
        report.problems.append(
            Problem(seq, "the clear region or birth_date differs from the sealed one")
        )


def load_keys(
    cur: Any, secret: bytes, report: VerifyReport, *, check: bool = True
) -> dict[int, Any]:
    """Every member's key (or `ERASED`); with `check`, also that each id has its own
    pseudonym and that erasure took both the id and the key."""
    keys: dict[int, Any] = {}
    cur.execute("SELECT pseudonym, subject, key FROM subjects")
    while rows := cur.fetchmany(_BATCH):
        for ps, _, key in rows:
            keys[ps] = ERASED if key is None else key
        if check:
            _check_subjects(rows, secret, report)
    return keys


def _check_subjects(rows: list[Any], secret: bytes, report: VerifyReport) -> None:
    # The id's bytes as stored (text that is not UTF-8 was read with surrogate escapes).
    named = [
        str(subject).encode("utf-8", "surrogateescape")
        for _, subject, key in rows
        if None not in (subject, key)
    ]
    macs = _native.keyed_many(secret, named) if _native is not None else map(keyed(secret), named)
    names = iter(int.from_bytes(mac[:8], "big", signed=True) for mac in macs)
    for ps, subject, key in rows:
        if subject is None and key is None:
            continue
        if subject is None or key is None:
            report.problems.append(
                Problem(None, f"subjects: pseudonym {ps} is half erased (id or key left)")
            )
        elif next(names) != ps:
            report.problems.append(
                Problem(None, f"subjects: pseudonym {ps} is not the pseudonym of {subject!r}")
            )
