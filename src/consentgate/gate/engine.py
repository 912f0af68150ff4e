"""The DuckDB gate engine: DESIGN §3 for every record, in SQL, in a few passes.

1. `decide`: one scan of the narrow decision columns joined to the ledger side
   (`gate.subjects`): `cg_decided` holds each record's position and reason code
   (and, for excluded records, its id and subject id). No Python runs per record.
2. `write_exclusions`, `write_contributors`: from `cg_decided`.
3. `write_data`: one scan of the whole input that keeps every record whose
   position is not excluded, schema untouched. This pass is the floor any gate
   pays (read everything, write what is kept); the benchmark compares them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import duckdb

from consentgate.domain.decide import ALLOWED_REASONS, REASONS
from consentgate.domain.errors import InputError
from consentgate.domain.policy import MODE_RANK, Policy
from consentgate.domain.timeutil import to_micros
from consentgate.gate.records import FILE_COL, ROW_COL, RecordColumns, default_record_id
from consentgate.gate.subjects import CODE, SUBJECT_FIELDS, pseudonym_sql

__all__ = ["DuckDBGate", "scan_sql"]

KEPT = tuple(sorted(CODE[r] for r in ALLOWED_REASONS))
_REASON_NAMES = "[" + ", ".join(f"'{r}'" for r in REASONS) + "]"


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def scan_sql(scans: Sequence[Path]) -> str:
    files = "[" + ", ".join(_lit(str(p)) for p in scans) + "]"
    return f"read_parquet({files}, filename={_lit(FILE_COL)}, file_row_number=true)"


def _opt_out_tail(policy: Policy, purpose: str, at: datetime, c_us: str) -> str:
    """Rules 13-16 for an opt-out member: all but one depend on T alone."""
    start = policy.disclosure_start(purpose, at)
    if start is None:
        return str(CODE["not_disclosed"])
    if at < start + policy.purposes[purpose].notice_window:
        return str(CODE["notice_period"])
    return (
        f"CASE WHEN {c_us} < {to_micros(start)} THEN {CODE['collected_before_notice']} "
        f"ELSE {CODE['default_allowed']} END"
    )


def reason_sql(
    cols: RecordColumns, policy: Policy, purpose: str, at: datetime, secret: bytes
) -> tuple[str, str]:
    """SELECT of (pos, subject, record_id, ps, reason) for every scanned record."""
    t = to_micros(at)
    sources = policy.purposes[purpose].eligible_sources
    if sources is None:
        source_bad = "false"
    else:
        allowed = ", ".join(_lit(s) for s in sorted(sources)) or "NULL"
        source_bad = f"(r.source IS NULL OR r.source NOT IN ({allowed}))"
    excluded, opt_in = MODE_RANK["excluded"], MODE_RANK["opt_in"]
    record_id = f", {cols.record_id} AS record_id" if cols.record_id else ""
    members = ", ".join(f"COALESCE(n.{f}, u.{f}) AS {f}" for f in SUBJECT_FIELDS)
    return f"""
SELECT r.pos, r.subject{", r.record_id" if cols.record_id else ""}, s.ps,
  CAST(CASE
    WHEN r.subject IS NULL OR r.subject = '' THEN {CODE["missing_subject"]}
    WHEN r.c_us IS NULL OR r.c_us > {t} THEN {CODE["invalid_record"]}
    WHEN s.ps IS NULL THEN {CODE["unknown_subject"]}
    WHEN s.erased THEN {CODE["erased"]}
    WHEN r.c_us < s.adult_from THEN {CODE["minor"]}
    WHEN greatest(COALESCE(m.mode, s.mode_t), s.mode_t) = {excluded} THEN {CODE["region_excluded"]}
    WHEN {source_bad} THEN {CODE["source_not_eligible"]}
    WHEN s.honor_t OR COALESCE(m.honor, false) THEN
      COALESCE(s.latest_gpc, CASE WHEN r.sensitive THEN {CODE["sensitive"]} END)
    ELSE COALESCE(s.latest, CASE WHEN r.sensitive THEN {CODE["sensitive"]} END)
  END AS UTINYINT) AS early,
  greatest(COALESCE(m.mode, s.mode_t), s.mode_t) AS mode, s.invalidated, r.c_us
FROM (
  SELECT {cols.pos} AS pos, {cols.subject} AS subject, {cols.time_us} AS c_us,
    {cols.source} AS source, {cols.sensitive} AS sensitive{record_id}
  FROM {{scan}}
) r
LEFT JOIN cg_subj n ON n.key = r.subject
LEFT JOIN cg_unnamed u ON u.ps = CASE WHEN n.ps IS NULL AND r.subject <> ''
  THEN {pseudonym_sql(secret, "r.subject")} END
CROSS JOIN LATERAL (SELECT {members}) s
LEFT JOIN cg_moves m ON m.ps = s.ps AND r.c_us >= m.from_us AND r.c_us < m.to_us
""", f"""
COALESCE(early, CASE WHEN mode = {opt_in} THEN
  CASE WHEN invalidated THEN {CODE["reconsent_required"]} ELSE {CODE["no_consent"]} END
  ELSE {_opt_out_tail(policy, purpose, at, "c_us")} END)
"""


class DuckDBGate:
    """One run's DuckDB session: the ledger side is loaded by the caller
    (`gate.subjects.load_subjects`), then these passes run over the input."""

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        scans: Sequence[Path],
        names: Sequence[str],
        cols: RecordColumns,
    ) -> None:
        self.con = con
        self.scan = scan_sql(scans)
        self.names = list(names)
        self.cols = cols

    def check_naive_times(self) -> None:
        """Text times without a zone are refused unless `naive_timestamps` says UTC."""
        if self.cols.naive_text_check is None:
            return
        row = self.con.execute(
            f"SELECT {self.cols.pos} AS pos FROM {self.scan} "
            f"WHERE {self.cols.naive_text_check} LIMIT 1"
        ).fetchone()
        if row is not None:
            where = default_record_id(self.names, str(row[0]))
            (place,) = self.con.execute(f"SELECT {where}").fetchone() or ("?",)
            raise InputError(
                "--time-col",
                "times with a timezone (or --naive-timestamps utc to read them as UTC)",
                f"a time without timezone at {place}",
            )

    def decide(
        self, policy: Policy, purpose: str, at: datetime, secret: bytes, *, every_id: bool = False
    ) -> None:
        """Create `cg_decided` (pos, reason, ps, subject, record_id): subject and
        record id are kept for excluded records only, unless `every_id`."""
        inner, final = reason_sql(self.cols, policy, purpose, at, secret)
        inner = inner.replace("{scan}", self.scan)
        keep_all = "true" if every_id else f"reason NOT IN {KEPT}"
        record_id = "record_id" if self.cols.record_id else "CAST(NULL AS VARCHAR)"
        self.con.execute(f"""
CREATE OR REPLACE TEMP TABLE cg_decided AS
SELECT pos, reason, ps,
  CASE WHEN {keep_all} THEN subject END AS subject,
  CASE WHEN {keep_all} THEN {record_id} END AS record_id
FROM (SELECT *, CAST({final} AS UTINYINT) AS reason FROM ({inner}))
""")

    def counts(self) -> dict[str, int]:
        rows = self.con.execute("SELECT reason, count(*) FROM cg_decided GROUP BY reason").fetchall()
        found = {REASONS[code]: int(n) for code, n in rows}
        return {reason: found.get(reason, 0) for reason in REASONS}

    def subject_counts(self) -> tuple[int, int]:
        """Distinct subjects among all records, and among kept records."""
        row = self.con.execute(f"""
SELECT count(DISTINCT ps) + count(DISTINCT subject) FILTER (WHERE ps IS NULL AND subject <> ''),
  count(DISTINCT ps) FILTER (WHERE reason IN {KEPT})
FROM cg_decided
""").fetchone()
        assert row is not None
        return int(row[0]), int(row[1])

    def record_ids_sql(self) -> str:
        """SELECT of (pos, record_id, subject_id, reason name) from `cg_decided`."""
        default = default_record_id(self.names, "pos")
        return (
            f"SELECT pos, COALESCE(record_id, {default}) AS record_id, subject AS subject_id, "
            f"{_REASON_NAMES}[reason + 1] AS reason FROM cg_decided"
        )

    def write_exclusions(self, target: Path) -> None:
        self.con.execute(f"""
COPY (SELECT record_id, subject_id, reason FROM ({self.record_ids_sql()})
      WHERE reason NOT IN ('consented', 'default_allowed') ORDER BY pos)
TO {_lit(str(target))} (FORMAT parquet)
""")

    def write_contributors(self, target: Path) -> None:
        self.con.execute(f"""
COPY (SELECT DISTINCT s.key AS subject_id FROM cg_decided d JOIN cg_subj s USING (ps)
      WHERE d.reason IN {KEPT} ORDER BY 1)
TO {_lit(str(target))} (FORMAT parquet)
""")

    def kept_rows_sql(self) -> str:
        """SELECT of the kept records, input columns only, in input order."""
        return f"""
SELECT t.* EXCLUDE ({FILE_COL}, {ROW_COL}) FROM {self.scan} t
ANTI JOIN (SELECT pos FROM cg_decided WHERE reason NOT IN {KEPT}) x ON x.pos = {self.cols.pos}
"""

    def write_data(self, target: Path) -> None:
        self.con.execute(
            f"COPY ({self.kept_rows_sql()}) TO {_lit(str(target))} (FORMAT parquet)"
        )
