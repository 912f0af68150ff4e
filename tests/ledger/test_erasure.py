"""Erasure that keeps the proof, checked on the database files themselves.

Canary strings (unique per test) go into a member's id and evidence; after the
member's erasure, a signed checkpoint and `Ledger.vacuum()`, the bytes of the
database files must hold none of them, nor the member's key, while the chain, the
checkpoints and the inclusion proofs of the member's events still verify. A second
member who is not erased proves that the search finds what is there: their id and
key are found in the same files, their evidence is readable through `history`.

Files searched: SQLite's database file with its `-wal` and `-shm` files; for
PostgreSQL, every file of the test database's directory (`base/<oid>`), which holds
the relation files of `events`, `subjects`, their indexes and TOAST tables (checked
by `pg_relation_filepath`) and the catalogs. PostgreSQL's WAL (`pg_wal`) is out of
scope: its segments keep past page images until they are recycled after later
checkpoints, so key destruction there relies on the server's WAL retention (and on
its archive, if any), which the operator's documentation has to cover.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import pytest
from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError

import consentgate
from consentgate.domain.events import ConsentEvent, ProfileEvent, validate_event
from consentgate.domain.timeutil import format_ts, from_micros
from consentgate.ledger import tlog
from consentgate.ledger.rows import id_key
from consentgate.ledger.sealing import erased_label

from ..conftest import IN_CI, OpenLedger, _reset_postgres, postgres_url

PURPOSE = "ai_training"
DECIDE_AT = datetime(2025, 1, 1, tzinfo=UTC)


# -- reading the database files ---------------------------------------------------------


def _unreadable(why: str) -> NoReturn:
    """PostgreSQL's files cannot be read here: an error in CI, a skip elsewhere."""
    message = (
        f"cannot read PostgreSQL's data files: {why}. Run the tests on the server's "
        "machine as root (or the postgres user), as CI does."
    )
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def _pg_data_directory(conn: Connection) -> Path:
    """The server's data directory: `data_directory` if the role may read it (superuser
    or pg_read_all_settings), else the working directory of this session's server
    process, which PostgreSQL sets to the data directory (a local server only)."""
    try:
        with conn.begin_nested():
            setting = "SELECT current_setting('data_directory')"
            return Path(str(conn.exec_driver_sql(setting).scalar_one()))
    except DBAPIError:
        pass
    pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
    try:
        return Path(os.readlink(f"/proc/{pid}/cwd"))
    except OSError as err:
        _unreadable(f"data_directory is not readable by this role, nor /proc/{pid}/cwd: {err}")


def database_files(ledger: consentgate.Ledger) -> list[Path]:
    """The files holding the ledger's data (see the module docstring)."""
    if ledger.engine.dialect.name == "sqlite":
        main = Path(str(ledger.engine.url.database))
        assert main.is_file()
        candidates = [main, *(Path(f"{main}{suffix}") for suffix in ("-wal", "-shm", "-journal"))]
        return [path for path in candidates if path.exists()]
    with ledger.engine.connect() as conn:
        base = _pg_data_directory(conn)
        directory = conn.exec_driver_sql(
            "SELECT 'base/' || oid FROM pg_database WHERE datname = current_database()"
        ).scalar_one()
        relations = conn.exec_driver_sql(
            "WITH t AS (SELECT oid, reltoastrelid FROM pg_class "
            "           WHERE oid IN ('events'::regclass, 'subjects'::regclass)), "
            "r AS (SELECT oid FROM t "
            "      UNION SELECT indexrelid FROM pg_index WHERE indrelid IN (SELECT oid FROM t) "
            "      UNION SELECT reltoastrelid FROM t WHERE reltoastrelid <> 0 "
            "      UNION SELECT indexrelid FROM pg_index "
            "            WHERE indrelid IN (SELECT reltoastrelid FROM t)) "
            "SELECT oid::regclass::text, pg_relation_filepath(oid) FROM r"
        ).all()
    try:
        files = sorted(p for p in (base / directory).iterdir() if p.is_file())
    except OSError as err:
        _unreadable(str(err))
    paths = {str(path) for path in files}
    names = {name for name, _ in relations}
    # The two tables, their (four or more) indexes, their TOAST tables and TOAST indexes.
    assert {"events", "subjects"} <= names
    assert sum(name.startswith("pg_toast.") for name in names) == 4, names
    assert len(names) >= 10, names
    for name, relpath in relations:
        assert relpath.startswith(directory + "/"), (name, relpath)
        assert str(base / relpath) in paths, f"{name}: {relpath} is not in {base / directory}"
    return files


def file_hits(files: list[Path], needles: dict[str, bytes]) -> dict[str, list[str]]:
    """For each needle, the names of the files that contain its bytes."""
    found: dict[str, list[str]] = {name: [] for name in needles}
    for path in files:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            continue  # a relation file unlinked by the server meanwhile
        except PermissionError as err:
            _unreadable(str(err))
        for name, needle in needles.items():
            if needle in data:
                found[name].append(path.name)
    return found


# -- the scenario ------------------------------------------------------------------------


@dataclass(frozen=True)
class Member:
    """A member id and personal values no other test (or member) uses."""

    id: str
    evidence: dict[str, str]  # canary name -> value, every one unique

    @classmethod
    def new(cls, tag: str) -> Member:
        def canary(kind: str) -> str:
            return f"canary-{tag}-{kind}-{uuid.uuid4().hex}"

        names = ("ip", "user_agent", "note", "ip2", "erasure_note", "late_ip", "late_note")
        return cls(canary("member"), {name: canary(name) for name in names})

    def canaries(self) -> dict[str, bytes]:
        return {"id": self.id.encode(), **{k: v.encode() for k, v in self.evidence.items()}}


def _before(m: Member, region: str) -> list[dict[str, str]]:
    ev = m.evidence
    return [
        {
            "type": "profile",
            "subject": m.id,
            "at": "2024-01-02T10:00:00Z",
            "region": region,
            "birth_date": "1990-05-01",
            "ip": ev["ip"],
            "user_agent": ev["user_agent"],
        },
        {
            "type": "consent",
            "subject": m.id,
            "purpose": PURPOSE,
            "choice": "granted",
            "at": "2024-02-01T09:30:00Z",
            "source": "privacy_page",
            "note": ev["note"],
        },
    ]


def _erasure_batch(erased: Member, kept: Member) -> list[dict[str, str]]:
    """Recorded in this order: a last event before the erasure, the erasure, two
    events of the erased member afterwards, and an event of the other member."""
    ev = erased.evidence
    return [
        {
            "type": "signal",
            "subject": erased.id,
            "signal": "gpc",
            "at": "2024-03-01T00:00:00Z",
            "ip": ev["ip2"],
        },
        {"type": "erasure", "subject": erased.id, "at": "2024-06-01T00:00:00Z"}
        | {"note": ev["erasure_note"]},
        {
            "type": "profile",
            "subject": erased.id,
            "at": "2024-07-01T00:00:00Z",
            "region": "US-CA",
            "birth_date": "1991-01-01",
            "ip": ev["late_ip"],
        },
        {
            "type": "consent",
            "subject": erased.id,
            "purpose": PURPOSE,
            "choice": "granted",
            "at": "2024-07-02T00:00:00Z",
            "note": ev["late_note"],
        },
        {
            "type": "signal",
            "subject": kept.id,
            "signal": "gpc",
            "at": "2024-07-03T00:00:00Z",
            "ip": kept.evidence["ip2"],
        },
    ]


def _write_jsonl(path: Path, events: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(ev) + "\n" for ev in events), "utf-8")
    return path


def _subject_row(ledger: consentgate.Ledger, member: Member) -> tuple[Any, ...]:
    with ledger.engine.connect() as conn:
        rows = conn.execute(
            text("SELECT subject, key, erased_us FROM subjects WHERE pseudonym = :p"),
            {"p": ledger.pseudonym(member.id)},
        ).all()
    assert len(rows) == 1, "one subjects row per member, erased or not"
    subject, key, erased_us = rows[0]
    return subject, None if key is None else bytes(key), erased_us


def _seqs(ledger: consentgate.Ledger, member: Member) -> list[int]:
    with ledger.engine.connect() as conn:
        return list(
            conn.execute(
                text("SELECT seq FROM events WHERE subject = :p ORDER BY seq"),
                {"p": ledger.pseudonym(member.id)},
            ).scalars()
        )


def _evidence_values(ledger: consentgate.Ledger, member: Member) -> set[str]:
    return {value for event in ledger.history(member.id) for value in event.evidence.values()}


@pytest.fixture
def signing_key(tmp_path: Path) -> Path:
    path = tmp_path / "ledger.key"
    tlog.create_signing_key(path)
    return path


@pytest.mark.parametrize("via", ["record", "import"])
def test_erasure_leaves_no_personal_data_in_the_files_and_keeps_every_proof(
    open_ledger: OpenLedger, db_url: str, tmp_path: Path, signing_key: Path, via: str
) -> None:
    ledger = open_ledger(db_url, signing_key=signing_key)
    verifier = tlog.load_verifier(Path(f"{signing_key}.pub"))
    erased, kept = Member.new("erased"), Member.new("kept")
    ledger.import_events(
        _write_jsonl(tmp_path / "before.jsonl", _before(erased, "DE") + _before(kept, "FR"))
    )

    # Before: the personal data is there and readable, the search finds the id and key.
    assert _evidence_values(ledger, erased) == {
        erased.evidence[k] for k in ("ip", "user_agent", "note")
    }
    subject, erased_key, erased_us = _subject_row(ledger, erased)
    assert (subject, erased_us) == (erased.id, None)
    assert erased_key is not None
    assert len(erased_key) == 32
    kept_key = _subject_row(ledger, kept)[1]
    assert kept_key is not None
    profile = ledger.history(erased.id)[0]
    assert isinstance(profile, ProfileEvent)
    assert profile.region == "DE"
    note_before = ledger.checkpoint()
    seqs_before = _seqs(ledger, erased)
    bundle_before = tlog.inclusion_bundle(ledger.engine, seqs_before, note_before)
    tlog.verify_bundle(bundle_before, verifier)
    ledger.vacuum()  # also makes PostgreSQL write the rows to the table files now
    files = database_files(ledger)
    hits = file_hits(
        files,
        {"erased id": erased.id.encode(), "erased key": erased_key}
        | {"kept id": kept.id.encode(), "kept key": kept_key},
    )
    assert all(hits.values()), f"the search must find the stored ids and keys: {hits}"

    # The erasure, a last event before it and events after it, in one import or one by one.
    batch = _erasure_batch(erased, kept)
    if via == "import":
        ledger.import_events(_write_jsonl(tmp_path / "erasure.jsonl", batch))
    else:
        for event in batch:
            ledger.record(event)
    note_after = ledger.checkpoint()
    ledger.vacuum()

    # The files: nothing of the erased member; the other member's id and key are still
    # found (the search works), and nobody's evidence ever appears in clear.
    files = database_files(ledger)
    hits = file_hits(
        files,
        {f"erased {k}": v for k, v in erased.canaries().items()}
        | {"erased key": erased_key}
        | {f"kept {k}": v for k, v in kept.canaries().items()}
        | {"kept key": kept_key},
    )
    assert hits.pop("kept id"), "the search must find the kept member's id"
    assert hits.pop("kept key"), "the search must find the kept member's key"
    assert {name: where for name, where in hits.items() if where} == {}

    # The tables: the erased member's id, key and clear copies are gone; the later
    # events stored no personal data and did not give the member a new key.
    subject, key, erased_us = _subject_row(ledger, erased)
    assert (subject, key) == (None, None)
    assert erased_us is not None
    with ledger.engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT seq, type, region, birth_date, sealed FROM events "
                "WHERE subject = :p ORDER BY seq"
            ),
            {"p": ledger.pseudonym(erased.id)},
        ).all()
    erasure_seq = next(seq for seq, kind, *_ in rows if kind == "erasure")
    assert all((r.region, r.birth_date) == (None, None) for r in rows)
    after = [r for r in rows if r.seq > erasure_seq]
    assert len(after) == 2
    assert all(r.sealed is None for r in after)
    assert all(r.sealed is not None for r in rows if r.seq <= erasure_seq), "sealed, then lost"

    # What the ledger answers: the events remain without personal data; decisions say so.
    history = ledger.history(erased.id)
    kinds = ["profile", "consent", "signal", "erasure", "profile", "consent"]
    assert [e.type for e in history] == kinds
    assert all(e.evidence == {} for e in history)
    assert all(
        (e.region, e.birth_date) == (None, None) for e in history if isinstance(e, ProfileEvent)
    )
    consent = history[1]
    assert isinstance(consent, ConsentEvent)
    assert consent.source == "privacy_page"
    assert _evidence_values(ledger, kept) == {
        kept.evidence[k] for k in ("ip", "user_agent", "note", "ip2")
    }
    assert ledger.decide(erased.id, purpose=PURPOSE, at=DECIDE_AT).reason == "erased"
    named = dict(ledger.decisions(purpose=PURPOSE, at=DECIDE_AT, subjects=[erased.id, kept.id]))
    assert named[erased.id].reason == "erased"
    assert named[kept.id].reason != "erased"
    assert named[kept.id] == ledger.decide(kept.id, purpose=PURPOSE, at=DECIDE_AT)
    listing = dict(ledger.decisions(purpose=PURPOSE, at=DECIDE_AT))
    assert set(listing) == {erased_label(ledger.pseudonym(erased.id)), kept.id}
    assert listing[erased_label(ledger.pseudonym(erased.id))].reason == "erased"

    # The proof: the chain, both checkpoints (stored and external) and the inclusion
    # proofs of the erased member's events, exported before and after the erasure.
    log = Path(f"{signing_key}.checkpoints").read_text()
    report = ledger.verify(verifier=verifier, external=[log])
    assert report.ok, report.problems
    assert (report.events, report.checkpoints, report.external) == (ledger.count_events(), 2, 2)
    assert tlog.inclusion_bundle(ledger.engine, seqs_before, note_before) == bundle_before
    tlog.verify_bundle(bundle_before, verifier)
    bundle_after = tlog.inclusion_bundle(ledger.engine, _seqs(ledger, erased), note_after)
    assert tlog.verify_bundle(bundle_after, verifier).endswith(
        f"events {', '.join(map(str, _seqs(ledger, erased)))} are in the log of size "
        f"{ledger.count_events()}"
    )
    tlog.verify_bundle(tlog.consistency_bundle(ledger.engine, note_before, note_after), verifier)
    exported = json.dumps(bundle_after)
    assert not [k for k, v in erased.canaries().items() if v.decode() in exported]


# -- known gaps ----------------------------------------------------------------------------


@pytest.fixture
def pg_url() -> str:
    url = postgres_url()
    _reset_postgres(url)
    return url


@pytest.mark.postgres
def test_postgres_statistics_forget_erased_members(open_ledger: OpenLedger, pg_url: str) -> None:
    pg_ledger = open_ledger(pg_url)
    members = [Member.new(f"stats{i}") for i in range(10)]
    for m in members:
        pg_ledger.record(
            {"type": "profile", "subject": m.id, "at": "2024-01-02T10:00:00Z", "region": "DE"}
        )
    with pg_ledger.engine.connect() as conn:
        conn.exec_driver_sql("ANALYZE subjects")
        conn.commit()
    pg_ledger.record({"type": "erasure", "subject": members[0].id, "at": "2024-06-01T00:00:00Z"})
    pg_ledger.vacuum()
    with pg_ledger.engine.connect() as conn:
        stats = dict(
            conn.exec_driver_sql(
                "SELECT attname, coalesce(most_common_vals::text, '') "
                "|| coalesce(histogram_bounds::text, '') FROM pg_stats "
                "WHERE schemaname = current_schema() AND tablename = 'subjects'"
            ).all()
        )
    # ANALYZE did run (the pseudonyms are sampled), but no member id or key was kept:
    # neither the erased member's nor anyone else's.
    assert stats.get("pseudonym"), "ANALYZE sampled the table (the check can see values)"
    sampled = "".join(stats.values())
    assert not {"subject", "key"} & set(stats)
    assert all(m.id not in sampled for m in members)


def ledger_digest(ledger: consentgate.Ledger, seq: int) -> str:
    with ledger.engine.connect() as conn:
        return str(
            conn.exec_driver_sql(f"SELECT content_sha256 FROM events WHERE seq = {seq}").scalar()
        )


def test_an_exported_entry_does_not_confirm_a_guessed_member(
    open_ledger: OpenLedger, db_url: str, signing_key: Path
) -> None:
    ledger = open_ledger(db_url, signing_key=signing_key)
    member = Member.new("guess")
    consent = {
        "type": "consent",
        "subject": member.id,
        "purpose": PURPOSE,
        "choice": "granted",
        "at": "2024-02-01T09:30:00Z",
    }
    ledger.record(consent)
    ledger.record({"type": "erasure", "subject": member.id, "at": "2024-06-01T00:00:00Z"})
    bundle = tlog.inclusion_bundle(ledger.engine, [1], ledger.checkpoint())
    entry = json.loads(bundle["events"][0]["entry"])
    # Everything but the member id is in the entry; a guess completes the content.
    guess = {k: entry[k] for k in ("type", "purpose", "choice")} | {"subject": member.id}
    guess["at"] = format_ts(from_micros(entry["at_us"]))
    guessed = validate_event(guess)
    assert guessed.digest == ledger_digest(ledger, 1), "the guess is right: the test can tell"
    # ... and yet nothing in the exported entry can be compared with it: the ids and
    # the content digest enter the chain only through a commitment keyed by the ledger.
    text = bundle["events"][0]["entry"]
    assert guessed.digest not in text
    assert str(id_key(guessed.event_id)) not in text
    assert not {"digest", "id", "id_key"} & set(entry)
