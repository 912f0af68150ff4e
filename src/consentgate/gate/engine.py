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
import pyarrow as pa

from consentgate.domain.decide import ALLOWED_REASONS, REASONS
from consentgate.domain.errors import InputError, StorageError
from consentgate.domain.policy import MODE_RANK, Policy
from consentgate.domain.timeutil import to_micros
from consentgate.gate.records import (
    FILE_COL,
    ROW_COL,
    RecordColumns,
    default_record_id,
    paths_list,
)
from consentgate.gate.subjects import CODE, SUBJECT_FIELDS
from consentgate.ledger.duckscan import sql_text
from consentgate.ledger.sealing import pseudonym

__all__ = ["DuckDBGate", "scan_sql"]

KEPT = tuple(sorted(CODE[r] for r in ALLOWED_REASONS))
_REASON_NAMES = "[" + ", ".join(f"'{r}'" for r in REASONS) + "]"


def scan_sql(scans: Sequence[Path]) -> str:
    files = paths_list([str(p) for p in scans])
    return (
        f"read_parquet({files}, filename={sql_text(FILE_COL)}, file_row_number=true, "
        "hive_partitioning=false)"
    )


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
    cols: RecordColumns,
    policy: Policy,
    purpose: str,
    at: datetime,
    scan: str,
) -> str:
    """SELECT of every scanned record with its decision: `__cg_pos`, `__cg_subject`,
    `__cg_rid` (the id column's value, if any), `__cg_ps` (pseudonym) and
    `__cg_reason` (an index into REASONS). Members are looked up by id in `cg_subj`."""
    t = to_micros(at)
    sources = policy.purposes[purpose].eligible_sources
    if sources is None:
        source_bad = "false"
    elif not sources:
        source_bad = "true"  # an empty list: no source is eligible
    else:
        allowed = ", ".join(sql_text(s) for s in sorted(sources))
        source_bad = f"(r.__cg_source IS NULL OR r.__cg_source NOT IN ({allowed}))"
    excluded, opt_in = MODE_RANK["excluded"], MODE_RANK["opt_in"]
    record_id = cols.record_id or "CAST(NULL AS VARCHAR)"
    fields = ", ".join(f"n.{f} AS __cg_{f}" for f in SUBJECT_FIELDS)
    helpers = ", ".join(f"__cg_{f}" for f in SUBJECT_FIELDS if f != "ps")
    mode = "greatest(COALESCE(m.mode, r.__cg_mode_t), r.__cg_mode_t)"
    early = f"""CASE
    WHEN r.__cg_subject IS NULL OR r.__cg_subject = '' THEN {CODE["missing_subject"]}
    WHEN r.__cg_c IS NULL OR r.__cg_c > {t} THEN {CODE["invalid_record"]}
    WHEN r.__cg_ps IS NULL THEN {CODE["unknown_subject"]}
    WHEN r.__cg_erased THEN {CODE["erased"]}
    WHEN r.__cg_c < r.__cg_adult_from THEN {CODE["minor"]}
    WHEN {mode} = {excluded} THEN {CODE["region_excluded"]}
    WHEN {source_bad} THEN {CODE["source_not_eligible"]}
    WHEN r.__cg_honor_t OR COALESCE(m.honor, false) THEN
      COALESCE(r.__cg_latest_gpc, CASE WHEN r.__cg_sensitive THEN {CODE["sensitive"]} END)
    ELSE COALESCE(r.__cg_latest, CASE WHEN r.__cg_sensitive THEN {CODE["sensitive"]} END)
  END"""
    late = f"""CASE WHEN {mode} = {opt_in} THEN
    CASE WHEN r.__cg_invalidated THEN {CODE["reconsent_required"]} ELSE {CODE["no_consent"]} END
    ELSE {_opt_out_tail(policy, purpose, at, "r.__cg_c")} END"""
    return f"""
SELECT r.* EXCLUDE (__cg_c, __cg_source, __cg_sensitive, {helpers}),
  CAST(COALESCE({early}, {late}) AS UTINYINT) AS __cg_reason
FROM (
  SELECT r.*, {fields}
  FROM (
    SELECT {cols.pos} AS __cg_pos, {cols.subject} AS __cg_subject,
      {cols.time_us} AS __cg_c, {cols.source} AS __cg_source,
      {cols.sensitive} AS __cg_sensitive, {record_id} AS __cg_rid
    FROM {scan} t
  ) r
  LEFT JOIN cg_subj n ON n.key = r.__cg_subject
) r
LEFT JOIN cg_moves m ON m.ps = r.__cg_ps AND r.__cg_c >= m.from_us AND r.__cg_c < m.to_us
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
        """Create `cg_decided` (pos, reason, ps, subject, record_id) for every record.
        Member and record ids are kept for excluded records (the exclusions);
        `every_id` keeps them for every record (the replay compares them).

        Two phases: every record is decided against the named members; then the
        distinct ids that came out `unknown_subject` get their keyed pseudonym (in
        Python, a few thousand at most), and records of a member whose id was
        erased (and who has events at or before T) become `erased`."""
        default = default_record_id(self.names, "__cg_pos")
        wanted = "true" if every_id else f"__cg_reason NOT IN {KEPT}"
        query = reason_sql(self.cols, policy, purpose, at, self.scan)
        self.con.execute(f"""
CREATE OR REPLACE TEMP TABLE cg_decided AS
SELECT __cg_pos AS pos, __cg_reason AS reason, __cg_ps AS ps,
  CASE WHEN {wanted} THEN __cg_subject END AS subject,
  CASE WHEN {wanted} THEN COALESCE(__cg_rid, {default}) END AS record_id
FROM ({query})
""")
        unknown = self.con.execute(
            f"SELECT DISTINCT subject FROM cg_decided WHERE reason = {CODE['unknown_subject']}"
        ).fetchall()
        unnamed = {
            int(ps)
            for (ps,) in self.con.execute("SELECT ps FROM cg_subj WHERE key IS NULL").fetchall()
        }
        if not unknown or not unnamed:
            return
        aliases = {}
        for (subject,) in unknown:
            ps = pseudonym(secret, subject)
            if ps in unnamed:
                aliases[subject] = ps
        if not aliases:
            return
        # A member whose id was erased has lost the personal fields (region, birth
        # date) the rule needs for any T: eligibility cannot be proven, so every such
        # record that got past rules 1-2 is excluded as erased (fail closed).
        self.con.register(
            "cg_alias_arrow",
            pa.table({"key": list(aliases), "ps": pa.array(list(aliases.values()), pa.int64())}),
        )
        try:
            self.con.execute(f"""
UPDATE cg_decided d SET reason = {CODE["erased"]}, ps = a.ps
FROM cg_alias_arrow a
WHERE d.reason = {CODE["unknown_subject"]} AND d.subject = a.key
""")
        finally:
            self.con.unregister("cg_alias_arrow")

    def counts(self) -> dict[str, int]:
        rows = self.con.execute(
            "SELECT reason, count(*) FROM cg_decided GROUP BY reason"
        ).fetchall()
        found = {REASONS[code]: int(n) for code, n in rows}
        return {reason: found.get(reason, 0) for reason in REASONS}

    def subject_count(self) -> int:
        """Distinct members among all records (those the ledger names by pseudonym,
        the others by the id given). Among kept records it is `write_contributors`'
        row count: a kept member is always named, once."""
        row = self.con.execute("""
SELECT count(DISTINCT ps) + count(DISTINCT subject) FILTER (WHERE ps IS NULL AND subject <> '')
FROM cg_decided
""").fetchone()
        assert row is not None
        return int(row[0])

    def write_exclusions(self, target: Path) -> None:
        self.con.execute(f"""
COPY (SELECT record_id, subject AS subject_id, {_REASON_NAMES}[reason + 1] AS reason
      FROM cg_decided WHERE reason NOT IN {KEPT})
TO {sql_text(str(target))} (FORMAT parquet)
""")

    def write_contributors(self, target: Path) -> int:
        """Distinct member ids of kept records, sorted (a kept member is always
        named in the ledger: records of erased members are never kept; `cg_subj`
        has one row a member). Returns how many."""
        row = self.con.execute(f"""
COPY (SELECT s.key AS subject_id FROM cg_subj s
      SEMI JOIN (SELECT ps FROM cg_decided WHERE reason IN {KEPT}) d USING (ps)
      ORDER BY 1)
TO {sql_text(str(target))} (FORMAT parquet)
""").fetchone()
        return int(row[0]) if row else 0

    def kept_rows(self) -> list[tuple[int, int]]:
        """(input file index, row) of every kept record, in input order."""
        found = self.con.execute(
            f"SELECT pos >> 40, pos & {(1 << 40) - 1} FROM cg_decided "
            f"WHERE reason IN {KEPT} ORDER BY pos"
        ).fetchall()
        return [(int(f), int(r)) for f, r in found]

    def write_data(self, target: Path) -> int:
        """Copy the kept records to `target`, the input's columns untouched; DuckDB
        reads and writes in parallel. Only positions decided as kept are copied
        (a semi join: a record the decision pass did not see is never kept).
        Returns the rows written."""
        row = self.con.execute(f"""
COPY (
  SELECT t.* EXCLUDE ({FILE_COL}, {ROW_COL}) FROM {self.scan} t
  SEMI JOIN (SELECT pos FROM cg_decided WHERE reason IN {KEPT}) x ON x.pos = {self.cols.pos}
) TO {sql_text(str(target))} (FORMAT parquet)
""").fetchone()
        return int(row[0]) if row else 0

    def check_positions(self, rows: int) -> None:
        """Every input row was decided, at a known position; else refuse. (A
        position is a file index and row number, so known positions are distinct.)"""
        found = self.con.execute("SELECT count(*), count(pos) FROM cg_decided").fetchone()
        if found is None or not (found[0] == found[1] == rows):
            raise StorageError(
                f"the input changed or could not be read consistently: {rows} rows in the"
                f" file footers, {found[0] if found else 0} decided,"
                f" {found[1] if found else 0} at a known position"
            )

    def record_ids_sql(self) -> str:
        """SELECT of (pos, record_id, subject_id, reason name) from `cg_decided`."""
        return (
            f"SELECT pos, record_id, subject AS subject_id, {_REASON_NAMES}[reason + 1] AS reason "
            "FROM cg_decided"
        )
