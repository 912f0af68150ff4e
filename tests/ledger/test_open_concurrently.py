"""Several processes opening a brand-new ledger at once: it is created exactly once."""

from __future__ import annotations

import subprocess
import sys

import consentgate

from ..conftest import OpenLedger

OPEN = "import consentgate, sys; consentgate.open(sys.argv[1]).close(); print('opened')"


def test_processes_opening_a_new_ledger_together_all_succeed(
    open_ledger: OpenLedger, db_url: str
) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", OPEN, db_url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(6)
    ]
    results = [p.communicate(timeout=120) for p in procs]
    for proc, (out, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err
        assert out.strip() == "opened"
    ledger: consentgate.Ledger = open_ledger(db_url)
    assert [a.policy.version for a in ledger.policies()] == ["default-1"]
    with ledger.engine.connect() as conn:
        meta = conn.exec_driver_sql("SELECT name FROM ledger_meta ORDER BY name").scalars()
        assert list(meta) == ["ledger_id", "pseudonym_key", "session_key"]
    assert ledger.head().size == 0
