"""Ledger events: immutable, time-stamped facts about one subject (DESIGN §5).

Each event type is a frozen dataclass with a stable type name. `parse_event` turns a
JSON object into an event or raises an `EventError` naming the field, what was
expected and what was found. `canonical_bytes` is the deterministic encoding from
which an absent `event_id` is derived, so importing the same event twice adds nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from json.encoder import encode_basestring
from typing import Any, ClassVar, Final, Literal, NamedTuple

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
    "ValidEvent",
    "build_event",
    "canonical_bytes",
    "event_to_json",
    "parse_event",
    "validate_event",
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
_ALLOWED: Final = {kind: frozenset(_COMMON + names) for kind, names in _FIELDS.items()}
# Free-text fields checked the same way: printable, non-blank, at most MAX_TEXT long.
_TEXT_FIELDS: Final = {
    kind: frozenset(("subject", "event_id", *EVIDENCE_FIELDS, *extra))
    for kind, extra in (
        ("profile", ("region",)),
        ("consent", ("purpose", "source", "notice_version")),
        ("signal", ()),
        ("erasure", ()),
    )
}
_str = encode_basestring  # JSON string literal, non-ASCII kept as is
_KEY_TEXT: Final = {k: _str(k) + ":" for names in (_COMMON, *_FIELDS.values()) for k in names}


def _bad_text(name: str, value: object) -> EventError:
    return EventError(name, f"non-empty printable text of at most {MAX_TEXT} characters", value)


def _region(value: str) -> str:
    if value == ANY or value in GROUPS or not is_known_region(value):
        raise EventError("region", "an ISO 3166-1 alpha-2 or ISO 3166-2 code", value)
    return value


def _birth_date(value: object, at: datetime) -> date:
    try:
        born = parse_date(value, field="birth_date")
    except InputError as err:
        raise EventError(err.field, err.expected, err.found) from None
    today = datetime.now(UTC).date()
    if born > at.date() or born > today:
        raise EventError("birth_date", "a date not after the event's time nor today", value)
    return born


def _at(value: object) -> tuple[datetime, str]:
    """The instant and its canonical text (the input itself when already canonical)."""
    try:
        at = parse_ts(value, field="at")
    except InputError as err:
        raise EventError(err.field, err.expected, err.found) from None
    if type(value) is str and len(value) == 20 and value[19] == "Z" and value[10] == "T":
        return at, value  # YYYY-MM-DDTHH:MM:SSZ is already the canonical form
    return at, format_ts(at)


class ValidEvent(NamedTuple):
    """An event that passed validation, before it is built: what bulk import stores.

    `body` is the canonical JSON object (every value text, absent fields left out).
    """

    type: str
    body: dict[str, str]
    at: datetime
    birth_date: date | None
    event_id: str
    digest: str  # SHA-256 (hex) of the canonical bytes of `body`

    def evidence(self) -> dict[str, str]:
        return {n: self.body[n] for n in EVIDENCE_FIELDS if n in self.body}


def parse_event(obj: object, *, purposes: Collection[str] | None = None) -> Event:
    """Validate a JSON object and build the event it describes.

    `purposes`, when given, are the purposes a consent event may name. An absent
    `event_id` is derived from the canonical content (see `canonical_bytes`).
    """
    return build_event(validate_event(obj, purposes=purposes))


def build_event(valid: ValidEvent) -> Event:
    """The domain event of a validated object."""
    body = valid.body
    common: dict[str, Any] = {
        "subject": body["subject"],
        "at": valid.at,
        "event_id": valid.event_id,
        "evidence": valid.evidence(),
    }
    if valid.type == "profile":
        return ProfileEvent(region=body.get("region"), birth_date=valid.birth_date, **common)
    if valid.type == "consent":
        return ConsentEvent(
            purpose=body["purpose"],
            choice=body["choice"],  # type: ignore[arg-type]
            source=body.get("source"),
            notice_version=body.get("notice_version"),
            **common,
        )
    if valid.type == "signal":
        return SignalEvent(signal=body["signal"], **common)
    return ErasureEvent(**common)


def validate_event(
    obj: object,
    *,
    purposes: Collection[str] | None = None,
    encode: Callable[[dict[str, str]], bytes] | None = None,
) -> ValidEvent:
    """Check a JSON object against the event contract; raise `EventError` if it fails.

    `purposes`, when given, are the purposes a consent event may name. `encode`, when
    given, replaces the canonical encoder of the digest: a faster one producing the
    same bytes for validated bodies (bulk import passes orjson's, tested equal).
    """
    if type(obj) is not dict and not isinstance(obj, Mapping):
        raise EventError("(line)", "a JSON object", type(obj).__name__)
    kind = obj.get("type")
    if type(kind) is not str or kind not in _ALLOWED:
        raise EventError("type", "one of " + ", ".join(EVENT_TYPES), kind)
    allowed = _ALLOWED[kind]
    if not obj.keys() <= allowed:
        name = next(k for k in obj if k not in allowed)
        raise EventError(name, f"no such field on a {kind} event", obj[name])
    body: dict[str, str] = {"type": kind}
    for name in _TEXT_FIELDS[kind].intersection(obj):
        value = obj[name]
        if value is None:
            continue
        if (
            type(value) is not str
            or not 0 < len(value) <= MAX_TEXT
            or not value.isprintable()
            or value.isspace()
        ):
            raise _bad_text(name, value)
        body[name] = value
    if "subject" not in body:
        raise EventError("subject", "a non-empty string", None)
    at, body["at"] = _at(obj.get("at"))
    born = None
    if kind == "consent":
        purpose = body.get("purpose")
        if purpose is None:
            raise EventError("purpose", "a non-empty string", None)
        if purposes is not None and purpose not in purposes:
            raise UnknownPurposeError("purpose", "one of " + ", ".join(sorted(purposes)), purpose)
        choice = obj.get("choice")
        if choice not in CHOICES:
            raise EventError("choice", "one of " + ", ".join(CHOICES), choice)
        body["choice"] = str(choice)
    elif kind == "profile":
        if "region" in body:
            _region(body["region"])
        if obj.get("birth_date") is not None:
            born = _birth_date(obj["birth_date"], at)
            body["birth_date"] = born.isoformat()
        elif "region" not in body:
            raise EventError("region", "a region or a birth_date on a profile event", None)
    elif kind == "signal":
        signal = obj.get("signal")
        if signal not in SIGNALS:
            raise EventError("signal", "one of " + ", ".join(SIGNALS), signal)
        body["signal"] = str(signal)
    event_id = body.pop("event_id", None)
    digest = hashlib.sha256((encode or _encode)(body)).hexdigest()
    return ValidEvent(kind, body, at, born, event_id or digest, digest)


def _encode(body: Mapping[str, str]) -> bytes:
    """Canonical JSON of a flat object of strings: sorted keys, no spaces, UTF-8."""
    keys = _KEY_TEXT
    parts = [
        keys[k] + _str(body[k]) if k in keys else _str(k) + ":" + _str(body[k])
        for k in sorted(body)
    ]
    return ("{" + ",".join(parts) + "}").encode()


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
    return _encode(event_to_json(event, with_id=False))
