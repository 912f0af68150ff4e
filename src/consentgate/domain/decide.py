"""The decision rule of DESIGN §3: the reference oracle every engine is checked against.

`decide` works from a subject's raw events, written to read like the specification
rather than to be fast. Engines (the SQL snapshot, DuckDB, Spark) compute the same
answer their own way and are tested against this function record by record.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Final

from consentgate.domain.errors import UnknownPurposeError
from consentgate.domain.events import ConsentEvent, ErasureEvent, Event, ProfileEvent, SignalEvent
from consentgate.domain.policy import Mode, Policy, PolicyHistory, stricter
from consentgate.domain.timeutil import age_on

__all__ = ["ALLOWED_REASONS", "REASONS", "Decision", "Record", "decide"]

#: Every reason code, in rule order. A public, stable contract.
REASONS: Final = (
    "missing_subject",
    "invalid_record",
    "unknown_subject",
    "erased",
    "minor",
    "region_excluded",
    "source_not_eligible",
    "withdrawn",
    "refused",
    "gpc",
    "consented",
    "sensitive",
    "reconsent_required",
    "no_consent",
    "not_disclosed",
    "notice_period",
    "collected_before_notice",
    "default_allowed",
)
ALLOWED_REASONS: Final = frozenset({"consented", "default_allowed"})

# Ties in the latest choice resolve restrictively: withdrawn, refused, gpc, grant.
_TIE_RANK: Final = {"granted": 0, "gpc": 1, "refused": 2, "withdrawn": 3}


@dataclass(frozen=True, slots=True)
class Decision:
    """Whether the use is allowed, and the one reason code that decided it."""

    allowed: bool
    reason: str


@dataclass(frozen=True, slots=True)
class Record:
    """The facts of one dataset record. `collected_at=None` means missing or unreadable."""

    subject: str | None
    collected_at: datetime | None
    source: str | None = None
    sensitive: bool = False


def _deny(reason: str) -> Decision:
    return Decision(False, reason)


def _latest_region(events: list[Event], t: datetime) -> str | None:
    best: tuple[datetime, int] | None = None
    region = None
    for i, ev in enumerate(events):
        if isinstance(ev, ProfileEvent) and ev.region is not None and ev.at <= t:
            key = (ev.at, i)
            if best is None or key > best:
                best, region = key, ev.region
    return region


def _earliest_region(events: list[Event]) -> str | None:
    """The region as of the first instant any region was set (among several set at
    that instant, the one recorded last, as `_latest_region` would pick there)."""
    best: tuple[datetime, int] | None = None
    region = None
    for i, ev in enumerate(events):
        if isinstance(ev, ProfileEvent) and ev.region is not None:
            key = (ev.at, -i)
            if best is None or key < best:
                best, region = key, ev.region
    return region


def _birth_date(events: list[Event]) -> date | None:
    best: tuple[datetime, int] | None = None
    born = None
    for i, ev in enumerate(events):
        if isinstance(ev, ProfileEvent) and ev.birth_date is not None:
            key = (ev.at, i)
            if best is None or key > best:
                best, born = key, ev.birth_date
    return born


def decide(
    *,
    events: Iterable[Event],
    policy: PolicyHistory | Policy,
    purpose: str,
    at: datetime,
    record: Record | None = None,
) -> Decision:
    """Decide whether a subject's data may be used for `purpose` at `at`.

    `events` are the subject's events in recording order (others are ignored only
    if the caller filters them; pass one subject's events). `record=None` asks the
    online question about the subject itself: collection time = `at`, and the
    record-level rules (source, sensitive) do not apply.
    """
    pol = policy.in_force(at) if isinstance(policy, PolicyHistory) else policy
    if purpose not in pol.purposes:
        raise UnknownPurposeError("purpose", "one of " + ", ".join(sorted(pol.purposes)), purpose)
    spec = pol.purposes[purpose]
    T = at
    if record is not None:
        if not record.subject:
            return _deny("missing_subject")
        c = record.collected_at
        if c is None or c.tzinfo is None or c.utcoffset() is None or c > T:
            return _deny("invalid_record")  # missing, naive (unreadable) or after T
    else:
        c = T
    evs = [ev for ev in events if ev.at <= T]
    if not evs:
        return _deny("unknown_subject")
    if any(isinstance(ev, ErasureEvent) for ev in evs):
        return _deny("erased")
    born = _birth_date(evs)
    if born is not None and (age_on(born, c) < pol.min_age or age_on(born, T) < pol.min_age):
        return _deny("minor")
    fallback = _earliest_region(evs)
    region_c = _latest_region(evs, c) or fallback
    region_t = _latest_region(evs, T) or fallback
    mode: Mode = stricter(pol.mode(purpose, region_c), pol.mode(purpose, region_t))
    if mode == "excluded":
        return _deny("region_excluded")
    sources = spec.eligible_sources
    if record is not None and sources is not None and record.source not in sources:
        return _deny("source_not_eligible")
    cutoff = pol.reconsent_cutoff(purpose, T)
    latest = _latest_choice(
        evs, purpose, cutoff, pol.honor_gpc(region_c) or pol.honor_gpc(region_t)
    )
    if latest in ("withdrawn", "refused", "gpc"):
        return _deny(latest)
    if latest == "granted":
        return Decision(True, "consented")
    if record is not None and record.sensitive:
        return _deny("sensitive")
    if mode == "opt_in":
        invalidated = cutoff is not None and any(
            isinstance(ev, ConsentEvent)
            and ev.purpose == purpose
            and ev.choice == "granted"
            and ev.at < cutoff
            for ev in evs
        )
        return _deny("reconsent_required" if invalidated else "no_consent")
    start = pol.disclosure_start(purpose, T)
    if start is None:
        return _deny("not_disclosed")
    if start + spec.notice_window > T:
        return _deny("notice_period")
    if c < start:
        return _deny("collected_before_notice")
    return Decision(True, "default_allowed")


def _latest_choice(
    evs: list[Event], purpose: str, cutoff: datetime | None, gpc_honored: bool
) -> str | None:
    best: tuple[datetime, int] | None = None
    for ev in evs:
        kind: str
        if isinstance(ev, ConsentEvent) and ev.purpose == purpose:
            if ev.choice == "granted" and cutoff is not None and ev.at < cutoff:
                continue  # invalidated by a notice requiring re-consent
            kind = ev.choice
        elif isinstance(ev, SignalEvent) and ev.signal == "gpc" and gpc_honored:
            kind = "gpc"
        else:
            continue
        key = (ev.at, _TIE_RANK[kind])
        if best is None or key > best:
            best = key
    if best is None:
        return None
    return next(k for k, rank in _TIE_RANK.items() if rank == best[1])
