"""Decisions from a subject's as-of summary, the shape a set-based engine computes.

An engine (the SQL snapshot of the ledger, later DuckDB and Spark) condenses each
subject's events up to T into `SubjectFacts`; `evaluate` applies DESIGN §3 to them.
It must agree with the oracle `decide()` on every input; the contract tests check it.
Instants are whole microseconds since the epoch, as the ledger stores them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from consentgate.domain.decide import Decision
from consentgate.domain.policy import Policy
from consentgate.domain.timeutil import age_on, to_micros

__all__ = ["CHOICE_RANK", "SubjectFacts", "evaluate"]

#: Tie order of the latest choice among non-signal events: higher wins at the same instant.
CHOICE_RANK = {"granted": 0, "refused": 2, "withdrawn": 3}


@dataclass(frozen=True, slots=True)
class SubjectFacts:
    """What the decision needs to know about one subject, from events at or before T.

    `choice` is the latest of valid grants, withdrawals and refusals for the purpose
    (ties resolved restrictively); GPC is kept apart because whether it counts
    depends on the region of the record.
    """

    subject: str
    erased: bool
    birth_date: date | None
    region_latest: str | None
    region_first: str | None
    choice: str | None
    choice_at_us: int | None
    gpc_at_us: int | None
    invalidated_grant: bool


def _latest_choice(facts: SubjectFacts, gpc_honored: bool) -> str | None:
    gpc_at = facts.gpc_at_us if gpc_honored else None
    if gpc_at is None:
        return facts.choice
    if facts.choice_at_us is None or gpc_at > facts.choice_at_us:
        return "gpc"
    if gpc_at == facts.choice_at_us and facts.choice == "granted":
        return "gpc"  # at the same instant a signal outranks a grant
    return facts.choice


def evaluate(facts: SubjectFacts | None, policy: Policy, purpose: str, at: datetime) -> Decision:
    """The online decision (collection time = T) for a subject's facts; None = unknown."""
    if facts is None:
        return Decision(False, "unknown_subject")
    if facts.erased:
        return Decision(False, "erased")
    if facts.birth_date is not None and age_on(facts.birth_date, at) < policy.min_age:
        return Decision(False, "minor")
    region = facts.region_latest or facts.region_first
    mode = policy.mode(purpose, region)
    if mode == "excluded":
        return Decision(False, "region_excluded")
    latest = _latest_choice(facts, policy.honor_gpc(region))
    if latest in ("withdrawn", "refused", "gpc"):
        return Decision(False, latest)
    if latest == "granted":
        return Decision(True, "consented")
    if mode == "opt_in":
        return Decision(False, "reconsent_required" if facts.invalidated_grant else "no_consent")
    start = policy.disclosure_start(purpose, at)
    if start is None:
        return Decision(False, "not_disclosed")
    if to_micros(at) < to_micros(start + policy.purposes[purpose].notice_window):
        return Decision(False, "notice_period")
    return Decision(True, "default_allowed")
