"""Online reads: the few statements one request needs, on one pooled driver
connection, without building SQLAlchemy statements (a decision's reads take a
fraction of a millisecond on SQLite).

Decisions need no evidence fields, so nothing is unsealed: region and birth date
come from their clear copies, which an erasure clears with the member's key.
"""

from __future__ import annotations

from sqlalchemy import Engine

from consentgate.domain.decide import Decision
from consentgate.domain.events import Event
from consentgate.ledger.rows import event_from_row

__all__ = ["ERASED", "DecisionInputs", "closed_for_erased", "decision_inputs"]

_COLUMNS = (
    "type", "at_us", "event_id", "purpose", "choice", "signal", "source", "notice_version",
    "region", "birth_date",
)  # fmt: skip
_EVENTS = f"SELECT {', '.join(_COLUMNS)} FROM events WHERE subject = {{p}} ORDER BY at_us, seq"
_KEY = "SELECT key IS NULL FROM subjects WHERE pseudonym = {p}"
_POLICY = "SELECT max(id) FROM policy_versions"

DecisionInputs = tuple[list[Event], bool, int]
ERASED = Decision(False, "erased")


def closed_for_erased(decision: Decision, erased: bool) -> Decision:
    """The ledger's one step beyond DESIGN §3 rule 4: a member erased at any time
    (their key destroyed) is `erased` at every T at which they have events, since
    the birth date and region the rule needs are gone (docs/decision-rule.md)."""
    if erased and decision.reason != "unknown_subject":
        return ERASED
    return decision


def decision_inputs(engine: Engine, ps: int, subject: str) -> DecisionInputs:
    """The member's events by time then recording order (no evidence), whether the
    member was erased, and the id of the newest policy version (for the cache)."""
    mark = "%s" if engine.dialect.name == "postgresql" else "?"
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute(_EVENTS.format(p=mark), (ps,))
        rows = cur.fetchall()
        erased = False
        if rows:
            cur.execute(_KEY.format(p=mark), (ps,))
            found = cur.fetchone()
            erased = found is None or bool(found[0])
        cur.execute(_POLICY)
        newest = cur.fetchone()
        cur.close()
    finally:
        raw.close()
    events = []
    for row in rows:
        stored = dict(zip(_COLUMNS, row, strict=True))
        clear = {k: stored[k] for k in ("region", "birth_date") if stored[k] is not None}
        events.append(event_from_row(stored, subject, clear))
    return events, erased, int(newest[0] or 0) if newest else 0
