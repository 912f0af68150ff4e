"""Ledger events: immutable, time-stamped facts about one subject (DESIGN §5).

Each event type is a frozen dataclass with a stable type name. `parse_event` turns a
JSON object into an event or raises an `EventError` naming the field, what was
expected and what was found. `canonical_bytes` is the deterministic encoding from
which an absent `event_id` is derived, so importing the same event twice adds nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from typing import ClassVar, Final, Literal

from consentgate.domain.errors import EventError, InputError, UnknownPurposeError
from consentgate.domain.regions import ANY, GROUPS, is_known_region
from consentgate.domain.timeutil import format_ts, parse_date, parse_ts

__all__ = [
    "CHOICES",
    "EVENT_TYPES",
    "EVIDENCE_FIELDS",
    "SIGNALS",
    "ConsentEvent",
    "ErasureEvent",
    "Event",
    "ProfileEvent",
    "SignalEvent",
    "canonical_bytes",
    "event_to_json",
    "parse_event",
]

Choice = Literal["granted", "withdrawn", "refused"]
CHOICES: Final = ("granted", "withdrawn", "refused")
SIGNALS: Final = ("gpc",)
EVIDENCE_FIELDS: Final = ("ip", "user_agent", "note")
MAX_TEXT = 256


@dataclass(frozen=True, slots=True, kw_only=True)
class ProfileEvent:
    """The member's profile changed: their region, their birth date, or both."""

    type: ClassVar[str] = "profile"
    subject: str
    at: datetime
    region: str | None = None
    birth_date: date | None = None
    event_id: str = ""
    evidence: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsentEvent:
    """The member granted, withdrew or refused consent to one purpose."""

    type: ClassVar[str] = "consent"
    subject: str
    at: datetime
    purpose: str
    choice: Choice
    source: str | None = None
    notice_version: str | None = None
    event_id: str = ""
    evidence: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class SignalEvent:
    """A browser privacy signal was received for the member (Global Privacy Control)."""

    type: ClassVar[str] = "signal"
    subject: str
    at: datetime
    signal: str = "gpc"
    event_id: str = ""
    evidence: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class ErasureEvent:
    """The member's data was erased; nothing of theirs may be used from `at` on."""

    type: ClassVar[str] = "erasure"
    subject: str
    at: datetime
    event_id: str = ""
    evidence: Mapping[str, str] = field(default_factory=dict)


Event = ProfileEvent | ConsentEvent | SignalEvent | ErasureEvent
EVENT_TYPES: Final[dict[str, type[Event]]] = {
    cls.type: cls for cls in (ProfileEvent, ConsentEvent, SignalEvent, ErasureEvent)
}
_FIELDS: Final = {
    "profile": ("region", "birth_date"),
    "consent": ("purpose", "choice", "source", "notice_version"),
    "signal": ("signal",),
    "erasure": (),
}
_COMMON: Final = ("type", "subject", "at", "event_id", *EVIDENCE_FIELDS)


def _text(obj: Mapping[str, object], name: str, *, required: bool) -> str | None:
    value = obj.get(name)
    if value is None:
        if required:
            raise EventError(name, "a non-empty string", None)
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_TEXT:
        raise EventError(name, f"a non-empty string of at most {MAX_TEXT} characters", value)
    if not value.isprintable():
        raise EventError(name, "printable text without control characters", value)
    return value


def _region(value: str | None) -> str | None:
    if value is None:
        return None
    if value == ANY or value in GROUPS or not is_known_region(value):
        raise EventError("region", "an ISO 3166-1 alpha-2 or ISO 3166-2 code", value)
    return value


def _birth_date(value: object, at: datetime) -> date | None:
    if value is None:
        return None
    try:
        born = parse_date(value, field="birth_date")
    except InputError as err:
        raise EventError(err.field, err.expected, err.found) from None
    today = datetime.now(UTC).date()
    if born > at.date() or born > today:
        raise EventError("birth_date", "a date not after the event's time nor today", value)
    return born


def _at(obj: Mapping[str, object]) -> datetime:
    try:
        return parse_ts(obj.get("at"), field="at")
    except InputError as err:
        raise EventError(err.field, err.expected, err.found) from None


def parse_event(obj: object, *, purposes: Collection[str] | None = None) -> Event:
    """Validate a JSON object and build the event it describes.

    `purposes`, when given, are the purposes a consent event may name.
    """
    if not isinstance(obj, Mapping):
        raise EventError("(line)", "a JSON object", type(obj).__name__)
    kind = obj.get("type")
    if kind not in EVENT_TYPES:
        raise EventError("type", "one of " + ", ".join(EVENT_TYPES), kind)
    allowed = set(_COMMON) | set(_FIELDS[str(kind)])
    for name in obj:
        if name not in allowed:
            raise EventError(name, f"no such field on a {kind} event", obj[name])
    subject = _text(obj, "subject", required=True)
    assert subject is not None
    at = _at(obj)
    evidence = {n: v for n in EVIDENCE_FIELDS if (v := _text(obj, n, required=False))}
    base = {"subject": subject, "at": at, "evidence": evidence}
    event: Event
    if kind == "profile":
        region = _region(_text(obj, "region", required=False))
        born = _birth_date(obj.get("birth_date"), at)
        if region is None and born is None:
            raise EventError("region", "a region or a birth_date on a profile event", None)
        event = ProfileEvent(region=region, birth_date=born, **base)  # type: ignore[arg-type]
    elif kind == "consent":
        purpose = _text(obj, "purpose", required=True)
        if purposes is not None and purpose not in purposes:
            raise UnknownPurposeError("purpose", "one of " + ", ".join(sorted(purposes)), purpose)
        choice = obj.get("choice")
        if choice not in CHOICES:
            raise EventError("choice", "one of " + ", ".join(CHOICES), choice)
        event = ConsentEvent(
            purpose=str(purpose),
            choice=choice,  # type: ignore[arg-type]
            source=_text(obj, "source", required=False),
            notice_version=_text(obj, "notice_version", required=False),
            **base,  # type: ignore[arg-type]
        )
    elif kind == "signal":
        signal = obj.get("signal")
        if signal not in SIGNALS:
            raise EventError("signal", "one of " + ", ".join(SIGNALS), signal)
        event = SignalEvent(signal=str(signal), **base)  # type: ignore[arg-type]
    else:
        event = ErasureEvent(**base)  # type: ignore[arg-type]
    given_id = _text(obj, "event_id", required=False)
    event_id = given_id or hashlib.sha256(canonical_bytes(event)).hexdigest()
    return _with_id(event, event_id)


def _with_id(event: Event, event_id: str) -> Event:
    return replace(event, event_id=event_id)


def event_to_json(event: Event, *, with_id: bool = True) -> dict[str, str]:
    """The event as a JSON object of DESIGN §5 (canonical text for every value)."""
    out: dict[str, str] = {"type": event.type, "subject": event.subject, "at": format_ts(event.at)}
    for name in _FIELDS[event.type]:
        value = getattr(event, name)
        if value is not None:
            out[name] = value.isoformat() if isinstance(value, date) else str(value)
    out.update(event.evidence)
    if with_id:
        out["event_id"] = event.event_id
    return out


def canonical_bytes(event: Event) -> bytes:
    """Deterministic UTF-8 JSON of the event without its id: sorted keys, no spaces,
    timestamps in UTC as `format_ts` writes them, absent fields left out."""
    body = event_to_json(event, with_id=False)
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
