"""`verify` in several processes says exactly what it says in one."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from sqlalchemy import text

import consentgate
from consentgate.ledger import tlog
from consentgate.ledger.verify import VerifyReport, verify_ledger

from ..conftest import OpenLedger

CHUNK = 16  # tiny subtrees, so ranges and chunk edges fall everywhere


def build(open_ledger: OpenLedger, url: str, tmp_path: Path) -> tuple[consentgate.Ledger, str]:
    key = tmp_path / "k"
    tlog.create_signing_key(key)
    ledger = open_ledger(url, signing_key=key, checkpoint_every=37)
    lines = []
    for i in range(300):
        at = f"2024-{1 + i % 12:02d}-{1 + i % 28:02d}T{i % 24:02d}:00:00Z"
        member = f"m{i % 41}"
        if i % 3 == 0:
            lines.append({"type": "profile", "subject": member, "at": at, "region": "DE",
                          "ip": f"10.0.0.{i % 250}"})  # fmt: skip
        else:
            choice = ("granted", "withdrawn", "refused")[i % 3]
            lines.append({"type": "consent", "subject": member, "at": at,
                          "purpose": "ai_training", "choice": choice})  # fmt: skip
    lines.append({"type": "erasure", "subject": "m7", "at": "2025-01-01T00:00:00Z"})
    for part in range(0, len(lines), 45):  # several imports: a checkpoint after most
        path = tmp_path / f"e{part}.jsonl"
        path.write_text("".join(json.dumps(line) + "\n" for line in lines[part : part + 45]))
        ledger.import_events(path)
    ledger.checkpoint()
    return ledger, Path(f"{key}.checkpoints").read_text()


def both(ledger: consentgate.Ledger, log: str, tmp_path: Path) -> tuple[VerifyReport, ...]:
    verifier = tlog.load_verifier(tmp_path / "k.pub")
    args = (ledger.engine, ledger.secret, ledger.origin)
    one = verify_ledger(*args, verifier=verifier, external=[log], workers=1, chunk=CHUNK)
    many = verify_ledger(*args, verifier=verifier, external=[log], workers=3, chunk=CHUNK)
    return one, many


def test_a_sound_ledger_verifies_the_same_in_parallel(
    open_ledger: OpenLedger, db_url: str, tmp_path: Path
) -> None:
    ledger, log = build(open_ledger, db_url, tmp_path)
    one, many = both(ledger, log, tmp_path)
    assert one.ok, one.problems
    assert many.ok, many.problems
    assert one.checkpoints >= 6
    assert (one.events, one.checkpoints, one.external) == (301, many.checkpoints, many.external)
    assert one.external == one.checkpoints


TAMPERING = [
    "UPDATE events SET choice = 'granted' WHERE seq = {s} AND choice IS NOT NULL",
    "UPDATE events SET at_us = at_us + 1 WHERE seq = {s}",
    "DELETE FROM events WHERE seq = {s}",
    "UPDATE events SET seq = -{s} WHERE seq = {s}",
    "DELETE FROM events WHERE seq >= {s}",
    "UPDATE events SET region = 'FR' WHERE seq = {s}",
]
# With 301 events, chunks of 16 and 3 workers, the ranges are 1-112, 113-224, 225-.
POSITIONS = (1, 16, 112, 113, 301)


def test_tampering_reads_the_same_in_parallel(
    open_ledger: OpenLedger, db_url: str, tmp_path: Path
) -> None:
    ledger, log = build(open_ledger, db_url, tmp_path)
    seen = 0
    for sql in TAMPERING:
        for position in POSITIONS:
            with ledger.engine.begin() as conn:
                conn.exec_driver_sql("CREATE TABLE saved_events AS SELECT * FROM events")
                changed = conn.execute(text(sql.format(s=position))).rowcount
            one, many = both(ledger, log, tmp_path) if changed else (None, None)
            with ledger.engine.begin() as conn:
                conn.exec_driver_sql("DELETE FROM events")
                conn.exec_driver_sql("INSERT INTO events SELECT * FROM saved_events")
                conn.exec_driver_sql("DROP TABLE saved_events")
            if one is None or many is None:
                continue
            seen += 1
            where = (sql, position)
            assert not one.ok, where
            assert [str(p) for p in many.problems] == [str(p) for p in one.problems], where
            assert one.first_bad is not None
            assert many.first_bad is not None
            assert many.first_bad.seq == one.first_bad.seq
    assert seen >= 25


def test_parallel_verify_while_a_writer_appends(
    open_ledger: OpenLedger, db_url: str, tmp_path: Path
) -> None:
    """Workers read later snapshots than the head was read in: events appended
    meanwhile must not look like events stored beyond the head."""
    ledger, _log = build(open_ledger, db_url, tmp_path)
    writer = open_ledger(db_url)
    stop = threading.Event()

    def append() -> None:
        i = 0
        while not stop.is_set():
            at = f"2025-03-01T00:{i // 60 % 60:02d}:{i % 60:02d}Z"
            writer.record({"type": "signal", "subject": f"w{i}", "signal": "gpc", "at": at})
            i += 1

    thread = threading.Thread(target=append)
    thread.start()
    try:
        reports = [
            verify_ledger(ledger.engine, ledger.secret, ledger.origin, workers=3, chunk=CHUNK)
            for _ in range(3)
        ]
    finally:
        stop.set()
        thread.join()
    assert all(r.ok for r in reports), [r.problems for r in reports]
    assert ledger.count_events() > reports[0].events >= 301
