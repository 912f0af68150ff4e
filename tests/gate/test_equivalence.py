"""Every gate engine against the oracle, record by record (DESIGN §3, §7).

A generated ledger (every rule reachable: moves between regions, ties, minors,
erasures, GPC, re-consent) and a generated dataset are gated at instants chosen
to reach every reason code; each record's reason, read back from the run's
outputs, must be the one `domain.decide()` gives. `ENGINES` is the list a new
engine (Spark) joins to be held to the same suite.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import consentgate
from consentgate.domain import REASONS
from consentgate.domain.timeutil import format_ts
from consentgate.gate import gate
from consentgate.ledger import tlog
from consentgate.ledger.sealing import erased_label

from ..conftest import OpenLedger
from ..ledger.eventgen import INSTANTS, POLICY, REGIONS, START
from ..ledger.test_contract import as_stored, population, write_jsonl
from .corpus import SOURCES, boundary_records, oracle, random_records, write_parquet

ENGINES = ["duckdb"]


def run_reasons(out: Path) -> dict[str, str]:
    """record id -> reason, from a run's outputs (kept records say "kept")."""
    reasons = {
        rid: reason
        for rid, reason in zip(
            *pq.read_table(out / "exclusions.parquet", columns=["record_id", "reason"])
            .to_pydict()
            .values(),
            strict=True,
        )
    }
    kept = pq.read_table(out / "data", columns=["record_id"]).column(0).to_pylist()
    assert not set(kept) & set(reasons), "a record both kept and excluded"
    reasons.update(dict.fromkeys(kept, "kept"))
    return reasons


@pytest.mark.parametrize("engine", ENGINES)
def test_every_record_gets_the_oracles_reason(
    engine: str, open_ledger: OpenLedger, db_url: str, tmp_path: Path
) -> None:
    tlog.create_signing_key(tmp_path / "l.key")
    ledger = open_ledger(db_url, signing_key=tmp_path / "l.key")
    ledger.apply_policy(POLICY)
    events = population(11, 300)
    ledger.import_events(write_jsonl(tmp_path / "events.jsonl", events))
    by_subject = as_stored(events)
    history = ledger.policy_history()
    rng = random.Random(5)
    instants = sorted({consentgate.domain.parse_event(e).at for e in events})
    records = random_records(rng, sorted(by_subject), 2500, instants)
    records += boundary_records(by_subject, history.latest.min_age, INSTANTS)
    data = write_parquet(tmp_path / "corpus.parquet", records)
    erased = [s for s, evs in by_subject.items() if any(e.type == "erasure" for e in evs)]
    assert erased
    assert erased_label(ledger.pseudonym(erased[0])).startswith("~")
    seen: Counter[str] = Counter()
    for n, at in enumerate(INSTANTS):
        for purpose in ("ai_training", "genai_features"):
            out = tmp_path / f"run-{n}-{purpose}"
            result = gate(data, ledger=ledger, purpose=purpose, as_of=at, out=out, columns=_ids())
            got = run_reasons(out)
            assert len(got) == len(records)
            for rec in records:
                want = oracle(rec, by_subject, history, purpose, at)
                expected = "kept" if want.allowed else want.reason
                assert got[rec["record_id"]] == expected, (rec, purpose, at, want)
                seen[want.reason] += 1
            counts = result.manifest["reasons"]
            assert sum(counts.values()) == len(records)
    assert set(REASONS) <= set(seen), f"never reached: {set(REASONS) - set(seen)}"


def _ids() -> consentgate.gate.Columns:
    return consentgate.gate.Columns(id="record_id")


# -- Hypothesis: small generated worlds, one gate run each -----------------------------

_DAY = st.integers(min_value=-20, max_value=960).map(lambda d: START + timedelta(days=d))


@st.composite
def _event(draw: st.DrawFn, subject: str) -> dict[str, str]:
    at = format_ts(draw(_DAY))
    kind = draw(st.sampled_from(["profile", "profile", "consent", "consent", "signal", "erasure"]))
    if kind == "profile":
        ev = {"type": "profile", "subject": subject, "at": at}
        if draw(st.booleans()):
            ev["region"] = draw(st.sampled_from(REGIONS))
        if "region" not in ev or draw(st.booleans()):
            year = draw(st.sampled_from([1960, 1990, 2004, 2006, 2007, 2008]))
            ev["birth_date"] = (
                f"{year}-{draw(st.integers(1, 12)):02d}-{draw(st.integers(1, 28)):02d}"
            )
        return ev
    if kind == "consent":
        return {
            "type": "consent",
            "subject": subject,
            "at": at,
            "purpose": draw(st.sampled_from(["ai_training", "genai_features"])),
            "choice": draw(st.sampled_from(["granted", "withdrawn", "refused"])),
        }
    if kind == "signal":
        return {"type": "signal", "subject": subject, "at": at, "signal": "gpc"}
    return {"type": "erasure", "subject": subject, "at": at}


@st.composite
def _world(draw: st.DrawFn) -> tuple[list[dict[str, str]], list[dict[str, Any]], datetime, str]:
    n = draw(st.integers(1, 4))
    prefix = f"h{next(_COUNTER)}-"
    subjects = [f"{prefix}{i}" for i in range(n)]
    events = [e for s in subjects for e in draw(st.lists(_event(s), min_size=1, max_size=6))]
    who = st.sampled_from([*subjects, None, "", f"{prefix}stranger"])
    when = st.one_of(st.none(), _DAY, _DAY.map(lambda d: d + timedelta(hours=13)))
    records = [
        {
            "record_id": f"{prefix}r{i}",
            "subject_id": draw(who),
            "collected_at": draw(when),
            "source": draw(st.sampled_from(SOURCES)),
            "sensitive": draw(st.sampled_from([True, False, None])),
            "text": "t",
        }
        for i in range(draw(st.integers(1, 15)))
    ]
    at = draw(st.sampled_from(INSTANTS))
    return events, records, at, draw(st.sampled_from(["ai_training", "genai_features"]))


_COUNTER = itertools.count()


@pytest.fixture(scope="module")
def shared_ledger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[consentgate.Ledger]:
    root = tmp_path_factory.mktemp("hypothesis-ledger")
    tlog.create_signing_key(root / "l.key")
    ledger = consentgate.open(f"sqlite:///{root / 'l.db'}", signing_key=root / "l.key")
    ledger.apply_policy(POLICY)
    yield ledger
    ledger.close()


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(world=_world())
def test_generated_worlds_get_the_oracles_reasons(
    shared_ledger: consentgate.Ledger, tmp_path: Path, world: tuple[Any, ...]
) -> None:
    events, records, at, purpose = world
    n = next(_COUNTER)
    shared_ledger.import_events(write_jsonl(tmp_path / f"e{n}.jsonl", events))
    data = write_parquet(tmp_path / f"c{n}.parquet", records)
    gate(
        data,
        ledger=shared_ledger,
        purpose=purpose,
        as_of=at,
        out=tmp_path / f"run{n}",
        columns=_ids(),
    )
    got = run_reasons(tmp_path / f"run{n}")
    by_subject = as_stored(events)
    history = shared_ledger.policy_history()
    for rec in records:
        want = oracle(rec, by_subject, history, purpose, at)
        assert got[rec["record_id"]] == ("kept" if want.allowed else want.reason), (
            rec,
            at,
            purpose,
        )
