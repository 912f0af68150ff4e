"""`init --signing-key`, `checkpoint`, `verify`, `prove`, `verify-proof` as a user runs them."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from .test_cli import EXAMPLES, cli


def run(tmp_path: Path, *args: str) -> tuple[int, str, str]:
    db = f"sqlite:///{tmp_path / 'l.db'}"
    done = cli("--signing-key", str(tmp_path / "l.key"), *args, db=db, cwd=tmp_path)
    return done.returncode, done.stdout, done.stderr


def test_sign_verify_prove_and_catch_a_truncation(tmp_path: Path) -> None:
    code, out, _ = run(tmp_path, "init")
    assert code == 0
    assert "created signing key" in out
    pub = (tmp_path / "l.key.pub").read_text().strip()
    assert pub in out  # the verifier key to publish is shown
    assert run(tmp_path, "events", "import", str(EXAMPLES / "events.jsonl"))[0] == 0
    code, note, _ = run(tmp_path, "checkpoint")
    assert code == 0
    assert note.splitlines()[1] == "8"
    log = tmp_path / "l.key.checkpoints"
    assert log.read_text() == note

    code, out, _ = run(tmp_path, "verify", "--checkpoint", str(log), "--json")
    report = json.loads(out)
    assert code == 0
    assert report["ok"]
    assert report["events"] == 8
    assert (report["external_checkpoints"], report["signatures_checked"]) == (1, True)

    code, _, _ = run(tmp_path, "prove", "--subject", "m1", "--out", "m1.json")
    assert code == 0
    code, out, _ = run(tmp_path, "verify-proof", "m1.json")
    assert code == 0
    assert "proof holds" in out
    bundle = json.loads((tmp_path / "m1.json").read_text())
    bundle["events"][0]["proof"][0] = "00" * 32
    (tmp_path / "bad.json").write_text(json.dumps(bundle))
    code, _, err = run(tmp_path, "verify-proof", "bad.json")
    assert code == 1
    assert "PROOF FAILS" in err

    # A careful attacker drops the last two events and fixes the head: only the
    # external checkpoint gives it away.
    con = sqlite3.connect(tmp_path / "l.db")
    last = con.execute("SELECT hash, seq FROM events WHERE seq = 6").fetchone()
    with con:
        con.execute("DELETE FROM events WHERE seq > 6")
        con.execute("DELETE FROM checkpoints")
        frontier = con.execute("SELECT frontier FROM ledger_head").fetchone()[0]
        con.execute("UPDATE ledger_head SET size = 6, hash = ?", (last[0],))
    con.close()
    assert frontier  # left stale on purpose: the head check names it
    code, out, err = run(tmp_path, "verify", "--checkpoint", str(log))
    assert code == 1
    assert "NOT VERIFIED" in err
    assert "holds only 6 events" in err


def test_verify_names_the_first_edited_event(tmp_path: Path) -> None:
    run(tmp_path, "init")
    run(tmp_path, "events", "import", str(EXAMPLES / "events.jsonl"))
    con = sqlite3.connect(tmp_path / "l.db")
    with con:
        con.execute("UPDATE events SET choice = 'granted' WHERE seq = 5 AND choice IS NOT NULL")
        changed = con.total_changes
        con.execute("UPDATE events SET at_us = at_us + 1 WHERE seq = 7")
    con.close()
    code, out, _err = run(tmp_path, "verify", "--json")
    report = json.loads(out)
    assert code == 1
    assert not report["ok"]
    assert report["first_bad"]["seq"] == (5 if changed else 7)
    assert "does not hash" in report["first_bad"]["problem"]


def test_external_checkpoint_needs_the_key(tmp_path: Path) -> None:
    run(tmp_path, "init")
    note = tmp_path / "n.txt"
    note.write_text(run(tmp_path, "checkpoint")[1])
    (tmp_path / "l.key.pub").unlink()
    code, _, err = run(tmp_path, "verify", "--checkpoint", str(note))
    assert code == 2
    assert "--key" in err


def test_a_checkpoint_missing_from_the_log_is_caught_up(tmp_path: Path) -> None:
    """A crash after a checkpoint's commit but before its log append loses nothing:
    the next checkpoint appends every stored one the log lacks, oldest first."""
    import consentgate
    from consentgate.ledger import tlog

    key = tmp_path / "k"
    tlog.create_signing_key(key)
    ledger = consentgate.open(f"sqlite:///{tmp_path / 'l.db'}", signing_key=key)
    try:
        ledger.import_events(EXAMPLES / "events.jsonl")
        first = ledger.checkpoint()
        log = Path(f"{key}.checkpoints")
        log.write_text("")  # as if the append had never happened
        ledger.record({"type": "erasure", "subject": "m9", "at": "2025-01-01T00:00:00Z"})
        second = ledger.checkpoint()
        assert tlog.read_log(log.read_text()) == [first, second]
        assert ledger.checkpoint() == second  # nothing new: nothing appended twice
        assert tlog.read_log(log.read_text()) == [first, second]
    finally:
        ledger.close()


def test_a_stored_checkpoint_deleted_is_seen_through_the_log(tmp_path: Path) -> None:
    import consentgate
    from consentgate.ledger import tlog

    key = tmp_path / "k"
    tlog.create_signing_key(key)
    ledger = consentgate.open(f"sqlite:///{tmp_path / 'l.db'}", signing_key=key)
    try:
        ledger.import_events(EXAMPLES / "events.jsonl")
        ledger.checkpoint()
        log = Path(f"{key}.checkpoints").read_text()
        verifier = tlog.load_verifier(f"{key}.pub")
        assert ledger.verify(verifier=verifier, external=[log]).ok
        with ledger.engine.begin() as conn:
            conn.exec_driver_sql("DELETE FROM checkpoints")
        assert ledger.verify(verifier=verifier).ok  # nothing inside the database tells
        report = ledger.verify(verifier=verifier, external=[log])
        assert [p.what for p in report.problems] == [
            "checkpoints: the one of size 8 in the external log is missing from the "
            "database (deleted)"
        ]
    finally:
        ledger.close()
