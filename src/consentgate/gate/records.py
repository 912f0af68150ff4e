"""The record side of a gate run: the dataset's columns read as decision inputs.

`RecordColumns.check` looks at the input schema once and fails early with the
column names found; `RecordColumns.sql` gives the expressions the per-record query
reads: subject id (text), collection time (µs since the epoch, NULL when missing
or unreadable), source, sensitive flag, record id, and the record's position
(`file index << 40 | row`), which identifies it across the run's passes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from consentgate.domain.errors import InputError
from consentgate.gate.options import Columns, GateOptions
from consentgate.ledger.duckscan import sql_text

__all__ = ["FILE_COL", "ROW_COL", "RecordColumns", "default_record_id", "paths_list", "quote_ident"]

FILE_COL = "__cg_file"
ROW_COL = "file_row_number"
_POS_SHIFT = 40  # rows per file < 2**40
# A time of day, then a zone: `Z` or an offset (a bare date is not zoned).
_ZONE = r"[0-9]{2}:[0-9]{2}(:[0-9]{2}([.,][0-9]+)?)?\s*([zZ]|[+-][0-9]{2}(:?[0-9]{2})?)$"
_NAIVE_TYPES = ("TIMESTAMP", "TIMESTAMP_NS", "TIMESTAMP_MS", "TIMESTAMP_S", "DATE")


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True, slots=True)
class RecordColumns:
    """The decision inputs of every record, as SQL over the scanned input."""

    subject: str
    time_us: str
    source: str
    sensitive: str
    record_id: str | None  # None: `<path>:<row>` (default_record_id)
    pos: str
    naive_text_check: str | None  # a predicate true for text times without a zone

    @classmethod
    def check(cls, schema: dict[str, str], options: GateOptions, paths: list[str]) -> RecordColumns:
        """Expressions for `schema` (column name -> DuckDB type), or the error a user
        needs: missing columns listed with those found, times of the wrong kind."""
        cols = options.columns
        found = ", ".join(schema) or "none"
        for role, name in (("subject", cols.subject), ("time", cols.time)):
            if name not in schema:
                raise InputError(f"--{role}-col", f"a column of the input (found: {found})", name)
        if cols.id is not None and cols.id not in schema:
            raise InputError("--id-col", f"a column of the input (found: {found})", cols.id)
        for reserved in (FILE_COL, ROW_COL):
            if reserved in schema:
                raise InputError(
                    "input", f"no column named {reserved} (used by the gate)", reserved
                )
        subject = f"CAST({quote_ident(cols.subject)} AS VARCHAR)"
        time_us, naive_check = _time_expr(cols.time, schema[cols.time], options)
        defaults = Columns()
        for role, name, default in (
            ("source", cols.source, defaults.source),
            ("sensitive", cols.sensitive, defaults.sensitive),
        ):
            if name != default and name not in schema:
                raise InputError(f"--{role}-col", f"a column of the input (found: {found})", name)
        if options.source is not None:
            source = sql_text(options.source)
        elif cols.source in schema:
            source = f"CAST({quote_ident(cols.source)} AS VARCHAR)"
        else:
            source = "CAST(NULL AS VARCHAR)"
        if cols.sensitive in schema:
            flag = quote_ident(cols.sensitive)
            # Missing = not sensitive; a flag that cannot be read counts as sensitive.
            sensitive = f"COALESCE(TRY_CAST({flag} AS BOOLEAN), {flag} IS NOT NULL)"
        else:
            sensitive = "false"
        index = f"CAST(list_position({paths_list(paths)}, {FILE_COL}) - 1 AS BIGINT)"
        pos = f"({index} << {_POS_SHIFT}) | {ROW_COL}"
        record_id = None if cols.id is None else f"CAST({quote_ident(cols.id)} AS VARCHAR)"
        return cls(
            subject=subject,
            time_us=time_us,
            source=source,
            sensitive=sensitive,
            record_id=record_id,
            pos=pos,
            naive_text_check=naive_check,
        )


def paths_list(paths: Sequence[str]) -> str:
    """SQL: a list literal of `paths`."""
    return "[" + ", ".join(sql_text(p) for p in paths) + "]"


def default_record_id(names: list[str], pos: str) -> str:
    """SQL: `<input path>:<row>` (rows counted from 1) for a position expression."""
    return (
        f"{paths_list(names)}[({pos} >> {_POS_SHIFT}) + 1] || ':' || "
        f"CAST(({pos} & {(1 << _POS_SHIFT) - 1}) + 1 AS VARCHAR)"
    )


def _time_expr(name: str, dtype: str, options: GateOptions) -> tuple[str, str | None]:
    col = quote_ident(name)
    utc = options.naive_timestamps == "utc"
    kind = dtype.upper()
    if kind in ("TIMESTAMP WITH TIME ZONE", "TIMESTAMPTZ"):
        return f"epoch_us({col})", None
    if kind in _NAIVE_TYPES or kind.startswith("TIMESTAMP"):
        if not utc:
            raise InputError(
                "--time-col",
                "times with a timezone (or --naive-timestamps utc to read them as UTC)",
                f"{name} of type {dtype} without timezone",
            )
        return f"epoch_us(CAST({col} AS TIMESTAMP))", None
    if kind == "VARCHAR":
        zoned = f"regexp_matches({col}, '{_ZONE}')"
        parsed_zoned = f"epoch_us(TRY_CAST({col} AS TIMESTAMPTZ))"
        parsed_naive = f"epoch_us(TRY_CAST({col} AS TIMESTAMP))"
        naive = None if utc else f"(NOT {zoned} AND TRY_CAST({col} AS TIMESTAMP) IS NOT NULL)"
        naive_branch = parsed_naive if utc else "NULL"
        return f"CASE WHEN {zoned} THEN {parsed_zoned} ELSE {naive_branch} END", naive
    raise InputError(
        "--time-col", "a timestamp column (or ISO 8601 text)", f"{name} of type {dtype}"
    )
