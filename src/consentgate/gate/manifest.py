"""The manifest of a gate run (DESIGN §5): what was read, decided and written.

`check_manifest` is what an auditor runs on a run directory: the manifest has every
field of the format with the right types, every reason code counted, counts that
add up, and output files whose SHA-256 and row counts are those recorded.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from consentgate.domain.decide import ALLOWED_REASONS, REASONS
from consentgate.domain.errors import InputError
from consentgate.gate.inputs import sha256_file

__all__ = ["MANIFEST_VERSION", "check_manifest", "load_manifest", "write_manifest"]

MANIFEST_VERSION = 1

_FIELDS: dict[str, type | tuple[type, ...]] = {
    "manifest_version": int,
    "run_id": str,
    "purpose": str,
    "as_of": str,
    "created_at": str,
    "engine": str,
    "policy": dict,
    "ledger": dict,
    "inputs": list,
    "outputs": list,
    "rows": dict,
    "reasons": dict,
    "subjects": dict,
    "options": dict,
}


def write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    """Write the manifest durably (fsync), keys in the order given."""
    data = json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def load_manifest(path: Path) -> dict[str, Any]:
    """Read a manifest and check its shape (not its files: see `check_manifest`)."""
    try:
        manifest = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise InputError("manifest", "a readable manifest.json", f"{path}: {err}") from None
    problems = _shape_problems(manifest)
    if problems:
        raise InputError("manifest", "a gate manifest (DESIGN §5)", "; ".join(problems))
    return manifest  # type: ignore[no-any-return]


def _shape_problems(m: Any) -> list[str]:
    if not isinstance(m, dict):
        return [f"a JSON object, found {type(m).__name__}"]
    problems = []
    for name, kind in _FIELDS.items():
        if name not in m:
            problems.append(f"{name} missing")
        elif not isinstance(m[name], kind) or isinstance(m[name], bool):
            problems.append(f"{name} should be {getattr(kind, '__name__', kind)}")
    if problems:
        return problems
    if m["manifest_version"] != MANIFEST_VERSION:
        problems.append(f"manifest_version {m['manifest_version']} is not {MANIFEST_VERSION}")
    if set(m["reasons"]) != set(REASONS):
        problems.append("reasons must count every reason code of DESIGN §3")
    for key in ("version", "sha256"):
        if not isinstance(m["policy"].get(key), str):
            problems.append(f"policy.{key} missing")
    if not isinstance(m["ledger"].get("size"), int) or not isinstance(m["ledger"].get("root"), str):
        problems.append("ledger.size and ledger.root missing")
    for group in ("inputs", "outputs"):
        for item in m[group]:
            if not (
                isinstance(item, dict)
                and isinstance(item.get("path"), str)
                and isinstance(item.get("sha256"), str)
                and isinstance(item.get("rows"), int)
            ):
                problems.append(f"{group} entries need path, sha256 and rows")
                break
    return problems


def check_manifest(run_dir: Path) -> list[str]:
    """Every problem with a run directory's manifest and outputs (empty: all good)."""
    run_dir = Path(run_dir)
    try:
        m = load_manifest(run_dir / "manifest.json")
    except InputError as err:
        return [str(err)]
    problems = []
    rows, reasons = m["rows"], m["reasons"]
    if sum(reasons.values()) != rows.get("input"):
        problems.append(
            f"reasons add up to {sum(reasons.values())}, rows.input is {rows.get('input')}"
        )
    kept = sum(n for r, n in reasons.items() if r in ALLOWED_REASONS)
    if kept != rows.get("kept") or rows.get("input", 0) - kept != rows.get("excluded"):
        problems.append("rows.kept / rows.excluded disagree with the reason counts")
    if sum(i["rows"] for i in m["inputs"]) != rows.get("input"):
        problems.append("input row counts disagree with rows.input")
    for item in m["outputs"]:
        path = run_dir / item["path"]
        if not path.is_file():
            problems.append(f"output {item['path']} is missing")
            continue
        if sha256_file(path) != item["sha256"]:
            problems.append(f"output {item['path']}: SHA-256 differs from the manifest")
        if pq.ParquetFile(path).metadata.num_rows != item["rows"]:
            problems.append(f"output {item['path']}: row count differs from the manifest")
    data_rows = sum(o["rows"] for o in m["outputs"] if o["path"].startswith("data/"))
    if data_rows != rows.get("kept"):
        problems.append(f"data/ holds {data_rows} rows, rows.kept is {rows.get('kept')}")
    excl = [o for o in m["outputs"] if o["path"] == "exclusions.parquet"]
    if not excl or excl[0]["rows"] != rows.get("excluded"):
        problems.append("exclusions.parquet rows disagree with rows.excluded")
    return problems
