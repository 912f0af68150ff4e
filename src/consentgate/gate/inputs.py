"""What a gate run reads: input files found, checked, and (when not Parquet) staged.

An input is a Parquet file, directory or glob, a JSON Lines file or a CSV file.
The engine always scans Parquet: JSON Lines and CSV are first copied, in order and
streamed (bounded memory), to Parquet files in the run's scratch directory, so a
record's row number in the staged file is its row number in the original. The time
column of a text input is staged as text: the gate parses it itself, refusing
times without a zone unless asked (`naive_timestamps`).
"""

from __future__ import annotations

import glob
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from consentgate.domain.errors import InputError
from consentgate.ledger.duckscan import sql_text

__all__ = ["InputFile", "find_inputs", "sha256_file", "stage_text_inputs"]

_KINDS = {".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl"}
_KINDS |= {".json": "jsonl", ".csv": "csv"}


@dataclass(slots=True)
class InputFile:
    """One input file: where it is, its kind, and the Parquet file the engine scans."""

    path: Path
    kind: str
    scan: Path
    rows: int = 0
    sha256: str = ""


def _kind(path: Path) -> str:
    kind = _KINDS.get(path.suffix.lower())
    if kind is None:
        raise InputError("input", "a .parquet, .jsonl or .csv file", str(path))
    return kind


def find_inputs(spec: str | Path | Sequence[str | Path]) -> list[InputFile]:
    """The input files named by `spec`: files, directories (their Parquet, JSON
    Lines and CSV files, recursively) or globs, in a stable order."""
    specs = [spec] if isinstance(spec, str | Path) else list(spec)
    if not specs:
        raise InputError("input", "a file, directory or glob", "nothing")
    found: list[Path] = []
    for item in specs:
        text = str(item)
        path = Path(text)
        if path.is_dir():
            inner = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in _KINDS)
            if not inner:
                raise InputError("input", "a directory with Parquet, JSONL or CSV files", text)
            found.extend(inner)
        elif path.is_file():
            found.append(path)
        elif glob.has_magic(text):
            matched = sorted(Path(p) for p in glob.glob(text, recursive=True))
            matched = [p for p in matched if p.is_file()]
            if not matched:
                raise InputError("input", "a glob that matches files", text)
            found.extend(matched)
        else:
            raise InputError("input", "an existing file, directory or glob", text)
    files = []
    for path in dict.fromkeys(p.resolve() for p in found):
        kind = _kind(path)
        files.append(InputFile(path=path, kind=kind, scan=path))
    kinds = {f.kind for f in files}
    if len(kinds) > 1:
        raise InputError("input", "files of one kind", ", ".join(sorted(kinds)))
    return files


def check_parquet(files: Sequence[InputFile]) -> None:
    """Read each Parquet file's footer: corrupt or unreadable files are refused
    before any work, naming the file; also counts rows."""
    first = None
    for f in files:
        try:
            meta = pq.ParquetFile(f.scan)
            f.rows = meta.metadata.num_rows
            schema = meta.schema_arrow.remove_metadata()
        except (OSError, ValueError) as err:
            raise InputError("input", "a readable Parquet file", f"{f.path}: {err}") from None
        if first is None:
            first = (f.path, schema)
        elif not schema.equals(first[1]):
            raise InputError(
                "input", f"files with one schema (that of {first[0]})", f"{f.path}: {schema}"
            )


def stage_text_inputs(
    con: duckdb.DuckDBPyConnection, files: Sequence[InputFile], scratch: Path, time_col: str
) -> None:
    """Copy JSON Lines / CSV inputs to Parquet in `scratch`, in order, streamed."""
    for i, f in enumerate(files):
        if f.kind == "parquet":
            continue
        source = sql_text(str(f.path))
        try:
            if f.kind == "csv":
                probe = f"read_csv({source})"
                names = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {probe}").fetchall()]
                types = f", types={{{sql_text(time_col)}: 'VARCHAR'}}" if time_col in names else ""
                reader = f"read_csv({source}{types})"
            else:
                probe = f"read_json({source}, format='newline_delimited')"
                described = con.execute(f"DESCRIBE SELECT * FROM {probe}").fetchall()
                cols = ", ".join(
                    f"{sql_text(n)}: {sql_text('VARCHAR' if n == time_col else t)}"
                    for n, t, *_ in described
                )
                reader = f"read_json({source}, format='newline_delimited', columns={{{cols}}})"
            target = scratch / f"staged-{i:05d}.parquet"
            # One thread keeps the rows in file order; the writer streams row groups.
            con.execute("SET threads = 1")
            con.execute(
                f"COPY (SELECT * FROM {reader}) TO {sql_text(str(target))} (FORMAT parquet)"
            )
        except duckdb.Error as err:
            raise InputError(
                "input", f"a readable {f.kind.upper()} file", f"{f.path}: {err}"
            ) from None
        finally:
            con.execute("RESET threads")
        f.scan = target
    check_parquet(files)


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    """Hex SHA-256 of a file's bytes (the GIL is released while hashing)."""
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def display_path(path: Path) -> str:
    """The path as the manifest records it: relative to the working directory
    when inside it, else absolute."""
    try:
        return os.path.relpath(path) if path.is_relative_to(Path.cwd()) else str(path)
    except ValueError:
        return str(path)
