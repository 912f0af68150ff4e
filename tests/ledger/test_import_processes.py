"""Large imports are parsed in worker processes; that must work from any script."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from consentgate.ledger.importer import PARALLEL_FROM

SCRIPT = """
import consentgate
ledger = consentgate.open({url!r})
result = ledger.import_events({path!r})
print("added", result.added, "read", result.read)
ledger.close()
"""


def test_a_script_without_main_guard_can_import_a_large_file(tmp_path: Path) -> None:
    """Spawned parsers must not re-run the caller's unguarded top-level code."""
    events = tmp_path / "events.jsonl"
    note = "x" * 200
    with events.open("w") as fh:
        n = 0
        while fh.tell() <= PARALLEL_FROM + 100_000:
            line = {"type": "erasure", "subject": f"m{n}", "at": "2025-01-01T00:00:00Z"}
            fh.write(json.dumps(line | {"note": note}) + "\n")
            n += 1
    script = tmp_path / "load.py"  # deliberately no `if __name__ == "__main__":`
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    script.write_text(SCRIPT.format(url=url, path=str(events)))
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["added", str(n), "read", str(n)]
    assert "Traceback" not in done.stderr
