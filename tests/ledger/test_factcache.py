"""The facts cache of online batch decisions never answers differently from the
ledger without it: events added in steps (by this ledger object and by another, as
another process would), instants asked out of order, events dated in the future of
an earlier question, erasures, and a new policy version."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from consentgate.domain.timeutil import format_ts
from tests.conftest import OpenLedger
from tests.ledger.eventgen import INSTANTS, POLICY, random_history


def test_cached_decisions_equal_uncached_ones_through_changes(
    open_ledger: OpenLedger, db_url: str
) -> None:
    cached = open_ledger(db_url)
    cached.apply_policy(POLICY)
    cached.cache_facts()
    plain = open_ledger(db_url)  # another writer and an uncached reader
    rng = random.Random(11)
    subjects = [f"c{i:03d}" for i in range(120)]
    histories = [random_history(rng, s) for s in subjects]
    asked = [*subjects, "nobody"]
    instants = [INSTANTS[i] for i in (7, 2, 5, 0, 7, 3)]  # out of order, repeats
    for step in range(4):
        writer = cached if step % 2 else plain
        part = [e for h in histories[step * 30 : (step + 1) * 30] for e in h]
        writer.record_batch(part)
        if step == 2:  # later events of members asked about before
            later = [
                {"type": "consent", "subject": s, "purpose": "ai_training",
                 "choice": "withdrawn", "at": format_ts(INSTANTS[4] + timedelta(hours=i))}
                for i, s in enumerate(subjects[:20])
            ] + [{"type": "erasure", "subject": s, "at": format_ts(INSTANTS[6])}
                 for s in subjects[20:25]]  # fmt: skip
            plain.record_batch(later)
        if step == 3:
            plain.apply_policy(POLICY.replace('version = "contract-1"', 'version = "c-2"'))
        for at in instants:
            for purpose in ("ai_training", "genai_features"):
                got = list(cached.decisions(purpose=purpose, at=at, subjects=asked))
                want = list(plain.decisions(purpose=purpose, at=at, subjects=asked))
                assert dict(got) == dict(want), (step, at, purpose)
                assert [s for s, _ in got] == asked
    assert cached._facts is not None
    assert cached._facts._count > 0  # the cache was used


def test_cache_sees_future_dated_events_when_their_time_comes(
    open_ledger: OpenLedger, db_url: str
) -> None:
    ledger = open_ledger(db_url)
    ledger.cache_facts()
    now = datetime.now(UTC)
    ledger.record_batch(
        [
            {"type": "profile", "subject": "f1", "region": "DE",
             "at": format_ts(now - timedelta(days=9))},
            {"type": "consent", "subject": "f1", "purpose": "ai_training", "choice": "granted",
             "at": format_ts(now - timedelta(days=8))},
            {"type": "consent", "subject": "f1", "purpose": "ai_training", "choice": "withdrawn",
             "at": format_ts(now + timedelta(days=1))},
        ]
    )  # fmt: skip
    before = dict(ledger.decisions(purpose="ai_training", at=now, subjects=["f1"]))
    after = dict(
        ledger.decisions(purpose="ai_training", at=now + timedelta(days=2), subjects=["f1"])
    )
    assert before["f1"].reason == "consented"
    assert after["f1"].reason == "withdrawn"
