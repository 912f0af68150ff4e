"""The command line as a user drives it: real processes, real databases, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def cli(
    *args: str, db: str | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    if db:
        env["CONSENTGATE_DB"] = db
    return subprocess.run(
        [sys.executable, "-m", "consentgate", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    assert cli("init", db=url).returncode == 0
    assert cli("policy", "apply", str(EXAMPLES / "policy.toml"), db=url).returncode == 0
    return url


def test_import_decide_history_as_json(db: str) -> None:
    done = cli("events", "import", str(EXAMPLES / "events.jsonl"), "--json", db=db)
    assert json.loads(done.stdout) == {"read": 8, "added": 8, "duplicates": 0}
    again = json.loads(
        cli("events", "import", str(EXAMPLES / "events.jsonl"), "--json", db=db).stdout
    )
    assert again == {"read": 8, "added": 0, "duplicates": 8}
    out = json.loads(
        cli(
            "decide",
            "m2",
            "--purpose",
            "ai_training",
            "--at",
            "2025-02-01T00:00:00Z",
            "--json",
            db=db,
        ).stdout
    )
    assert out | {"policy_version": "?"} == {
        "subject": "m2",
        "purpose": "ai_training",
        "at": "2025-02-01T00:00:00Z",
        "allowed": True,
        "reason": "consented",
        "policy_version": "?",
    }
    assert out["policy_version"] == "example-1"
    history = json.loads(cli("history", "m2", "--json", db=db).stdout)
    assert [ev["type"] for ev in history] == ["profile", "consent"]
    assert history[1]["at"] == "2024-10-02T16:45:00Z"  # stored in UTC


def test_unknown_subject_is_an_answer_not_an_error(db: str) -> None:
    done = cli("decide", "ghost", "--purpose", "ai_training", "--json", db=db)
    assert done.returncode == 0
    assert json.loads(done.stdout)["reason"] == "unknown_subject"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("decide", "m1", "--purpose", "ads"), "field 'purpose': expected one of ai_training"),
        (("decide", "m1", "--purpose", "ai_training", "--at", "2025-01-01"), "field '--at'"),
        (("events", "import", "/no/such/file.jsonl"), "field 'FILE'"),
        (("policy", "apply", "/no/such/policy.toml"), "field 'FILE'"),
    ],
)
def test_bad_input_exits_2_with_a_one_line_message(
    db: str, args: tuple[str, ...], message: str
) -> None:
    done = cli(*args, db=db)
    assert done.returncode == 2
    assert message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert "Traceback" not in done.stderr


def test_bad_event_file_names_line_and_changes_nothing(db: str, tmp_path: Path) -> None:
    lines = (EXAMPLES / "events.jsonl").read_text("utf-8").splitlines()
    lines[4] = lines[4].replace('"DE"', '"XX"')
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines) + "\n", "utf-8")
    done = cli("events", "import", str(bad), db=db)
    assert done.returncode == 2
    assert f"{bad}:5: field 'region'" in done.stderr
    assert "'XX'" in done.stderr
    assert json.loads(cli("history", "m1", "--json", db=db).stdout) == []


def test_invalid_policy_lists_every_problem_and_stores_nothing(db: str, tmp_path: Path) -> None:
    text = (EXAMPLES / "policy.toml").read_text("utf-8")
    text = text.replace('US = "opt_out"', 'US = "maybe"', 1)
    text = text.replace("effective = 2024-09-18T00:00:00Z", "effective = 2024-09-18T00:00:00")
    bad = tmp_path / "bad.toml"
    bad.write_text(text, "utf-8")
    done = cli("policy", "apply", str(bad), db=db)
    assert done.returncode == 2
    assert "2 problem(s)" in done.stderr
    assert "'maybe'" in done.stderr
    assert "timezone" in done.stderr
    shown = json.loads(cli("policy", "show", "--json", db=db).stdout)
    assert [v["version"] for v in shown["history"]] == ["default-1", "example-1"]


def test_unusable_database_exits_2(tmp_path: Path) -> None:
    done = cli("decide", "m1", "--purpose", "ai_training", db=f"sqlite:///{tmp_path}/no/dir/x.db")
    assert done.returncode == 2
    assert "cannot open database" in done.stderr


def test_a_database_without_a_ledger_is_not_silently_created(tmp_path: Path) -> None:
    done = cli("history", "m1", db=f"sqlite:///{tmp_path / 'empty.db'}")
    assert done.returncode == 2
    assert "consentgate init" in done.stderr


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    done = cli("demo", "--members", "3000", "--workdir", str(tmp_path / "demo"))
    assert done.returncode == 0, done.stderr
    assert "ai_training decisions at 2024-07-15" in done.stdout
    assert "ai_training decisions at 2025-10-01" in done.stdout
    for reason in ("notice_period", "consented", "default_allowed", "withdrawn", "no_consent"):
        assert reason in done.stdout
    assert (tmp_path / "demo" / "consentgate.db").exists()
