"""Set-based reads of the ledger with DuckDB: whole-ledger snapshots in seconds.

DuckDB attaches the ledger database read-only (its `sqlite` or `postgres` scanner
extension, shipped as registry packages built for the pinned DuckDB release) and
evaluates the as-of snapshot with vectorised, parallel aggregates. The result has
exactly the semantics of `consentgate.ledger.snapshot` (the portable SQL path), and
both are checked against the domain oracle by the contract suite.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from datetime import datetime
from importlib import import_module
from pathlib import Path

import duckdb
import pyarrow as pa
from sqlalchemy import Engine
from sqlalchemy.engine import URL

from consentgate.domain.errors import StorageError
from consentgate.domain.facts import CHOICE_RANK, SubjectFacts
from consentgate.domain.timeutil import to_micros

__all__ = ["attach_ledger", "snapshot_facts_duckdb", "snapshot_table_duckdb", "sql_text"]

_NEVER = -(2**62)
# extension name -> (registry package module, file name DuckDB expects to load)
_EXTENSIONS = {
    "sqlite": ("duckdb_extension_sqlite", "sqlite_scanner"),
    "postgresql": ("duckdb_extension_postgres_scanner", "postgres_scanner"),
}


def _extension_file(backend: str) -> Path:
    """The scanner extension, copied once under the name DuckDB's loader expects."""
    module_name, stem = _EXTENSIONS[backend]
    module = import_module(module_name)
    shipped = sorted(Path(module.__file__ or "").parent.glob("extensions/*/*.duckdb_extension"))
    if not shipped:
        raise StorageError(f"the DuckDB {stem} extension is missing: pip install {module_name}")
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    target = cache / "consentgate" / f"duckdb-{duckdb.__version__}" / f"{stem}.duckdb_extension"
    if not target.exists() or target.stat().st_size != shipped[-1].stat().st_size:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent)
        os.close(fd)
        shutil.copyfile(shipped[-1], tmp)
        os.replace(tmp, target)  # atomic: concurrent first uses never see half a file
    return target


def _libpq(url: URL) -> str:
    """A libpq key=value connection string; values quoted as libpq reads them."""
    parts = {
        "host": url.host,
        "port": url.port,
        "dbname": url.database,
        "user": url.username,
        "password": url.password,
    }
    return " ".join(
        f"{k}='{str(v).replace(chr(92), chr(92) * 2).replace(chr(39), chr(92) + chr(39))}'"
        for k, v in parts.items()
        if v is not None
    )


def sql_text(text: str) -> str:
    """`text` as a SQL string literal (DuckDB, PostgreSQL, SQLite)."""
    return "'" + text.replace("'", "''") + "'"


def attach_ledger(con: duckdb.DuckDBPyConnection, engine: Engine, alias: str = "ledger") -> None:
    """Attach the ledger behind `engine` to `con`, read-only, as `alias`."""
    backend = engine.dialect.name
    con.execute(f"LOAD {sql_text(str(_extension_file(backend)))}")
    if backend == "sqlite":
        target = engine.url.database or ""
        if target in ("", ":memory:"):
            raise StorageError("an in-memory SQLite ledger cannot be scanned by DuckDB")
        con.execute(f"ATTACH {sql_text(target)} AS {alias} (TYPE sqlite, READ_ONLY)")
    else:
        con.execute(f"ATTACH {sql_text(_libpq(engine.url))} AS {alias} (TYPE postgres, READ_ONLY)")


def _facts_sql(alias: str) -> str:
    rank = " ".join(f"WHEN '{c}' THEN {r}" for c, r in CHOICE_RANK.items())
    is_choice = (
        "type = 'consent' AND purpose = $purpose AND (choice <> 'granted' OR at_us >= $cutoff)"
    )
    # Grouped by pseudonym; the member id comes from `subjects` (NULL once erased,
    # then named by `erased_label`: "~" and the pseudonym in 16 hex digits). A member
    # erased at any time counts as erased at every T at which they have events.
    label = (
        "'~' || lower(lpad(hex(f.ps::HUGEINT + CASE WHEN f.ps < 0 "
        "THEN 18446744073709551616::HUGEINT ELSE 0 END), 16, '0'))"
    )
    return f"""
SELECT COALESCE(s.subject, {label}) AS subject,
  f.* EXCLUDE (ps) REPLACE (f.erased OR s.key IS NULL AS erased) FROM (
SELECT subject AS ps,
  bool_or(type = 'erasure') AS erased,
  CAST(arg_max(birth_date, (at_us, seq)) FILTER (WHERE birth_date IS NOT NULL) AS DATE) AS born,
  arg_max(region, (at_us, seq)) FILTER (WHERE region IS NOT NULL) AS region_latest,
  arg_min(region, (at_us, -seq)) FILTER (WHERE region IS NOT NULL) AS region_first,
  arg_max(choice, (at_us, CASE choice {rank} END)) FILTER (WHERE {is_choice}) AS choice,
  max(at_us) FILTER (WHERE {is_choice}) AS choice_at,
  max(at_us) FILTER (WHERE type = 'signal' AND signal = 'gpc') AS gpc_at,
  bool_or(type = 'consent' AND purpose = $purpose AND choice = 'granted' AND at_us < $cutoff)
    AS invalidated
FROM {alias}.events
WHERE at_us <= $t
GROUP BY subject
) f LEFT JOIN {alias}.subjects s ON s.pseudonym = f.ps
"""


def _params(purpose: str, at: datetime, cutoff: datetime | None) -> dict[str, object]:
    return {
        "purpose": purpose,
        "t": to_micros(at),
        "cutoff": _NEVER if cutoff is None else to_micros(cutoff),
    }


def snapshot_table_duckdb(
    engine: Engine, *, purpose: str, at: datetime, reconsent_cutoff: datetime | None
) -> pa.Table:
    """Every subject's facts as of `at` as an Arrow table (columns as `SubjectFacts`,
    instants in microseconds), computed by DuckDB over the ledger."""
    con = duckdb.connect()
    try:
        attach_ledger(con, engine)
        cur = con.execute(_facts_sql("ledger"), _params(purpose, at, reconsent_cutoff))
        return cur.to_arrow_table()
    except duckdb.Error as err:
        raise StorageError(f"DuckDB could not scan the ledger: {err}") from err
    finally:
        con.close()


def snapshot_facts_duckdb(
    engine: Engine, *, purpose: str, at: datetime, reconsent_cutoff: datetime | None
) -> Iterator[SubjectFacts]:
    """Stream every subject's facts as of `at`, computed by DuckDB over the ledger."""
    con = duckdb.connect()
    try:
        attach_ledger(con, engine)
        cur = con.execute(_facts_sql("ledger"), _params(purpose, at, reconsent_cutoff))
        make = SubjectFacts._make  # columns in field order, types as the fields want
        while rows := cur.fetchmany(50_000):
            yield from map(make, rows)
    except duckdb.Error as err:
        raise StorageError(f"DuckDB could not scan the ledger: {err}") from err
    finally:
        con.close()
