"""Events of DESIGN §5: parsing, validation errors that name the field, ids, canonical bytes."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, date, datetime
from typing import Any

import pytest

from consentgate.domain import (
    ConsentEvent,
    ErasureEvent,
    ProfileEvent,
    SignalEvent,
    canonical_bytes,
    event_to_json,
    parse_event,
)
from consentgate.errors import EventError, InputError, UnknownPurposeError

PROFILE = {
    "type": "profile",
    "subject": "m1",
    "at": "2024-01-02T10:00:00Z",
    "region": "US-CA",
    "birth_date": "1990-05-01",
}
CONSENT = {
    "type": "consent",
    "subject": "m1",
    "purpose": "ai_training",
    "choice": "withdrawn",
    "at": "2024-09-20T08:00:00Z",
    "source": "privacy_page",
    "notice_version": "2024-09-18",
}
SIGNAL = {"type": "signal", "subject": "m1", "signal": "gpc", "at": "2024-10-01T12:00:00Z"}
ERASURE = {"type": "erasure", "subject": "m1", "at": "2025-01-05T00:00:00Z"}
EXAMPLES = {"profile": PROFILE, "consent": CONSENT, "signal": SIGNAL, "erasure": ERASURE}
PURPOSES = {"ai_training", "genai_features"}


def with_(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    out = dict(base)
    for k, v in changes.items():
        if v is ...:
            out.pop(k, None)
        else:
            out[k] = v
    return out


# -- the four types of §5 -----------------------------------------------------------------


def test_parse_profile() -> None:
    e = parse_event(dict(PROFILE))
    assert isinstance(e, ProfileEvent)
    assert e.subject == "m1"
    assert e.at == datetime(2024, 1, 2, 10, 0, tzinfo=UTC)
    assert e.at.utcoffset() is not None
    assert e.region == "US-CA"
    assert e.birth_date == date(1990, 5, 1)


@pytest.mark.parametrize(
    ("fields", "region", "birth"),
    [
        ({"region": "DE"}, "DE", None),
        ({"birth_date": "2001-02-03"}, None, date(2001, 2, 3)),
    ],
)
def test_parse_profile_with_one_field(
    fields: dict[str, str], region: str | None, birth: date | None
) -> None:
    e = parse_event(with_(PROFILE, region=..., birth_date=...) | fields)
    assert isinstance(e, ProfileEvent)
    assert e.region == region
    assert e.birth_date == birth


def test_parse_consent() -> None:
    e = parse_event(dict(CONSENT), purposes=PURPOSES)
    assert isinstance(e, ConsentEvent)
    assert e.subject == "m1"
    assert e.purpose == "ai_training"
    assert e.choice == "withdrawn"
    assert e.at == datetime(2024, 9, 20, 8, 0, tzinfo=UTC)
    assert e.source == "privacy_page"
    assert e.notice_version == "2024-09-18"


@pytest.mark.parametrize("choice", ["granted", "withdrawn", "refused"])
def test_parse_every_choice(choice: str) -> None:
    e = parse_event(with_(CONSENT, choice=choice))
    assert isinstance(e, ConsentEvent)
    assert e.choice == choice


def test_parse_consent_minimal() -> None:
    e = parse_event(with_(CONSENT, source=..., notice_version=...))
    assert isinstance(e, ConsentEvent)
    assert e.source is None
    assert e.notice_version is None


def test_parse_signal() -> None:
    e = parse_event(dict(SIGNAL))
    assert isinstance(e, SignalEvent)
    assert e.signal == "gpc"
    assert e.subject == "m1"
    assert e.at == datetime(2024, 10, 1, 12, 0, tzinfo=UTC)


def test_parse_erasure() -> None:
    e = parse_event(dict(ERASURE))
    assert isinstance(e, ErasureEvent)
    assert e.subject == "m1"
    assert e.at == datetime(2025, 1, 5, tzinfo=UTC)


def test_timestamp_with_offset_is_the_same_instant() -> None:
    e = parse_event(with_(SIGNAL, at="2024-10-01T14:00:00+02:00"))
    assert e.at == datetime(2024, 10, 1, 12, 0, tzinfo=UTC)


def test_evidence_fields_are_accepted() -> None:
    e = parse_event(with_(CONSENT, ip="203.0.113.7", user_agent="Mozilla/5.0", note="web"))
    assert dict(e.evidence) == {"ip": "203.0.113.7", "user_agent": "Mozilla/5.0", "note": "web"}


def test_parse_does_not_mutate_its_input() -> None:
    obj = dict(CONSENT)
    parse_event(obj)
    assert obj == CONSENT


def test_events_are_frozen_and_keyword_only() -> None:
    e = parse_event(dict(ERASURE))
    with pytest.raises(dataclasses.FrozenInstanceError):
        e.subject = "m2"  # type: ignore[misc]
    with pytest.raises(TypeError):
        ErasureEvent("m1", datetime(2025, 1, 1, tzinfo=UTC))  # type: ignore[misc]


@pytest.mark.parametrize("kind", EXAMPLES)
def test_event_to_json_round_trips(kind: str) -> None:
    e = parse_event(dict(EXAMPLES[kind]))
    j = event_to_json(e)
    assert j["type"] == kind
    assert json.loads(json.dumps(j)) == j  # plain JSON values
    again = parse_event(j)
    assert again == e
    assert again.event_id == e.event_id


# -- bad input: an error that names the field ---------------------------------------------

BAD = [
    # structure and type
    pytest.param(with_(ERASURE, type=...), "type", id="type_missing"),
    pytest.param(with_(ERASURE, type="delete"), "type", id="type_unknown"),
    pytest.param(with_(ERASURE, type=3), "type", id="type_not_a_string"),
    pytest.param(with_(ERASURE, colour="red"), "colour", id="unknown_field"),
    pytest.param(with_(ERASURE, purpose="ai_training"), "purpose", id="field_of_another_type"),
    pytest.param(with_(SIGNAL, choice="granted"), "choice", id="choice_on_a_signal"),
    # subject
    pytest.param(with_(ERASURE, subject=...), "subject", id="subject_missing"),
    pytest.param(with_(ERASURE, subject=""), "subject", id="subject_empty"),
    pytest.param(with_(ERASURE, subject="   "), "subject", id="subject_blank"),
    pytest.param(with_(ERASURE, subject=42), "subject", id="subject_not_a_string"),
    pytest.param(with_(ERASURE, subject=None), "subject", id="subject_null"),
    # at
    pytest.param(with_(ERASURE, at=...), "at", id="at_missing"),
    pytest.param(with_(ERASURE, at="2025-01-05T00:00:00"), "at", id="at_naive"),
    pytest.param(with_(ERASURE, at="2025-01-05"), "at", id="at_date_only"),
    pytest.param(with_(ERASURE, at="yesterday"), "at", id="at_unreadable"),
    pytest.param(with_(ERASURE, at="2025-02-30T00:00:00Z"), "at", id="at_impossible_date"),
    pytest.param(with_(ERASURE, at=1736035200), "at", id="at_a_number"),
    pytest.param(with_(ERASURE, at=None), "at", id="at_null"),
    # consent
    pytest.param(with_(CONSENT, purpose=...), "purpose", id="purpose_missing"),
    pytest.param(with_(CONSENT, purpose=""), "purpose", id="purpose_empty"),
    pytest.param(with_(CONSENT, purpose=7), "purpose", id="purpose_not_a_string"),
    pytest.param(with_(CONSENT, choice=...), "choice", id="choice_missing"),
    pytest.param(with_(CONSENT, choice="maybe"), "choice", id="choice_outside_enum"),
    pytest.param(with_(CONSENT, choice="GRANTED"), "choice", id="choice_wrong_case"),
    pytest.param(with_(CONSENT, choice=True), "choice", id="choice_not_a_string"),
    pytest.param(with_(CONSENT, source=5), "source", id="source_not_a_string"),
    pytest.param(with_(CONSENT, notice_version=5), "notice_version", id="notice_not_a_string"),
    # signal
    pytest.param(with_(SIGNAL, signal="dnt"), "signal", id="signal_unknown"),
    pytest.param(with_(SIGNAL, signal=...), "signal", id="signal_missing"),
    # profile
    pytest.param(with_(PROFILE, region="XX"), "region", id="region_unknown_country"),
    pytest.param(with_(PROFILE, region="US-ZZ"), "region", id="region_unknown_subdivision"),
    pytest.param(with_(PROFILE, region="USA"), "region", id="region_alpha3"),
    pytest.param(with_(PROFILE, region=""), "region", id="region_empty"),
    pytest.param(with_(PROFILE, region=1), "region", id="region_not_a_string"),
    pytest.param(with_(PROFILE, birth_date="2999-01-01"), "birth_date", id="birth_future"),
    pytest.param(with_(PROFILE, birth_date="1990-13-01"), "birth_date", id="birth_bad_month"),
    pytest.param(with_(PROFILE, birth_date="01/05/1990"), "birth_date", id="birth_format"),
    pytest.param(with_(PROFILE, birth_date=19900501), "birth_date", id="birth_a_number"),
    # evidence
    pytest.param(with_(CONSENT, ip=["1.2.3.4"]), "ip", id="evidence_not_a_string"),
]


@pytest.mark.parametrize(("obj", "field"), BAD)
def test_bad_event_names_the_field(obj: dict[str, Any], field: str) -> None:
    with pytest.raises(EventError) as info:
        parse_event(obj)
    err = info.value
    assert err.field == field
    assert isinstance(err.expected, str)
    assert err.expected
    assert field in str(err)


@pytest.mark.parametrize("obj", [None, [], "profile", 3, ["type", "erasure"]])
def test_not_an_object(obj: object) -> None:
    with pytest.raises(EventError):
        parse_event(obj)  # type: ignore[arg-type]


def test_bad_event_reports_what_was_found() -> None:
    with pytest.raises(EventError) as info:
        parse_event(with_(CONSENT, choice="maybe"))
    assert info.value.found == "maybe"
    assert "granted" in info.value.expected


def test_unknown_purpose_with_purposes() -> None:
    with pytest.raises(UnknownPurposeError) as info:
        parse_event(with_(CONSENT, purpose="ads"), purposes=PURPOSES)
    assert isinstance(info.value, InputError)
    assert info.value.field == "purpose"
    assert info.value.found == "ads"


def test_any_purpose_without_purposes() -> None:
    e = parse_event(with_(CONSENT, purpose="ads"))
    assert isinstance(e, ConsentEvent)
    assert e.purpose == "ads"


@pytest.mark.parametrize("region", ["DE", "US", "US-CA", "FR-75C", "NO-03", "GB", "BR-SP"])
def test_iso_regions_accepted(region: str) -> None:
    e = parse_event(with_(PROFILE, region=region))
    assert isinstance(e, ProfileEvent)
    assert e.region == region


# -- event ids ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", EXAMPLES)
def test_event_id_is_derived_deterministically(kind: str) -> None:
    a = parse_event(dict(EXAMPLES[kind]))
    b = parse_event(dict(EXAMPLES[kind]))
    assert a.event_id
    assert isinstance(a.event_id, str)
    assert a.event_id == b.event_id


@pytest.mark.parametrize("kind", EXAMPLES)
def test_event_id_does_not_depend_on_key_order(kind: str) -> None:
    obj = EXAMPLES[kind]
    reordered = dict(reversed(list(obj.items())))
    assert parse_event(reordered).event_id == parse_event(dict(obj)).event_id


@pytest.mark.parametrize(
    "at",
    [
        "2024-09-20T10:00:00+02:00",
        "2024-09-20T03:00:00-05:00",
        "2024-09-20T08:00:00+00:00",
        "2024-09-20T08:00:00.000Z",
        "2024-09-20T08:00:00.000000+00:00",
        "2024-09-20T13:30:00+05:30",
    ],
)
def test_event_id_same_instant_other_offset(at: str) -> None:
    a = parse_event(dict(CONSENT))
    b = parse_event(with_(CONSENT, at=at))
    assert a.event_id == b.event_id
    assert canonical_bytes(a) == canonical_bytes(b)


CHANGES = [
    pytest.param(CONSENT, {"subject": "m2"}, id="consent_subject"),
    pytest.param(CONSENT, {"at": "2024-09-20T08:00:01Z"}, id="consent_at"),
    pytest.param(CONSENT, {"at": "2024-09-20T08:00:00.000001Z"}, id="consent_at_microsecond"),
    pytest.param(CONSENT, {"purpose": "genai_features"}, id="consent_purpose"),
    pytest.param(CONSENT, {"choice": "granted"}, id="consent_choice"),
    pytest.param(CONSENT, {"source": "signup"}, id="consent_source"),
    pytest.param(CONSENT, {"source": ...}, id="consent_source_removed"),
    pytest.param(CONSENT, {"notice_version": "2025-01-01"}, id="consent_notice_version"),
    pytest.param(PROFILE, {"region": "US-NY"}, id="profile_region"),
    pytest.param(PROFILE, {"region": ...}, id="profile_region_removed"),
    pytest.param(PROFILE, {"birth_date": "1990-05-02"}, id="profile_birth_date"),
    pytest.param(PROFILE, {"at": "2024-01-02T10:00:00+01:00"}, id="profile_at_other_instant"),
    pytest.param(SIGNAL, {"subject": "m2"}, id="signal_subject"),
    pytest.param(SIGNAL, {"at": "2024-10-01T12:00:01Z"}, id="signal_at"),
    pytest.param(ERASURE, {"subject": "m2"}, id="erasure_subject"),
    pytest.param(ERASURE, {"at": "2025-01-05T00:00:01Z"}, id="erasure_at"),
    pytest.param(ERASURE, {"type": "signal", "signal": "gpc"}, id="type"),
]


@pytest.mark.parametrize(("base", "change"), CHANGES)
def test_any_changed_field_changes_the_event_id(
    base: dict[str, Any], change: dict[str, Any]
) -> None:
    a = parse_event(dict(base))
    b = parse_event(with_(base, **change))
    assert a.event_id != b.event_id
    assert canonical_bytes(a) != canonical_bytes(b)


def test_event_ids_of_all_examples_differ() -> None:
    ids = {parse_event(dict(o)).event_id for o in EXAMPLES.values()}
    assert len(ids) == len(EXAMPLES)


def test_explicit_event_id_is_kept() -> None:
    e = parse_event(with_(CONSENT, event_id="evt-0001"))
    assert e.event_id == "evt-0001"
    assert event_to_json(e)["event_id"] == "evt-0001"
    derived = parse_event(dict(CONSENT))
    assert derived.event_id != "evt-0001"


def test_derived_event_id_survives_a_round_trip() -> None:
    e = parse_event(dict(PROFILE))
    assert parse_event(event_to_json(e)).event_id == e.event_id


# -- canonical bytes ----------------------------------------------------------------------


def _canonical(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8"
    )


@pytest.mark.parametrize("kind", EXAMPLES)
def test_canonical_bytes_is_sorted_compact_utf8_json(kind: str) -> None:
    e = parse_event(dict(EXAMPLES[kind]))
    raw = canonical_bytes(e)
    assert isinstance(raw, bytes)
    obj = json.loads(raw.decode("utf-8"))
    assert isinstance(obj, dict)
    assert raw == _canonical(obj)
    assert obj["type"] == kind
    assert obj["subject"] == "m1"
    # the content of the event, without its id (the id is derived from it)
    assert "event_id" not in obj
    for key, value in EXAMPLES[kind].items():
        if key != "at":
            assert obj[key] == value


def test_canonical_bytes_raw_utf8_not_escaped() -> None:
    e = parse_event(with_(ERASURE, subject="Zoë-東京"))
    raw = canonical_bytes(e)
    assert "Zoë-東京".encode() in raw
    assert b"\\u" not in raw
    assert raw == _canonical(json.loads(raw))


def test_canonical_bytes_of_constructed_and_parsed_events_agree() -> None:
    parsed = parse_event(dict(SIGNAL))
    built = SignalEvent(subject="m1", at=datetime(2024, 10, 1, 12, 0, tzinfo=UTC), signal="gpc")
    assert canonical_bytes(built) == canonical_bytes(parsed)


def test_canonical_bytes_independent_of_explicit_event_id() -> None:
    a = parse_event(dict(CONSENT))
    b = parse_event(with_(CONSENT, event_id="evt-0001"))
    assert canonical_bytes(a) == canonical_bytes(b)
