"""Member self-service over the ledger: what a member sees of themselves (profile,
current choice per purpose, history) and the one change they make (a choice for a
purpose). The member is always named by the caller, who must have proven who they
are (the HTTP API takes it from a member session token, never from the request).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime

from consentgate.domain.decide import Decision, decide
from consentgate.domain.events import (
    ConsentEvent,
    ErasureEvent,
    Event,
    ProfileEvent,
)
from consentgate.domain.timeutil import format_ts
from consentgate.ledger import Ledger
from consentgate.ledger.online import closed_for_erased

__all__ = ["MEMBER_SOURCE", "Choice", "Profile", "choices", "overview", "profile", "set_choice"]

#: The `source` of consent events members record themselves.
MEMBER_SOURCE = "member_self_service"


@dataclass(frozen=True, slots=True)
class Profile:
    subject: str
    region: str | None
    birth_date: date | None
    erased: bool
    events: int


@dataclass(frozen=True, slots=True)
class Choice:
    """The member's latest choice for a purpose (None: never chosen) and what it
    means now."""

    purpose: str
    title: str
    choice: str | None
    chosen_at: datetime | None
    decision: Decision


def _now() -> datetime:
    return datetime.now(UTC)


def _profile_of(subject: str, history: list[Event], at: datetime) -> Profile:
    region = born = None
    for event in history:
        if isinstance(event, ProfileEvent) and event.at <= at:
            region = event.region or region
            born = event.birth_date or born
    return Profile(subject, region, born, _erased(history), len(history))


def _erased(history: list[Event]) -> bool:
    """Whether the member was erased: any erasure, whatever its date, destroyed
    their key and personal fields when it was recorded."""
    return any(isinstance(event, ErasureEvent) for event in history)


def profile(ledger: Ledger, subject: str, *, at: datetime | None = None) -> Profile:
    """The member's region and birth date as of `at` (default now)."""
    return _profile_of(subject, ledger.history(subject), at or _now())


def choices(ledger: Ledger, subject: str, *, at: datetime | None = None) -> list[Choice]:
    """One entry per purpose of the policy in force at `at` (default now)."""
    return _choices_of(ledger, ledger.history(subject), at or _now())


def overview(
    ledger: Ledger, subject: str, *, at: datetime | None = None
) -> tuple[Profile, list[Choice]]:
    """`profile` and `choices` from one read of the member's history."""
    when = at or _now()
    history = ledger.history(subject)
    return _profile_of(subject, history, when), _choices_of(ledger, history, when)


def _choices_of(ledger: Ledger, history: list[Event], when: datetime) -> list[Choice]:
    erased = _erased(history)
    policies = ledger.policy_history()
    policy = policies.in_force(when)
    latest: dict[str, ConsentEvent] = {}
    for event in history:
        if isinstance(event, ConsentEvent) and event.at <= when:
            latest[event.purpose] = event
    out = []
    for name, purpose in sorted(policy.purposes.items()):
        chosen = latest.get(name)
        out.append(
            Choice(
                purpose=name,
                title=purpose.title,
                choice=None if chosen is None else chosen.choice,
                chosen_at=None if chosen is None else chosen.at,
                decision=closed_for_erased(
                    decide(events=history, policy=policies, purpose=name, at=when), erased
                ),
            )
        )
    return out


def set_choice(
    ledger: Ledger,
    subject: str,
    *,
    purpose: str,
    choice: str,
    at: datetime | None = None,
    evidence: Mapping[str, str] | None = None,
) -> Event:
    """Record the member's choice for `purpose`, citing the notice in force (the
    one the member was shown). Bad values raise `InputError` and record nothing."""
    when = at or _now()
    ledger.purpose_policy(purpose, when)  # refuses a purpose the policy in force lacks
    notice = ledger.policy_at(when).notice_in_force(when)
    event: dict[str, str] = {
        "type": "consent",
        "subject": subject,
        "purpose": purpose,
        "choice": choice,
        "at": format_ts(when),
        "source": MEMBER_SOURCE,
        **(evidence or {}),
    }
    if notice is not None:
        event["notice_version"] = notice.version
    return ledger.record(event)
