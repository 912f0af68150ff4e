"""docs/gate.md's examples run: its Python example gates a real corpus, and the
public names of `consentgate.gate` are the ones it lists."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

import consentgate
import consentgate.gate
from consentgate.demo import demo_policy_text
from consentgate.gate import check_manifest
from consentgate.ledger import tlog
from consentgate.synthetic import write_events_jsonl, write_posts_parquet

DOC = Path(__file__).resolve().parents[2] / "docs" / "gate.md"


def test_the_python_example_gates_a_corpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    tlog.create_signing_key(tmp_path / "ledger.key")
    with consentgate.open("sqlite:///consentgate.db", signing_key="ledger.key") as ledger:
        ledger.apply_policy(demo_policy_text())
        write_events_jsonl(tmp_path / "events.jsonl", 300)
        ledger.import_events(tmp_path / "events.jsonl")
    write_posts_parquet(tmp_path / "posts", 300, 5000)
    code = re.search(r"```python\n(.*?)```", DOC.read_text("utf-8"), re.S)
    assert code, "docs/gate.md has a Python example"
    namespace: dict[str, Any] = {"__name__": "doc"}
    exec(compile(code.group(1), str(DOC), "exec"), namespace)  # noqa: S102 - our own doc
    namespace["ledger"].close()
    result = namespace["result"]
    assert result.manifest["rows"]["input"] == 5000
    assert check_manifest(tmp_path / "runs" / "2025-10") == []


def test_public_names_are_sorted_and_exist() -> None:
    names = consentgate.gate.__all__
    assert list(names) == sorted(names)
    for name in names:
        assert hasattr(consentgate.gate, name), name
    assert callable(consentgate.gate)
