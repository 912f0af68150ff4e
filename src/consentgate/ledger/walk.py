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
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

import orjson
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Engine, create_engine

from consentgate.ledger import merkle
from consentgate.ledger.chain import ENTRY_COLUMNS, GENESIS, encode_entry
from consentgate.ledger.importer import main_hidden
from consentgate.ledger.report import Problem, VerifyReport
from consentgate.ledger.sealing import SealError, pseudonym, unseal

try:  # the compiled hot loop (setup.py); without it the Python loop does the same
    from consentgate.ledger import _chainwalk as _native
except ImportError:  # pragma: no cover - built wherever a C compiler and OpenSSL are
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
    cur: Any, start: int, sizes: set[int], keys: dict[int, Any], secret: bytes, chunk: int
) -> Segment:
    """One pass over the events from `start` (the rows `cur` holds, in order): the
    chain (stops at its first break), the Merkle subtrees of its CHUNK-aligned part,
    the open subtrees at each of `sizes`, and the sealed personal fields."""
    report = VerifyReport()
    prev: bytes | None = GENESIS if start == 1 else None
    first_prev: bytes | None = None
    first_seq: int | None = None
    expected = start
    erased: set[int] = set()
    rowless: dict[int, int] = {}
    chunks: list[bytes] = []
    partial: dict[int, tuple[int, bytes]] = {}
    sha256 = hashlib.sha256
    encode = encode_entry
    stack: list[bytes] = []
    broke: Problem | None = None
    ciphers: dict[bytes, Any] = {}
    advance = _native.advance if _native is not None else None
    while rows := cur.fetchmany(_BATCH):
        _bookkeep(rows, keys, erased, rowless, report, ciphers)
        i, n = 0, len(rows)
        while broke is None and i < n:
            if advance is not None and prev is not None:
                # The compiled loop takes every sound row it can encode, and stops
                # at the first other one, which the Python code below takes.
                i, prev, expected = advance(
                    rows, i, secret, prev, expected, stack, chunks, partial, sizes, chunk
                )
                if i == n:
                    break
            row = rows[i]
            i += 1
            seq = row[_SEQ]
            if first_seq is None:
                first_seq = seq
            if prev is None:  # the first event of a later range: main checks the link
                first_prev = prev = bytes(row[_PREV])
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
                    f"altered): {bytes(row[_PREV]).hex()[:16]}... != {prev.hex()[:16]}...",
                )
            else:
                stored = row[_HASH]
                computed = sha256(prev + encode(row, secret)).digest()
                if computed != stored:
                    problem = Problem(
                        seq,
                        "the stored content does not hash to the stored hash (an edited "
                        f"field or hash): stored {bytes(stored).hex()[:16]}..., content "
                        f"hashes to {computed.hex()[:16]}...",
                    )
            if problem is not None:
                broke = problem
                break
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


def _bookkeep(
    rows: list[Any],
    keys: dict[int, Any],
    erased: set[int],
    rowless: dict[int, int],
    report: VerifyReport,
    ciphers: dict[bytes, Any],
) -> None:
    """What `walk` checks of every row, sound chain or not: erasures, members without a
    key row (at their first event), and the personal fields."""
    erased.update(row[_SUBJECT] for row in rows if row[_TYPE] == "erasure")
    if not keys.keys() >= {row[_SUBJECT] for row in rows}:
        for row in rows:
            if row[_SUBJECT] not in keys and row[_SUBJECT] not in rowless:
                rowless[row[_SUBJECT]] = row[_SEQ]
    if _native is not None:  # the compiled check passes the sound rows; these it did not
        for i in _native.unsound_personal(rows, keys, ERASED):
            _check_personal(rows[i], keys, report, ciphers)
        return
    for row in rows:
        if row[_SEALED] is not None or row[_REGION] is not None or row[_BORN] is not None:
            _check_personal(row, keys, report, ciphers)


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
    url: str, secret: bytes, start: int, end: int | None, sizes: set[int], chunk: int
) -> Segment:
    """`_walk` in a worker process, over its own connection."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            driver = conn.connection.driver_connection
            assert driver is not None
            cur = driver.cursor()
            try:
                keys = load_keys(cur, secret, VerifyReport(), check=False)  # main checks
                cur.execute(range_sql(conn.dialect.name, start, end), bounds(start, end))
                return walk(cur, start, sizes, keys, secret, chunk)
            finally:
                cur.close()
    finally:
        engine.dispose()


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


def ranges(events: int, workers: int, chunk: int) -> list[tuple[int, int | None]]:
    """Contiguous, CHUNK-aligned position ranges, one per worker; the first one is
    walked by this process. `events` is the largest position in this process's
    snapshot: workers read their own, later snapshots, so the last range ends there,
    and events a writer appends meanwhile are not mistaken for events beyond the head.
    (Events stored beyond the head before the snapshot are within it: the head check
    reports them.) A single range reads this process's snapshot and needs no end."""
    chunks = -(-events // chunk)
    per = max(1, -(-chunks // workers))
    starts = [1 + i * per * chunk for i in range(workers) if i * per < chunks] or [1]
    last: int | None = events if len(starts) > 1 else None
    return [(a, (starts[i + 1] - 1) if i + 1 < len(starts) else last) for i, a in enumerate(starts)]


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
        cipher = ciphers.get(key)
        if cipher is None:
            if len(ciphers) >= _CIPHERS:
                ciphers.clear()
            with suppress(ValueError):  # a key of the wrong length: unseal reports it
                cipher = ciphers[key] = AESGCM(key)
        try:
            opened = orjson.loads(
                unseal(cipher or key, bytes(sealed), row[_DIGEST].encode())
            )
        except SealError as err:
            report.problems.append(Problem(seq, str(err)))
            return
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
        for ps, subject, key in rows:
            keys[ps] = ERASED if key is None else bytes(key)
        if check:
            _check_subjects(rows, secret, report)
    return keys


def _check_subjects(rows: list[Any], secret: bytes, report: VerifyReport) -> None:
    named = [subject.encode() for _, subject, key in rows if subject is not None and key is not None]
    if _native is not None:
        macs = iter(_native.keyed_many(secret, named))
        names = iter(int.from_bytes(mac[:8], "big", signed=True) for mac in macs)
    else:
        names = iter(pseudonym(secret, subject.decode()) for subject in named)
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
