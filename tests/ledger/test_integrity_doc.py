"""The by-hand bundle check printed in docs/integrity.md works on real bundles."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature

from consentgate.ledger import tlog

from ..conftest import OpenLedger

DOC = Path(__file__).resolve().parents[2] / "docs" / "integrity.md"


def _script() -> dict[str, Any]:
    text = DOC.read_text("utf-8").split("## 7.", 1)[1]
    code = re.search(r"```python\n(.*?)```", text, re.S)
    assert code, "docs/integrity.md section 7 has a Python block"
    namespace: dict[str, Any] = {"__name__": "doc"}
    exec(compile(code.group(1), str(DOC), "exec"), namespace)  # noqa: S102 - our own doc
    return namespace


def test_the_documented_procedure_checks_a_bundle(open_ledger: OpenLedger, tmp_path: Path) -> None:
    key = tmp_path / "ledger.key"
    verifier_key = tlog.create_signing_key(key)
    ledger = open_ledger(f"sqlite:///{tmp_path / 'l.db'}", signing_key=key)
    for i in range(23):
        at = f"2024-01-{i + 1:02d}T10:00:00Z"
        ledger.record({"type": "profile", "subject": f"m{i % 5}", "at": at, "region": "DE"})
    note = ledger.checkpoint()
    bundle = json.loads(json.dumps(tlog.inclusion_bundle(ledger.engine, range(1, 24), note)))
    check = _script()["check"]
    origin, size = check(bundle, verifier_key)
    assert (origin, size) == (ledger.origin, 23)
    assert tlog.verify_bundle(bundle, tlog.load_verifier(verifier_key))

    forged = json.loads(json.dumps(bundle))
    entry = forged["events"][7]["entry"]
    forged["events"][7]["entry"] = entry.replace('"type":"profile"', '"type":"erasure"')
    assert forged["events"][7]["entry"] != entry
    with pytest.raises(AssertionError, match="event 8 is not in the log"):
        check(forged, verifier_key)
    forged = json.loads(json.dumps(bundle))
    forged["checkpoint"] = note.replace("\n23\n", "\n24\n")
    with pytest.raises(InvalidSignature):
        check(forged, verifier_key)
    other = tlog.create_signing_key(tmp_path / "other.key")
    with pytest.raises(ValueError, match="no signature by this key"):
        check(bundle, other)
