"""Online reads: the few statements one request needs, on one pooled driver
connection, without building SQLAlchemy statements (a decision's reads take a
fraction of a millisecond on SQLite).

Decisions need no evidence fields, so nothing is unsealed: region and birth date
come from their clear copies, which an erasure clears with the member's key.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy import Engine

from consentgate.domain.events import (
    ConsentEvent,
    ErasureEvent,
    Event,
    ProfileEvent,
    SignalEvent,
)
from consentgate.domain.timeutil import from_micros

__all__ = ["DecisionInputs", "decision_inputs"]

_EVENTS = (
    "SELECT type, at_us, event_id, purpose, choice, signal, source, notice_version, region, "
    "birth_date FROM events WHERE subject = {p} ORDER BY at_us, seq"
)
_KEY = "SELECT key IS NULL FROM subjects WHERE pseudonym = {p}"
_POLICY = "SELECT max(id) FROM policy_versions"

DecisionInputs = tuple[list[Event], bool, int]


def _event(row: tuple[Any, ...], subject: str) -> Event:
    kind, at_us, event_id, purpose, choice, signal, source, notice, region, born = row
    at = from_micros(at_us)
    if kind == "profile":
        birth = date.fromisoformat(born) if born else None
        return ProfileEvent(
            subject=subject, at=at, event_id=event_id, region=region, birth_date=birth
        )
    if kind == "consent":
        return ConsentEvent(
            subject=subject, at=at, event_id=event_id, purpose=purpose, choice=choice,
            source=source, notice_version=notice,
        )  # fmt: skip
    if kind == "signal":
        return SignalEvent(subject=subject, at=at, event_id=event_id, signal=signal)
    return ErasureEvent(subject=subject, at=at, event_id=event_id)


def decision_inputs(engine: Engine, ps: int, subject: str) -> DecisionInputs:
    """The member's events by time then recording order (no evidence), whether the
    member was erased, and the id of the newest policy version (for the cache)."""
    mark = "%s" if engine.dialect.name == "postgresql" else "?"
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute(_EVENTS.format(p=mark), (ps,))
        rows = cur.fetchall()
        erased = False
        if rows:
            cur.execute(_KEY.format(p=mark), (ps,))
            found = cur.fetchone()
            erased = found is None or bool(found[0])
        cur.execute(_POLICY)
        newest = cur.fetchone()
        cur.close()
    finally:
        raw.close()
    events = [_event(tuple(row), subject) for row in rows]
    return events, erased, int(newest[0] or 0) if newest else 0
