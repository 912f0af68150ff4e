"""`Ledger`: the append-only event store and the questions asked of it."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
from sqlalchemy import Engine, func, insert, select

from consentgate.domain.decide import Decision, decide
from consentgate.domain.errors import InputError, StorageError, UnknownPurposeError
from consentgate.domain.events import Event, build_event, validate_event
from consentgate.domain.facts import SubjectFacts, evaluator
from consentgate.domain.policy import Policy, PolicyHistory
from consentgate.domain.policy_file import default_policy_text, parse_policy
from consentgate.domain.timeutil import EPOCH, from_micros, to_micros
from consentgate.ledger.database import DEFAULT_URL, connect, is_initialised, migrate
from consentgate.ledger.duckscan import snapshot_facts_duckdb, snapshot_table_duckdb
from consentgate.ledger.importer import ImportResult, append_rows, import_stream
from consentgate.ledger.parsing import row_of
from consentgate.ledger.rows import event_from_row
from consentgate.ledger.schema import events, policy_versions
from consentgate.ledger.snapshot import snapshot_facts

__all__ = ["AppliedPolicy", "Ledger", "open_ledger"]


@dataclass(frozen=True, slots=True)
class AppliedPolicy:
    """A stored policy version: the policy, when it took effect and when it was applied."""

    id: int
    policy: Policy
    effective: datetime
    applied: datetime


def _now() -> datetime:
    return datetime.now(UTC)


def open_ledger(url: str = DEFAULT_URL, *, create: bool = True) -> Ledger:
    """Open (and by default initialise) the ledger at `url`."""
    ledger = Ledger(connect(url))
    try:
        if create:
            ledger.init()
        elif not is_initialised(ledger.engine):
            raise StorageError(f"database {url!r} holds no ledger: run `consentgate init` first")
    except BaseException:
        ledger.close()
        raise
    return ledger


class Ledger:
    """The consent ledger on one database. Events are only ever appended."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._policy_cache: tuple[int, PolicyHistory, list[AppliedPolicy]] | None = None

    def close(self) -> None:
        """Close every pooled database connection."""
        self.engine.dispose()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- set-up and policy ---------------------------------------------------------

    def init(self) -> None:
        """Create or upgrade the schema; apply the default policy to an empty ledger."""
        migrate(self.engine)
        if not self.policies():
            # The shipped default is the fail-closed baseline, in force from the start
            # of time, so that any version the operator applies later supersedes it.
            self.apply_policy(default_policy_text(), effective=EPOCH)

    def apply_policy(
        self, toml_text: str, *, now: datetime | None = None, effective: datetime | None = None
    ) -> AppliedPolicy:
        """Validate and store a new policy version, effective from `effective`, else
        `[policy] effective`, else now. An invalid policy raises `PolicyError` and
        stores nothing."""
        policy = parse_policy(toml_text)
        applied = now or _now()
        effective = effective or policy.effective or applied
        with self.engine.begin() as conn:
            new_id = conn.execute(
                insert(policy_versions).values(
                    version=policy.version,
                    sha256=policy.sha256,
                    effective_us=to_micros(effective),
                    applied_us=to_micros(applied),
                    text=toml_text,
                )
            ).inserted_primary_key
        self._policy_cache = None
        assert new_id is not None
        return AppliedPolicy(int(new_id[0]), policy, effective, applied)

    def policies(self) -> list[AppliedPolicy]:
        """Every applied version, oldest application first."""
        return self._policies()[1]

    def policy_history(self) -> PolicyHistory:
        history = self._policies()[0]
        if history is None:
            raise StorageError("the ledger has no policy: run `consentgate init`")
        return history

    def policy_at(self, at: datetime | None = None) -> Policy:
        """The policy version in force at `at` (default now)."""
        return self.policy_history().in_force(at or _now())

    def _policies(self) -> tuple[PolicyHistory | None, list[AppliedPolicy]]:
        with self.engine.connect() as conn:
            newest = conn.execute(select(func.max(policy_versions.c.id))).scalar()
            if self._policy_cache is not None and self._policy_cache[0] == newest:
                return self._policy_cache[1], self._policy_cache[2]
            rows = conn.execute(select(policy_versions).order_by(policy_versions.c.id)).all()
        applied = [
            AppliedPolicy(
                r.id, parse_policy(r.text), from_micros(r.effective_us), from_micros(r.applied_us)
            )
            for r in rows
        ]
        if not applied:
            return None, []
        history = PolicyHistory([(a.effective, a.policy) for a in applied])
        self._policy_cache = (int(newest or 0), history, applied)
        return history, applied

    def known_purposes(self) -> set[str]:
        """Purposes defined by any applied policy version (what events may name)."""
        return {name for a in self.policies() for name in a.policy.purposes}

    # -- appending -----------------------------------------------------------------

    def record(self, event: Mapping[str, Any]) -> Event:
        """Validate and durably append one event (a JSON object of DESIGN §5).
        Recording the same event again is a no-op; returns the event as stored."""
        valid = validate_event(event, purposes=self.known_purposes())
        with self.engine.begin() as conn:
            append_rows(conn, [row_of(valid, time.time_ns() // 1_000)], name="event")
        return build_event(valid)

    def import_events(
        self,
        source: str | Path | IO[bytes],
        *,
        progress: Callable[[int], None] | None = None,
    ) -> ImportResult:
        """Import a JSON Lines file or binary stream, all or nothing.
        `progress` is called with the number of bytes processed so far."""
        purposes = self.known_purposes()
        if not isinstance(source, (str, Path)):
            name = str(getattr(source, "name", "<stream>"))
            return self._import(source, name, purposes, 0, progress)
        try:
            fh = open(source, "rb")  # noqa: SIM115 - closed below, errors mapped first
        except OSError as err:
            raise InputError("FILE", "a readable JSON Lines file", str(source)) from err
        with fh:
            size = os.fstat(fh.fileno()).st_size
            return self._import(fh, str(source), purposes, size, progress)

    def _import(
        self,
        stream: IO[bytes],
        name: str,
        purposes: set[str],
        size: int,
        progress: Callable[[int], None] | None,
    ) -> ImportResult:
        with self.engine.begin() as conn:
            return import_stream(
                conn, stream, purposes=purposes, name=name, size_hint=size, progress=progress
            )

    # -- reading -------------------------------------------------------------------

    def history(self, subject: str) -> list[Event]:
        """Every event of `subject`, by time then recording order."""
        query = (
            select(events).where(events.c.subject == subject).order_by(events.c.at_us, events.c.seq)
        )
        with self.engine.connect() as conn:
            return [event_from_row(dict(row._mapping)) for row in conn.execute(query)]

    def count_events(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(events)).scalar_one())

    def decide(self, subject: str, *, purpose: str, at: datetime | None = None) -> Decision:
        """The online decision for `subject` (DESIGN §3 with collection time = T)."""
        when = at or _now()
        return decide(
            events=self.history(subject),
            policy=self.policy_history(),
            purpose=purpose,
            at=when,
        )

    def snapshot(
        self,
        *,
        purpose: str,
        at: datetime,
        subjects: Sequence[str] | None = None,
        engine: str = "auto",
    ) -> Iterator[SubjectFacts]:
        """Each subject's decision inputs for `purpose` as of `at`, computed in SQL.

        `engine`: "duckdb" scans the whole ledger with DuckDB (fast for everyone),
        "sql" asks the database itself (fast for a few `subjects`, via the index);
        "auto" picks DuckDB for every subject and the database for a named few.
        """
        policy = self._purpose_policy(purpose, at)
        cutoff = policy.reconsent_cutoff(purpose, at)
        if engine not in ("auto", "duckdb", "sql"):
            raise InputError("engine", "auto, duckdb or sql", engine)
        if engine == "duckdb" or (engine == "auto" and subjects is None):
            facts = snapshot_facts_duckdb(
                self.engine, purpose=purpose, at=at, reconsent_cutoff=cutoff
            )
            wanted = None if subjects is None else set(subjects)
            yield from (f for f in facts if wanted is None or f.subject in wanted)
            return
        with self.engine.connect() as conn:
            yield from snapshot_facts(
                conn,
                purpose=purpose,
                at=at,
                reconsent_cutoff=cutoff,
                subjects=subjects,
            )

    def snapshot_table(self, *, purpose: str, at: datetime) -> pa.Table:
        """`snapshot` for every subject as one Arrow table, for set-based consumers
        (the gate joins it to records); instants are microseconds since the epoch."""
        policy = self._purpose_policy(purpose, at)
        return snapshot_table_duckdb(
            self.engine,
            purpose=purpose,
            at=at,
            reconsent_cutoff=policy.reconsent_cutoff(purpose, at),
        )

    def decisions(
        self,
        *,
        purpose: str,
        at: datetime,
        subjects: Sequence[str] | None = None,
        engine: str = "auto",
    ) -> Iterator[tuple[str, Decision]]:
        """Online decisions for every subject (or `subjects`) from the SQL snapshot.
        Requested subjects the ledger does not know are answered `unknown_subject`."""
        policy = self._purpose_policy(purpose, at)
        decide_facts = evaluator(policy, purpose, at)
        snap = self.snapshot(purpose=purpose, at=at, subjects=subjects, engine=engine)
        if subjects is None:
            for facts in snap:
                yield facts.subject, decide_facts(facts)
            return
        seen = set()
        for facts in snap:
            seen.add(facts.subject)
            yield facts.subject, decide_facts(facts)
        for subject in subjects:
            if subject not in seen:
                yield subject, decide_facts(None)

    def _purpose_policy(self, purpose: str, at: datetime) -> Policy:
        policy = self.policy_at(at)
        if purpose not in policy.purposes:
            raise UnknownPurposeError(
                "purpose", "one of " + ", ".join(sorted(policy.purposes)), purpose
            )
        return policy
