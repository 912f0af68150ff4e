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

import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Engine

from consentgate.ledger import merkle
from consentgate.ledger.checkpoint import CheckpointError, Verifier, open_checkpoint
from consentgate.ledger.report import Problem, VerifyReport
from consentgate.ledger.tlog import read_log, stored_checkpoints
from consentgate.ledger.walk import (
    CHUNK,
    ERASED,
    combine,
    lenient_cursor,
    load_keys,
    pool,
    ranges,
    sqlite_file,
    walk,
    walk_range,
    workers_for,
)

__all__ = ["Problem", "VerifyReport", "verify_ledger"]


def verify_ledger(
    engine: Engine,
    secret: bytes,
    origin: str,
    *,
    verifier: Verifier | None = None,
    external: Sequence[str] = (),
    workers: int | None = None,
    chunk: int = CHUNK,
) -> VerifyReport:
    """Check the ledger behind `engine`; `external` are signed checkpoint notes (or
    logs of them) kept outside the database, checked with `verifier`.

    Ledgers of `walk.PARALLEL_FROM` events or more are walked in `workers` processes (default:
    one per core), each over a range of positions aligned to `chunk` (a power of 2)."""
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
        stored = {size for size, claims in wanted.items() for label, _ in claims if label[0] == "s"}
        for size, claims in sorted(wanted.items()):
            if size not in stored and any(label.startswith("external") for label, _ in claims):
                # Every checkpoint reaches the log from the database: one the log has
                # and the database lacks was deleted from it.
                report.problems.append(
                    Problem(
                        None,
                        f"checkpoints: the one of size {size} in the external log "
                        "is missing from the database (deleted)",
                    )
                )
        with lenient_cursor(conn.connection.driver_connection) as cur:
            head = conn.exec_driver_sql("SELECT size, hash, frontier FROM ledger_head").all()
            last_seq = int(conn.exec_driver_sql("SELECT max(seq) FROM events").scalar() or 0)
            count = workers if workers is not None else workers_for(engine, last_seq)
            spans = ranges(last_seq, count, chunk)
            with pool(len(spans)) as workers_pool:
                url = engine.url.render_as_string(hide_password=False)
                jobs = [
                    workers_pool.submit(walk_range, url, secret, start, end, set(wanted), chunk)
                    for start, end in spans[1:]
                ]
                keys = load_keys(cur, secret, report)
                start, end = spans[0]
                segments = [
                    walk(cur, conn.dialect.name, start, end, set(wanted), keys, secret, chunk,
                         sqlite_file(engine))
                ]  # fmt: skip
                segments += [job.result() for job in jobs]
            tree, last, erased, rowless = combine(segments, wanted, report)
            _head(head, tree, last, report)
            _erased(erased, rowless, keys, report)
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
        if keys.get(ps, ERASED) is not ERASED:
            report.problems.append(
                Problem(None, f"subjects: member {ps} has an erasure event but keeps a key or id")
            )
    for ps, key in keys.items():
        if key is ERASED and ps not in erased:
            report.problems.append(
                Problem(
                    None,
                    f"subjects: member {ps} has no key but no erasure event (erased behind "
                    "the ledger's back, or the erasure event was removed)",
                )
            )
