"""The audit log: every staff read of a member's data and every administrative
change, with who, what and when. Members appear only by keyed pseudonym, so the log
keeps no member id an erasure would have to reach."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, insert, select

from consentgate.domain.timeutil import from_micros
from consentgate.ledger.chain import now_us
from consentgate.ledger.schema import audit_log

__all__ = ["AuditEntry", "audit_entries", "write_audit"]


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    at: datetime
    actor: str
    action: str
    subject: int | None  # the member's keyed pseudonym
    detail: str


def write_audit(
    engine: Engine, *, actor: str, action: str, subject: int | None = None, detail: str = ""
) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(audit_log).values(
                at_us=now_us(), actor=actor, action=action, subject=subject, detail=detail
            )
        )


def audit_entries(
    engine: Engine, *, subject: int | None = None, limit: int = 100
) -> list[AuditEntry]:
    """The newest entries first (of one member when `subject` is given)."""
    query = select(audit_log).order_by(audit_log.c.id.desc()).limit(limit)
    if subject is not None:
        query = query.where(audit_log.c.subject == subject)
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    return [
        AuditEntry(r.id, from_micros(r.at_us), r.actor, r.action, r.subject, r.detail) for r in rows
    ]
