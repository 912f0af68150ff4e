"""The Hugging Face `datasets` integration: a round trip through the gate."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
from datasets import Dataset

from consentgate.gate import Columns, check_manifest
from consentgate.integrations.hf import gate_dataset

from .test_runs import AT, World, outcomes


def test_gate_dataset_returns_the_kept_rows_and_the_manifest(tmp_path: Path) -> None:
    world = World(tmp_path, members=80, records=600)
    try:
        ds = Dataset.from_list(world.records)
        kept, manifest = gate_dataset(
            ds,
            ledger=world.ledger,
            purpose="ai_training",
            as_of=AT,
            out=tmp_path / "run",
            columns=Columns(id="record_id"),
        )
    finally:
        world.ledger.close()
    expected = world.expected()
    assert outcomes(tmp_path / "run") == expected
    assert sorted(kept["record_id"]) == sorted(r for r, why in expected.items() if why == "kept")
    assert kept.features == ds.features  # a selection of the dataset, features kept
    assert manifest["inputs"][0]["path"].startswith("datasets:")
    assert manifest["rows"]["kept"] == len(kept)
    assert check_manifest(tmp_path / "run") == []
    data = pq.read_table(tmp_path / "run" / "data", columns=["record_id"]).column(0).to_pylist()
    assert sorted(data) == sorted(kept["record_id"])


def test_default_record_ids_name_the_dataset_rows(tmp_path: Path) -> None:
    world = World(tmp_path, members=40, records=200)
    try:
        ds = Dataset.from_list(world.records)
        kept, manifest = gate_dataset(
            ds, ledger=world.ledger, purpose="ai_training", as_of=AT, out=tmp_path / "run"
        )
    finally:
        world.ledger.close()
    name = manifest["inputs"][0]["path"]
    excluded = pq.read_table(tmp_path / "run" / "exclusions.parquet").to_pylist()
    rows = {int(e["record_id"].removeprefix(name + ":")) - 1 for e in excluded}
    assert {e["record_id"].rsplit(":", 1)[0] for e in excluded} == {name}
    expected = world.expected()
    assert {i for i, r in enumerate(world.records) if expected[r["record_id"]] != "kept"} == rows
    assert len(kept) + len(rows) == len(ds)
