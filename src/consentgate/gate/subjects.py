"""The ledger side of a gate run: every member's as-of facts, as DuckDB tables.

One scan of the ledger (DuckDB's scanner over SQLite or PostgreSQL, read-only) copies
the events recorded up to the checkpoint (`seq <= upto`) and dated at or before T, in
the columns the rule reads, into a local table (`cg_events`, dropped once used);
they are condensed into one row a member, then everything of DESIGN §3 that depends only on
the member and T is settled there, once, so the per-record query is a join and a
`CASE`:

``cg_subj``  key (member id), ps (pseudonym), erased, adult_from (first instant, UTC
             midnight, at which the member is no longer a minor), mode_t / honor_t
             (mode rank and GPC of region(T)), latest / latest_gpc (the reason of the
             latest choice without and with GPC counted), invalidated.
             Members whose id was erased have key NULL (no id matches them);
             `DuckDBGate.decide` finds their records by pseudonym.
``cg_moves`` only for members whose region events do not all share one (mode, GPC)
             outcome: intervals [from_us, to_us) of collection time with the mode and
             GPC of region(c) there. Everyone else has region(c) = region(T).

Mode ranks follow `MODE_RANK` (opt_out 0 < opt_in 1 < excluded 2); reasons are
indices into `REASONS`.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import duckdb
import pyarrow as pa

from consentgate.domain.decide import REASONS
from consentgate.domain.facts import CHOICE_RANK
from consentgate.domain.policy import MODE_RANK, Policy
from consentgate.domain.timeutil import to_micros

__all__ = ["CODE", "SUBJECT_FIELDS", "load_subjects"]

CODE = {reason: i for i, reason in enumerate(REASONS)}
SUBJECT_FIELDS = (
    "ps",
    "erased",
    "adult_from",
    "mode_t",
    "honor_t",
    "latest",
    "latest_gpc",
    "invalidated",
)
_NEVER = -(2**63)
_ALWAYS = 2**63 - 1


def _facts_sql(purpose_cutoff: bool) -> str:
    # "Latest by (time, recording order)" as one HUGEINT key: cheaper to compare and
    # to keep per member than a struct (the aggregate holds a million members).
    latest = "(CAST(at_us AS HUGEINT) * 1099511627776 + seq)"
    rank = " ".join(f"WHEN '{c}' THEN {r}" for c, r in CHOICE_RANK.items())
    is_choice = "type = 'consent' AND purpose = $purpose"
    if purpose_cutoff:
        is_choice += " AND (choice <> 'granted' OR at_us >= $cutoff)"
    invalidated = (
        "bool_or(type = 'consent' AND purpose = $purpose AND choice = 'granted'"
        " AND at_us < $cutoff)"
        if purpose_cutoff
        else "false"
    )
    return f"""
CREATE OR REPLACE TEMP TABLE cg_facts AS
SELECT f.*, s.subject AS name FROM (
  SELECT subject AS ps,
    bool_or(type = 'erasure') AS erased,
    CAST(arg_max(birth_date, {latest}) FILTER (WHERE birth_date IS NOT NULL) AS DATE) AS born,
    arg_max(region, {latest}) FILTER (WHERE region IS NOT NULL) AS region_t,
    min(region) <> max(region) AS moved,
    arg_max(choice, CAST(at_us AS HUGEINT) * 4 + CASE choice {rank} END)
      FILTER (WHERE {is_choice}) AS choice,
    max(at_us) FILTER (WHERE {is_choice}) AS choice_at,
    max(at_us) FILTER (WHERE type = 'signal' AND signal = 'gpc') AS gpc_at,
    {invalidated} AS invalidated
  FROM cg_events
  GROUP BY subject
) f LEFT JOIN ledger.subjects s ON s.pseudonym = f.ps
"""


# The events that count (recorded up to the checkpoint, dated at or before T), in the
# columns the rule reads: one scan of the ledger for both passes below.
_EVENTS_SQL = """
CREATE OR REPLACE TEMP TABLE cg_events AS
SELECT subject, at_us, seq, type, purpose, choice, signal, region, birth_date
FROM ledger.events WHERE at_us <= $t AND seq <= $upto
"""

_MOVES_SQL = """
CREATE OR REPLACE TEMP TABLE cg_region_events AS
SELECT subject AS ps, at_us AS "at", seq, region FROM cg_events
WHERE region IS NOT NULL AND subject IN (SELECT ps FROM cg_facts WHERE moved)
"""


def _rules_table(policy: Policy, purpose: str, regions: Iterable[str | None]) -> pa.Table:
    """(region, mode rank, GPC honoured) for every region in play; '' = unknown."""
    keys, modes, honors = [], [], []
    for region in {*regions, None}:
        keys.append(region or "")
        modes.append(MODE_RANK[policy.mode(purpose, region)])
        honors.append(policy.honor_gpc(region))
    return pa.table({"region": keys, "mode": pa.array(modes, pa.int8()), "honor": pa.array(honors)})


def _adult_from(min_age: int) -> str:
    """SQL: the UTC midnight (µs) of the day the member turns `min_age`; a birthday on
    29 February falls on 1 March in common years, as `domain.timeutil.age_on` counts."""
    y = f"(year(born) + {min_age})"
    leap = f"(({y} % 4 = 0 AND {y} % 100 <> 0) OR {y} % 400 = 0)"
    day = (
        f"CASE WHEN month(born) = 2 AND day(born) = 29 AND NOT {leap} "
        f"THEN make_date({y}, 3, 1) ELSE make_date({y}, month(born), day(born)) END"
    )
    return f"epoch_us(CAST({day} AS TIMESTAMP))"


def _choice_code(column: str) -> str:
    return (
        f"CASE {column} WHEN 'withdrawn' THEN {CODE['withdrawn']} "
        f"WHEN 'refused' THEN {CODE['refused']} WHEN 'granted' THEN {CODE['consented']} END"
    )


def load_subjects(
    con: duckdb.DuckDBPyConnection,
    *,
    policy: Policy,
    purpose: str,
    at: datetime,
    upto: int,
) -> None:
    """Create `cg_subj` and `cg_moves` on `con`, which has the ledger attached as
    `ledger`, from the events recorded up to `upto` and dated at or before `at`."""
    cutoff = policy.reconsent_cutoff(purpose, at)
    facts: dict[str, object] = {"purpose": purpose}
    if cutoff is not None:
        facts["cutoff"] = to_micros(cutoff)
    con.execute(_EVENTS_SQL, {"t": to_micros(at), "upto": upto})
    try:
        con.execute(_facts_sql(cutoff is not None), facts)
        # Members with more than one region: their region events, for region(c).
        con.execute(_MOVES_SQL)
    finally:
        con.execute("DROP TABLE IF EXISTS cg_events")
    regions = con.execute(
        "SELECT DISTINCT region_t FROM cg_facts UNION SELECT DISTINCT region FROM cg_region_events"
    ).fetchall()
    rules = _rules_table(policy, purpose, (r for (r,) in regions))
    con.register("cg_rules_arrow", rules)
    con.execute("CREATE OR REPLACE TEMP TABLE cg_rules AS SELECT * FROM cg_rules_arrow")
    con.unregister("cg_rules_arrow")
    gpc_wins = (
        "gpc_at IS NOT NULL AND (choice_at IS NULL OR gpc_at > choice_at"
        " OR (gpc_at = choice_at AND choice = 'granted'))"
    )
    con.execute(f"""
CREATE OR REPLACE TEMP TABLE cg_subj AS
SELECT f.name AS key, f.ps, f.erased,
  {_adult_from(policy.min_age)} AS adult_from,
  r.mode AS mode_t, r.honor AS honor_t,
  {_choice_code("choice")} AS latest,
  CASE WHEN {gpc_wins} THEN {CODE["gpc"]} ELSE {_choice_code("choice")} END AS latest_gpc,
  f.invalidated
FROM cg_facts f JOIN cg_rules r ON r.region = COALESCE(f.region_t, '')
""")
    con.execute(f"""
CREATE OR REPLACE TEMP TABLE cg_moves AS
WITH at_instant AS (  -- several region events at one instant: the one recorded last
  SELECT ps, "at", arg_max(region, seq) AS region FROM cg_region_events GROUP BY ps, "at"
), ruled AS (
  SELECT a.ps, a."at", r.mode, r.honor FROM at_instant a JOIN cg_rules r USING (region)
), movers AS (
  SELECT ps FROM ruled GROUP BY ps HAVING count(DISTINCT (mode, honor)) > 1
)
SELECT ps,
  CASE WHEN row_number() OVER w = 1 THEN {_NEVER} ELSE "at" END AS from_us,
  COALESCE(lead("at") OVER w, {_ALWAYS}) AS to_us,
  mode, honor
FROM ruled SEMI JOIN movers USING (ps)
WINDOW w AS (PARTITION BY ps ORDER BY "at")
""")
