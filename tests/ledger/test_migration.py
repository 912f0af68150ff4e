"""Migration 0002: a version-1 ledger (clear member ids, evidence as JSON, no chain)
becomes a hash-chained one by appending its events again through the writer.

The version-1 database is made by Alembic at revision 0001, its rows written as the
version-1 writer wrote them. After `consentgate.open` upgraded it, every answer must be
the one a fresh ledger gives for the same events imported in the same order.
"""

from __future__ import annotations

import random
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from alembic import command
from sqlalchemy import inspect, text

import consentgate
from consentgate.domain.events import EVIDENCE_FIELDS, validate_event
from consentgate.domain.policy_file import default_policy_text, parse_policy
from consentgate.domain.timeutil import EPOCH, to_micros
from consentgate.ledger import database
from consentgate.ledger.rows import id_key
from consentgate.ledger.sealing import erased_label

from ..conftest import OpenLedger
from .eventgen import INSTANTS, POLICY, random_history
from .test_erasure import database_files, file_hits

RECORDED_FROM = to_micros(datetime(2025, 6, 1, tzinfo=UTC))
V1_COLUMNS = (
    "id_key",
    "event_id",
    "content_sha256",
    "type",
    "subject",
    "at_us",
    "purpose",
    "choice",
    "signal",
    "region",
    "birth_date",
    "source",
    "notice_version",
    "evidence",
    "recorded_us",
)


def population(seed: int) -> tuple[list[dict[str, str]], dict[str, list[str]]]:
    """Events in recording order (repeats included, as a real feed has them) and
    each member's evidence canaries."""
    rng = random.Random(seed)
    events: list[dict[str, str]] = []
    for i in range(30):
        events.extend(random_history(rng, f"v1-{i:03d}"))
    canaries: dict[str, list[str]] = defaultdict(list)
    for ev in events:
        if rng.random() < 0.4:
            name = rng.choice(EVIDENCE_FIELDS)
            value = f"canary-{name}-{uuid.uuid4().hex}"
            ev[name] = value
            canaries[ev["subject"]].append(value)
    rng.shuffle(events)
    events.extend(
        [
            # A member erased in version 1, with evidence before and after the erasure.
            {"type": "profile", "subject": "v1-erased", "at": "2024-01-02T10:00:00Z"}
            | {"region": "DE", "birth_date": "1990-05-01", "ip": "canary-ip-erased-1"},
            {"type": "erasure", "subject": "v1-erased", "at": "2024-06-01T00:00:00Z"}
            | {"note": "canary-note-erased-2"},
            {"type": "consent", "subject": "v1-erased", "at": "2024-07-01T00:00:00Z"}
            | {"purpose": "ai_training", "choice": "granted", "user_agent": "canary-ua-3"},
            # Text the canonical form rewrites, an explicit id, source and notice.
            {
                "type": "consent",
                "subject": "v1-009",
                "at": "2024-03-01T12:00:00.250+02:00",
                "purpose": "ai_training",
                "choice": "granted",
                "source": "post",
                "notice_version": "n3",
                "event_id": "explicit-id-1",
            },
            {"type": "signal", "subject": "v1-009", "signal": "gpc", "at": "2024-04-01T00:00:00Z"},
        ]
    )
    canaries["v1-erased"] += ["canary-ip-erased-1", "canary-note-erased-2", "canary-ua-3"]
    events.append(dict(events[3]))  # a repeat of an event already recorded
    return events, dict(canaries)


def v1_rows(events: list[dict[str, str]]) -> list[dict[str, Any]]:
    """The rows the version-1 writer stored: each event id once, in recording order."""
    rows: dict[str, dict[str, Any]] = {}
    for n, ev in enumerate(events):
        valid = validate_event(ev)
        if valid.event_id in rows:
            continue
        body, evidence = valid.body, valid.evidence()
        values = (
            id_key(valid.event_id),
            valid.event_id,
            valid.digest,
            valid.type,
            body["subject"],
            to_micros(valid.at),
            body.get("purpose"),
            body.get("choice"),
            body.get("signal"),
            body.get("region"),
            body.get("birth_date"),
            body.get("source"),
            body.get("notice_version"),
            orjson.dumps(evidence, option=orjson.OPT_SORT_KEYS).decode() if evidence else None,
            RECORDED_FROM + 1_000 * n,
        )
        rows[valid.event_id] = dict(zip(V1_COLUMNS, values, strict=True))
    return list(rows.values())


def make_v1_ledger(url: str, rows: list[dict[str, Any]]) -> None:
    """A database at revision 0001 holding `rows`, the default policy and POLICY."""
    engine = database.connect(url)
    try:
        cfg = database._alembic_config()
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "0001")
            if rows:
                columns = ", ".join(V1_COLUMNS)
                values = ", ".join(f":{c}" for c in V1_COLUMNS)
                conn.execute(text(f"INSERT INTO events ({columns}) VALUES ({values})"), rows)
            for when, policy_text in ((EPOCH, default_policy_text()), (None, POLICY)):
                policy = parse_policy(policy_text)
                effective = when or policy.effective
                assert effective is not None
                conn.execute(
                    text(
                        "INSERT INTO policy_versions (version, sha256, effective_us, applied_us, "
                        "text) VALUES (:v, :s, :e, :a, :t)"
                    ),
                    {
                        "v": policy.version,
                        "s": policy.sha256,
                        "e": to_micros(effective),
                        "a": RECORDED_FROM,
                        "t": policy_text,
                    },
                )
            assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").all() == [
                ("0001",)
            ]
    finally:
        engine.dispose()


def _chain_rows(ledger: consentgate.Ledger) -> list[tuple[Any, ...]]:
    """What each position holds, without the ledger's own keys and times."""
    with ledger.engine.connect() as conn:
        return [
            tuple(row)
            for row in conn.exec_driver_sql(
                "SELECT seq, event_id, content_sha256, type, at_us, purpose, choice, signal, "
                "source, notice_version, region, birth_date, sealed IS NULL FROM events "
                "ORDER BY seq"
            )
        ]


def test_a_version_1_ledger_is_chained_and_answers_as_before(
    open_ledger: OpenLedger, db_url: str, tmp_path: Path
) -> None:
    events, canaries = population(7)
    rows = v1_rows(events)
    assert len(rows) < len(events), "the feed repeats events: version 1 stored them once"
    erased = {r["subject"] for r in rows if r["type"] == "erasure"}
    assert "v1-erased" in erased
    make_v1_ledger(db_url, rows)

    migrated = open_ledger(db_url)  # upgrades to the latest revision
    fresh = open_ledger(f"sqlite:///{tmp_path / 'fresh.db'}")
    fresh.apply_policy(POLICY)
    jsonl = tmp_path / "events.jsonl"
    jsonl.write_bytes(b"".join(orjson.dumps(ev) + b"\n" for ev in events))
    assert fresh.import_events(jsonl).added == len(rows)

    version = "SELECT version_num FROM alembic_version"
    with fresh.engine.connect() as conn:
        head = conn.exec_driver_sql(version).all()
    with migrated.engine.connect() as conn:
        assert conn.exec_driver_sql(version).all() == head  # upgraded to the latest
        recorded = list(
            conn.exec_driver_sql("SELECT recorded_us FROM events ORDER BY seq").scalars()
        )
    tables = set(inspect(migrated.engine).get_table_names())
    assert "events_v1" not in tables
    assert "evidence" not in {c["name"] for c in inspect(migrated.engine).get_columns("events")}
    assert [p.policy.version for p in migrated.policies()] == ["default-1", "contract-1"]

    # The same events, in the version-1 order, with the same content digests; the
    # recording times of version 1 are kept.
    assert _chain_rows(migrated) == _chain_rows(fresh)
    assert [r[1] for r in _chain_rows(migrated)] == [r["event_id"] for r in rows]
    assert recorded == [r["recorded_us"] for r in rows]
    report = migrated.verify()
    assert report.ok, report.problems
    assert report.events == len(rows)

    # The same answers.
    subjects = sorted({r["subject"] for r in rows})
    for subject in subjects:
        assert migrated.history(subject) == fresh.history(subject), subject
    for at in INSTANTS:
        for purpose in ("ai_training", "genai_features"):
            named = dict(migrated.decisions(purpose=purpose, at=at, subjects=subjects))
            assert named == dict(fresh.decisions(purpose=purpose, at=at, subjects=subjects))
    # The whole-ledger listing names erased members by their pseudonym in each ledger.
    at = INSTANTS[-1]
    for ledger in (migrated, fresh):
        label = {erased_label(ledger.pseudonym(s)): s for s in erased}
        listing = {label.get(s, s): d for s, d in ledger.decisions(purpose="ai_training", at=at)}
        assert listing == dict(fresh.decisions(purpose="ai_training", at=at, subjects=subjects))
    assert migrated.decide("v1-erased", purpose="ai_training", at=at).reason == "erased"

    # Evidence is sealed now: no clear value in any column; erased members lost it all.
    kept = sorted(s for s in canaries if s not in erased)
    assert kept, "some members keep their evidence"
    for subject in kept:
        stored = {v for e in migrated.history(subject) for v in e.evidence.values()}
        assert stored == set(canaries[subject])
    for subject in erased:
        assert all(e.evidence == {} for e in migrated.history(subject))
    with migrated.engine.connect() as conn:
        dump = repr(conn.exec_driver_sql("SELECT * FROM events").all())
        members = conn.exec_driver_sql(
            "SELECT subject, key IS NULL FROM subjects WHERE subject IS NOT NULL"
        ).all()
    assert "canary-" not in dump
    assert {s for s, _ in members} == set(subjects) - erased
    assert not any(gone for _, gone in members)

    # On the files too, once vacuumed (the dropped version-1 table held it all in clear).
    migrated.vacuum()
    needles = {v: v.encode() for values in canaries.values() for v in values}
    needles |= {s: s.encode() for s in subjects}
    hits = {name: where for name, where in file_hits(database_files(migrated), needles).items()}
    assert {s for s in subjects if hits.pop(s)} == set(subjects) - erased
    assert {name: where for name, where in hits.items() if where} == {}


def test_an_empty_version_1_ledger_upgrades(open_ledger: OpenLedger, db_url: str) -> None:
    make_v1_ledger(db_url, [])
    ledger = open_ledger(db_url)
    assert ledger.count_events() == 0
    assert ledger.verify().ok
    ledger.record(
        {"type": "signal", "subject": "m1", "signal": "gpc", "at": "2024-01-01T00:00:00Z"}
    )
    assert ledger.verify().ok
    assert [e.type for e in ledger.history("m1")] == ["signal"]


@pytest.mark.parametrize("bad", ["subject", "type"])
def test_a_version_1_row_the_writer_refuses_stops_the_upgrade(
    open_ledger: OpenLedger, db_url: str, bad: str
) -> None:
    """A version-1 row that is not a valid event leaves the database at version 1,
    untouched, with an error naming the row's field."""
    events, _ = population(3)
    rows = v1_rows(events[:20])
    rows[10][bad] = " " if bad == "subject" else "vote"
    make_v1_ledger(db_url, rows)
    engine = database.connect(db_url)
    try:
        with engine.connect() as conn:
            seq = conn.execute(
                text("SELECT seq FROM events WHERE event_id = :e"), {"e": rows[10]["event_id"]}
            ).scalar_one()
    finally:
        engine.dispose()
    with pytest.raises(consentgate.EventError, match=rf"^events_v1:{seq}: field '{bad}'"):
        open_ledger(db_url)
    engine = database.connect(db_url)
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").all() == [
                ("0001",)
            ]
            assert conn.exec_driver_sql("SELECT count(*) FROM events").scalar() == len(rows)
            assert "evidence" in {c["name"] for c in inspect(conn).get_columns("events")}
    finally:
        engine.dispose()
