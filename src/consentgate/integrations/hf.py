"""The gate for a Hugging Face `datasets.Dataset` (install the `hf` extra).

`gate_dataset` writes the dataset's rows to a scratch Parquet file, gates it like
any other input (the same engine, outputs and manifest), and returns the filtered
dataset as `ds.select(kept rows)`, so features and formatting are kept. The
manifest names the input `datasets:<fingerprint>` and hashes the staged Parquet
file; default record ids are `datasets:<fingerprint>:<row>` (rows from 1).
"""

from __future__ import annotations

import tempfile
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from consentgate.gate.options import Columns
from consentgate.gate.run import gate
from consentgate.ledger.store import Ledger

if TYPE_CHECKING:
    from datasets import Dataset

__all__ = ["gate_dataset"]


def gate_dataset(
    ds: Dataset,
    *,
    ledger: Ledger | str,
    purpose: str,
    out: str | Path,
    as_of: datetime | None = None,
    columns: Columns | None = None,
    source: str | None = None,
    naive_timestamps: str | None = None,
    overwrite: bool = False,
) -> tuple[Dataset, dict[str, Any]]:
    """Gate `ds` for `purpose`; return the kept rows as a dataset and the manifest."""
    name = f"datasets:{getattr(ds, '_fingerprint', None) or 'in-memory'}"
    with tempfile.TemporaryDirectory(prefix="consentgate-hf-") as scratch:
        staged = Path(scratch) / "dataset.parquet"
        ds.to_parquet(str(staged))
        result = gate(
            staged,
            ledger=ledger,
            purpose=purpose,
            out=out,
            as_of=as_of,
            columns=columns,
            source=source,
            naive_timestamps=naive_timestamps,
            overwrite=overwrite,
            input_names=[name],
            kept_rows=True,
        )
    kept = ds.select([row for _, row in result.kept_rows])
    return kept, result.manifest
