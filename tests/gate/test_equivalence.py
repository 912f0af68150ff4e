"""Every gate engine against the oracle, record by record (DESIGN §3, §7).

A generated ledger (every rule reachable: moves between regions, ties, minors,
erasures, GPC, re-consent) and a generated dataset are gated at instants chosen
to reach every reason code; each record's reason, read back from the run's
outputs, must be the one `domain.decide()` gives. `ENGINES` is the list a new
engine (Spark) joins to be held to the same suite.
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import consentgate
from consentgate.domain import REASONS
from consentgate.gate import gate
from consentgate.ledger import tlog
from consentgate.ledger.sealing import erased_label

from ..conftest import OpenLedger
from ..ledger.eventgen import INSTANTS, POLICY
from ..ledger.test_contract import as_stored, population, write_jsonl
from .corpus import boundary_records, oracle, random_records, write_parquet

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
