"""Re-evaluate a past gate run from its manifest and report what differs.

The replay reads the same input files (their SHA-256 must still match) and asks
the same question (purpose, as-of, columns), twice:

- **reproduced**: counting only the events recorded up to the run's checkpoint,
  whose root must still be the ledger's at that size. On an intact ledger this
  gives the run's own outcome for every record: any difference is a finding.
- **current**: counting every event recorded since as well, with the policy in
  force now. An event recorded after the run but dated before its as-of (a
  back-dated opt-out), an erasure (at any date: the member's records are excluded
  as `erased` from then on) or a policy version applied since shows up here,
  named by record and reason: what the run's output should no longer contain.

A member erased since the run shows up in both views: the erasure destroyed the
personal fields the run's decision was made from.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from consentgate.domain.errors import InputError, StorageError
from consentgate.domain.policy import Policy
from consentgate.gate.inputs import find_inputs, sha256_file
from consentgate.gate.manifest import check_manifest, load_manifest
from consentgate.gate.options import GateOptions
from consentgate.gate.run import (
    LedgerPoint,
    connect_duckdb,
    no_progress,
    prepare,
)
from consentgate.ledger import tlog
from consentgate.ledger.duckscan import sql_text
from consentgate.ledger.store import Ledger

__all__ = ["Difference", "ReplayReport", "replay"]


@dataclass(frozen=True, slots=True)
class Difference:
    """One record whose outcome differs: `before` / `after` are a reason code or "kept"."""

    record_id: str
    subject_id: str | None
    before: str
    after: str


@dataclass(slots=True)
class Comparison:
    """Outcomes of one re-evaluation against the run's: `changes` counts records by
    (before, after); `differences` lists the first few, by record id."""

    ledger_size: int
    total: int
    changes: Counter[tuple[str, str]]
    differences: list[Difference]


@dataclass(slots=True)
class ReplayReport:
    manifest: dict[str, Any]
    reproduced: Comparison
    current: Comparison
    policy_changed: bool = False

    @property
    def clean(self) -> bool:
        return self.reproduced.total == 0 and self.current.total == 0


def _stored_point(ledger: Ledger, size: int, root: str) -> LedgerPoint:
    with ledger.engine.connect() as conn:
        stored = {s: note for s, _, note in tlog.stored_checkpoints(conn)}
    if size not in stored:
        raise StorageError(f"the ledger holds no checkpoint at size {size}, the one the run used")
    point = LedgerPoint.of_note(stored[size])
    if point.root != root:
        raise StorageError(
            f"the ledger's checkpoint at size {size} has root {point.root}, the run used"
            f" {root}: the ledger was rewritten"
        )
    return point


def replay(manifest_path: str | Path, ledger: Ledger, *, limit: int = 1000) -> ReplayReport:
    """Re-run the decisions of the run whose manifest is at `manifest_path` (or in
    that directory), as of its checkpoint and as of now, and compare each with the
    run's exclusions record by record."""
    path = Path(manifest_path)
    if path.is_dir():
        path = path / "manifest.json"
    m = load_manifest(path)
    before = path.parent / "exclusions.parquet"
    problems = check_manifest(path.parent)
    if problems:
        raise InputError("manifest", "an intact run directory", "; ".join(problems))
    options = GateOptions.from_manifest(m)
    names = [item["path"] for item in m["inputs"]]
    files = find_inputs(names)
    for f, item in zip(files, m["inputs"], strict=True):
        if sha256_file(f.path) != item["sha256"]:
            raise InputError(
                "input",
                f"the file the run read (SHA-256 {item['sha256'][:16]}...)",
                f"{item['path']} has changed",
            )
    then = _stored_point(ledger, m["ledger"]["size"], m["ledger"]["root"])
    now = _head_point(ledger, then)  # read-only: the replay signs nothing
    policy = ledger.purpose_policy(options.purpose, options.as_of)
    used = _run_policy(ledger, m["policy"]["sha256"])
    changed = policy.sha256 != m["policy"]["sha256"]
    with tempfile.TemporaryDirectory(prefix="consentgate-replay-") as scratch_dir:
        scratch = Path(scratch_dir)
        results = []
        for point, version in ((then, used), (now, policy)):
            con = connect_duckdb(scratch)
            try:
                engine = prepare(
                    con, ledger, files, names, options, version, point, scratch, no_progress
                )
                engine.decide(version, options.purpose, options.as_of, ledger.secret, every_id=True)
                results.append(_compare(con, engine.record_ids_sql(), before, point.size, limit))
            except duckdb.Error as err:
                raise StorageError(f"the replay could not complete: {err}") from None
            finally:
                con.close()
    return ReplayReport(
        manifest=m, reproduced=results[0], current=results[1], policy_changed=changed
    )


def _run_policy(ledger: Ledger, sha256: str) -> Policy:
    """The applied policy version the run used, found by its SHA-256."""
    for applied in ledger.policies():
        if applied.policy.sha256 == sha256:
            return applied.policy
    raise StorageError(f"the ledger holds no policy version with SHA-256 {sha256}, the run's")


def _head_point(ledger: Ledger, then: LedgerPoint) -> LedgerPoint:
    """The ledger's head, unsigned, for the current view."""
    head = ledger.head()
    return LedgerPoint(head.size, "", then.origin, "")


_OUTCOME = (
    "CASE WHEN n.reason IS NULL THEN 'missing' WHEN n.reason IN ('consented', 'default_allowed')"
    " THEN 'kept' ELSE n.reason END"
)


def _compare(con: Any, now_sql: str, before: Path, size: int, limit: int) -> Comparison:
    con.execute(f"""
CREATE OR REPLACE TEMP TABLE cg_diff AS
WITH n AS ({now_sql}),
t AS (SELECT record_id, subject_id, reason FROM read_parquet({sql_text(str(before))}))
SELECT COALESCE(n.record_id, t.record_id) AS record_id,
  COALESCE(n.subject_id, t.subject_id) AS subject_id,
  COALESCE(t.reason, 'kept') AS before, {_OUTCOME} AS after
FROM n FULL JOIN t ON n.record_id = t.record_id
WHERE COALESCE(t.reason, 'kept') IS DISTINCT FROM {_OUTCOME}
""")
    changes: Counter[tuple[str, str]] = Counter()
    for b, a, count in con.execute(
        "SELECT before, after, count(*) FROM cg_diff GROUP BY ALL"
    ).fetchall():
        changes[(b, a)] = int(count)
    rows = con.execute(
        "SELECT record_id, subject_id, before, after FROM cg_diff "
        f"ORDER BY record_id LIMIT {int(limit)}"
    ).fetchall()
    return Comparison(size, sum(changes.values()), changes, [Difference(*r) for r in rows])
