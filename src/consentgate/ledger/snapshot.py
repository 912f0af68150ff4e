"""The as-of snapshot: every subject's decision inputs for one purpose, in one SQL pass.

For each subject with events at or before T the query returns the `SubjectFacts`
of `consentgate.domain.facts`. "Latest by (time, recording order)" is computed with
order-preserving keys so one GROUP BY serves SQLite and PostgreSQL alike, with no
per-event Python:

- region and birth date: text `time || sequence || value`, where time and sequence
  are shifted into a fixed number of decimal digits (so plain integer-to-text
  conversion orders them; no padding function is needed);
- the latest choice: the integer `time * 4 + rank`, so ties at one instant go to
  the restrictive choice (`CHOICE_RANK`); it is split back into time and choice here.

Performance (bench/ledger.py, 5 M events, 1 M subjects): the query must read every
event once. The `(subject, at_us)` index orders the rows by subject but does not
hold the columns read here, so walking it costs one random table lookup per event;
on SQLite a full scan plus a sort is several times faster, hence `NOT INDEXED` for
the all-subjects snapshot (a covering index would be faster still: see
docs/benchmarks.md). On PostgreSQL the all-subjects snapshot is streamed without a
server-side cursor, because PostgreSQL never runs a cursor's query in parallel.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import date, datetime
from typing import Any

import orjson
from psycopg import pq
from sqlalchemy import Connection, TextClause, text

from consentgate.domain.facts import CHOICE_RANK, SubjectFacts
from consentgate.domain.timeutil import to_micros
from consentgate.ledger.sealing import erased_label

__all__ = ["snapshot_facts"]

# Every instant a datetime can hold (years 1-9999, about -6.3e16 to 2.6e17 microseconds)
# plus _AT is a positive 18-digit number; every sequence number plus _SEQ has 19 digits,
# and so has _SEQ_BACK - seq, which orders sequence numbers backwards.
_AT = 2 * 10**17
_AT_DIGITS = 18
_SEQ = 10**18
_SEQ_BACK = 2 * 10**18
_VALUE_AT = _AT_DIGITS + 19  # the value starts after this many characters of key
_RANKS = max(CHOICE_RANK.values()) + 1  # (time + _AT) * _RANKS + rank < 2**63
_CHOICE_OF_RANK = {rank: choice for choice, rank in CHOICE_RANK.items()}
_BATCH = 10_000  # rows fetched at a time


def _text(dialect: str, expr: str) -> str:
    return f"({expr})::text" if dialect == "postgresql" else f"({expr})"


def among(dialect: str, column: str, name: str) -> str:
    """SQL: `column` is one of the integers in parameter `:name` (see `integers`).
    One parameter for the whole set, not one per value, so 10,000 members cost no
    statement compilation and meet no limit on parameters."""
    if dialect == "postgresql":
        return f"{column} = ANY(CAST(:{name} AS BIGINT[]))"
    return f"{column} IN (SELECT value FROM json_each(:{name}))"


def integers(dialect: str, values: list[int]) -> object:
    """The value of an `among` parameter: an array (PostgreSQL), JSON text (SQLite)."""
    return values if dialect == "postgresql" else orjson.dumps(values).decode()


def _sql(dialect: str, *, subjects: bool, cutoff: bool) -> str:
    at = _text(dialect, f"at_us + {_AT}")
    latest = f"{at} || {_text(dialect, f'seq + {_SEQ}')}"
    # Earliest instant first; among events at that instant the one recorded last.
    first = f"{at} || {_text(dialect, f'{_SEQ_BACK} - seq')}"
    rank = " ".join(f"WHEN '{c}' THEN {r}" for c, r in CHOICE_RANK.items())
    consent = "type = 'consent' AND purpose = :purpose"
    # A grant before the re-consent cutoff is invalid: not a choice, but remembered.
    valid = f"{consent} AND (choice <> 'granted' OR at_us >= :cutoff)" if cutoff else consent
    invalidated = (
        f"MAX(CASE WHEN {consent} AND choice = 'granted' AND at_us < :cutoff THEN 1 ELSE 0 END)"
        if cutoff
        else "0"
    )
    table = "events NOT INDEXED" if dialect == "sqlite" and not subjects else "events"
    where = "at_us <= :t" + (f" AND {among(dialect, 'subject', 'subjects')}" if subjects else "")
    # Members are grouped by pseudonym; their id comes from `subjects` (NULL once erased).
    # A member erased at any time counts as erased at every T at which they have events:
    # the erasure destroyed the birth date and region the rule needs (fail closed).
    return f"""
SELECT f.subject, CASE WHEN s.key IS NULL THEN 1 ELSE f.erased END AS erased, f.born,
  f.region_latest, f.region_first, f.choice, f.gpc_at, f.invalidated, s.subject AS name FROM (
SELECT subject,
  MAX(CASE WHEN type = 'erasure' THEN 1 ELSE 0 END) AS erased,
  MAX(CASE WHEN birth_date IS NOT NULL THEN {latest} || birth_date END) AS born,
  MAX(CASE WHEN region IS NOT NULL THEN {latest} || region END) AS region_latest,
  MIN(CASE WHEN region IS NOT NULL THEN {first} || region END) AS region_first,
  MAX(CASE WHEN {valid} THEN (at_us + {_AT}) * {_RANKS} + CASE choice {rank} END END)
    AS choice,
  MAX(CASE WHEN type = 'signal' AND signal = 'gpc' THEN at_us END) AS gpc_at,
  {invalidated} AS invalidated
FROM {table}
WHERE {where}
GROUP BY subject
) f LEFT JOIN subjects s ON s.pseudonym = f.subject
"""


def snapshot_facts(
    conn: Connection,
    *,
    purpose: str,
    at: datetime,
    reconsent_cutoff: datetime | None,
    subjects: Mapping[int, str] | None = None,
) -> Iterator[SubjectFacts]:
    """Stream the facts of every subject (or of `subjects`: pseudonym -> member id)
    as of `at`. Erased members are named by `erased_label` unless asked for by id."""
    dialect = conn.dialect.name
    stmt = text(_sql(dialect, subjects=subjects is not None, cutoff=reconsent_cutoff is not None))
    params: dict[str, object] = {"purpose": purpose, "t": to_micros(at)}
    if reconsent_cutoff is not None:
        params["cutoff"] = to_micros(reconsent_cutoff)
    if subjects is not None:
        params["subjects"] = integers(dialect, list(subjects))
        names: Mapping[int, str] = subjects
        rows = _streamed(conn, stmt, params)
    elif dialect == "postgresql":
        rows = _streamed_in_parallel(conn, stmt, params)
        names = {}
    else:
        rows = _streamed(conn, stmt, params)
        names = {}
    for ps, erased, born, latest, first, choice, gpc_at, invalidated, name in rows:
        yield SubjectFacts(
            subject=names.get(ps) or name or erased_label(ps),
            erased=bool(erased),
            birth_date=date.fromisoformat(born[_VALUE_AT:]) if born else None,
            region_latest=latest[_VALUE_AT:] if latest else None,
            region_first=first[_VALUE_AT:] if first else None,
            choice=None if choice is None else _CHOICE_OF_RANK[choice % _RANKS],
            choice_at_us=None if choice is None else choice // _RANKS - _AT,
            gpc_at_us=gpc_at,
            invalidated_grant=bool(invalidated),
        )


def _streamed(conn: Connection, stmt: TextClause, params: dict[str, object]) -> Iterator[Any]:
    streamed = {"stream_results": True, "yield_per": _BATCH}  # this statement only
    for rows in conn.execute(stmt, params, execution_options=streamed).partitions(_BATCH):
        yield from rows


def _streamed_in_parallel(
    conn: Connection, stmt: TextClause, params: dict[str, object]
) -> Iterator[Any]:
    """PostgreSQL: stream an ordinary query with libpq's chunked (or single-row) mode.

    SQLAlchemy streams through a server-side cursor, and PostgreSQL never runs a
    cursor's query with parallel workers; the whole-ledger aggregate wants them.
    """
    driver = conn.connection.driver_connection
    assert driver is not None, "a checked-out connection has a driver connection"
    chunk = _BATCH if pq.version() >= 170000 else 1  # chunked mode needs libpq 17
    with driver.cursor() as cur:
        yield from cur.stream(str(stmt.compile(dialect=conn.dialect)), params, size=chunk)
