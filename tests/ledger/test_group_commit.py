"""Group commit: concurrent batches share transactions, each stays all or nothing,
and a bad batch in a group is refused alone."""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from consentgate.domain.errors import EventError, StorageError
from consentgate.ledger import database
from consentgate.ledger.batch import BatchResult, Once, validate
from consentgate.ledger.writer import GroupWriter
from tests.conftest import OpenLedger


def events(i: int) -> list[dict[str, str]]:
    return [
        {"type": "consent", "subject": f"g{i}", "purpose": "ai_training",
         "choice": "granted", "at": "2025-01-01T00:00:00Z", "event_id": f"e{i}-{k}"}
        for k in range(3)
    ]  # fmt: skip


def test_concurrent_batches_share_commits_and_bad_ones_are_refused_alone(
    open_ledger: OpenLedger, db_url: str
) -> None:
    ledger = open_ledger(db_url)
    ledger.record_batch(events(0))  # e0-* stored: a batch reusing those ids differently fails
    purposes = ledger.known_purposes()
    groups: list[int] = []
    release = threading.Event()

    def append(requests: Sequence[tuple[Sequence[object], Once | None]]) -> list[BatchResult]:
        release.wait(10)  # hold the first commit so the others queue up behind it
        groups.append(len(requests))
        return ledger.append_valid(requests)  # type: ignore[arg-type]

    writer = GroupWriter(append)
    bad = {7, 19}

    def send(i: int) -> BatchResult | Exception:
        batch = events(i)
        if i in bad:
            batch[1] = {**events(0)[1], "choice": "withdrawn"}  # id e0-1, other content
        try:
            return writer.submit(validate(batch, purposes), None)
        except EventError as err:
            return err

    try:
        with ThreadPoolExecutor(16) as pool:
            futures = [pool.submit(send, i) for i in range(1, 33)]
            release.set()
            results = [f.result() for f in futures]
    finally:
        writer.close()
    for i, result in enumerate(results, start=1):
        if i in bad:
            assert isinstance(result, EventError)
            assert result.field == "event_id"
        else:
            assert isinstance(result, BatchResult)
            assert result.added == 3
    assert max(groups) > 1, "batches waiting together must share a transaction"
    good = 32 - len(bad)
    assert ledger.head().size == 3 + 3 * good
    assert all(ledger.history(f"g{i}") == [] for i in bad)  # nothing of a bad batch
    report = ledger.verify()
    assert report.ok, report


def test_record_batch_through_the_group_writer(open_ledger: OpenLedger, db_url: str) -> None:
    ledger = open_ledger(db_url)
    ledger.group_commit()
    once = Once("key:x", "k1", Once.digest(events(1)))
    first = ledger.record_batch(events(1), once=once)
    again = ledger.record_batch(events(1), once=once)
    assert (first.added, again.replayed, again.to_json()) == (3, True, first.to_json())
    with pytest.raises(EventError):
        ledger.record_batch([{**events(2)[0], "choice": "maybe"}])
    writer = ledger._writer
    assert writer is not None
    writer.close()
    with pytest.raises(StorageError, match="writer is closed"):
        ledger.record_batch(events(3))


def test_a_writer_held_up_too_long_gets_a_clear_error(
    open_ledger: OpenLedger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "held.db"
    ledger = open_ledger(f"sqlite:///{db}")
    monkeypatch.setattr(database, "WRITER_WAIT_SECONDS", 0.3)
    fd = os.open(f"{db}-writers.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # another writer (a long import, say)
        with pytest.raises(StorageError, match="locked by another writer"):
            ledger.record_batch(events(1))
    finally:
        os.close(fd)
    assert ledger.record_batch(events(1)).added == 3  # free again
