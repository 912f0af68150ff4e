"""Generated datasets for the gate, and the oracle's answer for each record."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from consentgate.domain import Decision, Record, decide
from consentgate.domain.events import Event
from consentgate.domain.policy import PolicyHistory

from ..ledger.eventgen import START

SOURCES = ("post", "comment", "private_message", "support_chat", None)


def random_records(
    rng: random.Random,
    subjects: Sequence[str],
    n: int,
    instants: Sequence[datetime] = (),
) -> list[dict[str, Any]]:
    """Records of known and unknown members, some without subject or time, with
    collection times on the events' own day grid (so ties with events happen)."""
    out = []
    for i in range(n):
        roll = rng.random()
        if roll < 0.03:
            subject: str | None = None
        elif roll < 0.05:
            subject = ""
        elif roll < 0.10:
            subject = f"stranger{rng.randrange(50)}"
        else:
            subject = rng.choice(subjects)
        when: datetime | None
        if rng.random() < 0.04:
            when = None
        elif instants and rng.random() < 0.15:
            when = rng.choice(instants)  # exactly an event's instant
        else:
            when = START + timedelta(days=rng.randrange(-30, 1000), hours=rng.choice((0, 0, 13)))
        out.append(
            {
                "record_id": f"r{i:06d}",
                "subject_id": subject,
                "collected_at": when,
                "source": rng.choice(SOURCES),
                "sensitive": rng.choice((True, False, False, False, None)),
                "text": f"post {i} " + "x" * rng.randrange(0, 40),
            }
        )
    return out


def boundary_records(
    by_subject: Mapping[str, Sequence[Event]], min_age: int, instants: Sequence[datetime]
) -> list[dict[str, Any]]:
    """Records collected exactly at, and a microsecond before, each member's event
    instants, the day they come of age, and the evaluation instants: where an
    off-by-one in an engine would show."""
    tick = timedelta(microseconds=1)
    out = []
    for subject, events in sorted(by_subject.items()):
        times = {ev.at for ev in events} | set(instants)
        for ev in events:
            born = getattr(ev, "birth_date", None)
            if born is not None:
                year = born.year + min_age
                try:
                    day = born.replace(year=year)
                except ValueError:  # 29 February in a common year
                    day = born.replace(year=year, month=3, day=1)
                times.add(datetime(day.year, day.month, day.day, tzinfo=START.tzinfo))
        for when in sorted(times):
            for c in (when - tick, when, when + tick):
                out.append(
                    {
                        "record_id": f"b{len(out):06d}",
                        "subject_id": subject,
                        "collected_at": c,
                        "source": "post",
                        "sensitive": False,
                        "text": "edge",
                    }
                )
    return out


def write_parquet(path: Path, records: Sequence[Mapping[str, Any]]) -> Path:
    table = pa.table(
        {
            "record_id": [r["record_id"] for r in records],
            "subject_id": pa.array([r["subject_id"] for r in records], pa.string()),
            "collected_at": pa.array(
                [r["collected_at"] for r in records], pa.timestamp("us", tz="UTC")
            ),
            "source": pa.array([r["source"] for r in records], pa.string()),
            "sensitive": pa.array([r["sensitive"] for r in records], pa.bool_()),
            "text": [r["text"] for r in records],
        }
    )
    pq.write_table(table, path, row_group_size=max(1, len(records) // 3))
    return path


def oracle(
    record: Mapping[str, Any],
    by_subject: Mapping[str, list[Event]],
    history: PolicyHistory,
    purpose: str,
    at: datetime,
    source: str | None = None,
) -> Decision:
    subject = record["subject_id"]
    events = by_subject.get(subject or "", [])
    when = record["collected_at"]
    if (
        subject
        and when is not None
        and when <= at
        and any(e.type == "erasure" for e in events)
        and any(e.at <= at for e in events)
    ):
        # The gate's one deliberate step beyond decide(): a member whose id and
        # personal fields were erased cannot be proven eligible at any T, so past
        # rules 1-2 their records are excluded as erased (docs/gate.md).
        return Decision(False, "erased")
    return decide(
        events=by_subject.get(subject or "", []),
        policy=history,
        purpose=purpose,
        at=at,
        record=Record(
            subject=subject,
            collected_at=record["collected_at"],
            source=record["source"] if source is None else source,
            sensitive=bool(record["sensitive"]),
        ),
    )
