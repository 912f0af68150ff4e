"""The as-of snapshot: every subject's decision inputs for one purpose, in one SQL pass.

For each subject with events at or before T the query returns the `SubjectFacts`
of `consentgate.domain.facts`. "Latest by (time, recording order)" is computed with
order-preserving text keys (zero-padded time and sequence, then the value) so one
GROUP BY serves SQLite and PostgreSQL alike, with no per-event Python.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import date, datetime

from sqlalchemy import Connection, bindparam, text

from consentgate.domain.facts import CHOICE_RANK, SubjectFacts
from consentgate.domain.timeutil import to_micros

__all__ = ["snapshot_facts"]

_OFFSET = 10**17  # makes every instant from year ~-1200 to ~+30000 a positive 18-digit number
_NEVER = -(2**62)  # "no re-consent cutoff": every grant is valid
_SEQ_CAP = 10**18  # sequences stay far below it; SEQ_CAP - seq orders them backwards


def _key(dialect: str, expr: str, width: int) -> str:
    if dialect == "postgresql":
        return f"lpad(({expr})::text, {width}, '0')"
    return f"printf('%0{width}d', {expr})"


def _sql(dialect: str, subjects: bool) -> str:
    at = _key(dialect, f"at_us + {_OFFSET}", 18)
    at_seq = f"{at} || {_key(dialect, 'seq', 19)}"
    # Earliest instant first; among events at that instant the one recorded last.
    at_last = f"{at} || {_key(dialect, f'{_SEQ_CAP} - seq', 19)}"
    rank = " ".join(f"WHEN '{c}' THEN '{r}'" for c, r in CHOICE_RANK.items())
    is_choice = (
        "type = 'consent' AND purpose = :purpose AND (choice <> 'granted' OR at_us >= :cutoff)"
    )
    where = "at_us <= :t" + (" AND subject IN :subjects" if subjects else "")
    # prefix length of the ordering keys: 18 digits of time (+ 19 of sequence)
    return f"""
SELECT subject,
  MAX(CASE WHEN type = 'erasure' THEN 1 ELSE 0 END) AS erased,
  substr(MAX(CASE WHEN birth_date IS NOT NULL THEN {at_seq} || birth_date END), 38) AS born,
  substr(MAX(CASE WHEN region IS NOT NULL THEN {at_seq} || region END), 38) AS region_latest,
  substr(MIN(CASE WHEN region IS NOT NULL THEN {at_last} || region END), 38) AS region_first,
  substr(MAX(CASE WHEN {is_choice} THEN {at} || (CASE choice {rank} END) || choice END), 20)
    AS choice,
  MAX(CASE WHEN {is_choice} THEN at_us END) AS choice_at,
  MAX(CASE WHEN type = 'signal' AND signal = 'gpc' THEN at_us END) AS gpc_at,
  MAX(CASE WHEN type = 'consent' AND purpose = :purpose AND choice = 'granted'
           AND at_us < :cutoff THEN 1 ELSE 0 END) AS invalidated
FROM events
WHERE {where}
GROUP BY subject
"""


def snapshot_facts(
    conn: Connection,
    *,
    purpose: str,
    at: datetime,
    reconsent_cutoff: datetime | None,
    subjects: Sequence[str] | None = None,
) -> Iterator[SubjectFacts]:
    """Stream the facts of every subject (or of `subjects`) as of `at`."""
    stmt = text(_sql(conn.dialect.name, subjects is not None))
    params: dict[str, object] = {
        "purpose": purpose,
        "t": to_micros(at),
        "cutoff": _NEVER if reconsent_cutoff is None else to_micros(reconsent_cutoff),
    }
    if subjects is not None:
        stmt = stmt.bindparams(bindparam("subjects", expanding=True))
        params["subjects"] = list(subjects)
    result = conn.execution_options(stream_results=True, yield_per=10_000).execute(stmt, params)
    for row in result:
        subject, erased, born, latest, first, choice, choice_at, gpc_at, invalidated = row
        yield SubjectFacts(
            subject=subject,
            erased=bool(erased),
            birth_date=date.fromisoformat(born) if born else None,
            region_latest=latest,
            region_first=first,
            choice=choice,
            choice_at_us=choice_at,
            gpc_at_us=gpc_at,
            invalidated_grant=bool(invalidated),
        )
