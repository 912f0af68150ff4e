"""A gate run as users meet it: outputs and manifest, atomicity, overwrite, replay,
text inputs, bad input, the command line."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import consentgate
from consentgate.domain import parse_event
from consentgate.errors import InputError, StorageError, UnknownPurposeError
from consentgate.gate import Columns, check_manifest, gate, replay
from consentgate.ledger import tlog

from ..ledger.eventgen import POLICY
from ..ledger.test_contract import as_stored, population, write_jsonl
from ..test_cli import cli
from .corpus import oracle, random_records, write_parquet

AT = datetime(2025, 3, 1, tzinfo=UTC)
IDS = Columns(id="record_id")


class World:
    """A signed SQLite ledger with generated members and a corpus about them."""

    def __init__(self, root: Path, members: int = 120, records: int = 1500) -> None:
        self.root = root
        self.key = root / "l.key"
        tlog.create_signing_key(self.key)
        self.url = f"sqlite:///{root / 'l.db'}"
        self.ledger = consentgate.open(self.url, signing_key=self.key)
        self.ledger.apply_policy(POLICY)
        self.events = population(21, members)
        self.ledger.import_events(write_jsonl(root / "events.jsonl", self.events))
        self.by_subject = as_stored(self.events)
        self.history = self.ledger.policy_history()
        instants = sorted({parse_event(e).at for e in self.events})
        self.records = random_records(random.Random(3), sorted(self.by_subject), records, instants)
        self.parquet = write_parquet(root / "corpus.parquet", self.records)

    def expected(self, purpose: str = "ai_training", at: datetime = AT) -> dict[str, str]:
        out = {}
        for rec in self.records:
            want = oracle(rec, self.by_subject, self.history, purpose, at)
            out[rec["record_id"]] = "kept" if want.allowed else want.reason
        return out


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    w.ledger.close()


def outcomes(out: Path, id_col: str = "record_id") -> dict[str, str]:
    excl = pq.read_table(out / "exclusions.parquet").to_pylist()
    got = {r["record_id"]: r["reason"] for r in excl}
    for rid in pq.read_table(out / "data", columns=[id_col]).column(0).to_pylist():
        got[rid] = "kept"
    return got


def test_outputs_and_manifest_follow_the_format(world: World, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = gate(
        world.parquet, ledger=world.ledger, purpose="ai_training", as_of=AT, out=out, columns=IDS
    )
    m = result.manifest
    assert check_manifest(out) == []
    assert json.loads((out / "manifest.json").read_text()) == m
    assert sorted(p.name for p in out.iterdir()) == [
        "contributors.parquet",
        "data",
        "exclusions.parquet",
        "manifest.json",
    ]
    # The input's schema is the kept data's schema; other columns pass through.
    assert (
        pq.read_schema(out / "data" / "part-00000.parquet").remove_metadata()
        == pq.read_schema(world.parquet).remove_metadata()
    )
    assert pq.read_schema(out / "exclusions.parquet").names == ["record_id", "subject_id", "reason"]
    assert m["inputs"] == [
        {
            "path": m["inputs"][0]["path"],
            "sha256": hashlib.sha256(world.parquet.read_bytes()).hexdigest(),
            "rows": len(world.records),
        }
    ]
    expected = world.expected()
    assert outcomes(out) == expected
    kept = [r for r in world.records if expected[r["record_id"]] == "kept"]
    assert m["rows"] == {
        "input": len(world.records),
        "kept": len(kept),
        "excluded": len(world.records) - len(kept),
    }
    assert m["subjects"]["kept"] == len({r["subject_id"] for r in kept})
    contributors = pq.read_table(out / "contributors.parquet").column(0).to_pylist()
    assert contributors == sorted({r["subject_id"] for r in kept})
    assert m["ledger"]["size"] == world.ledger.head().size
    head = world.ledger.latest_checkpoint()
    assert head is not None
    assert m["ledger"]["checkpoint"] == head
    assert m["policy"] == {"version": "contract-1", "sha256": world.history.latest.sha256}
    assert m["reasons"]["source_not_eligible"] > 0
    assert sum(m["reasons"].values()) == len(world.records)


def test_check_manifest_finds_edited_outputs(world: World, tmp_path: Path) -> None:
    out = tmp_path / "run"
    gate(world.parquet, ledger=world.ledger, purpose="ai_training", as_of=AT, out=out, columns=IDS)
    table = pq.read_table(out / "exclusions.parquet")
    pq.write_table(table.slice(1), out / "exclusions.parquet")  # one exclusion dropped
    problems = check_manifest(out)
    assert any("exclusions.parquet: SHA-256 differs" in p for p in problems), problems
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["reasons"]["consented"] += 1
    del manifest["reasons"]["gpc"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert any("every reason code" in p for p in check_manifest(out))


def _sorted_rows(path: Path) -> list[tuple[Any, ...]]:
    table = pq.read_table(path)
    return sorted(tuple(str(v) for v in row.values()) for row in table.to_pylist())


def test_same_run_twice_keeps_the_same_records(world: World, tmp_path: Path) -> None:
    runs = []
    for name in ("a", "b"):
        gate(
            world.parquet,
            ledger=world.ledger,
            purpose="ai_training",
            as_of=AT,
            out=tmp_path / name,
            columns=IDS,
        )
        runs.append(tmp_path / name)
    # The same records, reasons and members; row order follows DuckDB's parallel scan.
    for f in ("exclusions.parquet", "contributors.parquet", "data/part-00000.parquet"):
        assert _sorted_rows(runs[0] / f) == _sorted_rows(runs[1] / f), f
    a, b = (json.loads((r / "manifest.json").read_text()) for r in runs)
    assert a["ledger"] == b["ledger"]
    assert a["reasons"] == b["reasons"]
    assert a["run_id"] != b["run_id"]
    assert pq.read_table(runs[0] / "contributors.parquet").equals(
        pq.read_table(runs[1] / "contributors.parquet")
    )


def test_an_existing_output_directory_is_refused_unless_overwrite(
    world: World, tmp_path: Path
) -> None:
    run = {"ledger": world.ledger, "purpose": "ai_training", "as_of": AT}
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    for overwrite in (False, True):  # only a previous run is ever overwritten
        with pytest.raises(InputError, match="--out"):
            gate(world.parquet, out=out, overwrite=overwrite, **run)  # type: ignore[arg-type]
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    again = tmp_path / "again"
    gate(world.parquet, out=again, **run)  # type: ignore[arg-type]
    (again / "extra.txt").write_text("old")
    with pytest.raises(InputError, match="--out"):
        gate(world.parquet, out=again, **run)  # type: ignore[arg-type]
    gate(world.parquet, out=again, overwrite=True, **run)  # type: ignore[arg-type]
    assert not (again / "extra.txt").exists()
    assert check_manifest(again) == []
    with pytest.raises(InputError, match="apart from the inputs"):
        gate(again / "data", out=again, overwrite=True, **run)  # type: ignore[arg-type]
    assert check_manifest(again) == []
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith((".run", ".again"))] == []


_RUNNER = """
import sys
from datetime import datetime, timezone
from consentgate.gate import gate
gate(sys.argv[1], ledger=sys.argv[2], signing_key=sys.argv[3], purpose="ai_training",
     as_of=datetime(2025, 3, 1, tzinfo=timezone.utc), out=sys.argv[4],
     progress=lambda step: print(step, flush=True))
"""


@pytest.mark.slow
@pytest.mark.parametrize("how", ["kill", "interrupt"])
def test_a_run_killed_midway_leaves_no_complete_looking_output(
    world: World, tmp_path: Path, how: str
) -> None:
    big = random_records(random.Random(9), sorted(world.by_subject), 400_000)
    data = write_parquet(tmp_path / "big.parquet", big)
    rng = random.Random(4)
    for attempt in range(4):
        out = tmp_path / f"run{attempt}"
        wanted = rng.choice(
            ["reading the ledger", "deciding every record", "writing the kept records"]
        )
        with subprocess.Popen(
            [sys.executable, "-c", _RUNNER, str(data), world.url, str(world.key), str(out)],
            stdout=subprocess.PIPE,
            text=True,
        ) as proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                if line.strip() == wanted:
                    break
            time.sleep(rng.random() * 0.3)
            proc.send_signal(signal.SIGKILL if how == "kill" else signal.SIGINT)
            proc.wait(timeout=60)
        if out.exists():  # the rename happened before the signal: then it is complete
            assert check_manifest(out) == [], f"{how} during {wanted!r} left a partial {out}"
            continue
        assert proc.returncode != 0
        leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(f".run{attempt}")]
        if how == "interrupt":
            assert leftovers == [], "Ctrl-C must clean its scratch directory"


def test_replay_of_an_unchanged_ledger_finds_nothing_and_a_backdated_opt_out_is_named(
    world: World, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    gate(world.parquet, ledger=world.ledger, purpose="ai_training", as_of=AT, out=out, columns=IDS)
    report = replay(out / "manifest.json", world.ledger)
    assert report.clean, report
    kept = [r for r, why in world.expected().items() if why == "kept"]
    victim = next(r for r in world.records if r["record_id"] == kept[0])["subject_id"]
    records = {
        r["record_id"]
        for r in world.records
        if r["subject_id"] == victim and world.expected()[r["record_id"]] == "kept"
    }
    # The member withdrew before the run's as-of; the event reaches the ledger later.
    world.ledger.record(
        {
            "type": "consent",
            "subject": victim,
            "purpose": "ai_training",
            "choice": "withdrawn",
            "at": (AT - timedelta(days=3)).isoformat(),
        }
    )
    report = replay(out, world.ledger)
    assert report.reproduced.total == 0, "as of its checkpoint the run is reproduced exactly"
    assert {d.record_id for d in report.current.differences} == records
    assert {(d.subject_id, d.before, d.after) for d in report.current.differences} == {
        (victim, "kept", "withdrawn")
    }
    assert report.current.ledger_size == report.reproduced.ledger_size + 1
    done = cli(
        "--signing-key",
        str(world.key),
        "gate",
        "--replay",
        str(out / "manifest.json"),
        "--json",
        db=world.url,
    )
    assert done.returncode == 1, done.stderr
    shown = json.loads(done.stdout)
    assert shown["reproduced"]["differences"] == 0
    assert shown["current"]["differences"] == len(records)


def test_replay_refuses_a_changed_input(world: World, tmp_path: Path) -> None:
    out = tmp_path / "run"
    gate(world.parquet, ledger=world.ledger, purpose="ai_training", as_of=AT, out=out, columns=IDS)
    write_parquet(world.parquet, world.records[1:])
    with pytest.raises(InputError, match="has changed"):
        replay(out, world.ledger)


def _text_records(world: World) -> list[dict[str, Any]]:
    rows = []
    for r in world.records:
        when = r["collected_at"]
        rows.append(
            {
                **r,
                "collected_at": None
                if when is None
                else when.astimezone(
                    random.Random(r["record_id"]).choice([UTC, _zone(2), _zone(-5)])
                ).isoformat(),
            }
        )
    return rows


def _zone(hours: int) -> Any:
    from datetime import timezone

    return timezone(timedelta(hours=hours))


@pytest.mark.parametrize("kind", ["jsonl", "csv"])
def test_text_inputs_give_the_same_reasons(world: World, tmp_path: Path, kind: str) -> None:
    rows = _text_records(world)
    path = tmp_path / f"corpus.{kind}"
    if kind == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        import csv

        with open(path, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows({k: ("" if v is None else v) for k, v in r.items()} for r in rows)
    out = tmp_path / "run"
    gate(path, ledger=world.ledger, purpose="ai_training", as_of=AT, out=out, columns=IDS)
    # CSV has no null: an empty subject id or time reads as missing all the same.
    assert outcomes(out) == world.expected()
    assert check_manifest(out) == []


def test_naive_text_times_need_the_flag_and_unreadable_ones_are_invalid(
    world: World, tmp_path: Path
) -> None:
    subject = sorted(world.by_subject)[0]
    lines = [
        {"record_id": "a", "subject_id": subject, "collected_at": "2024-07-01T10:00:00"},
        {"record_id": "b", "subject_id": subject, "collected_at": "not a time"},
        {"record_id": "c", "subject_id": None, "collected_at": "2024-07-01T10:00:00Z"},
    ]
    path = tmp_path / "naive.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    with pytest.raises(InputError, match=r"without timezone at .*naive.jsonl:1"):
        gate(
            path,
            ledger=world.ledger,
            purpose="ai_training",
            as_of=AT,
            out=tmp_path / "x",
            columns=IDS,
        )
    assert not (tmp_path / "x").exists()
    out = tmp_path / "y"
    gate(
        path,
        ledger=world.ledger,
        purpose="ai_training",
        as_of=AT,
        out=out,
        columns=IDS,
        naive_timestamps="utc",
    )
    got = outcomes(out)
    assert got["b"] == "invalid_record"
    assert got["c"] == "missing_subject"
    rec = {
        "subject_id": subject,
        "collected_at": datetime(2024, 7, 1, 10, tzinfo=UTC),
        "source": None,
        "sensitive": None,
    }
    want = oracle(rec, world.by_subject, world.history, "ai_training", AT)
    assert got["a"] == ("kept" if want.allowed else want.reason)


def test_bad_input_is_refused_with_what_was_found(world: World, tmp_path: Path) -> None:
    run = dict(ledger=world.ledger, purpose="ai_training", as_of=AT)
    no_subject = tmp_path / "nosubject.parquet"
    pq.write_table(pa.table({"member": ["a"], "collected_at": [AT]}), no_subject)
    with pytest.raises(InputError, match=r"found: member, collected_at"):
        gate(no_subject, out=tmp_path / "o1", **run)  # type: ignore[arg-type]
    naive = tmp_path / "naive.parquet"
    pq.write_table(
        pa.table(
            {
                "subject_id": ["a"],
                "collected_at": pa.array(
                    [datetime(2024, 1, 1)],  # noqa: DTZ001
                    pa.timestamp("us"),
                ),
            }
        ),
        naive,
    )
    with pytest.raises(InputError, match="--naive-timestamps utc"):
        gate(naive, out=tmp_path / "o2", **run)  # type: ignore[arg-type]
    corrupt = tmp_path / "corrupt.parquet"
    corrupt.write_bytes(world.parquet.read_bytes()[:-100])
    with pytest.raises(InputError, match="readable Parquet"):
        gate(corrupt, out=tmp_path / "o3", **run)  # type: ignore[arg-type]
    with pytest.raises(UnknownPurposeError):
        gate(world.parquet, ledger=world.ledger, purpose="ads", as_of=AT, out=tmp_path / "o4")
    with pytest.raises(InputError, match="as_of"):
        gate(
            world.parquet,
            ledger=world.ledger,
            purpose="ai_training",
            as_of=datetime(2025, 1, 1),  # noqa: DTZ001
            out=tmp_path / "o5",
        )
    with pytest.raises(InputError, match="--engine"):
        gate(world.parquet, out=tmp_path / "o7", engine="spark", **run)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="existing file"):
        gate(tmp_path / "missing.parquet", out=tmp_path / "o6", **run)  # type: ignore[arg-type]
    assert not any((tmp_path / f"o{i}").exists() for i in range(1, 8))


def test_a_ledger_without_checkpoints_or_key_is_refused(tmp_path: Path) -> None:
    ledger = consentgate.open(f"sqlite:///{tmp_path / 'bare.db'}")
    try:
        pq.write_table(
            pa.table({"subject_id": ["a"], "collected_at": [AT]}), tmp_path / "d.parquet"
        )
        with pytest.raises(StorageError, match="no signed checkpoint"):
            gate(
                tmp_path / "d.parquet",
                ledger=ledger,
                purpose="ai_training",
                as_of=AT,
                out=tmp_path / "o",
            )
    finally:
        ledger.close()


def test_command_line_gate_prints_the_reason_table_and_json(world: World, tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = [
        "--signing-key",
        str(world.key),
        "gate",
        str(world.parquet),
        "--purpose",
        "ai_training",
        "--as-of",
        "2025-03-01T00:00:00Z",
        "--out",
        str(out),
        "--id-col",
        "record_id",
    ]
    done = cli(*args, db=world.url)
    assert done.returncode == 0, done.stderr
    for reason in consentgate.REASONS:
        assert reason in done.stdout
    assert "--replay" in done.stdout
    again = cli(*args, db=world.url)
    assert again.returncode == 2
    assert "--out" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1
    js = cli(*args, "--overwrite", "--json", db=world.url)
    assert js.returncode == 0
    assert json.loads(js.stdout)["rows"]["input"] == len(world.records)
    bad = cli(
        *args[:-4], "--as-of", "2025-03-01T00:00:00", "--out", str(tmp_path / "z"), db=world.url
    )
    assert bad.returncode == 2
    assert "--as-of" in bad.stderr


def test_a_run_leaves_its_output_and_its_signed_checkpoint_only(
    world: World, tmp_path: Path
) -> None:
    before = set(os.listdir(tmp_path))
    result = gate(
        world.parquet, ledger=world.ledger, purpose="ai_training", as_of=AT, out=tmp_path / "run"
    )
    # The checkpoint the run used is signed, stored and appended to the external log.
    assert set(os.listdir(tmp_path)) - before == {"run", "l.key.checkpoints"}
    assert result.manifest["ledger"]["checkpoint"] in (tmp_path / "l.key.checkpoints").read_text()


def test_inputs_that_could_open_a_gap_are_refused(world: World, tmp_path: Path) -> None:
    run = {"ledger": world.ledger, "purpose": "ai_training", "as_of": AT}
    # Two files whose schemas differ: the second's sensitive flags would be lost.
    parts = tmp_path / "parts"
    parts.mkdir()
    pq.write_table(pa.table({"subject_id": ["a"], "collected_at": [AT]}), parts / "1.parquet")
    pq.write_table(
        pa.table({"subject_id": ["a"], "collected_at": [AT], "sensitive": [True]}),
        parts / "2.parquet",
    )
    with pytest.raises(InputError, match="one schema"):
        gate(parts, out=tmp_path / "o1", **run)  # type: ignore[arg-type]
    # A date without a time of day carries no zone.
    dated = tmp_path / "dated.jsonl"
    dated.write_text(json.dumps({"subject_id": "a", "collected_at": "2024-01-02"}) + "\n")
    with pytest.raises(InputError, match="without timezone"):
        gate(dated, out=tmp_path / "o2", **run)  # type: ignore[arg-type]
    # A sensitive column named but absent is an error, not "nothing is sensitive".
    with pytest.raises(InputError, match="--sensitive-col"):
        gate(world.parquet, out=tmp_path / "o3", columns=Columns(sensitive="nsfw"), **run)  # type: ignore[arg-type]
    assert not any((tmp_path / f"o{i}").exists() for i in (1, 2, 3))


def test_directory_names_are_not_read_as_columns(world: World, tmp_path: Path) -> None:
    # A file under source=post/ whose own records say private_message stays ineligible.
    folder = tmp_path / "source=post"
    folder.mkdir()
    subject = sorted(world.by_subject)[0]
    pq.write_table(
        pa.table({"subject_id": [subject], "collected_at": [AT], "source": ["private_message"]}),
        folder / "p.parquet",
    )
    out = tmp_path / "run"
    result = gate(
        tmp_path / "source=post", ledger=world.ledger, purpose="ai_training", as_of=AT, out=out
    )
    assert result.manifest["rows"]["kept"] == 0
    assert pq.read_schema(out / "data" / "part-00000.parquet").names == [
        "subject_id",
        "collected_at",
        "source",
    ]


def test_a_purpose_with_no_eligible_source_keeps_nothing(tmp_path: Path) -> None:
    policy = POLICY.replace('eligible_sources = ["post", "comment"]', "eligible_sources = []")
    assert policy != POLICY
    world = World(tmp_path, members=40, records=300)
    try:
        world.ledger.apply_policy(
            policy.replace('version = "contract-1"', 'version = "contract-2"')
        )
        result = gate(
            world.parquet,
            ledger=world.ledger,
            purpose="ai_training",
            as_of=AT,
            out=tmp_path / "run",
        )
    finally:
        world.ledger.close()
    assert result.manifest["rows"]["kept"] == 0
    assert result.manifest["reasons"]["source_not_eligible"] > 0


def test_replay_after_an_erasure_names_the_members_records(world: World, tmp_path: Path) -> None:
    out = tmp_path / "run"
    gate(world.parquet, ledger=world.ledger, purpose="ai_training", as_of=AT, out=out, columns=IDS)
    expected = world.expected()
    kept = [r for r in world.records if expected[r["record_id"]] == "kept"]
    member = kept[0]["subject_id"]
    world.ledger.record({"type": "erasure", "subject": member, "at": "2026-06-01T00:00:00Z"})
    report = replay(out, world.ledger)
    # Every record of theirs past rules 1-2 is now erased, kept or not before.
    theirs = {
        r["record_id"]
        for r in world.records
        if r["subject_id"] == member and expected[r["record_id"]] != "invalid_record"
    }
    for view in (report.reproduced, report.current):
        assert {d.record_id for d in view.differences if d.after == "erased"} == theirs


def test_paths_with_quotes_and_spaces_work(tmp_path: Path) -> None:
    root = tmp_path / "it's a dir"
    root.mkdir()
    world = World(root, members=30, records=200)
    try:
        out = root / "run's out"
        gate(
            world.parquet,
            ledger=world.ledger,
            purpose="ai_training",
            as_of=AT,
            out=out,
            columns=IDS,
        )
    finally:
        world.ledger.close()
    assert outcomes(out) == world.expected()
