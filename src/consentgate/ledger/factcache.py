"""A cache of members' decision facts for online batch decisions, kept exact by the
hash chain's sequence numbers.

An entry holds one member's `SubjectFacts` for a purpose and re-consent cutoff, as
computed at instant T0, and is valid for any T in [T0, the member's next event
dated after T0). Before each use the cache reads the events appended since it last
looked (`seq` > the size it saw; writers commit in `seq` order under the head lock)
and drops the entries of every member they name; a new policy version, or a large
gap, empties it. So a cached answer is always the answer the ledger gives now.
"""

from __future__ import annotations

import threading
from typing import NamedTuple

from sqlalchemy import Connection, text

from consentgate.domain.facts import SubjectFacts
from consentgate.ledger.snapshot import among, integers

__all__ = ["FactsCache"]

NEVER = 2**63 - 1
#: More new events than this since the last look: empty the cache rather than read them.
MAX_GAP = 50_000


class Entry(NamedTuple):
    ps: int
    facts: SubjectFacts | None  # None: no event at or before `since`
    since: int  # T0, microseconds
    until: int  # the member's first event dated after T0 (NEVER if none)


class FactsCache:
    def __init__(self, *, max_entries: int = 500_000) -> None:
        self.max_entries = max_entries
        self.lock = threading.Lock()  # callers hold it around refresh, lookups and stores
        self._seen: int | None = None
        self._policy: int | None = None
        self._maps: dict[tuple[str, int | None], dict[str, Entry]] = {}
        self._names: dict[int, set[str]] = {}  # pseudonym -> ids cached under it
        self._count = 0

    def clear(self) -> None:
        self._maps.clear()
        self._names.clear()
        self._count = 0

    def refresh(self, conn: Connection, policy_id: int) -> None:
        """Drop what the events appended since the last look may have changed."""
        size = int(conn.exec_driver_sql("SELECT size FROM ledger_head WHERE id = 1").scalar_one())
        if self._seen is None or policy_id != self._policy or size - self._seen > MAX_GAP:
            self.clear()
        elif size > self._seen:
            changed = conn.exec_driver_sql(
                "SELECT DISTINCT subject FROM events WHERE seq > " + str(self._seen)
            ).scalars()
            for ps in changed:
                for subject in self._names.pop(int(ps), ()):
                    for cached in self._maps.values():
                        if cached.pop(subject, None) is not None:
                            self._count -= 1
        self._seen, self._policy = size, policy_id

    def get(self, key: tuple[str, int | None], subject: str, at_us: int) -> Entry | None:
        entry = self._maps.get(key, {}).get(subject)
        if entry is not None and entry.since <= at_us < entry.until:
            return entry
        return None

    def put(self, key: tuple[str, int | None], subject: str, entry: Entry) -> None:
        if self._count >= self.max_entries:
            self.clear()
        cached = self._maps.setdefault(key, {})
        if subject not in cached:
            self._count += 1
        cached[subject] = entry
        self._names.setdefault(entry.ps, set()).add(subject)


def next_events(conn: Connection, pseudonyms: list[int], at_us: int) -> dict[int, int]:
    """Each member's first event dated after `at_us` (members without one omitted)."""
    dialect = conn.dialect.name
    query = text(
        f"SELECT subject, min(at_us) FROM events WHERE {among(dialect, 'subject', 'ps')} "
        "AND at_us > :t GROUP BY subject"
    )
    rows = conn.execute(query, {"ps": integers(dialect, pseudonyms), "t": at_us}).all()
    return {int(ps): int(first) for ps, first in rows}
