"""The README is executable: its Quick start, its tour and its Python example run here."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text("utf-8")


def block_after(heading: str, lang: str) -> str:
    section = README.split(heading, 1)[1]
    match = re.search(rf"```{lang}\n(.*?)```", section, re.S)
    assert match, f"no ```{lang} block after {heading!r}"
    return match.group(1)


def test_quick_start_is_exactly_the_two_make_commands() -> None:
    commands = [ln for ln in block_after("## Quick start", "sh").splitlines() if ln.strip()]
    assert commands == ["make demo", "make test"]
    makefile = (ROOT / "Makefile").read_text("utf-8")
    assert re.search(r"^demo:", makefile, re.M)
    assert re.search(r"^test:", makefile, re.M)
    assert "make test" in (ROOT / ".ci" / "run").read_text("utf-8")


def run_cli(args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("CONSENTGATE_DB", None)
    return subprocess.run(
        [sys.executable, "-m", "consentgate", *args.split()],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    return tmp_path


def test_tour_runs_and_prints_what_the_readme_shows(workdir: Path) -> None:
    steps: list[tuple[str, list[str]]] = []
    for line in block_after("## A short tour", "console").splitlines():
        if line.startswith("$ consentgate "):
            steps.append((line.removeprefix("$ consentgate "), []))
        elif line.strip():
            steps[-1][1].append(line.strip())
    assert len(steps) >= 8
    for args, expected in steps:
        done = run_cli(args, workdir)
        assert done.returncode == 0, (args, done.stderr)
        for text in expected:
            assert text in done.stdout, (args, text, done.stdout)


def test_python_example_runs(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert run_cli("policy apply examples/policy.toml", workdir).returncode == 0
    monkeypatch.chdir(workdir)
    code = block_after("From Python:", "python")
    namespace: dict[str, object] = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - the README's own code
    namespace["ledger"].close()  # type: ignore[attr-defined]
