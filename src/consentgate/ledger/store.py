"""`Ledger`: the append-only event store and the questions asked of it."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import orjson
import pyarrow as pa
from sqlalchemy import Connection, Engine, func, insert, select
from sqlalchemy.exc import DBAPIError

from consentgate.domain.decide import Decision, decide
from consentgate.domain.errors import (
    ConsentGateError,
    InputError,
    StorageError,
    UnknownPurposeError,
)
from consentgate.domain.events import Event, ValidEvent, build_event, validate_event
from consentgate.domain.facts import SubjectFacts, evaluator
from consentgate.domain.policy import Policy, PolicyHistory
from consentgate.domain.policy_file import default_policy_text, parse_policy
from consentgate.domain.timeutil import EPOCH, format_ts, from_micros, to_micros
from consentgate.ledger import gpc, online, tlog
from consentgate.ledger.batch import BatchResult, Once, append_batch, validate
from consentgate.ledger.chain import Appender, Head, check_durable, now_us, read_head
from consentgate.ledger.checkpoint import Signer, Verifier
from consentgate.ledger.database import (
    DEFAULT_URL,
    WRITE,
    connect,
    is_initialised,
    lock_writers,
    migrate,
    writer_queue,
)
from consentgate.ledger.duckscan import snapshot_facts_duckdb, snapshot_table_duckdb
from consentgate.ledger.factcache import NEVER, Entry, FactsCache, next_events
from consentgate.ledger.importer import ImportResult, import_stream
from consentgate.ledger.parsing import row_of
from consentgate.ledger.rows import event_from_row
from consentgate.ledger.schema import checkpoints, events, ledger_meta, policy_versions, subjects
from consentgate.ledger.sealing import erased_label, pseudonym, unseal
from consentgate.ledger.snapshot import snapshot_facts
from consentgate.ledger.verify import VerifyReport, verify_ledger
from consentgate.ledger.writer import GroupWriter

log = logging.getLogger("consentgate.ledger")

#: A signed checkpoint is taken each time the ledger grows past a multiple of this.
CHECKPOINT_EVERY = 100_000

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


def open_ledger(
    url: str = DEFAULT_URL,
    *,
    create: bool = True,
    signing_key: str | Path | None = None,
    checkpoint_log: str | Path | None = None,
    checkpoint_every: int = CHECKPOINT_EVERY,
) -> Ledger:
    """Open (and by default initialise) the ledger at `url`.

    `signing_key`: a file holding the Ed25519 signer key of this ledger's checkpoints
    (`tlog.create_signing_key` writes one); without it no checkpoints are signed.
    `checkpoint_log`: the external append-only file every signed checkpoint is also
    written to (default: beside the key, `<key>.checkpoints`).
    """
    signer = tlog.load_signer(Path(signing_key)) if signing_key is not None else None
    if checkpoint_log is None and signing_key is not None:
        checkpoint_log = Path(f"{signing_key}.checkpoints")
    ledger = Ledger(
        connect(url),
        signer=signer,
        checkpoint_every=checkpoint_every,
        checkpoint_log=None if checkpoint_log is None else Path(checkpoint_log),
    )
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

    def __init__(
        self,
        engine: Engine,
        *,
        signer: Signer | None = None,
        checkpoint_every: int = CHECKPOINT_EVERY,
        checkpoint_log: Path | None = None,
    ) -> None:
        self.engine = engine
        self.signer = signer
        self.checkpoint_every = checkpoint_every
        self.checkpoint_log = checkpoint_log
        self._policy_cache: tuple[int, PolicyHistory, list[AppliedPolicy]] | None = None
        self._meta_cache: dict[str, str] | None = None
        self._signed_size: int | None = None  # the largest checkpoint size known signed
        self._purposes_seen: set[str] | None = None
        self._writer: GroupWriter | None = None
        self._facts: FactsCache | None = None

    def close(self) -> None:
        """Stop the group writer, if any; close every pooled database connection."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self.engine.dispose()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- set-up and policy ---------------------------------------------------------

    def init(self) -> None:
        """Create or upgrade the schema; apply the default policy to an empty ledger.
        Safe when several processes open a new ledger at once: each step runs under
        the write lock, and the second process finds the work done."""
        migrate(self.engine)
        if self.policies():
            return
        # The shipped default is the fail-closed baseline, in force from the start of
        # time, so that any version the operator applies later supersedes it.
        self.apply_policy(default_policy_text(), effective=EPOCH, only_if_none=True)

    def apply_policy(
        self,
        toml_text: str,
        *,
        now: datetime | None = None,
        effective: datetime | None = None,
        only_if_none: bool = False,
    ) -> AppliedPolicy:
        """Validate and store a new policy version, effective from `effective`, else
        `[policy] effective`, else now. An invalid policy raises `PolicyError` and
        stores nothing."""
        policy = parse_policy(toml_text)
        applied = now or _now()
        effective = effective or policy.effective or applied
        with self._writing() as conn:
            check_durable(conn)
            lock_writers(conn)
            if (
                only_if_none
                and conn.execute(select(func.count()).select_from(policy_versions)).scalar()
            ):
                self._policy_cache = None
                return self.policies()[0]
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
        if new_id is None:  # another process applied the default first
            return self.policies()[0]
        return AppliedPolicy(int(new_id[0]), policy, effective, applied)

    def policies(self) -> list[AppliedPolicy]:
        """Every applied version, oldest application first."""
        return self._policies()[1]

    def policy_history(self) -> PolicyHistory:
        return self._policy_history()

    def _policy_history(self, newest: int | None = None) -> PolicyHistory:
        history = self._policies(newest)[0]
        if history is None:
            raise StorageError("the ledger has no policy: run `consentgate init`")
        return history

    def policy_at(self, at: datetime | None = None) -> Policy:
        """The policy version in force at `at` (default now)."""
        return self.policy_history().in_force(at or _now())

    def applied_policy_at(self, at: datetime | None = None) -> AppliedPolicy:
        """The stored version in force at `at` (default now), with its dates."""
        history, applied = self._policies()  # one read for both
        if history is None:
            raise StorageError("the ledger has no policy: run `consentgate init`")
        policy = history.in_force(at or _now())
        return next(a for a in reversed(applied) if a.policy is policy)

    def _policies(
        self, newest: int | None = None
    ) -> tuple[PolicyHistory | None, list[AppliedPolicy]]:
        """The stored versions (cached while the newest id, read now unless the
        caller just read it as `newest`, is unchanged)."""
        cache = self._policy_cache
        if newest is not None and cache is not None and cache[0] == newest:
            return cache[1], cache[2]
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

    @contextmanager
    def _writing(self) -> Iterator[Connection]:
        """A write transaction: the chain head is locked from its first statement.
        On a SQLite file, writers first queue on a lock file beside the database, so
        that the next writer (of any process) starts the moment the last one
        commits, rather than when SQLite's busy wait next polls."""
        with writer_queue(self.engine), self.engine.connect() as conn:
            conn.execution_options(**WRITE)
            with conn.begin():
                yield conn

    def record(self, event: Mapping[str, Any]) -> Event:
        """Validate and durably append one event (a JSON object of DESIGN §5).
        Recording the same event again is a no-op; returns the event as stored."""
        try:
            # Purposes are only ever added (every applied version counts), so the ones
            # seen before may be too few, never too many: look again only on a miss.
            valid = validate_event(event, purposes=self._purposes_seen or ())
        except UnknownPurposeError:
            self._purposes_seen = self.known_purposes()
            valid = validate_event(event, purposes=self._purposes_seen)
        row = row_of(valid, self.secret, now_us())
        with self._writing() as conn:
            appender = Appender(conn, self.secret)
            start = appender.start
            appender.append([row], name="event")
            head = appender.finish()
        self._appended(start, head)
        return build_event(valid)

    def record_batch(
        self, batch: Sequence[Mapping[str, Any]], *, once: Once | None = None
    ) -> BatchResult:
        """Validate and durably append a batch of events in one transaction, all or
        nothing (errors name `events[i]`). Events already stored are skipped. With
        `once`, a request seen before gets its first answer and appends nothing; the
        same key with other content raises `IdempotencyConflict`."""
        valid = validate(batch, self.known_purposes())
        if self._writer is not None:
            return self._writer.submit(valid, once)
        return self.append_valid([(valid, once)])[0]

    def append_valid(
        self, requests: Sequence[tuple[Sequence[ValidEvent], Once | None]]
    ) -> list[BatchResult]:
        """Append validated batches in one transaction (one commit for all), each
        answered as if alone; an error in any rolls back every one."""
        with self._writing() as conn:
            appender = Appender(conn, self.secret)  # takes the head lock first
            start = appender.start
            results = [append_batch(conn, appender, valid, once) for valid, once in requests]
            head = appender.finish()
        try:
            self._appended(start, head)
        except (ConsentGateError, OSError):
            # Committed: the batches are stored whatever happens to the checkpoint
            # (the next one covers them); say so in the log, not to the callers.
            log.exception("checkpoint after an append failed")
        return results

    def group_commit(self, *, max_group: int = 64) -> None:
        """From now on `record_batch` hands batches to one writer thread, which
        commits the batches waiting together in one transaction (one fsync), each
        still all or nothing (the HTTP API does this). `close()` stops it."""
        if self._writer is None:
            self._writer = GroupWriter(self.append_valid, max_group=max_group)

    def note_gpc(
        self,
        subject: str,
        on: bool,
        *,
        at: datetime | None = None,
        evidence: Mapping[str, str] | None = None,
    ) -> Event | None:
        """A request of the member's own arrived with (`on`) or without GPC. Records a
        `gpc` signal when GPC turns on for them (not again while it stays on); returns
        it, or None when nothing was recorded."""
        ps = self.pseudonym(subject)
        with self.engine.connect() as conn:
            if gpc.last_seen(conn, ps) == on:
                return None
        when = at or _now()
        body = {"type": "signal", "subject": subject, "signal": "gpc", "at": format_ts(when)}
        valid = validate_event({**body, **(evidence or {})})
        with self._writing() as conn:
            lock_writers(conn)  # before reading the state: concurrent requests queue here
            if gpc.last_seen(conn, ps) == on:  # another request got there first
                return None
            gpc.remember(conn, ps, on, to_micros(when))
            if not on:
                return None
            appender = Appender(conn, self.secret)
            append_batch(conn, appender, [valid], None)
            head = appender.finish()
        self._appended(appender.start, head)
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
        with self._writing() as conn:
            result, head = import_stream(
                conn,
                stream,
                purposes=purposes,
                secret=self.secret,
                name=name,
                size_hint=size,
                progress=progress,
            )
        self._appended(head.size - result.added, head)
        return result

    def _appended(self, start: int, head: Head) -> None:
        """After a commit: a signed checkpoint each time the size passes a multiple
        of `checkpoint_every` (when the ledger has a signing key), and one that a
        writer killed between its commit and its checkpoint did not make."""
        every = self.checkpoint_every
        if self.signer is None or not every or head.size < every:
            return
        multiple = head.size // every
        if multiple == start // every:  # this write passed no multiple
            # The largest signed size is remembered; the database is asked only when
            # it looks behind (another process may have signed since).
            if self._signed_size is None or multiple > self._signed_size // every:
                with self.engine.connect() as conn:
                    found = conn.execute(select(func.max(checkpoints.c.size))).scalar()
                self._signed_size = int(found or 0)
            if multiple <= self._signed_size // every:
                return
        self.checkpoint()
        self._signed_size = head.size

    # -- integrity -----------------------------------------------------------------

    @property
    def secret(self) -> bytes:
        """The ledger's pseudonym key."""
        return bytes.fromhex(self._meta()["pseudonym_key"])

    @property
    def session_key(self) -> bytes:
        """The key that signs member session tokens (consentgate.access.tokens)."""
        return bytes.fromhex(self._meta()["session_key"])

    @property
    def origin(self) -> str:
        """The name checkpoints of this ledger carry (docs/integrity.md)."""
        return f"consentgate ledger {self._meta()['ledger_id']}"

    def _meta(self) -> dict[str, str]:
        if self._meta_cache is None:
            with self.engine.connect() as conn:
                rows = conn.execute(select(ledger_meta.c.name, ledger_meta.c.value)).all()
            self._meta_cache = {name: value for name, value in rows}
        return self._meta_cache

    def pseudonym(self, subject: str) -> int:
        """The member's keyed pseudonym, as the chain records them."""
        return pseudonym(self.secret, subject)

    def head(self) -> Head:
        with self.engine.connect() as conn:
            return read_head(conn)

    def checkpoint(self) -> str:
        """Sign a checkpoint of the ledger as it is now (or return the one already
        signed at this size), store it, and append it to the external log."""
        if self.signer is None:
            raise StorageError("no signing key: open the ledger with one (--signing-key)")
        with self._writing() as conn:
            note = tlog.checkpoint(conn, self.signer, self.origin)
            stored = [n for _, _, n in tlog.stored_checkpoints(conn)]
        if self.checkpoint_log is not None:
            # Every stored checkpoint, oldest first: one whose append a crash cut short
            # after its commit reaches the external log now.
            tlog.append_to_log(self.checkpoint_log, *stored, note)
        return note

    def latest_checkpoint(self) -> str | None:
        """The signed note of the largest stored checkpoint, if any."""
        with self.engine.connect() as conn:
            found = tlog.stored_checkpoints(conn)
        return found[-1][2] if found else None

    def positions(self, subject: str) -> list[int]:
        """The chain positions (seq) of every event of `subject`."""
        query = select(events.c.seq).where(events.c.subject == self.pseudonym(subject))
        with self.engine.connect() as conn:
            return [int(seq) for seq in conn.execute(query.order_by(events.c.seq)).scalars()]

    def verify(
        self, *, verifier: Verifier | None = None, external: Sequence[str] = ()
    ) -> VerifyReport:
        """Re-compute the chain, the Merkle roots of every stored checkpoint and of
        each `external` signed checkpoint, and the sealed personal fields."""
        return verify_ledger(
            self.engine, self.secret, self.origin, verifier=verifier, external=external
        )

    def vacuum(self) -> None:
        """Rewrite the database files so that no page keeps a copy of erased keys
        or ids (SQLite: checkpoint the WAL into the file, VACUUM, empty the WAL;
        PostgreSQL: VACUUM FULL of the tables that held them, then a checkpoint
        when the role may ask for one). Run after erasures; see docs/integrity.md."""
        if self.engine.dialect.name == "sqlite":
            raw = self.engine.raw_connection()  # the driver is in autocommit mode
            try:
                for sql in ("PRAGMA wal_checkpoint(TRUNCATE)", "VACUUM"):
                    raw.cursor().execute(sql)
                raw.cursor().execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                raw.close()
            return
        with self.engine.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            conn.exec_driver_sql("VACUUM FULL subjects")
            conn.exec_driver_sql("VACUUM FULL events")
            conn.exec_driver_sql("ANALYZE subjects")  # no member ids in pg_statistic
            # CHECKPOINT needs pg_checkpoint or superuser; the files are rewritten anyway.
            with suppress(DBAPIError):
                conn.exec_driver_sql("CHECKPOINT")

    # -- reading -------------------------------------------------------------------

    def history(self, subject: str) -> list[Event]:
        """Every event of `subject`, by time then recording order. After an erasure
        the events remain, without their personal fields."""
        ps = self.pseudonym(subject)
        query = select(events).where(events.c.subject == ps).order_by(events.c.at_us, events.c.seq)
        with self.engine.connect() as conn:
            key = conn.execute(select(subjects.c.key).where(subjects.c.pseudonym == ps)).scalar()
            rows = [dict(row._mapping) for row in conn.execute(query)]
        out = []
        for row in rows:
            personal = {}
            if key is not None and row["sealed"] is not None:
                personal = orjson.loads(
                    unseal(bytes(key), bytes(row["sealed"]), row["content_sha256"].encode())
                )
            out.append(event_from_row(row, subject, personal))
        return out

    def count_events(self) -> int:
        return self.head().size

    def decide(self, subject: str, *, purpose: str, at: datetime | None = None) -> Decision:
        """The online decision for `subject` (DESIGN §3 with collection time = T).

        A member erased at any time is `erased` at every T at which they have events:
        the erasure destroyed the region and birth date the rule needs, so their
        eligibility at an earlier T cannot be proven (fail closed; the gate does the
        same, docs/gate.md)."""
        when = at or _now()
        events, erased, newest = online.decision_inputs(
            self.engine, self.pseudonym(subject), subject
        )
        history = self._policy_history(newest)
        decision = decide(events=events, policy=history, purpose=purpose, at=when)
        return online.closed_for_erased(decision, erased)

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
        policy = self.purpose_policy(purpose, at)
        cutoff = policy.reconsent_cutoff(purpose, at)
        if engine not in ("auto", "duckdb", "sql"):
            raise InputError("engine", "auto, duckdb or sql", engine)
        if engine == "duckdb" or (engine == "auto" and subjects is None):
            facts = snapshot_facts_duckdb(
                self.engine, purpose=purpose, at=at, reconsent_cutoff=cutoff
            )
            if subjects is None:
                yield from facts
                return
            # Named members are answered by id, erased ones included.
            names = {s: s for s in subjects}
            names.update((erased_label(self.pseudonym(s)), s) for s in subjects)
            for f in facts:
                if f.subject in names:
                    yield f._replace(subject=names[f.subject])
            return
        named = None if subjects is None else {self.pseudonym(s): s for s in subjects}
        with self.engine.connect() as conn:
            yield from snapshot_facts(
                conn,
                purpose=purpose,
                at=at,
                reconsent_cutoff=cutoff,
                subjects=named,
            )

    def snapshot_table(self, *, purpose: str, at: datetime) -> pa.Table:
        """`snapshot` for every subject as one Arrow table, for set-based consumers
        (the gate joins it to records); instants are microseconds since the epoch."""
        policy = self.purpose_policy(purpose, at)
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
        policy = self.purpose_policy(purpose, at)
        decide_facts = evaluator(policy, purpose, at)
        if subjects is not None and engine != "duckdb" and self._facts is not None:
            cutoff = policy.reconsent_cutoff(purpose, at)
            for subject, facts in self._cached_facts(purpose, at, cutoff, subjects):
                yield subject, decide_facts(facts)
            return
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

    def cache_facts(self, *, max_entries: int = 500_000) -> None:
        """From now on, `decisions` for named members keeps their facts in memory
        (ledger/factcache.py: exact, refreshed from the chain before each use)."""
        if self._facts is None:
            self._facts = FactsCache(max_entries=max_entries)

    def _cached_facts(
        self, purpose: str, at: datetime, cutoff: datetime | None, subjects: Sequence[str]
    ) -> list[tuple[str, SubjectFacts | None]]:
        cache = self._facts
        assert cache is not None
        key = (purpose, None if cutoff is None else to_micros(cutoff))
        at_us = to_micros(at)
        out: dict[str, SubjectFacts | None] = {}
        with cache.lock, self.engine.connect() as conn:
            newest = conn.execute(select(func.max(policy_versions.c.id))).scalar()
            cache.refresh(conn, int(newest or 0))
            missing: dict[int, str] = {}
            for subject in subjects:
                entry = cache.get(key, subject, at_us)
                if entry is None:
                    missing[self.pseudonym(subject)] = subject
                else:
                    out[subject] = entry.facts
            if missing:
                found = {
                    f.subject: f
                    for f in snapshot_facts(
                        conn, purpose=purpose, at=at, reconsent_cutoff=cutoff, subjects=missing
                    )
                }
                later = next_events(conn, list(missing), at_us)
                for ps, subject in missing.items():
                    facts = found.get(subject)
                    cache.put(key, subject, Entry(ps, facts, at_us, later.get(ps, NEVER)))
                    out[subject] = facts
        return [(subject, out[subject]) for subject in subjects]

    def purpose_policy(self, purpose: str, at: datetime) -> Policy:
        """The policy version in force at `at`, refusing a purpose it does not define."""
        policy = self.policy_at(at)
        if purpose not in policy.purposes:
            raise UnknownPurposeError(
                "purpose", "one of " + ", ".join(sorted(policy.purposes)), purpose
            )
        return policy
