"""Tamper detection: raw SQL changes behind the library's back, each caught by `verify`.

`build_ledger` makes one ledger per backend: 222 events (profiles with region, birth
date and ip; consents, some with source, notice version, ip and user agent; GPC signals;
members who only ever consented; two erasures, one followed by more events of the erased
member) from three imports and two single records, with a signing key, a signed
checkpoint each time the ledger passes a multiple of 50 events and one on demand (sizes
75, 76, 160, 222), and the external log of those checkpoints.

Each test applies one kind of change many times, seeded. Every change starts from the
pristine tables (`events`, `subjects`, `ledger_head`, `checkpoints`, copied beside them
with CREATE TABLE ... AS and put back in the same transaction), is committed, is checked
to differ from the original, and is then verified three ways: with the verifier key and
the external log, with the key alone (the checks inside the database), and, where that
must pass, with neither. Mutations (SQLite / PostgreSQL, which runs half as many to keep
the suite short):

    kind          count    what the attacker does
    column      306/162    edits one column of one event, every column in turn (17/9
                           each): to another value, NULL, a flipped bit, a moved seq
    rehash       100/50    edits an event and recomputes its own hash
    delete       100/50    deletes 1-3 consecutive events (every 10th at the tail)
    insert       100/50    inserts a forged, well-chained event, renumbering those after
                           it (every 10th appended at the end, ledger_head left alone)
    reorder      100/50    swaps the positions of two events (every 3rd: neighbours)
    truncate      80/40    drops the last events and rewrites ledger_head, then drops
                           the stored checkpoints past the new end (half), keeps them
                           (a quarter), or drops them after cutting past an erasure
    rewrite      108/60    edits, deletes or inserts an event, recomputes every hash after
                           it and ledger_head, then drops, keeps, re-roots or re-signs
                           (with its own key) the stored checkpoints it invalidated
    subjects      80/40    swaps two keys or two ids, changes an id, drops a key, erases
                           a member without an erasure event, drops a member's row (each
                           for members with and without personal data), gives an erased
                           member a key back
    head          42/24    edits ledger_head's size, hash or frontier, or deletes it
    checkpoints   21/12    edits a stored checkpoint's root, size or signed note
    total      1036/538

Where verify must name a position, the test asserts the first bad `seq` exactly: the
edited event for an edit, the first missing position for a deletion, the lower of two
swapped positions, the event after a re-hashed or inserted one (its `prev_hash` no
longer links: verify cannot tell which of the two was altered, and says so) unless a
checkpoint was signed at exactly the changed position (then that root differs first),
the first checkpoint at or past a rewrite. Truncation, and a rewrite whose stored
checkpoints were dropped, re-rooted or re-signed, pass every check inside the database
(asserted, with the key and without it): only the external log reveals them.

Not covered, because no check can catch it: an event appended at the end with a
correct hash and ledger_head moved along (indistinguishable from a real append until a
checkpoint signs it), and deleting stored checkpoints alone (the external log still
matches the chain).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, text

import consentgate
from consentgate.domain import parse_event
from consentgate.ledger import merkle, tlog
from consentgate.ledger.chain import GENESIS, entry_of
from consentgate.ledger.checkpoint import Checkpoint, Signer, Verifier, generate_key, sign
from consentgate.ledger.rows import COLUMNS, id_key
from consentgate.ledger.verify import VerifyReport

from ..conftest import OpenLedger

EVERY = 50  # checkpoint_every of the test ledger
REGIONS = ("US-CA", "US-TX", "DE", "FR", "GB", "BR-SP", "JP")
TABLES = {"events": "seq", "subjects": "pseudonym", "ledger_head": "id", "checkpoints": "size"}
INT64 = (-(2**63), 2**63)

# -- the ledger under test ------------------------------------------------------------


@dataclass
class Built:
    """A signed ledger with several checkpoints, and what went into it."""

    ledger: consentgate.Ledger
    verifier: Verifier
    key: Path  # the signer key file (its verifier key is `key.pub`)
    log: str  # the external checkpoint log, as the operator keeps it
    sizes: list[int]  # the sizes at which checkpoints were expected, in order
    events: list[dict[str, str]]  # every event given, in recording order
    erased: list[str]  # members erased, in order
    erased_at: dict[str, int] = field(default_factory=dict)  # member -> log size before


def _at(rng: random.Random) -> str:
    day = rng.randrange(1, 29)
    return f"2024-{rng.randrange(1, 13):02d}-{day:02d}T{rng.randrange(24):02d}:00:00Z"


def member_events(rng: random.Random, member: str, consent_only: bool) -> list[dict[str, str]]:
    """One member's events in recording order."""
    out: list[dict[str, str]] = []
    if not consent_only:
        for _ in range(rng.randrange(1, 3)):
            out.append(
                {
                    "type": "profile",
                    "subject": member,
                    "at": _at(rng),
                    "region": rng.choice(REGIONS),
                    "birth_date": f"{rng.randrange(1950, 2008)}-{rng.randrange(1, 13):02d}-15",
                    "ip": f"192.0.2.{rng.randrange(1, 255)}",
                }
            )
    for _ in range(rng.randrange(1, 4)):
        consent = {
            "type": "consent",
            "subject": member,
            "at": _at(rng),
            "purpose": rng.choice(("ai_training", "genai_features")),
            "choice": rng.choice(("granted", "withdrawn", "refused")),
        }
        if rng.random() < 0.5:
            consent["source"] = rng.choice(("post", "comment"))
        if rng.random() < 0.3:
            consent["notice_version"] = "n1"
        if not consent_only and rng.random() < 0.5:
            consent["ip"] = f"198.51.100.{rng.randrange(1, 255)}"
            consent["user_agent"] = "Mozilla/5.0"
        out.append(consent)
    if rng.random() < 0.3:
        out.append({"type": "signal", "subject": member, "signal": "gpc", "at": _at(rng)})
    rng.shuffle(out)
    return out


def _write(path: Path, events: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(ev) + "\n" for ev in events), "utf-8")
    return path


def build_ledger(open_ledger: OpenLedger, db_url: str, tmp_path: Path, *, seed: int = 1) -> Built:
    """Three imports and two erasures (records) on a signed ledger, as described above."""
    key = tmp_path / "ledger.key"
    tlog.create_signing_key(key)
    ledger = open_ledger(db_url, signing_key=key, checkpoint_every=EVERY)
    rng = random.Random(seed)
    members = [f"member-{i:03d}" for i in range(60)]
    erased = [members[4], members[30]]
    given: list[dict[str, str]] = []
    sizes: list[int] = []
    erased_at: dict[str, int] = {}
    size = 0

    def grew(before: int) -> None:
        nonlocal size
        size = ledger.count_events()
        if size // EVERY > before // EVERY:
            sizes.append(size)

    def erase(member: str) -> None:
        erasure = {"type": "erasure", "subject": member, "at": "2024-12-31T00:00:00Z"}
        erased_at[member] = size
        ledger.record(erasure)
        given.append(erasure)
        grew(size)

    for number, batch in enumerate((members[:22], members[22:42], members[42:])):
        events = [ev for m in batch for ev in member_events(rng, m, members.index(m) % 7 == 3)]
        if number == 1:
            # The first erased member comes back after their erasure.
            events[len(events) // 2 : len(events) // 2] = member_events(rng, erased[0], False)
        ledger.import_events(_write(tmp_path / f"import-{number}.jsonl", events))
        given.extend(events)
        grew(size)
        if number == 0:
            erase(erased[0])
            ledger.checkpoint()  # one on demand, right after the erasure
            if sizes[-1:] != [size]:
                sizes.append(size)
        if number == 1:
            erase(erased[1])
    if sizes[-1:] != [size]:
        ledger.checkpoint()
        sizes.append(size)
    log = Path(f"{key}.checkpoints").read_text("utf-8")
    verifier = tlog.load_verifier(Path(f"{key}.pub"))
    return Built(ledger, verifier, key, log, sizes, given, erased, erased_at)


def distinct_events(events: list[dict[str, str]]) -> int:
    return len({parse_event(ev).event_id for ev in events})


def test_an_untouched_ledger_verifies(open_ledger: OpenLedger, db_url: str, tmp_path: Path) -> None:
    built = build_ledger(open_ledger, db_url, tmp_path)
    ledger = built.ledger
    assert len(built.sizes) >= 4, "the ledger needs several checkpoints to be a fair test"
    report = ledger.verify(verifier=built.verifier, external=[built.log])
    assert report.ok, report.problems
    assert report.first_bad is None
    assert report.events == ledger.count_events() == distinct_events(built.events)
    assert report.checkpoints == len(built.sizes)  # every stored root re-computed
    assert report.external == len(built.sizes)
    notes = tlog.read_log(built.log)
    assert [int(note.split("\n")[1]) for note in notes] == built.sizes
    with ledger.engine.connect() as conn:
        stored = tlog.stored_checkpoints(conn)
    assert [size for size, _, _ in stored] == built.sizes
    assert [note for _, _, note in stored] == notes
    keyless = ledger.verify()
    assert keyless.ok
    assert (keyless.checkpoints, keyless.external) == (len(built.sizes), 0)
    # The checkpoints of another key are refused, stored and external alike.
    stranger = Verifier(generate_key("consentgate")[1])
    other = ledger.verify(verifier=stranger, external=[built.log])
    assert not other.ok
    assert sum("no signature by the expected key" in p.what for p in other.problems) == 2 * len(
        built.sizes
    )


# -- the attacker's tools -------------------------------------------------------------


def _plain(value: Any) -> Any:
    return bytes(value) if isinstance(value, (bytes, bytearray, memoryview)) else value


def _run(conn: Connection, sql: str, **params: Any) -> None:
    conn.execute(text(sql), params)


def _flip(data: bytes, rng: random.Random) -> bytes:
    i = rng.randrange(len(data))
    return data[:i] + bytes([data[i] ^ (1 << rng.randrange(8))]) + data[i + 1 :]


def dump(conn: Connection) -> tuple[list[tuple[Any, ...]], ...]:
    """Every row of the four tables an attacker would touch, in key order."""
    return tuple(
        [
            tuple(_plain(v) for v in row)
            for row in conn.exec_driver_sql(f"SELECT * FROM {table} ORDER BY {key}")
        ]
        for table, key in TABLES.items()
    )


def attacker_secret(conn: Connection) -> bytes:
    """The pseudonym key, which whoever can write the database can also read: the
    keyed id commitment in each entry does not stop a rewrite, only the checkpoints do."""
    value = conn.exec_driver_sql("SELECT value FROM ledger_meta WHERE name = 'pseudonym_key'")
    return bytes.fromhex(value.scalar_one())


def rechain(
    conn: Connection, start: int, sizes: Sequence[int] = ()
) -> tuple[int, dict[int, bytes]]:
    """Recompute `prev_hash` and `hash` from position `start` on, and ledger_head, as an
    attacker who knows the format does; return the new size and the Merkle roots at
    `sizes`."""
    rows = conn.exec_driver_sql(f"SELECT {', '.join(COLUMNS)} FROM events ORDER BY seq").all()
    tree = merkle.RootBuilder()
    prev = GENESIS
    roots: dict[int, bytes] = {}
    updates: list[dict[str, Any]] = []
    for row in rows:
        values = [_plain(v) for v in row]
        seq = values[0]
        if seq >= start:
            digest = hashlib.sha256(prev + entry_of(values, attacker_secret(conn))).digest()
            if (values[16], values[17]) != (prev, digest):
                updates.append({"p": prev, "h": digest, "s": seq})
        else:
            digest = values[17]
        tree.append(merkle.leaf_hash(digest))
        prev = digest
        if seq in sizes:
            roots[seq] = tree.root()
    if updates:
        conn.execute(text("UPDATE events SET prev_hash = :p, hash = :h WHERE seq = :s"), updates)
    _run(
        conn,
        "UPDATE ledger_head SET size = :n, hash = :h, frontier = :f WHERE id = 1",
        n=tree.size,
        h=prev,
        f=tree.state(),
    )
    return tree.size, roots


def shift(conn: Connection, start: int, by: int) -> None:
    """Renumber the events from `start` on by `by` (+1 or -1), never two rows at one seq."""
    _run(conn, "UPDATE events SET seq = -seq WHERE seq >= :s", s=start)
    _run(conn, "UPDATE events SET seq = :by - seq WHERE seq < 0", by=by)


def forged_row(lab: Lab, rng: random.Random, seq: int, prev: bytes) -> dict[str, Any]:
    """A consent grant nobody gave, for a live member, chained from `prev`."""
    event_id = f"forged-{rng.randrange(10**12)}"
    row: dict[str, Any] = {
        "seq": seq,
        "id_key": id_key(event_id),
        "event_id": event_id,
        "content_sha256": rng.randbytes(32).hex(),
        "type": "consent",
        "subject": rng.choice(lab.live),
        "at_us": 1_720_000_000_000_000 + rng.randrange(10**12),
        "purpose": "ai_training",
        "choice": "granted",
        "signal": None,
        "source": None,
        "notice_version": None,
        "region": None,
        "birth_date": None,
        "sealed": None,
        "recorded_us": max(r["recorded_us"] for r in lab.rows),
        "prev_hash": prev,
    }
    row["hash"] = hashlib.sha256(
        prev + entry_of([row[c] for c in COLUMNS[:16]], lab.secret)
    ).digest()
    return row


def insert_row(conn: Connection, row: dict[str, Any]) -> None:
    _run(
        conn,
        f"INSERT INTO events ({', '.join(COLUMNS)}) VALUES ({', '.join(':' + c for c in COLUMNS)})",
        **row,
    )


# -- expectations ---------------------------------------------------------------------


@dataclass(frozen=True)
class Expect:
    """What verify must report: the first bad position (None: a problem without one)
    and a pattern of a problem reported at that position."""

    seq: int | None
    what: str


@dataclass
class Outcome:
    label: str
    external: Expect  # verify with the verifier key and the external log
    internal: Expect | None  # verify with the key alone; None: it must pass
    keyless_ok: bool = False  # verify with neither must pass too


def caught(label: str, seq: int | None, what: str) -> Outcome:
    """A change the checks inside the database catch by themselves."""
    return Outcome(label, Expect(seq, what), Expect(seq, what))


def mismatch(report: VerifyReport, expect: Expect) -> str | None:
    if report.ok:
        return "verify passed"
    first = report.first_bad
    assert first is not None
    if first.seq != expect.seq:
        return f"first bad is {first} (expected seq {expect.seq}); all: {report.problems}"
    if not any(p.seq == expect.seq and re.search(expect.what, p.what) for p in report.problems):
        return f"nothing at seq {expect.seq} matches {expect.what!r}: {report.problems}"
    return None


HASH = "does not hash to the stored hash"
LINK = "prev_hash is not the hash of seq"
MISSING = "missing \\(the next stored event is seq"
HEAD = "ledger_head"


def root_differs(label: str, size: int) -> str:
    return f"{label}checkpoint at size {size}: the Merkle root of the first {size} events differs"


def holds_only(label: str, size: int) -> str:
    return f"{label}checkpoint at size \\d+: the ledger holds only {size} events"


# -- the lab: a pristine copy, a change, a verdict ------------------------------------


class Lab:
    def __init__(self, built: Built) -> None:
        self.secret = built.ledger.secret
        self.built = built
        self.engine = built.ledger.engine
        with self.engine.begin() as conn:
            for table in TABLES:
                conn.exec_driver_sql(f"CREATE TABLE pristine_{table} AS SELECT * FROM {table}")
            self.original = dump(conn)
            self.rows = [
                dict(zip(COLUMNS, (_plain(v) for v in row), strict=True))
                for row in conn.exec_driver_sql(
                    f"SELECT {', '.join(COLUMNS)} FROM events ORDER BY seq"
                )
            ]
            self.subjects = {
                int(ps): (name, _plain(key))
                for ps, name, key in conn.exec_driver_sql(
                    "SELECT pseudonym, subject, key FROM subjects"
                )
            }
        self.n = len(self.rows)
        self.sizes = built.sizes
        self.by_member: dict[int, list[dict[str, Any]]] = {}
        for row in self.rows:
            self.by_member.setdefault(row["subject"], []).append(row)
        self.live = sorted(ps for ps, (_, key) in self.subjects.items() if key is not None)
        self.erased = sorted(ps for ps, (_, key) in self.subjects.items() if key is None)
        self.sealed_members = [ps for ps in self.live if self.first(ps, "sealed") is not None]
        self.plain_members = [ps for ps in self.live if self.first(ps, "personal") is None]
        self.erasures = [r["seq"] for r in self.rows if r["type"] == "erasure"]
        assert len(self.erased) == len(built.erased) == len(self.erasures)
        assert len(self.sealed_members) >= 2, "members with personal data are needed"
        assert len(self.plain_members) >= 2, "and members without any"

    def first(self, ps: int, what: str) -> int | None:
        """The member's first event with a sealed field ("sealed"), a clear copy
        ("clear"), either ("personal"), or at all ("any")."""
        for row in self.by_member.get(ps, []):
            sealed = row["sealed"] is not None
            clear = row["region"] is not None or row["birth_date"] is not None
            if {"sealed": sealed, "clear": clear, "personal": sealed or clear, "any": True}[what]:
                return int(row["seq"])
        return None

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A transaction that commits without waiting for the disk: the lab's changes
        need to be seen by verify's connection, not to survive a power cut (a thousand
        synchronous commits would cost most of the test's time)."""
        with self.engine.connect() as conn:
            sqlite = conn.dialect.name == "sqlite"
            raw: Any = conn.connection.driver_connection
            if sqlite:
                raw.execute("PRAGMA synchronous=OFF")  # not allowed inside a transaction
            try:
                with conn.begin():
                    if not sqlite:
                        conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
                    yield conn
            finally:
                if sqlite:
                    raw.execute("PRAGMA synchronous=FULL")

    def changed(self, conn: Connection) -> bool:
        """Whether any of the tables differs from its pristine copy (row by row, in SQL)."""
        return any(
            conn.exec_driver_sql(
                f"SELECT 1 FROM (SELECT * FROM {a} EXCEPT SELECT * FROM {b}) d LIMIT 1"
            ).first()
            is not None
            for table in TABLES
            for a, b in ((table, f"pristine_{table}"), (f"pristine_{table}", table))
        )

    def restore(self, conn: Connection) -> None:
        """Put back the pristine rows: delete the rows that differ, insert the missing
        ones (a handful per change, so PostgreSQL's tables do not fill with dead rows)."""
        for table, key in TABLES.items():
            for sql in (
                f"DELETE FROM {table} WHERE {key} IN (SELECT {key} FROM "
                f"(SELECT * FROM {table} EXCEPT SELECT * FROM pristine_{table}) d)",
                f"INSERT INTO {table} SELECT * FROM pristine_{table} WHERE {key} IN "
                f"(SELECT {key} FROM (SELECT * FROM pristine_{table} EXCEPT "
                f"SELECT * FROM {table}) d)",
            ):
                conn.exec_driver_sql(sql)

    def apply(self, mutate: Mutation, rng: random.Random, i: int) -> list[str]:
        """Make the change on the pristine tables, commit, verify; the problems found
        with the outcome (none if verify reported what was expected)."""
        with self.transaction() as conn:
            self.restore(conn)
            outcome = mutate(self, conn, rng, i)
            changed = self.changed(conn)
        failures = [] if changed else ["not a real change"]
        ledger, verifier = self.built.ledger, self.built.verifier
        full = ledger.verify(verifier=verifier, external=[self.built.log])
        failures.append(mismatch(full, outcome.external) or "")
        internal = ledger.verify(verifier=verifier)
        if outcome.internal is None:
            if not internal.ok:
                failures.append(f"the internal checks alone caught it: {internal.problems}")
        else:
            failures.append(mismatch(internal, outcome.internal) or "")
        if outcome.keyless_ok and not (keyless := ledger.verify()).ok:
            failures.append(f"verify without key or log caught it: {keyless.problems}")
        return [f"{outcome.label}: {f}" for f in failures if f]


Mutation = Callable[[Lab, Connection, random.Random, int], Outcome]

# -- the mutations --------------------------------------------------------------------

TEXT_VALUES = {
    "purpose": ("ai_training", "genai_features", "marketing"),
    "choice": ("granted", "withdrawn", "refused"),
    "signal": ("gpc", "dnt"),
    "source": ("post", "comment", "article"),
    "notice_version": ("n1", "n2"),
    "type": ("profile", "consent", "signal", "erasure"),
    "region": REGIONS,
    "birth_date": ("1960-01-01", "1999-12-31", "2010-06-15"),
}


def other_value(lab: Lab, column: str, old: Any, rng: random.Random) -> Any:
    """A value for `column` that differs from `old`, as an attacker would write it."""
    if column == "id_key":
        return rng.randrange(*INT64)
    if column == "event_id":
        return rng.choice((old + "x", old[:-1], f"forged-{rng.randrange(10**9)}"))
    if column == "content_sha256":
        return rng.randbytes(32).hex()
    if column == "subject":
        others = [ps for ps in lab.subjects if ps != old]
        return rng.choice(others) if rng.random() < 0.7 else rng.randrange(*INT64)
    if column in ("at_us", "recorded_us"):
        return old + rng.choice((-1, 1)) * rng.choice((1, 1_000_000, rng.randrange(1, 10**12)))
    if column in ("prev_hash", "hash"):
        return _flip(old, rng)
    if column == "sealed":
        if old is None:
            return rng.randbytes(40)
        return rng.choice((_flip(old, rng), old[:-1], None))
    choices = [v for v in TEXT_VALUES[column] if v != old]
    if old is not None and column != "type":
        choices.append(None)  # clear a nullable field
    return rng.choice(choices)


def column_edit(lab: Lab, conn: Connection, rng: random.Random, i: int) -> Outcome:
    column = COLUMNS[i % len(COLUMNS)]
    row = rng.choice(lab.rows)
    s = row["seq"]
    if column == "seq":
        new = lab.n + rng.randrange(1, 1000) if rng.random() < 0.7 else -rng.randrange(0, 1000)
        _run(conn, "UPDATE events SET seq = :v WHERE seq = :s", v=new, s=s)
        if new > 0:
            return caught(f"seq {s} -> {new}", s, MISSING)
        # Rows sort by seq, so one moved below 1 is the first the walk meets.
        return caught(f"seq {s} -> {new}", new, f"seq {new} is not a position")
    new = other_value(lab, column, row[column], rng)
    _run(conn, f"UPDATE events SET {column} = :v WHERE seq = :s", v=new, s=s)
    label = f"{column} of {s}: {row[column]!r} -> {new!r}"
    if column in ("region", "birth_date"):
        return caught(label, s, "clear region or birth_date differs|erased member remains in clear")
    if column == "prev_hash":
        return caught(label, s, LINK)
    if column == "id_key":
        return caught(label, s, f"{HASH}|is not the key of event_id")
    return caught(label, s, HASH)


# Columns an attacker may edit and re-hash without touching the sealed fields' keys.
REHASHED = (
    "event_id", "type", "subject", "at_us", "purpose", "choice", "signal", "source",
    "notice_version", "recorded_us",
)  # fmt: skip


def rehash(lab: Lab, conn: Connection, rng: random.Random, i: int) -> Outcome:
    s = lab.n if i % 10 == 0 else rng.randrange(1, lab.n)
    row = lab.rows[s - 1]
    column = rng.choice(REHASHED)
    new = other_value(lab, column, row[column], rng)
    if column == "subject":
        new = rng.choice([ps for ps in lab.live if ps != row["subject"]])
    changed = {**row, column: new}
    if column == "event_id":
        changed["id_key"] = id_key(new)  # a careful attacker keeps the id's key in step
    digest = hashlib.sha256(
        row["prev_hash"] + entry_of([changed[c] for c in COLUMNS], attacker_secret(conn))
    ).digest()
    _run(
        conn,
        f"UPDATE events SET {column} = :v, id_key = :k, hash = :h WHERE seq = :s",
        v=new,
        k=changed["id_key"],
        h=digest,
        s=s,
    )
    label = f"{column} of {s} -> {new!r}, hash recomputed"
    if s == lab.n:
        # Nothing follows the last event: the checkpoint signed at this size catches it.
        return caught(label, s, root_differs("stored ", s))
    if column == "subject" and row["sealed"] is not None:
        # Moved to another member, the sealed fields no longer open with the key.
        return caught(label, s, "sealed fields do not open")
    if s in lab.sizes:
        # The walk checks the root signed at this size before it reaches the next link.
        return caught(label, s, root_differs("stored ", s))
    return caught(label, s + 1, LINK)


def delete(lab: Lab, conn: Connection, rng: random.Random, i: int) -> Outcome:
    k = rng.choice((1, 1, 1, 2, 3))
    s = lab.n - k + 1 if i % 10 == 0 else rng.randrange(1, lab.n - k + 1)
    _run(conn, "DELETE FROM events WHERE seq >= :a AND seq < :b", a=s, b=s + k)
    label = f"delete {k} from {s}"
    if s + k - 1 == lab.n:
        return caught(label, None, f"{HEAD}: says {lab.n} events")
    return caught(label, s, MISSING)


def insert(lab: Lab, conn: Connection, rng: random.Random, i: int) -> Outcome:
    p = lab.n + 1 if i % 10 == 0 else rng.randrange(1, lab.n + 1)
    prev = lab.rows[p - 2]["hash"] if p > 1 else GENESIS
    shift(conn, p, 1)
    insert_row(conn, forged_row(lab, rng, p, prev))
    if p > lab.n:
        return caught(f"forged event appended at {p}", None, f"{HEAD}: says {lab.n} events")
    if p in lab.sizes:
        # Well chained itself, the forged event changes the root signed at its position.
        return caught(f"forged event inserted at {p}", p, root_differs("stored ", p))
    return caught(f"forged event inserted at {p}", p + 1, LINK)


def reorder(lab: Lab, conn: Connection, rng: random.Random, i: int) -> Outcome:
    a = rng.randrange(1, lab.n)
    b = a + 1 if i % 3 == 0 else rng.randrange(a + 1, lab.n + 1)
    _run(conn, "UPDATE events SET seq = -1 WHERE seq = :a", a=a)
    _run(conn, "UPDATE events SET seq = :a WHERE seq = :b", a=a, b=b)
    _run(conn, "UPDATE events SET seq = :b WHERE seq = -1", b=b)
    return caught(f"swap {a} and {b}", a, LINK)


def truncate(lab: Lab, conn: Connection, rng: random.Random, i: int) -> Outcome:
    variant = ("careful", "careful", "keeps checkpoints", "past an erasure")[i % 4]
    if variant == "past an erasure":
        size = rng.randrange(1, max(lab.erasures))
    else:
        size = rng.randrange(max(lab.erasures), lab.n)
    _run(conn, "DELETE FROM events WHERE seq > :n", n=size)
    rechain(conn, size + 1)  # only ledger_head changes
    if variant != "keeps checkpoints":
        _run(conn, "DELETE FROM checkpoints WHERE size > :n", n=size)
    label = f"truncate to {size} ({variant})"
    external = Expect(None, holds_only("external ", size))
    if variant == "keeps checkpoints":
        return Outcome(label, external, Expect(None, holds_only("stored ", size)))
    if variant == "past an erasure":
        # The erased member's key is gone for good, and now so is the erasure event.
        return Outcome(label, external, Expect(None, "has no key but no erasure event"))
    return Outcome(label, external, None, keyless_ok=True)


# What an attacker edits in a rewrite: fields whose change nothing but the chain shows.
REWRITTEN = ("choice", "purpose", "at_us", "recorded_us", "source", "notice_version")


def rewrite(lab: Lab, conn: Connection, rng: random.Random, i: int) -> Outcome:
    """Change the history, then make the database agree with itself again."""
    edit = ("edit", "delete", "insert")[i % 3]
    handling = ("drop", "keep", "re-root", "re-sign")[(i // 3) % 4]
    if edit == "edit":
        consents = [r for r in lab.rows if r["type"] == "consent"]
        row = rng.choice(consents) if rng.random() < 0.5 else rng.choice(lab.rows)
        s = row["seq"]
        column = rng.choice(REWRITTEN)
        new = other_value(lab, column, row[column], rng)
        _run(conn, f"UPDATE events SET {column} = :v WHERE seq = :s", v=new, s=s)
        what = f"{column} of {s} -> {new!r}"
    elif edit == "delete":
        s = rng.choice([r["seq"] for r in lab.rows if r["type"] != "erasure"])
        _run(conn, "DELETE FROM events WHERE seq = :s", s=s)
        shift(conn, s + 1, -1)
        what = f"delete {s}"
    else:
        s = rng.randrange(1, lab.n + 1)
        shift(conn, s, 1)
        insert_row(conn, forged_row(lab, rng, s, GENESIS))  # re-chained below
        what = f"forged event at {s}"
    size, roots = rechain(conn, s, lab.sizes)
    affected = [c for c in lab.sizes if s <= c <= size]
    if handling != "keep":
        _run(conn, "DELETE FROM checkpoints WHERE size > :n", n=size)
    if handling == "drop":
        _run(conn, "DELETE FROM checkpoints WHERE size >= :s", s=s)
    elif handling in ("re-root", "re-sign"):
        if handling == "re-sign":
            signer = Signer(generate_key("consentgate")[0])  # the attacker's own key
        for c in affected:
            root = roots[c]
            if handling == "re-root":
                _run(conn, "UPDATE checkpoints SET root = :r WHERE size = :c", r=root, c=c)
            else:
                note = sign(Checkpoint(lab.built.ledger.origin, c, root), signer)
                _run(
                    conn,
                    "UPDATE checkpoints SET root = :r, note = :t WHERE size = :c",
                    r=root,
                    t=note,
                    c=c,
                )
    label = f"rewrite: {what}, stored checkpoints {handling}"
    if affected:
        external = Expect(affected[0], root_differs("", affected[0]))
    else:
        external = Expect(None, holds_only("external ", size))
    if handling == "keep":
        if affected:
            return caught(label, affected[0], root_differs("stored ", affected[0]))
        return Outcome(label, external, Expect(None, holds_only("stored ", size)))
    if handling == "drop" or not affected:
        return Outcome(label, external, None, keyless_ok=True)
    # The stored roots now match the chain, but not the notes the real key signed.
    what = "its note signs another size or root" if handling == "re-root" else "no signature by"
    return Outcome(label, external, Expect(None, f"checkpoint {affected[0]}: {what}"), True)


FAKE_ERASURE = "UPDATE subjects SET subject = NULL, key = NULL, erased_us = 1 WHERE pseudonym = :p"


def subjects(lab: Lab, conn: Connection, rng: random.Random, i: int) -> Outcome:
    """Edit `subjects`. "plain": a member without personal data (only consents)."""
    variant = (
        "swap keys", "change id", "swap ids", "drop key", "drop key of plain", "fake erasure",
        "fake erasure of plain", "drop row", "drop row of plain", "revive",
    )[i % 10]  # fmt: skip
    plain = variant.endswith("of plain")
    a, b = rng.sample(lab.plain_members if plain else lab.sealed_members, 2)
    name_a, key_a = lab.subjects[a]
    name_b, key_b = lab.subjects[b]
    set_row = "UPDATE subjects SET subject = :n, key = :k WHERE pseudonym = :p"
    label = f"{variant}: {name_a}"
    if variant == "swap keys":
        _run(conn, set_row, n=name_a, k=key_b, p=a)
        _run(conn, set_row, n=name_b, k=key_a, p=b)
        first = min(lab.first(a, "sealed") or lab.n, lab.first(b, "sealed") or lab.n)
        return caught(f"{label} and {name_b}", first, "sealed fields do not open")
    if variant == "change id":
        _run(conn, set_row, n=rng.choice((name_a + "x", name_b)), k=key_a, p=a)
        return caught(label, None, f"pseudonym {a} is not the pseudonym of")
    if variant == "swap ids":
        _run(conn, set_row, n=name_b, k=key_a, p=a)
        _run(conn, set_row, n=name_a, k=key_b, p=b)
        return caught(f"{label} and {name_b}", None, "is not the pseudonym of")
    if variant.startswith("drop key"):
        _run(conn, set_row, n=name_a, k=None, p=a)
        if plain:
            return caught(label, None, f"pseudonym {a} is half erased")
        return caught(label, lab.first(a, "clear"), "erased member remains in clear")
    if variant.startswith("fake erasure"):
        _run(conn, FAKE_ERASURE, p=a)
        if plain:
            return caught(label, None, f"member {a} has no key but no erasure event")
        return caught(label, lab.first(a, "clear"), "erased member remains in clear")
    if variant.startswith("drop row"):
        _run(conn, "DELETE FROM subjects WHERE pseudonym = :p", p=a)
        return caught(label, lab.first(a, "any"), f"key row is missing \\(pseudonym {a}:")
    erased = rng.choice(lab.erased)
    _run(conn, set_row, n=None, k=rng.randbytes(32), p=erased)
    return caught(f"revive {erased}", lab.first(erased, "sealed"), "sealed fields do not open")


def head(lab: Lab, conn: Connection, rng: random.Random, i: int) -> Outcome:
    variant = ("size", "hash", "frontier", "short frontier", "long frontier", "delete")[i % 6]
    (row,) = lab.original[2]  # id, size, hash, frontier
    size, last, frontier = row[1], row[2], row[3]
    if variant == "size":
        new = max(0, size + rng.choice((-1, 1)) * rng.randrange(1, 200))
        _run(conn, "UPDATE ledger_head SET size = :v", v=new)
    elif variant == "hash":
        _run(conn, "UPDATE ledger_head SET hash = :v", v=_flip(last, rng))
    elif variant == "frontier":
        _run(conn, "UPDATE ledger_head SET frontier = :v", v=_flip(frontier, rng))
    elif variant == "short frontier":
        _run(conn, "UPDATE ledger_head SET frontier = :v", v=frontier[32:])
    elif variant == "long frontier":
        _run(conn, "UPDATE ledger_head SET frontier = :v", v=frontier + rng.randbytes(32))
    else:
        _run(conn, "DELETE FROM ledger_head")
    return caught(f"ledger_head {variant}", None, HEAD)


def checkpoints(lab: Lab, conn: Connection, rng: random.Random, i: int) -> Outcome:
    variant = ("root", "size", "note")[i % 3]
    c = rng.choice(lab.sizes)
    (note,) = [row[2] for row in lab.original[3] if row[0] == c]
    if variant == "root":
        root = next(row[1] for row in lab.original[3] if row[0] == c)
        _run(conn, "UPDATE checkpoints SET root = :r WHERE size = :c", r=_flip(root, rng), c=c)
        return caught(f"root of checkpoint {c}", c, root_differs("stored ", c))
    if variant == "size":
        new = rng.choice([s for s in range(1, lab.n + 1) if s not in lab.sizes])
        _run(conn, "UPDATE checkpoints SET size = :n WHERE size = :c", n=new, c=c)
        return caught(f"size of checkpoint {c} -> {new}", new, root_differs("stored ", new))
    j = rng.randrange(len(note))
    forged = note[:j] + rng.choice([ch for ch in "0123456789abcdefXYZ+/= \n" if ch != note[j]])
    forged += note[j + 1 :]
    _run(conn, "UPDATE checkpoints SET note = :t WHERE size = :c", t=forged, c=c)
    return caught(f"note of checkpoint {c}, character {j}", None, f"checkpoint {c}: ")


#: kind -> (mutation, count on SQLite, count on PostgreSQL): whole cycles of variants.
KINDS: dict[str, tuple[Mutation, int, int]] = {
    "column": (column_edit, 17 * len(COLUMNS), 9 * len(COLUMNS)),
    "rehash": (rehash, 100, 50),
    "delete": (delete, 100, 50),
    "insert": (insert, 100, 50),
    "reorder": (reorder, 100, 50),
    "truncate": (truncate, 80, 40),
    "rewrite": (rewrite, 108, 60),
    "subjects": (subjects, 80, 40),
    "head": (head, 42, 24),
    "checkpoints": (checkpoints, 21, 12),
}


def test_the_mutation_counts_add_up() -> None:
    assert sum(sqlite for _, sqlite, _ in KINDS.values()) >= 1000
    assert sum(pg for _, _, pg in KINDS.values()) >= 500


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_tampering_is_detected(
    kind: str, open_ledger: OpenLedger, db_url: str, tmp_path: Path
) -> None:
    built = build_ledger(open_ledger, db_url, tmp_path)
    lab = Lab(built)
    mutate, on_sqlite, on_postgresql = KINDS[kind]
    count = on_sqlite if db_url.startswith("sqlite") else on_postgresql
    rng = random.Random(f"tamper {kind}")
    failures = [f"#{i} {f}" for i in range(count) for f in lab.apply(mutate, rng, i)]
    with lab.transaction() as conn:
        lab.restore(conn)
        assert dump(conn) == lab.original
    assert built.ledger.verify(verifier=built.verifier, external=[built.log]).ok
    assert not failures, f"{len(failures)} of {count} not detected as expected:\n" + "\n".join(
        failures[:30]
    )
