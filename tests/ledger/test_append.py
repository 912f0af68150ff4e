"""Appending parsed events: the compiled loop (`_append.append_rows`) stores what the
Python loop (`chain.chain_rows`) stores, and a bulk import into an empty ledger ends
in the ledger a row-by-row import makes.

- Sealed fields use a fresh random nonce each time, so the two loops cannot give the
  same bytes; each sealed value must open with the member's key to the same fields,
  and every chain hash and the Merkle frontier must follow from the stored values
  by their definitions (`splice`, SHA-256, `RootBuilder`).
- Bulk mode (docs/formats.md, "How imports run"): the secondary indexes are dropped and
  built at the end, erasures clear earlier clear copies once the subject index is
  back, an id seen twice or a failure leaves nothing half done.

With CI=true the module must have been built (`.ci/run` installs the headers it needs).
"""

from __future__ import annotations

import _sqlite3
import hashlib
import io
import random
import sqlite3
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import inspect

from consentgate.domain.errors import EventError
from consentgate.ledger import chain
from consentgate.ledger.chain import GENESIS, Head, chain_rows, splice
from consentgate.ledger.merkle import RootBuilder, leaf_hash
from consentgate.ledger.parsing import parse_lines, set_context
from consentgate.ledger.rows import COLUMNS
from consentgate.ledger.sealing import new_key, unseal

from ..conftest import OpenLedger, compiled_module
from .test_lineparse import typical_lines

native = compiled_module("consentgate.ledger._append", "the compiled append loop")

SECRET = bytes(range(32))
Row = tuple[Any, ...]


def parsed_rows(n: int, seed: int) -> list[Row]:
    """Parsed events of a few members, erasures among them."""
    rnd = random.Random(seed)
    lines = typical_lines(n, seed)
    for i in rnd.sample(range(n), n // 20):  # a member erased now and then
        lines[i] = orjson.dumps(
            {
                "type": "erasure",
                "subject": orjson.loads(lines[i])["subject"],
                "at": "2025-01-01T00:00:00Z",
            }
        )
    subjects = [f"m{rnd.randrange(40)}" for _ in range(n)]  # few members: many events each
    lines = [
        orjson.dumps({**orjson.loads(line), "subject": who})
        for line, who in zip(lines, subjects, strict=True)
    ]
    set_context(frozenset({"ai_training"}), SECRET)
    result = parse_lines((1, b"\n".join(lines)))
    assert isinstance(result, tuple)
    return result[1]


def start(size: int) -> Head:
    """A chain head after `size` events of made-up hashes."""
    tree = RootBuilder()
    last = GENESIS
    for i in range(size):
        last = hashlib.sha256(str(i).encode()).digest()
        tree.append(leaf_hash(last))
    return Head(size, last, tree)


def keys_for(rows: list[Row], seed: int) -> dict[int, bytes | None]:
    rnd = random.Random(seed)
    return {r[5]: (None if rnd.random() < 0.1 else new_key()) for r in rows}


@pytest.mark.parametrize("size", [0, 1, 2, 7, 1023, 1024])
def test_compiled_rows_follow_from_their_definitions(size: int) -> None:
    rows = parsed_rows(600, seed=size)
    keys = keys_for(rows, seed=size)
    keys_py = dict(keys)
    head = start(size)
    expected, erased_py = chain_rows(rows, keys_py, start(size), hashing=True)

    frontier = list(head.tree.frontier())
    stored, last, erased = native.append_rows(rows, dict(keys), size, head.hash, frontier, True)[:3]
    mutated = dict(keys)
    native.append_rows(rows, mutated, size, head.hash, list(head.tree.frontier()), True)
    assert mutated == keys_py  # erasures take the same keys away
    assert erased == erased_py

    tree = start(size).tree
    prev = head.hash
    held = dict(keys)
    for got, want, parsed in zip(stored, expected, rows, strict=True):
        assert got[:14] == want[:14]
        assert got[15] == want[15]
        key = held[parsed[5]]
        if want[14] is None:
            assert got[14] is None
        else:
            assert key is not None
            assert unseal(key, got[14], parsed[2].encode()) == parsed[14]
            assert unseal(key, want[14], parsed[2].encode()) == parsed[14]
        if parsed[3] == "erasure":
            held[parsed[5]] = None
        assert got[16] == prev
        assert (
            got[17]
            == hashlib.sha256(prev + splice(parsed[16], got[14], got[0], parsed[17])).digest()
        )
        tree.append(leaf_hash(got[17]))
        prev = got[17]
    assert last == prev
    assert b"".join(frontier) == tree.state()
    assert [r[0] for r in stored] == list(range(size + 1, size + 601))


def test_without_hashing_rows_carry_zero_hashes_and_the_frontier_stays() -> None:
    rows = parsed_rows(50, seed=1)
    keys = keys_for(rows, seed=1)
    head = start(5)
    frontier = list(head.tree.frontier())
    stored, last, _, _ = native.append_rows(rows, keys, 5, head.hash, frontier, False)
    assert frontier == head.tree.frontier()
    assert stored[0][16] == head.hash
    assert all(r[17] == GENESIS for r in stored)
    assert last == GENESIS


def test_bad_arguments_are_errors_not_crashes() -> None:
    rows = parsed_rows(10, seed=2)
    keys = keys_for(rows, seed=2)
    with pytest.raises(ValueError, match="frontier"):
        native.append_rows(rows, dict(keys), 1, GENESIS, [], True)  # size 1 needs a root
    with pytest.raises(KeyError):
        native.append_rows(rows, {}, 0, GENESIS, [], True)
    with pytest.raises(TypeError):
        native.append_rows([("short",)], keys, 0, GENESIS, [], True)
    with pytest.raises(TypeError):
        native.append_rows(rows, {k: b"short" for k in keys}, 0, GENESIS, [], True)
    with pytest.raises(ValueError, match="32 bytes"):
        native.append_rows(rows, keys, 0, b"x", [], True)


# -- bulk mode ------------------------------------------------------------------------


def events_file(tmp_path: Path, n: int, seed: int, extra: list[bytes] = ()) -> Path:  # type: ignore[assignment]
    rnd = random.Random(seed)
    lines = typical_lines(n, seed)
    for i in rnd.sample(range(n), n // 50):
        lines[i] = orjson.dumps(
            {
                "type": "erasure",
                "subject": orjson.loads(lines[i])["subject"],
                "at": "2025-06-01T00:00:00Z",
                "note": f"request {i}",  # one member may be erased twice: two events
            }
        )
    path = tmp_path / f"events-{seed}.jsonl"
    path.write_bytes(b"\n".join(lines + list(extra)) + b"\n")
    return path


def contents(url: str) -> list[Row]:
    """Every stored event, without what differs between two ledgers given the same
    file: nonces and the hashes over them, recording times, and pseudonyms (each
    ledger has its own key; members are named by their id, None once erased)."""
    con = sqlite3.connect(url.removeprefix("sqlite:///"))
    rows = con.execute(
        "SELECT e.seq, e.id_key, e.event_id, e.content_sha256, e.type, s.subject, e.at_us, "
        "e.purpose, e.choice, e.signal, e.source, e.notice_version, e.region, e.birth_date, "
        "e.sealed IS NULL FROM events e JOIN subjects s ON s.pseudonym = e.subject ORDER BY seq"
    ).fetchall()
    members = con.execute(
        "SELECT subject, key IS NULL, erased_us IS NULL FROM subjects ORDER BY 1, 2"
    ).fetchall()
    con.close()
    return rows + members


def indexes(url: str) -> list[str]:
    con = sqlite3.connect(url.removeprefix("sqlite:///"))
    names = [
        n
        for (n,) in con.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'events' ORDER BY 1"
        )
    ]
    con.close()
    return names


@pytest.mark.parametrize("compiled", [True, False])
def test_a_bulk_import_makes_the_ledger_a_row_by_row_import_makes(
    open_ledger: OpenLedger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, compiled: bool
) -> None:
    path = events_file(tmp_path, 30_000, seed=4)  # more than one block: several batches
    bulk_url = f"sqlite:///{tmp_path / 'bulk.db'}"
    bulk = open_ledger(bulk_url)
    assert bulk.import_events(path).added == 30_000
    # The same file into a ledger that is not empty: appended row by row, indexes kept,
    # by the compiled loop through the connection's handle, or by Python alone.
    if not compiled:
        monkeypatch.setenv(chain.NO_NATIVE_ENV, "1")
    plain_url = f"sqlite:///{tmp_path / 'plain.db'}"
    plain = open_ledger(plain_url)
    plain.import_events(io.BytesIO(path.read_bytes().split(b"\n", 1)[0] + b"\n"))
    assert plain.import_events(path).added == 29_999
    monkeypatch.delenv(chain.NO_NATIVE_ENV, raising=False)
    assert contents(bulk_url) == contents(plain_url)
    assert indexes(bulk_url) == indexes(plain_url) == ["ix_events_subject_at", "ux_events_id_key"]
    assert plain.verify().ok
    assert bulk.verify().ok
    erased = sum(1 for r in contents(bulk_url) if len(r) == 3 and r[1])
    assert erased > 0  # erasures happened, and their clear copies went (compared above)


def test_an_id_seen_twice_leaves_bulk_mode_and_is_judged_as_usual(
    open_ledger: OpenLedger, tmp_path: Path
) -> None:
    path = events_file(tmp_path, 20_000, seed=5)
    first = path.read_bytes().split(b"\n", 1)[0]
    same = tmp_path / "same.jsonl"
    same.write_bytes(path.read_bytes() + first + b"\n")  # a repeat, blocks later
    ledger = open_ledger(f"sqlite:///{tmp_path / 'a.db'}")
    result = ledger.import_events(same)
    assert (result.read, result.added) == (20_001, 20_000)
    assert ledger.verify().ok

    clash = orjson.loads(first) | {"event_id": "e-clash"}
    other = dict(clash, at="2025-03-03T00:00:00Z")
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(orjson.dumps(clash) + b"\n" + path.read_bytes() + orjson.dumps(other) + b"\n")
    url = f"sqlite:///{tmp_path / 'b.db'}"
    ledger = open_ledger(url)
    with pytest.raises(EventError, match="event_id") as err:
        ledger.import_events(bad)
    assert err.value.where.endswith(":20002")
    assert ledger.count_events() == 0  # nothing kept, and the indexes are back
    assert indexes(url) == ["ix_events_subject_at", "ux_events_id_key"]


def test_a_bad_line_late_in_a_bulk_import_leaves_the_empty_ledger_as_it_was(
    open_ledger: OpenLedger, tmp_path: Path
) -> None:
    path = events_file(tmp_path, 20_000, seed=6, extra=[b'{"type":"nope"}'])
    url = f"sqlite:///{tmp_path / 'c.db'}"
    ledger = open_ledger(url)
    with pytest.raises(EventError, match="type"):
        ledger.import_events(path)
    assert ledger.count_events() == 0
    assert indexes(url) == ["ix_events_subject_at", "ux_events_id_key"]
    assert ledger.import_events(events_file(tmp_path, 100, seed=7)).added == 100
    assert ledger.verify().ok


def test_create_gives_each_new_member_one_key() -> None:
    rows = parsed_rows(300, seed=9)
    known = rows[0][5]
    keys: dict[int, bytes | None] = {known: new_key()}
    stored, _, erased, fresh = native.append_rows(rows, keys, 0, GENESIS, [], True, True)
    members = {r[5] for r in rows}
    assert sorted(ps for ps, _, _ in fresh) == sorted(members - {known})
    assert {ps: subject for ps, subject, _ in fresh} == {r[5]: r[4] for r in rows if r[5] != known}
    made = {ps: key for ps, _, key in fresh}
    assert all(len(key) == 32 for key in made.values())
    assert len(set(made.values())) == len(made)
    for ps, key in made.items():  # erased members' entries became None; the key was made
        assert keys[ps] == (None if ps in erased else key)
    first = {}
    for row, parsed in zip(stored, rows, strict=True):  # sealed with the member's first key
        first.setdefault(parsed[5], made.get(parsed[5]))
        if row[14] is not None and parsed[5] != known:
            assert unseal(first[parsed[5]], row[14], parsed[2].encode()) == parsed[14]


def test_bulk_imports_on_sqlite_insert_through_the_connections_own_handle(
    open_ledger: OpenLedger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    answers: list[object] = []
    real = native.append_sqlite

    def spy(*args: object) -> object:
        answers.append(real(*args))
        return answers[-1]

    monkeypatch.setattr(chain._append, "append_sqlite", spy)
    ledger = open_ledger(f"sqlite:///{tmp_path / 'd.db'}")
    assert ledger.import_events(events_file(tmp_path, 20_000, seed=10)).added == 20_000
    assert len(answers) >= 2  # several blocks, each inserted by the compiled loop
    first = len(answers)
    # Into the ledger, now not empty: the indexes are kept, the handle still serves.
    more = events_file(tmp_path, 20_000, seed=14)
    more.write_bytes(more.read_bytes().replace(b'"event_id":"e', b'"event_id":"f'))  # new ids
    assert ledger.import_events(more).added == 20_000
    assert len(answers) > first
    assert all(answer is not None for answer in answers)
    assert ledger.verify().ok


def test_the_handle_is_taken_only_when_sure_and_nothing_changes_otherwise(
    tmp_path: Path,
) -> None:
    path = tmp_path / "e.db"
    con = sqlite3.connect(path, isolation_level=None)
    con.execute(f"CREATE TABLE events ({', '.join(COLUMNS)})")
    rows = parsed_rows(20, seed=11)
    keys = keys_for(rows, seed=11)
    before = dict(keys)
    module = str(_sqlite3.__file__)
    sql = f"INSERT INTO events ({', '.join(COLUMNS)}) VALUES ({', '.join('?' for _ in COLUMNS)})"

    def attempt(conn: object, module_file: str, where: str) -> object:
        return native.append_sqlite(
            conn, _sqlite3.Connection, module_file, where, sql, rows, keys, 0, GENESIS, [], True
        )

    assert attempt(con, module, str(path)) is None  # no transaction open
    con.execute("BEGIN IMMEDIATE")
    assert attempt(con, module, str(tmp_path / "other.db")) is None  # another file
    assert attempt(con, hashlib.__file__, str(path)) is None  # not Python's _sqlite3
    assert attempt(object(), module, str(path)) is None  # not a connection
    assert attempt(con, "", str(path)) is None  # no module file
    assert keys == before
    assert con.execute("SELECT count(*) FROM events").fetchone() == (0,)
    done = attempt(con, module, str(path))
    assert done is not None
    assert done[0] == 20
    con.execute("COMMIT")
    assert con.execute("SELECT count(*), min(seq), max(seq) FROM events").fetchone() == (20, 1, 20)
    con.close()


def test_bulk_mode_on_each_backend_ends_with_the_indexes_and_no_erased_clear_copies(
    open_ledger: OpenLedger, db_url: str, tmp_path: Path
) -> None:
    path = events_file(tmp_path, 20_000, seed=12)
    ledger = open_ledger(db_url)
    assert ledger.import_events(path).added == 20_000
    assert ledger.verify().ok
    with ledger.engine.connect() as conn:
        left = conn.exec_driver_sql(
            "SELECT count(*) FROM events e JOIN subjects s ON s.pseudonym = e.subject "
            "WHERE s.key IS NULL AND (e.region IS NOT NULL OR e.birth_date IS NOT NULL)"
        ).scalar()
        erased = conn.exec_driver_sql("SELECT count(*) FROM subjects WHERE key IS NULL").scalar()
        names = {ix["name"] for ix in inspect(conn).get_indexes("events")}
    assert erased
    assert left == 0
    assert {"ix_events_subject_at", "ux_events_id_key"} <= names


def test_leaving_bulk_mode_midway_makes_the_same_ledger(
    open_ledger: OpenLedger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = events_file(tmp_path, 30_000, seed=13)
    lines = path.read_bytes().split(b"\n")
    lines.insert(5, lines[3])  # the same event twice in the first block
    path.write_bytes(b"\n".join(lines))
    plain_url = f"sqlite:///{tmp_path / 'plain.db'}"
    open_ledger(plain_url).import_events(path)
    monkeypatch.setattr(chain, "BULK_REMEMBERS", 12_000)  # full after a few blocks
    small_url = f"sqlite:///{tmp_path / 'small.db'}"
    small = open_ledger(small_url)
    assert small.import_events(path).added == 30_000
    assert contents(small_url) == contents(plain_url)
    assert indexes(small_url) == ["ix_events_subject_at", "ux_events_id_key"]
    assert small.verify().ok
