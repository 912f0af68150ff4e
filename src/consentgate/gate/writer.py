"""The gate's decision pass: decided records in, exclusions and counts out.

DuckDB streams every record's decision (position, member id, reason, and for
excluded records the record id) as narrow Arrow record batches; each batch is
split here with Arrow compute (no Python per record): exclusions are written,
reasons, members and contributors counted, and the excluded positions kept for
the data pass (`DuckDBGate.write_data`). Each output is hashed as it is written,
so nothing is read back. A second thread splits and writes while DuckDB produces
the next batches.
"""

from __future__ import annotations

import hashlib
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from consentgate.domain.decide import ALLOWED_REASONS, REASONS

__all__ = ["Outputs", "write_decisions"]

_KEPT = pa.array(sorted(REASONS.index(r) for r in ALLOWED_REASONS), pa.uint8())
_REASON_NAMES = pa.array(REASONS, pa.string())
_ROW_GROUP = 128 * 1024
_EXCLUSIONS = pa.schema(
    [("record_id", pa.string()), ("subject_id", pa.string()), ("reason", pa.string())]
)


class _HashingFile:
    """A write-only file that hashes what passes through it."""

    def __init__(self, path: Path) -> None:
        self._fh: BinaryIO = open(path, "wb")  # noqa: SIM115 - closed in close()
        self.sha256 = hashlib.sha256()
        self.closed = False

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self.sha256.update(view)
        return self._fh.write(view)

    def flush(self) -> None:
        self._fh.flush()

    def tell(self) -> int:
        return self._fh.tell()

    def close(self) -> None:
        if not self.closed:
            self._fh.close()
            self.closed = True


class _ParquetOut:
    """A Parquet file written in row groups of about `_ROW_GROUP` rows, hashed."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.file = _HashingFile(path)
        self.writer = pq.ParquetWriter(self.file, schema)
        self.pending: list[pa.RecordBatch] = []
        self.pending_rows = 0
        self.rows = 0

    def add(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        self.pending.append(batch)
        self.pending_rows += batch.num_rows
        if self.pending_rows >= _ROW_GROUP:
            self._flush()

    def _flush(self) -> None:
        if self.pending:
            self.writer.write_table(pa.Table.from_batches(self.pending), row_group_size=1 << 30)
            self.rows += self.pending_rows
            self.pending, self.pending_rows = [], 0

    def close(self) -> str:
        self._flush()
        self.writer.close()
        self.file.close()
        return self.file.sha256.hexdigest()


class _Distinct:
    """Distinct strings over many batches, merged now and then to bound memory."""

    def __init__(self) -> None:
        self.parts: list[pa.Array] = []
        self.size = 0

    def add(self, values: pa.Array) -> None:
        part = pc.unique(values.drop_null())
        self.parts.append(part)
        self.size += len(part)
        if len(self.parts) > 64:
            self.parts = [pc.unique(pa.concat_arrays(self.parts))]

    def result(self) -> pa.Array:
        if not self.parts:
            return pa.array([], pa.string())
        merged = pc.unique(pa.concat_arrays(self.parts))
        return merged.filter(pc.not_equal(merged, ""))


@dataclass(slots=True)
class Outputs:
    """What the pass wrote and counted."""

    counts: dict[str, int]
    hashes: dict[str, str]
    rows: dict[str, int]
    subjects_in: int
    subjects_kept: int
    excluded_positions: pa.Array
    kept_positions: list[int] = field(default_factory=list)


def write_decisions(
    batches: Iterator[pa.RecordBatch],
    schema: pa.Schema,
    out: Path,
    *,
    want_positions: bool = False,
) -> Outputs:
    """Write exclusions.parquet and contributors.parquet under `out` from decided
    batches (`__cg_pos`, `__cg_subject`, `__cg_reason`, `__cg_xid` columns)."""
    col = {name: i for i, name in enumerate(schema.names)}
    exclusions = _ParquetOut(out / "exclusions.parquet", _EXCLUSIONS)
    counts = [0] * len(REASONS)
    members, contributors = _Distinct(), _Distinct()
    positions: list[pa.Array] = []
    excluded: list[pa.Array] = []
    work: queue.Queue[pa.RecordBatch | None] = queue.Queue(maxsize=4)
    failure: list[BaseException] = []

    def split(batch: pa.RecordBatch) -> None:
        reason = batch.column(col["__cg_reason"])
        kept = pc.is_in(reason, value_set=_KEPT)
        for item in pc.value_counts(reason).to_pylist():
            counts[item["values"]] += item["counts"]
        subject = batch.column(col["__cg_subject"])
        members.add(subject)
        kept_batch = batch.filter(kept)
        contributors.add(kept_batch.column(col["__cg_subject"]))
        if want_positions:
            positions.append(kept_batch.column(col["__cg_pos"]))
        gone = batch.filter(pc.invert(kept))
        excluded.append(gone.column(col["__cg_pos"]))
        exclusions.add(
            pa.record_batch(
                [
                    gone.column(col["__cg_xid"]),
                    gone.column(col["__cg_subject"]),
                    pc.take(_REASON_NAMES, gone.column(col["__cg_reason"])),
                ],
                schema=_EXCLUSIONS,
            )
        )

    def consume() -> None:
        try:
            while (batch := work.get()) is not None:
                split(batch)
        except BaseException as err:  # reported to the producing thread
            failure.append(err)
            while work.get() is not None:  # drain so the producer never blocks
                pass

    worker = threading.Thread(target=consume, name="consentgate-gate-writer", daemon=True)
    worker.start()
    try:
        for batch in batches:
            if failure:
                break
            work.put(batch)
    finally:
        work.put(None)
        worker.join()
    if failure:
        raise failure[0]
    hashes = {"exclusions.parquet": exclusions.close()}
    distinct_kept = contributors.result()
    ordered = pc.take(distinct_kept, pc.sort_indices(distinct_kept))
    contrib = _ParquetOut(out / "contributors.parquet", pa.schema([("subject_id", pa.string())]))
    contrib.add(pa.record_batch([ordered], names=["subject_id"]))
    hashes["contributors.parquet"] = contrib.close()
    rows = {"exclusions.parquet": exclusions.rows, "contributors.parquet": contrib.rows}
    kept_positions = pa.concat_arrays(positions).to_pylist() if positions else []
    return Outputs(
        counts={r: counts[i] for i, r in enumerate(REASONS)},
        hashes=hashes,
        rows=rows,
        subjects_in=len(members.result()),
        subjects_kept=len(ordered),
        excluded_positions=pa.concat_arrays(excluded) if excluded else pa.array([], pa.int64()),
        kept_positions=kept_positions,
    )
