"""Decisions from a subject's as-of summary, the shape a set-based engine computes.

An engine (the SQL snapshot of the ledger, later DuckDB and Spark) condenses each
subject's events up to T into `SubjectFacts`; `evaluate` applies DESIGN §3 to them.
It must agree with the oracle `decide()` on every input; the contract tests check it.
Instants are whole microseconds since the epoch, as the ledger stores them.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import NamedTuple

from consentgate.domain.decide import Decision
from consentgate.domain.policy import Policy
from consentgate.domain.timeutil import to_micros

__all__ = ["CHOICE_RANK", "SubjectFacts", "evaluate", "evaluator"]

#: Tie order of the latest choice among non-signal events: higher wins at the same instant.
CHOICE_RANK = {"granted": 0, "refused": 2, "withdrawn": 3}


class SubjectFacts(NamedTuple):
    """What the decision needs to know about one subject, from events at or before T.

    `choice` is the latest of valid grants, withdrawals and refusals for the purpose
    (ties resolved restrictively); GPC is kept apart because whether it counts
    depends on the region of the record. A named tuple: engines build a million of
    them per snapshot, and a tuple is the cheapest immutable record to build.
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
    return evaluator(policy, purpose, at)(facts)


def evaluator(
    policy: Policy, purpose: str, at: datetime
) -> Callable[[SubjectFacts | None], Decision]:
    """`evaluate` for one (policy, purpose, T), prepared once for many subjects: what
    depends only on T (its UTC date, the default-mode outcome) is computed here, and
    the per-region lookups are remembered."""
    day = at.astimezone(UTC).date()
    min_age = policy.min_age
    by_region: dict[str | None, tuple[str, bool]] = {}
    decisions = {reason: Decision(False, reason) for reason in _DENIALS}
    consented = Decision(True, "consented")
    start = policy.disclosure_start(purpose, at)
    if start is None:
        default = decisions["not_disclosed"]
    elif to_micros(at) < to_micros(start + policy.purposes[purpose].notice_window):
        default = decisions["notice_period"]
    else:
        default = Decision(True, "default_allowed")

    def decide_facts(facts: SubjectFacts | None) -> Decision:
        if facts is None:
            return decisions["unknown_subject"]
        if facts.erased:
            return decisions["erased"]
        born = facts.birth_date
        if born is not None:
            age = day.year - born.year - ((day.month, day.day) < (born.month, born.day))
            if age < min_age:
                return decisions["minor"]
        region = facts.region_latest or facts.region_first
        known = by_region.get(region)
        if known is None:
            known = by_region[region] = (policy.mode(purpose, region), policy.honor_gpc(region))
        mode, honor_gpc = known
        if mode == "excluded":
            return decisions["region_excluded"]
        latest = _latest_choice(facts, honor_gpc)
        if latest == "granted":
            return consented
        if latest is not None:  # withdrawn, refused or gpc
            return decisions[latest]
        if mode == "opt_in":
            return decisions["reconsent_required" if facts.invalidated_grant else "no_consent"]
        return default

    return decide_facts


_DENIALS = (
    "unknown_subject",
    "erased",
    "minor",
    "region_excluded",
    "withdrawn",
    "refused",
    "gpc",
    "reconsent_required",
    "no_consent",
    "not_disclosed",
    "notice_period",
)
