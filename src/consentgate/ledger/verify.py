"""`verify`: re-compute everything the ledger claims, and name the first bad event.

1. The chain: positions 1..n without gaps, each `prev_hash` the previous `hash`, each
   `hash` the SHA-256 of `prev_hash` and the event's canonical entry (which holds
   every stored column but the clear copies of sealed fields); the head row agrees
   with the last event.
2. Checkpoints: the Merkle root at every stored checkpoint's size (and signature,
   given the verifier key), and at every external checkpoint's size. Only an
   external checkpoint can reveal a rewritten or truncated ledger: whoever rewrites
   the database can also rewrite the hashes and checkpoints stored in it.
3. Personal data: sealed fields open with the member's key and agree with their
   clear copies; erased members have no key, no id and no clear copies left; every
   member id maps to its own pseudonym.
"""

from __future__ import annotations

import hashlib
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import Engine

from consentgate.ledger import merkle
from consentgate.ledger.chain import ENTRY_COLUMNS, GENESIS, encode_entry
from consentgate.ledger.checkpoint import CheckpointError, Verifier, open_checkpoint
from consentgate.ledger.sealing import SealError, pseudonym, unseal
from consentgate.ledger.tlog import read_log, stored_checkpoints

__all__ = ["Problem", "VerifyReport", "verify_ledger"]

_BATCH = 20_000


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing that does not verify; `seq` is the event it concerns, if any."""

    seq: int | None
    what: str

    def __str__(self) -> str:
        return self.what if self.seq is None else f"seq {self.seq}: {self.what}"


@dataclass(slots=True)
class VerifyReport:
    events: int = 0
    checkpoints: int = 0  # stored checkpoints whose root was re-computed
    external: int = 0  # external checkpoints checked
    problems: list[Problem] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first_bad(self) -> Problem | None:
        """The problem at the lowest position (problems without one come last)."""
        with_seq = [p for p in self.problems if p.seq is not None]
        if with_seq:
            return min(with_seq, key=lambda p: p.seq or 0)
        return self.problems[0] if self.problems else None


def verify_ledger(
    engine: Engine,
    secret: bytes,
    origin: str,
    *,
    verifier: Verifier | None = None,
    external: Sequence[str] = (),
) -> VerifyReport:
    """Check the ledger behind `engine`; `external` are signed checkpoint notes (or
    logs of them) kept outside the database, checked with `verifier`."""
    started = time.perf_counter()
    report = VerifyReport()
    wanted: dict[int, list[tuple[str, bytes]]] = defaultdict(list)
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            # One snapshot for every read: under PostgreSQL's default READ COMMITTED
            # each statement would see the writers' latest commits, and the head
            # read after the chain walk would be ahead of a perfectly sound chain.
            # (SQLite's read transaction is one snapshot already.)
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        for size, root, note in stored_checkpoints(conn):
            if verifier is not None:
                try:
                    signed = open_checkpoint(note, verifier)
                except CheckpointError as err:
                    report.problems.append(Problem(None, f"checkpoint {size}: {err}"))
                    continue
                if (signed.size, signed.root) != (size, root):
                    report.problems.append(
                        Problem(None, f"checkpoint {size}: its note signs another size or root")
                    )
            wanted[size].append((f"stored checkpoint at size {size}", root))
        for text in external:
            _external(text, verifier, origin, wanted, report)
        driver = conn.connection.driver_connection
        assert driver is not None
        cur = driver.cursor()
        try:
            keys = _subjects(cur, secret, report)
            cur.execute(f"SELECT {', '.join(_WALKED)} FROM events ORDER BY seq")
            tree, last, erased, rowless = _walk(cur, wanted, keys, secret, report)
            head = conn.exec_driver_sql("SELECT size, hash, frontier FROM ledger_head").all()
            _head(head, tree, last, report)
            _erased(erased, rowless, keys, report)
        finally:
            cur.close()
    broke = any(p.seq is not None for p in report.problems)
    for size, claims in sorted(wanted.items()):
        for label, _ in claims:
            if size > tree.size and not broke:
                report.problems.append(
                    Problem(
                        None,
                        f"{label}: the ledger holds only {tree.size} events "
                        "(events were removed from its end, or it was rewritten)",
                    )
                )
    report.events = tree.size
    report.seconds = time.perf_counter() - started
    return report


def _external(
    text: str,
    verifier: Verifier | None,
    origin: str,
    wanted: dict[int, list[tuple[str, bytes]]],
    report: VerifyReport,
) -> None:
    if verifier is None:
        report.problems.append(Problem(None, "external checkpoints need the verifier key"))
        return
    for note in read_log(text):
        try:
            cp = open_checkpoint(note, verifier)
        except CheckpointError as err:
            report.problems.append(Problem(None, f"external checkpoint: {err}"))
            continue
        if cp.origin != origin:
            report.problems.append(
                Problem(None, f"external checkpoint of another log: {cp.origin!r}, not {origin!r}")
            )
            continue
        report.external += 1
        wanted[cp.size].append((f"external checkpoint at size {cp.size}", cp.root))


def _compare_roots(
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
_ERASED = object()  # `keys` value of a member whose key and id were destroyed


def _walk(
    cur: Any,
    wanted: dict[int, list[tuple[str, bytes]]],
    keys: dict[int, Any],
    secret: bytes,
    report: VerifyReport,
) -> tuple[merkle.RootBuilder, bytes, set[int], dict[int, int]]:
    """One pass over the events in order: the chain (stops at its first break), the
    Merkle roots at the checkpoint sizes, and the sealed personal fields. Also returns
    the members with an erasure event, and those without a row in `subjects` (with
    their first event)."""
    tree = merkle.RootBuilder()
    prev = GENESIS
    expected = 1
    erased: set[int] = set()
    rowless: dict[int, int] = {}
    sha256 = hashlib.sha256
    encode = encode_entry
    stack = tree._stack
    broken = False
    while rows := cur.fetchmany(_BATCH):
        for row in rows:
            if row[_TYPE] == "erasure":
                erased.add(row[_SUBJECT])
            if row[_SUBJECT] not in keys and row[_SUBJECT] not in rowless:
                rowless[row[_SUBJECT]] = row[_SEQ]
            if row[_SEALED] is not None or row[_REGION] is not None or row[_BORN] is not None:
                _check_personal(row, keys, report)
            if broken:
                continue
            seq = row[_SEQ]
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
                report.problems.append(problem)
                broken = True
                continue
            # RootBuilder.append, inlined: this loop is what bounds verify's speed.
            leaf = sha256(b"\x00" + computed).digest()
            n = seq - 1
            while n & 1:
                leaf = sha256(b"\x01" + stack.pop() + leaf).digest()
                n >>= 1
            stack.append(leaf)
            prev = computed
            expected = seq + 1
            if seq in wanted:
                tree._size = seq
                _compare_roots(seq, tree.root(), wanted, report)
    tree._size = expected - 1
    if 0 in wanted:
        _compare_roots(0, merkle.EMPTY_ROOT, wanted, report)
    return tree, prev, erased, rowless


def _check_personal(row: Any, keys: dict[int, Any], report: VerifyReport) -> None:
    """Sealed fields open and agree with their clear copies; an erased member keeps none."""
    seq, sealed, region, born = row[_SEQ], row[_SEALED], row[_REGION], row[_BORN]
    key = keys.get(row[_SUBJECT])
    if key is None:
        return  # no row in subjects: reported once, at the member's first event
    if key is _ERASED:
        if region is not None or born is not None:
            report.problems.append(
                Problem(seq, "personal data of an erased member remains in clear")
            )
        return
    opened: dict[str, str] = {}
    if sealed is not None:
        try:
            opened = orjson.loads(unseal(key, bytes(sealed), row[_DIGEST].encode()))
        except SealError as err:
            report.problems.append(Problem(seq, str(err)))
            return
    if (opened.get("region"), opened.get("birth_date")) != (region, born):
        report.problems.append(
            Problem(seq, "the clear region or birth_date differs from the sealed one")
        )


def _head(
    head: Sequence[Any],
    tree: merkle.RootBuilder,
    last: bytes,
    report: VerifyReport,
) -> None:
    if report.problems and any(p.seq is not None for p in report.problems):
        return  # the chain broke; the head cannot match what was walked
    if len(head) != 1:
        report.problems.append(Problem(None, f"ledger_head: {len(head)} rows, expected 1"))
        return
    size, hashed, frontier = head[0]
    if size != tree.size or bytes(hashed) != last:
        report.problems.append(
            Problem(
                None,
                f"ledger_head: says {size} events ending in {bytes(hashed).hex()[:16]}..., "
                f"the chain has {tree.size} ending in {last.hex()[:16]}... "
                "(events were removed from its end, or added behind the writer's back)",
            )
        )
    elif bytes(frontier) != tree.state():
        report.problems.append(Problem(None, "ledger_head: the Merkle frontier differs"))


def _subjects(cur: Any, secret: bytes, report: VerifyReport) -> dict[int, Any]:
    """Every member's key (or `_ERASED`), checking that each id has its own pseudonym
    and that erasure took both the id and the key."""
    keys: dict[int, Any] = {}
    cur.execute("SELECT pseudonym, subject, key FROM subjects")
    while rows := cur.fetchmany(_BATCH):
        for ps, subject, key in rows:
            if subject is None and key is None:
                keys[ps] = _ERASED
                continue
            keys[ps] = bytes(key) if key is not None else _ERASED
            if subject is None or key is None:
                report.problems.append(
                    Problem(None, f"subjects: pseudonym {ps} is half erased (id or key left)")
                )
            elif pseudonym(secret, subject) != ps:
                report.problems.append(
                    Problem(None, f"subjects: pseudonym {ps} is not the pseudonym of {subject!r}")
                )
    return keys


def _erased(
    erased: set[int], rowless: dict[int, int], keys: dict[int, Any], report: VerifyReport
) -> None:
    """Erasure went through the ledger: a member loses their key and id only by an
    erasure event, and every member in the chain keeps a row in `subjects`."""
    for ps, seq in rowless.items():
        report.problems.append(
            Problem(seq, f"the member's key row is missing (pseudonym {ps}: id and key deleted)")
        )
    for ps in sorted(erased):
        if keys.get(ps, _ERASED) is not _ERASED:
            report.problems.append(
                Problem(None, f"subjects: member {ps} has an erasure event but keeps a key or id")
            )
    for ps, key in keys.items():
        if key is _ERASED and ps not in erased:
            report.problems.append(
                Problem(
                    None,
                    f"subjects: member {ps} has no key but no erasure event (erased behind "
                    "the ledger's back, or the erasure event was removed)",
                )
            )
