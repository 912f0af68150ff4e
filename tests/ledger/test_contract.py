"""The ledger contract, run unchanged on SQLite and PostgreSQL.

Decisions from the SQL snapshot are checked subject by subject against the pure
oracle `consentgate.domain.decide`, fed from the generated events themselves.
"""

from __future__ import annotations

import dataclasses
import io
import json
import random
import uuid
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

import consentgate
from consentgate.domain import REASONS, decide, parse_event
from consentgate.domain.events import ProfileEvent
from consentgate.domain.policy_file import default_policy_text
from consentgate.errors import EventError, StorageError, UnknownPurposeError
from consentgate.ledger import importer
from consentgate.ledger.rows import id_key
from consentgate.ledger.sealing import erased_label

from ..conftest import OpenLedger
from .eventgen import INSTANTS, POLICY, random_history


def write_jsonl(path: Path, events: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(ev) + "\n" for ev in events), "utf-8")
    return path


def population(seed: int, subjects: int) -> list[dict[str, str]]:
    rng = random.Random(seed)
    events: list[dict[str, str]] = []
    for i in range(subjects):
        events.extend(random_history(rng, f"s{i:04d}"))
    rng.shuffle(events)  # recording order differs from time order
    return events


PROFILE = {"type": "profile", "subject": "m1", "at": "2024-01-02T10:00:00Z", "region": "US-CA"}


def test_init_applies_the_default_policy(open_ledger: OpenLedger, db_url: str) -> None:
    ledger = open_ledger(db_url)
    assert [a.policy.version for a in ledger.policies()] == ["default-1"]
    open_ledger(db_url)  # opening again changes nothing
    assert len(ledger.policies()) == 1
    assert ledger.policy_at().mode("ai_training", "DE") == "opt_in"


def test_record_is_idempotent_and_history_roundtrips(open_ledger: OpenLedger, db_url: str) -> None:
    ledger = open_ledger(db_url)
    stored = ledger.record(PROFILE)
    again = ledger.record(dict(PROFILE))
    assert stored == again
    assert ledger.history("m1") == [stored]
    assert ledger.count_events() == 1
    assert ledger.history("nobody") == []


def test_import_then_reimport_adds_nothing(
    open_ledger: OpenLedger, db_url: str, tmp_path: Path
) -> None:
    ledger = open_ledger(db_url)
    events = population(1, 50)
    path = write_jsonl(tmp_path / "events.jsonl", events)
    distinct = len({parse_event(ev).event_id for ev in events})
    assert distinct < len(events), "the generator repeats some events: their ids must match"
    first = ledger.import_events(path)
    assert (first.read, first.added) == (len(events), distinct)
    second = ledger.import_events(path)
    assert (second.read, second.added, second.duplicates) == (len(events), 0, len(events))
    assert ledger.count_events() == distinct


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ("{not json", "(line)"),
        (json.dumps({**PROFILE, "type": "vote"}), "type"),
        (json.dumps({**PROFILE, "at": "2024-01-02T10:00:00"}), "at"),
        (json.dumps({**PROFILE, "region": "XX"}), "region"),
        (json.dumps({**PROFILE, "birth_date": "2999-01-01"}), "birth_date"),
        (
            json.dumps(
                {"type": "consent", "subject": "m1", "at": PROFILE["at"], "purpose": "ai_training"}
                | {"choice": "maybe"}
            ),
            "choice",
        ),
    ],
)
def test_one_bad_line_rejects_the_whole_file(
    open_ledger: OpenLedger, db_url: str, tmp_path: Path, bad: str, field: str
) -> None:
    ledger = open_ledger(db_url)
    good = [json.dumps({**PROFILE, "subject": f"m{i}"}) for i in range(20)]
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join([*good[:13], bad, *good[13:]]) + "\n", "utf-8")
    with pytest.raises(EventError) as caught:
        ledger.import_events(path)
    assert caught.value.field == field
    assert f"{path}:14" in str(caught.value)
    assert ledger.count_events() == 0


def test_unknown_purpose_is_rejected_with_its_line(open_ledger: OpenLedger, db_url: str) -> None:
    ledger = open_ledger(db_url)
    line = {"type": "consent", "subject": "m1", "at": PROFILE["at"], "choice": "granted"}
    data = json.dumps(PROFILE) + "\n" + json.dumps({**line, "purpose": "ads"}) + "\n"
    with pytest.raises(UnknownPurposeError, match=r":2: field 'purpose'.*'ads'"):
        ledger.import_events(io.BytesIO(data.encode()))
    assert ledger.count_events() == 0


def test_an_event_id_never_means_two_things(open_ledger: OpenLedger, db_url: str) -> None:
    ledger = open_ledger(db_url)
    ledger.record({**PROFILE, "event_id": "e-1"})
    clash = json.dumps({**PROFILE, "event_id": "e-1", "region": "DE"})
    fresh = json.dumps({**PROFILE, "subject": "m2"})
    with pytest.raises(EventError, match="event_id"):
        ledger.import_events(io.BytesIO(f"{fresh}\n{clash}\n".encode()))
    assert ledger.count_events() == 1


def test_parallel_import_keeps_order_and_reports_bad_lines(
    open_ledger: OpenLedger, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(importer, "PARALLEL_FROM", 0)
    monkeypatch.setattr(importer, "BLOCK", 4096)  # many blocks, many worker tasks
    ledger = open_ledger(db_url)
    events = population(2, 120)
    path = write_jsonl(tmp_path / "events.jsonl", events)
    assert ledger.import_events(path).added == len({parse_event(ev).event_id for ev in events})
    by_subject: dict[str, list[str]] = defaultdict(list)
    for ev in events:
        by_subject[ev["subject"]].append(parse_event(ev).event_id)
    for subject, ids in list(by_subject.items())[:20]:
        assert sorted(set(ids)) == sorted(e.event_id for e in ledger.history(subject))
    lines = path.read_text("utf-8").splitlines()
    lines[len(lines) - 3] = '{"type": "consent"}'
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines) + "\n", "utf-8")
    before = ledger.count_events()
    with pytest.raises(EventError, match=rf"{bad}:{len(lines) - 2}: field 'subject'"):
        ledger.import_events(bad)
    assert ledger.count_events() == before


def test_unusable_database_url_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="cannot open database"):
        consentgate.open(f"sqlite:///{tmp_path}/missing/dir/x.db")
    with pytest.raises(StorageError, match="expected sqlite"):
        consentgate.open("mysql://example/db")


def as_stored(events: list[dict[str, str]]) -> dict[str, list[consentgate.domain.Event]]:
    """Each member's events as the ledger keeps them: an erasure, whenever dated,
    destroys the member's personal fields in every event of theirs (DESIGN §9), so
    the oracle decides from what remains, as every engine must."""
    by_subject: dict[str, list[consentgate.domain.Event]] = defaultdict(list)
    for ev in events:
        by_subject[ev["subject"]].append(parse_event(ev))
    for subject, evs in by_subject.items():
        if any(e.type == "erasure" for e in evs):
            by_subject[subject] = [_without_personal(e) for e in evs]
    return by_subject


def _without_personal(event: consentgate.domain.Event) -> consentgate.domain.Event:
    if isinstance(event, ProfileEvent):
        return dataclasses.replace(event, region=None, birth_date=None, evidence={})
    return dataclasses.replace(event, evidence={})


def test_snapshot_decisions_match_the_oracle(
    open_ledger: OpenLedger, db_url: str, tmp_path: Path
) -> None:
    ledger = open_ledger(db_url)
    ledger.apply_policy(POLICY)
    events = population(3, 400)
    ledger.import_events(write_jsonl(tmp_path / "events.jsonl", events))
    history = ledger.policy_history()
    by_subject = as_stored(events)
    erased = {s for s, evs in by_subject.items() if any(e.type == "erasure" for e in evs)}
    assert erased, "the population must include erased members"
    # The whole-ledger listing names an erased member by pseudonym: their id is gone.
    label = {s: erased_label(ledger.pseudonym(s)) if s in erased else s for s in by_subject}
    reasons: Counter[str] = Counter()
    unknown = consentgate.Decision(False, "unknown_subject")
    for at in INSTANTS:
        for purpose in ("ai_training", "genai_features"):
            whole = dict(ledger.decisions(purpose=purpose, at=at, engine="duckdb"))
            named = dict(ledger.decisions(purpose=purpose, at=at, subjects=list(by_subject)))
            assert set(named) == set(by_subject)
            for subject, evs in by_subject.items():
                want = decide(events=evs, policy=history, purpose=purpose, at=at)
                if subject in erased and want.reason != "unknown_subject":
                    # Erased members are erased at every T at which they have events:
                    # eligibility without their birth date and region is unprovable.
                    want = consentgate.Decision(False, "erased")
                where = (subject, purpose, at)
                assert whole.get(label[subject], unknown) == want, ("duckdb", *where)
                assert named[subject] == want, ("sql", *where)
                assert ledger.decide(subject, purpose=purpose, at=at) == want, ("online", *where)
                reasons[want.reason] += 1
    online = set(REASONS) - {
        "missing_subject",
        "invalid_record",
        "source_not_eligible",
        "sensitive",
        "collected_before_notice",  # c = T online, so c < D cannot hold once T >= D + window
    }
    assert online <= set(reasons), f"reasons never reached: {online - set(reasons)}"


def test_decisions_for_named_subjects_include_unknown_ones(
    open_ledger: OpenLedger, db_url: str
) -> None:
    ledger = open_ledger(db_url)
    ledger.record(PROFILE)
    at = datetime(2025, 1, 1, tzinfo=UTC)
    got = dict(ledger.decisions(purpose="ai_training", at=at, subjects=["m1", "ghost"]))
    assert got["ghost"].reason == "unknown_subject"
    assert got["m1"] == ledger.decide("m1", purpose="ai_training", at=at)
    with pytest.raises(UnknownPurposeError):
        list(ledger.decisions(purpose="ads", at=at))


@settings(
    max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rng=st.randoms(use_true_random=False), split=st.floats(0.0, 1.0))
def test_reimporting_any_part_of_a_file_changes_nothing(
    open_ledger: OpenLedger,
    db_url: str,
    tmp_path_factory: pytest.TempPathFactory,
    rng: random.Random,
    split: float,
) -> None:
    ledger = open_ledger(db_url)
    run = uuid.uuid4().hex  # the database outlives one example: keep subjects apart
    events = [ev for i in range(8) for ev in random_history(rng, f"h{run}-{i}")]
    folder = tmp_path_factory.mktemp("reimport")
    whole = write_jsonl(folder / "all.jsonl", events)
    part = write_jsonl(folder / "part.jsonl", events[: int(len(events) * split)])
    subjects = sorted({ev["subject"] for ev in events})
    before = ledger.count_events()
    ledger.import_events(whole)
    after = ledger.count_events()
    snapshot = {s: ledger.history(s) for s in subjects}
    assert ledger.import_events(part).added == 0
    assert ledger.import_events(whole).added == 0
    assert ledger.count_events() == after
    assert after - before == len({parse_event(ev).event_id for ev in events})
    assert {s: ledger.history(s) for s in subjects} == snapshot


def test_snapshot_region_facts_follow_recording_order_on_ties(
    open_ledger: OpenLedger, db_url: str
) -> None:
    ledger = open_ledger(db_url)
    base = {"type": "profile", "subject": "t1"}
    for at, region in (("2024-03-01T00:00:00Z", "DE"), ("2024-03-01T00:00:00Z", "US")):
        ledger.record({**base, "at": at, "region": region})
    ledger.record({**base, "at": "2024-05-01T00:00:00Z", "region": "FR"})
    ledger.record({**base, "at": "2024-05-01T00:00:00Z", "region": "GB"})
    at = datetime(2025, 1, 1, tzinfo=UTC)
    for engine in ("sql", "duckdb"):
        (facts,) = ledger.snapshot(purpose="ai_training", at=at, subjects=["t1"], engine=engine)
        assert (facts.region_first, facts.region_latest) == ("US", "GB"), engine


def test_snapshot_table_holds_the_same_facts(
    open_ledger: OpenLedger, db_url: str, tmp_path: Path
) -> None:
    ledger = open_ledger(db_url)
    ledger.apply_policy(POLICY)
    ledger.import_events(write_jsonl(tmp_path / "events.jsonl", population(4, 60)))
    at = INSTANTS[-2]
    table = ledger.snapshot_table(purpose="ai_training", at=at)
    rows = {r["subject"]: r for r in table.to_pylist()}
    facts = {f.subject: f for f in ledger.snapshot(purpose="ai_training", at=at, engine="sql")}
    assert set(rows) == set(facts)
    for subject, f in facts.items():
        r = rows[subject]
        assert (r["erased"], r["born"], r["region_latest"], r["region_first"]) == (
            f.erased,
            f.birth_date,
            f.region_latest,
            f.region_first,
        )
        assert (r["choice"], r["choice_at"], r["gpc_at"], r["invalidated"]) == (
            f.choice,
            f.choice_at_us,
            f.gpc_at_us,
            f.invalidated_grant,
        )


def test_a_key_collision_is_refused_not_merged(open_ledger: OpenLedger, db_url: str) -> None:
    ledger = open_ledger(db_url)
    ledger.record({**PROFILE, "event_id": "e-1"})
    # Forge, behind the library's back, a stored event whose id shares the key of "e-2".
    with ledger.engine.begin() as conn:
        conn.execute(
            text("UPDATE events SET id_key = :key WHERE event_id = 'e-1'"),
            {"key": id_key("e-2")},
        )
    with pytest.raises(EventError, match="collision"):
        ledger.record({**PROFILE, "subject": "m9", "event_id": "e-2"})
    assert ledger.count_events() == 1


def test_record_sees_purposes_another_process_added(open_ledger: OpenLedger, db_url: str) -> None:
    """`record` remembers the purposes it saw; one added since is found on a miss."""
    writer = open_ledger(db_url)
    consent = {"type": "consent", "subject": "m1", "at": "2024-01-02T10:00:00Z"}
    writer.record(consent | {"purpose": "ai_training", "choice": "granted"})
    other = open_ledger(db_url)
    added = (
        '\n[purposes.fraud_review]\ntitle = "Fraud review"\n\n'
        '[purposes.fraud_review.modes]\n"*" = "opt_in"\n'
    )
    assert "fraud_review" not in writer.known_purposes()
    other.apply_policy(
        default_policy_text().replace('version = "default-1"', 'version = "d-2"') + added
    )
    writer.record(consent | {"purpose": "fraud_review", "choice": "refused"})
    assert [e.type for e in writer.history("m1")] == ["consent", "consent"]
    with pytest.raises(UnknownPurposeError, match="fraud_review"):
        writer.record(consent | {"purpose": "bogus", "choice": "granted"})
    assert writer.count_events() == 2
