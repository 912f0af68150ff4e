"""`gate()`: one gate run, from input files to a complete output directory.

The run evaluates the ledger as of a signed checkpoint: a fresh one when the ledger
has a signing key, else the latest one stored. Only events recorded up to that
checkpoint count, so the run can be replayed exactly (`gate.replay`).

Outputs are written to a hidden sibling directory (`.NAME.tmp-*`) and renamed to
`out` only when complete, so a crash or Ctrl-C never leaves a directory that looks
like a finished run.
"""

from __future__ import annotations

import base64
import os
import shutil
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq

from consentgate.domain.errors import InputError, StorageError
from consentgate.domain.policy import Policy
from consentgate.domain.timeutil import format_ts
from consentgate.gate.engine import DuckDBGate, scan_sql
from consentgate.gate.inputs import (
    InputFile,
    check_parquet,
    display_path,
    find_inputs,
    sha256_file,
    stage_text_inputs,
)
from consentgate.gate.manifest import MANIFEST_VERSION, write_manifest
from consentgate.gate.options import Columns, GateOptions
from consentgate.gate.records import FILE_COL, ROW_COL, RecordColumns
from consentgate.gate.subjects import load_subjects
from consentgate.ledger.checkpoint import _parse_body, _split_note  # the note's own parser
from consentgate.ledger.duckscan import attach_ledger, sql_text
from consentgate.ledger.store import Ledger, open_ledger

__all__ = ["STEPS", "GateResult", "LedgerPoint", "gate"]

Progress = Callable[[str], None]
#: The steps a run reports to `progress`, in order.
STEPS = (
    "staging text input as Parquet",
    "reading the ledger",
    "deciding every record",
    "writing exclusions and contributors",
    "writing the kept records",
    "hashing inputs and outputs",
)
DATA_FILE = "data/part-00000.parquet"
ENGINES = ("duckdb",)  # the Spark engine will join here (DESIGN §7)


@dataclass(frozen=True, slots=True)
class LedgerPoint:
    """The signed checkpoint a run evaluates against."""

    size: int
    root: str  # base64, as in the signed note
    origin: str
    note: str

    @classmethod
    def of_note(cls, note: str) -> LedgerPoint:
        body, _ = _split_note(note)
        cp = _parse_body(body)
        return cls(cp.size, base64.b64encode(cp.root).decode(), cp.origin, note)


@dataclass(slots=True)
class GateResult:
    """A finished run: its directory and manifest; `kept_rows` (when asked for)
    lists each kept record as (input file index, row), in input order."""

    out: Path
    manifest: dict[str, Any]
    kept_rows: list[tuple[int, int]] = field(default_factory=list)


def no_progress(step: str) -> None:
    """A `Progress` that says nothing."""
    pass


def ledger_point(ledger: Ledger) -> LedgerPoint:
    """A fresh signed checkpoint if the ledger can sign, else the latest stored."""
    if ledger.signer is not None:
        return LedgerPoint.of_note(ledger.checkpoint())
    note = ledger.latest_checkpoint()
    if note is None:
        raise StorageError(
            "the ledger has no signed checkpoint to gate against: open it with its signing"
            " key (--signing-key) or run `consentgate checkpoint` first"
        )
    return LedgerPoint.of_note(note)


def connect_duckdb(scratch: Path) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB bounded in memory, spilling to `scratch`."""
    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    limit = os.environ.get("CONSENTGATE_GATE_MEMORY", "1GB")
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"SET memory_limit = '{limit}'")
    con.execute(f"SET temp_directory = {sql_text(str(scratch))}")
    con.execute("SET preserve_insertion_order = false")  # no output relies on order
    return con


@contextmanager
def atomic_dir(out: Path, overwrite: bool) -> Iterator[Path]:
    """A scratch directory renamed to `out` when the block completes, removed if not.
    Only a previous run (a directory with a manifest.json) is ever replaced, and it
    is put back if the replacement cannot be renamed into place."""
    out = Path(out)
    check_out(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:12]}"
    tmp.mkdir()
    try:
        yield tmp
        _fsync_tree(tmp)
        if out.exists():
            old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:12]}"
            out.rename(old)
            try:
                tmp.rename(out)
            except BaseException:
                old.rename(out)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
        _fsync_dir(out.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def check_out(out: Path, overwrite: bool) -> None:
    """Refuse an existing `out` unless overwriting a previous run directory."""
    if not out.exists():
        return
    if not overwrite:
        raise InputError("--out", "a directory that does not exist yet (or --overwrite)", str(out))
    if not (out.is_dir() and (out / "manifest.json").is_file()):
        raise InputError("--out", "a previous gate run to overwrite (with manifest.json)", str(out))


def _fsync_tree(root: Path) -> None:
    """Make every file and directory under `root` durable before it is published."""
    for path in sorted(root.rglob("*"), reverse=True):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        elif path.is_dir():
            _fsync_dir(path)
    _fsync_dir(root)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def prepare(
    con: duckdb.DuckDBPyConnection,
    ledger: Ledger,
    files: Sequence[InputFile],
    names: Sequence[str],
    options: GateOptions,
    policy: Policy,
    point: LedgerPoint,
    scratch: Path,
    progress: Progress,
) -> DuckDBGate:
    """Stage and check the inputs, load the ledger side: a gate ready to decide."""
    if any(f.kind != "parquet" for f in files):
        progress("staging text input as Parquet")
        stage_text_inputs(con, files, scratch, options.columns.time)
    else:
        check_parquet(files)
    engine = _engine(con, files, names, options)
    engine.check_naive_times()
    progress("reading the ledger")
    try:
        attach_ledger(con, ledger.engine)
        load_subjects(
            con, policy=policy, purpose=options.purpose, at=options.as_of, upto=point.size
        )
    except duckdb.Error as err:
        raise StorageError(f"DuckDB could not scan the ledger: {err}") from err
    return engine


def _engine(
    con: duckdb.DuckDBPyConnection,
    files: Sequence[InputFile],
    names: Sequence[str],
    options: GateOptions,
) -> DuckDBGate:
    scans = [f.scan for f in files]
    try:
        described = con.execute(f"DESCRIBE SELECT * FROM {scan_sql(scans)}").fetchall()
    except duckdb.Error as err:
        raise InputError("input", "Parquet files with one schema", str(err)) from None
    schema = {name: dtype for name, dtype, *_ in described}
    schema.pop(FILE_COL, None)
    schema.pop(ROW_COL, None)
    cols = RecordColumns.check(schema, options, [str(s) for s in scans])
    return DuckDBGate(con, scans, names, cols)


def gate(
    input: str | Path | Sequence[str | Path],
    *,
    ledger: Ledger | str,
    purpose: str,
    out: str | Path,
    as_of: datetime | None = None,
    columns: Columns | None = None,
    source: str | None = None,
    naive_timestamps: str | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
    signing_key: str | Path | None = None,
    input_names: Sequence[str] | None = None,
    kept_rows: bool = False,
    engine: str = "duckdb",
) -> GateResult:
    """Gate `input` for `purpose` as of `as_of` (default now) against `ledger`
    (a `Ledger` or a database URL), writing DESIGN §5's outputs to `out`.

    `input_names`: how the manifest and default record ids name the input files
    (default: their paths); `kept_rows`: also return the kept rows' positions;
    `engine`: one of `ENGINES`."""
    if engine not in ENGINES:
        raise InputError("--engine", "one of " + ", ".join(ENGINES), engine)
    say = progress or no_progress
    options = GateOptions(
        purpose=purpose,
        as_of=(as_of or datetime.now(UTC)),
        columns=columns or Columns(),
        source=source,
        naive_timestamps=naive_timestamps,
    )
    if isinstance(ledger, str):
        with open_ledger(ledger, create=False, signing_key=signing_key) as opened:
            return _gate(input, opened, options, Path(out), overwrite, say, input_names, kept_rows)
    return _gate(input, ledger, options, Path(out), overwrite, say, input_names, kept_rows)


def _gate(
    input: str | Path | Sequence[str | Path],
    ledger: Ledger,
    options: GateOptions,
    out: Path,
    overwrite: bool,
    say: Progress,
    input_names: Sequence[str] | None,
    want_rows: bool,
) -> GateResult:
    policy = ledger.purpose_policy(options.purpose, options.as_of)
    files = find_inputs(input)
    names = list(input_names) if input_names else [display_path(f.path) for f in files]
    if len(names) != len(files):
        raise InputError("input_names", f"{len(files)} names, one per input file", len(names))
    check_out(out, overwrite)
    _check_apart(out, files)
    point = ledger_point(ledger)
    before = [_stamp(f.path) for f in files]
    with atomic_dir(out, overwrite) as tmp, ThreadPoolExecutor(1) as hasher:
        scratch = tmp / ".scratch"
        scratch.mkdir()
        hashes: list[Future[str]] = [hasher.submit(sha256_file, f.path) for f in files]
        con = connect_duckdb(scratch)
        try:
            engine = prepare(con, ledger, files, names, options, policy, point, scratch, say)
            say("deciding every record")
            engine.decide(policy, options.purpose, options.as_of, ledger.secret)
            engine.check_positions(sum(f.rows for f in files))
            counts = engine.counts()
            members = engine.subject_count()
            say("writing exclusions and contributors")
            engine.write_exclusions(tmp / "exclusions.parquet")
            subjects = (members, engine.write_contributors(tmp / "contributors.parquet"))
            say("writing the kept records")
            (tmp / "data").mkdir()
            data_rows = engine.write_data(tmp / DATA_FILE)
            rows = engine.kept_rows() if want_rows else []
        except duckdb.Error as err:
            raise StorageError(f"the gate could not complete: {err}") from None
        finally:
            con.close()
        shutil.rmtree(scratch)
        say("hashing inputs and outputs")
        outputs = [DATA_FILE, "exclusions.parquet", "contributors.parquet"]
        out_hashes = {p: hasher.submit(sha256_file, tmp / p) for p in outputs}
        out_rows = {p: pq.ParquetFile(tmp / p).metadata.num_rows for p in outputs}
        kept = counts["consented"] + counts["default_allowed"]
        if not out_rows[DATA_FILE] == data_rows == kept:
            raise StorageError(f"wrote {data_rows} kept records, decided {kept}: run refused")
        if [_stamp(f.path) for f in files] != before:
            raise InputError("input", "files that do not change during the run", "a change")
        manifest = _manifest(
            options,
            policy,
            point,
            inputs=[
                {"path": n, "sha256": h.result(), "rows": f.rows}
                for n, f, h in zip(names, files, hashes, strict=True)
            ],
            outputs=[
                {"path": p, "sha256": out_hashes[p].result(), "rows": out_rows[p]} for p in outputs
            ],
            counts=counts,
            subjects=subjects,
        )
        write_manifest(tmp / "manifest.json", manifest)
    return GateResult(out=out, manifest=manifest, kept_rows=rows)


def _stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def _check_apart(out: Path, files: Sequence[InputFile]) -> None:
    """The output directory must not hold, or be held by, an input."""
    target = out.resolve()
    for f in files:
        if f.path == target or target in f.path.parents:
            raise InputError("--out", "a directory apart from the inputs", str(out))


def _manifest(
    options: GateOptions,
    policy: Policy,
    point: LedgerPoint,
    *,
    inputs: list[dict[str, Any]],
    outputs: list[dict[str, Any]],
    counts: dict[str, int],
    subjects: tuple[int, int],
) -> dict[str, Any]:
    kept = counts["consented"] + counts["default_allowed"]
    total = sum(counts.values())
    return {
        "manifest_version": MANIFEST_VERSION,
        "run_id": uuid.uuid4().hex,
        "purpose": options.purpose,
        "as_of": format_ts(options.as_of),
        "created_at": format_ts(datetime.now(UTC)),
        "engine": "duckdb",
        "policy": {"version": policy.version, "sha256": policy.sha256},
        "ledger": {
            "size": point.size,
            "root": point.root,
            "origin": point.origin,
            "checkpoint": point.note,
        },
        "inputs": inputs,
        "outputs": outputs,
        "rows": {"input": total, "kept": kept, "excluded": total - kept},
        "reasons": counts,
        "subjects": {"input": subjects[0], "kept": subjects[1]},
        "options": options.as_manifest(),
    }
