"""The last Global Privacy Control state seen on each member's own requests, so
that a `Sec-GPC: 1` header records one `gpc` signal when it turns on, not one per
request (the signal is an event; the header state is bookkeeping, kept by pseudonym).
"""

from __future__ import annotations

from sqlalchemy import Connection, insert, select, update

from consentgate.ledger.schema import gpc_seen

__all__ = ["last_seen", "remember"]


def last_seen(conn: Connection, ps: int) -> bool:
    """Whether the member's last request carried GPC (False when never seen)."""
    on = conn.execute(select(gpc_seen.c.on).where(gpc_seen.c.subject == ps)).scalar()
    return bool(on)


def remember(conn: Connection, ps: int, on: bool, at_us: int) -> None:
    done = conn.execute(
        update(gpc_seen).where(gpc_seen.c.subject == ps).values(on=on, changed_us=at_us)
    )
    if not done.rowcount:
        conn.execute(insert(gpc_seen).values(subject=ps, on=on, changed_us=at_us))
