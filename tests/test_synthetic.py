"""The synthetic population: format, determinism, ordering and realism (DESIGN §5)."""

from __future__ import annotations

import ipaddress
import json
import re
from collections import Counter, defaultdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from consentgate.synthetic import (
    NOTICE_DISCLOSURE,
    NOTICE_RECONSENT,
    generate_population,
    write_events_jsonl,
)

N = 20_000
DISCLOSURE_AT = "2024-06-26T00:00:00Z"
RECONSENT_AT = "2025-05-27T00:00:00Z"
TIMELINE_START = datetime(2019, 1, 1, tzinfo=UTC)
TIMELINE_END = datetime(2025, 10, 1, tzinfo=UTC)

KEYS = {
    "profile": ({"type", "subject", "at"}, {"region", "birth_date"}),
    "consent": (
        {"type", "subject", "purpose", "choice", "at", "source", "notice_version"},
        {"ip", "user_agent"},
    ),
    "signal": ({"type", "subject", "signal", "at"}, set()),
    "erasure": ({"type", "subject", "at"}, set()),
}
SOURCES = {"privacy_page", "signup", "settings_api", "email_link"}
CHOICES = {"granted", "withdrawn", "refused"}
PURPOSES = {"ai_training", "genai_features"}
REGION_SHAPE = re.compile(r"[A-Z]{2}(-[A-Z0-9]{1,3})?")
SUBJECT_SHAPE = re.compile(r"m\d{6}")
TIMESTAMP_SHAPE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
DOC_NETWORKS = [
    ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")
]
EU = "AT BE BG HR CY CZ DK EE FI FR DE GR HU IE IT LV LT LU MT NL PL PT RO SK SI ES SE"
EEA = frozenset(f"{EU} IS LI NO".split(" "))
ISO_DATA = Path(__file__).resolve().parents[1] / "src" / "consentgate" / "domain" / "data"

Event = dict[str, str]


def group(region: str | None) -> str:
    if region is None:
        return "unknown"
    if region.startswith("US-"):
        return "US"
    if region == "CA" or region.startswith("CA-"):
        return "CA"
    if region in EEA:
        return "EEA"
    if region in {"GB", "CH", "BR", "IN"}:
        return region
    return "other"


def age_on(birth: date, day: date) -> int:
    return day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))


@pytest.fixture(scope="module")
def events() -> list[Event]:
    return list(generate_population(N, seed=7))


@pytest.fixture(scope="module")
def by_subject(events: list[Event]) -> dict[str, list[Event]]:
    subjects: dict[str, list[Event]] = defaultdict(list)
    for event in events:
        subjects[event["subject"]].append(event)
    return subjects


@pytest.fixture(scope="module")
def first_region(by_subject: dict[str, list[Event]]) -> dict[str, str | None]:
    return {s: es[0].get("region") for s, es in by_subject.items()}


def share(count: int, total: int) -> float:
    assert total > 0
    return count / total


# --- determinism --------------------------------------------------------------------------


def test_same_seed_gives_identical_events() -> None:
    assert list(generate_population(2_000, seed=11)) == list(generate_population(2_000, seed=11))


def test_default_seed_is_seven() -> None:
    assert list(generate_population(500)) == list(generate_population(500, seed=7))


def test_different_seeds_give_different_events() -> None:
    assert list(generate_population(2_000, seed=1)) != list(generate_population(2_000, seed=2))


def test_zero_members_yields_nothing_and_negative_is_rejected() -> None:
    assert list(generate_population(0)) == []
    with pytest.raises(ValueError, match="n_members"):
        generate_population(-1)


def test_a_larger_population_keeps_the_subject_ids_of_a_smaller_one() -> None:
    small = {e["subject"] for e in generate_population(300, seed=5)}
    assert small == {f"m{i:06d}" for i in range(1, 301)}


# --- format -------------------------------------------------------------------------------


def test_every_event_has_exactly_the_keys_of_its_type(events: list[Event]) -> None:
    for event in events:
        assert event["type"] in KEYS, event
        required, optional = KEYS[event["type"]]
        keys = set(event)
        assert required <= keys, event
        assert keys - required <= optional, event
        assert all(isinstance(v, str) and v for v in event.values()), event


def test_field_values_are_valid(events: list[Event]) -> None:
    for event in events:
        assert SUBJECT_SHAPE.fullmatch(event["subject"]), event
        kind = event["type"]
        if kind == "profile":
            assert "region" in event or "birth_date" in event, event
            if "region" in event:
                assert REGION_SHAPE.fullmatch(event["region"]), event
            if "birth_date" in event:
                born = date.fromisoformat(event["birth_date"])
                assert date(1930, 1, 1) <= born <= date(2012, 12, 31), event
        elif kind == "consent":
            assert event["purpose"] in PURPOSES, event
            assert event["choice"] in CHOICES, event
            assert event["source"] in SOURCES, event
            assert event["notice_version"] in {NOTICE_DISCLOSURE, NOTICE_RECONSENT}, event
            in_force = NOTICE_RECONSENT if event["at"] >= RECONSENT_AT else NOTICE_DISCLOSURE
            assert event["notice_version"] == in_force, event
            assert ("ip" in event) == ("user_agent" in event), event
            if "ip" in event:
                address = ipaddress.ip_address(event["ip"])
                assert any(address in net for net in DOC_NETWORKS), event
        elif kind == "signal":
            assert event["signal"] == "gpc", event


def test_regions_are_iso_3166_codes(events: list[Event]) -> None:
    if not (ISO_DATA / "iso3166-2.txt").exists():
        pytest.skip("vendored ISO 3166 lists not present")
    known: set[str] = set()
    for name in ("iso3166-1.txt", "iso3166-2.txt"):
        lines = (ISO_DATA / name).read_text("utf-8").splitlines()
        known.update(line for line in lines if line and not line.startswith("#"))
    regions = {e["region"] for e in events if "region" in e}
    assert regions - known == set()


def test_timestamps_are_utc_with_z_and_parse(events: list[Event]) -> None:
    for event in events:
        at = event["at"]
        assert TIMESTAMP_SHAPE.fullmatch(at), event
        parsed = datetime.fromisoformat(at)
        assert parsed.utcoffset() == timedelta(0), event
        assert TIMELINE_START <= parsed < TIMELINE_END, event


def test_events_are_sorted_by_at(events: list[Event]) -> None:
    stamps = [e["at"] for e in events]
    assert stamps == sorted(stamps)
    parsed = [datetime.fromisoformat(s) for s in stamps]
    assert parsed == sorted(parsed)


def test_every_member_starts_with_a_full_profile(by_subject: dict[str, list[Event]]) -> None:
    assert len(by_subject) == N
    for subject, history in by_subject.items():
        first = history[0]
        assert first["type"] == "profile", subject
        assert "birth_date" in first, subject
        assert all(e["at"] > first["at"] for e in history[1:]), subject


def test_nothing_happens_after_an_erasure(by_subject: dict[str, list[Event]]) -> None:
    erased = 0
    for history in by_subject.values():
        kinds = [e["type"] for e in history]
        if "erasure" in kinds:
            erased += 1
            assert kinds.count("erasure") == 1
            assert history[-1]["type"] == "erasure"
            assert "2025-01-01" <= history[-1]["at"] < "2025-10-01"
    assert 0.005 <= share(erased, N) <= 0.015


# --- realism --------------------------------------------------------------------------------


def test_region_mix(first_region: dict[str, str | None]) -> None:
    counts = Counter(group(r) for r in first_region.values())
    expected = {
        "US": (0.36, 0.44),
        "EEA": (0.22, 0.28),
        "GB": (0.045, 0.075),
        "CH": (0.012, 0.03),
        "CA": (0.035, 0.065),
        "BR": (0.045, 0.075),
        "IN": (0.065, 0.095),
        "other": (0.02, 0.04),
        "unknown": (0.03, 0.07),
    }
    for name, (low, high) in expected.items():
        assert low <= share(counts[name], N) <= high, (name, counts[name])
    us = Counter(r for r in first_region.values() if r and r.startswith("US-"))
    top = [code for code, _ in us.most_common(4)]
    assert "US-CA" in top
    assert "US-TX" in top
    assert len(us) >= 20
    assert {"CA", "CA-ON", "CA-QC"} <= set(first_region.values())
    assert {"NO", "IS"} <= set(first_region.values())


def test_unknown_region_members_never_get_a_region(by_subject: dict[str, list[Event]]) -> None:
    unknown = [s for s, es in by_subject.items() if not any("region" in e for e in es)]
    assert 0.03 <= share(len(unknown), N) <= 0.07


def test_movers(by_subject: dict[str, list[Event]]) -> None:
    moves: Counter[tuple[str, str]] = Counter()
    for history in by_subject.values():
        regions = [e["region"] for e in history if "region" in e]
        if len(regions) > 1:
            assert regions[0] != regions[-1]
            moves[(group(regions[0]), group(regions[-1]))] += 1
    movers = sum(moves.values())
    assert 0.015 <= share(movers, N) <= 0.045
    # both directions between permissive and strict jurisdictions occur
    assert moves[("US", "GB")] + moves[("US", "EEA")] > 0
    assert moves[("EEA", "US")] > 0


def test_minors_including_some_who_turn_18_in_2025(by_subject: dict[str, list[Event]]) -> None:
    births = {s: date.fromisoformat(es[0]["birth_date"]) for s, es in by_subject.items()}
    minors = [s for s, b in births.items() if age_on(b, date(2024, 6, 26)) < 18]
    assert 0.025 <= share(len(minors), N) <= 0.06
    grows_up = [s for s in minors if age_on(births[s], date(2025, 9, 30)) >= 18]
    assert len(grows_up) >= 0.002 * N
    adults = [b for b in births.values() if age_on(b, date(2024, 6, 26)) >= 18]
    assert share(len(adults), N) > 0.9


def test_recent_joiners(by_subject: dict[str, list[Event]]) -> None:
    recent = [s for s, es in by_subject.items() if es[0]["at"] >= "2025-06-26"]
    assert 0 < len(recent) < 0.01 * N
    assert max(es[0]["at"] for es in by_subject.values()) < "2025-07-01"


def test_every_event_type_and_choice_occurs(events: list[Event]) -> None:
    kinds = Counter(e["type"] for e in events)
    assert set(kinds) == set(KEYS)
    choices = Counter((e["purpose"], e["choice"]) for e in events if e["type"] == "consent")
    for purpose in PURPOSES:
        for choice in CHOICES:
            assert choices[(purpose, choice)] > 0, (purpose, choice)
    sources = Counter(e["source"] for e in events if e["type"] == "consent")
    assert set(sources) == SOURCES
    consents = [e for e in events if e["type"] == "consent"]
    assert all(e["at"] >= DISCLOSURE_AT for e in consents)
    assert 0.2 <= share(sum("ip" in e for e in consents), len(consents)) <= 0.4


def test_opt_out_regions_mostly_withdraw_and_opt_in_regions_grant_or_refuse(
    by_subject: dict[str, list[Event]], first_region: dict[str, str | None]
) -> None:
    members: Counter[str] = Counter()
    chose: defaultdict[str, Counter[str]] = defaultdict(Counter)
    for subject, history in by_subject.items():
        kind = "opt_out" if group(first_region[subject]) in {"US", "BR"} else "opt_in"
        members[kind] += 1
        choices = {
            e["choice"] for e in history if e["type"] == "consent" and e["purpose"] == "ai_training"
        }
        chose[kind].update(choices)
    assert 0.09 <= share(chose["opt_out"]["withdrawn"], members["opt_out"]) <= 0.15
    assert chose["opt_out"]["refused"] == 0
    assert chose["opt_out"]["granted"] > 0  # some re-grant after withdrawing
    assert 0.21 <= share(chose["opt_in"]["granted"], members["opt_in"]) <= 0.32
    assert 0.07 <= share(chose["opt_in"]["refused"], members["opt_in"]) <= 0.13
    assert chose["opt_in"]["withdrawn"] > 0


def test_reconsent_after_the_material_change(
    by_subject: dict[str, list[Event]], first_region: dict[str, str | None]
) -> None:
    early = renewed = 0
    for subject, history in by_subject.items():
        if group(first_region[subject]) in {"US", "BR"}:
            continue
        grants = [
            e["at"]
            for e in history
            if e["type"] == "consent" and e["purpose"] == "ai_training" and e["choice"] == "granted"
        ]
        if grants and grants[0] < RECONSENT_AT:
            early += 1
            renewed += grants[-1] >= RECONSENT_AT
    assert early > 0.1 * N
    assert 0.3 <= share(renewed, early) <= 0.5


def test_gpc_signals(
    by_subject: dict[str, list[Event]], first_region: dict[str, str | None]
) -> None:
    members: Counter[str] = Counter()
    signalled: Counter[str] = Counter()
    for subject, history in by_subject.items():
        name = group(first_region[subject])
        members[name] += 1
        signalled[name] += any(e["type"] == "signal" for e in history)
    assert 0.06 <= share(signalled["US"], members["US"]) <= 0.10
    assert 0.015 <= share(signalled["EEA"], members["EEA"]) <= 0.045


def test_genai_features_choices(by_subject: dict[str, list[Event]]) -> None:
    members = [
        s for s, es in by_subject.items() if any(e.get("purpose") == "genai_features" for e in es)
    ]
    assert 0.03 <= share(len(members), N) <= 0.07


# --- files and speed --------------------------------------------------------------------------


def test_write_events_jsonl_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    count = write_events_jsonl(path, 1_000, seed=3)
    text = path.read_text("utf-8")
    lines = text.splitlines()
    assert text.endswith("\n")
    assert len(lines) == count > 1_000
    assert [json.loads(line) for line in lines] == list(generate_population(1_000, seed=3))
    assert lines[0] == json.dumps(json.loads(lines[0]), separators=(",", ":"))


def test_write_events_jsonl_empty(tmp_path: Path) -> None:
    path = tmp_path / "none.jsonl"
    assert write_events_jsonl(path, 0) == 0
    assert path.read_text("utf-8") == ""
