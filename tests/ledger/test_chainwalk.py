"""The compiled chain walk (`consentgate.ledger._chainwalk`) says what the Python walk says.

It is an optional speed-up of `verify` on SQLite files: it takes rows for as long as
every one is sound, and hands the first other one to the Python loop. So:

- its entry encoding is `chain.encode_entry`'s, byte for byte (JSON escapes as orjson
  writes them), and it refuses (hands over) only what it cannot encode: other types,
  text that is not UTF-8, integers beyond 64 bits;
- on a sound ledger it takes every row (so the comparisons below compare something);
- its HMAC is `sealing.KeyedHash`;
- `verify` reports the same, problem for problem, with and without it, on a sound
  ledger and after each tampering (tests/ledger/test_tamper.py runs its 1,036 on
  SQLite through it as well).

With CI=true the module must have been built (`.ci/run` installs the headers it needs).
"""

from __future__ import annotations

import os
import string
import subprocess
import sys
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import text

import consentgate
from consentgate.ledger import tlog, walk
from consentgate.ledger.chain import GENESIS, encode_entry
from consentgate.ledger.sealing import KeyedHash, seal
from consentgate.ledger.verify import VerifyReport, verify_ledger

from ..conftest import OpenLedger, compiled_module
from .test_tamper import rechain
from .test_verify_parallel import CHUNK, POSITIONS, TAMPERING, build

native = compiled_module("consentgate.ledger._chainwalk", "the compiled walk")


def test_verify_uses_the_compiled_walk_where_it_was_built() -> None:
    assert walk._native is native


INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
TEXT = st.text(st.characters(codec="utf-8"), max_size=12) | st.sampled_from(
    ["consent", "granted", "ai_training", "v2", "é", 'a"b', "back\\slash", "tab\there", "\x7f"]
)
VALUE_OR_OTHER = st.one_of(
    st.none(), TEXT, INT64, st.integers(min_value=2**63, max_value=2**70), st.binary(max_size=5)
)


@settings(max_examples=400, deadline=None)
@given(
    at_us=INT64,
    choice=st.none() | TEXT,
    digest=TEXT,
    notice=st.none() | TEXT,
    purpose=st.none() | TEXT,
    recorded=INT64,
    sealed=st.none() | st.binary(max_size=40),
    seq=INT64,
    signal=st.none() | TEXT,
    source=st.none() | TEXT,
    subject=INT64,
    kind=TEXT,
    event_id=TEXT,
    id_key=INT64,
    secret=st.binary(min_size=1, max_size=80),
)
def test_the_compiled_entry_is_encode_entry(
    at_us: int,
    choice: str | None,
    digest: str,
    notice: str | None,
    purpose: str | None,
    recorded: int,
    sealed: bytes | None,
    seq: int,
    signal: str | None,
    source: str | None,
    subject: int,
    kind: str,
    event_id: str,
    id_key: int,
    secret: bytes,
) -> None:
    row = (at_us, choice, digest, notice, purpose, recorded, sealed, seq, signal, source,
           subject, kind, event_id, id_key)  # fmt: skip
    assert native.encode(row, secret) == encode_entry(row, secret)


@settings(max_examples=200, deadline=None)
@given(position=st.integers(min_value=0, max_value=13), value=VALUE_OR_OTHER)
def test_values_it_cannot_encode_are_handed_over(position: int, value: object) -> None:
    row: list[object] = [1, None, "d" * 64, None, None, 2, None, 3, None, None, 4, "consent",
                         "e1", 5]  # fmt: skip
    assert native.encode(tuple(row), b"k") == encode_entry(row, b"k")  # the row as it was
    row[position] = value
    compiled = native.encode(tuple(row), b"k")
    if compiled is None:
        # Handed to the Python loop, which encodes or reports it: only another type.
        assert not isinstance(value, str) or position in (0, 5, 6, 7, 10, 13)
        return
    assert compiled == encode_entry(row, b"k")


@settings(max_examples=100, deadline=None)
@given(
    secret=st.binary(max_size=100),
    messages=st.lists(st.binary(max_size=200) | st.text(string.printable).map(str.encode)),
)
def test_keyed_many_is_keyed_hash(secret: bytes, messages: list[bytes]) -> None:
    assert native.keyed_many(secret, messages) == [KeyedHash(secret)(m) for m in messages]


def _reports(
    ledger: consentgate.Ledger, log: str, tmp_path: Path
) -> tuple[VerifyReport, VerifyReport]:
    verifier = tlog.load_verifier(tmp_path / "k.pub")
    args = (ledger.engine, ledger.secret, ledger.origin)
    compiled = verify_ledger(*args, verifier=verifier, external=[log], workers=1, chunk=CHUNK)
    saved, walk._native = walk._native, None
    try:
        python = verify_ledger(*args, verifier=verifier, external=[log], workers=1, chunk=CHUNK)
    finally:
        walk._native = saved
    return compiled, python


TYPES = [
    "UPDATE events SET at_us = 'x' || at_us WHERE seq = {s}",
    "UPDATE events SET sealed = CAST(sealed AS TEXT) WHERE seq = {s} AND sealed IS NOT NULL",
    "UPDATE events SET source = 'a\"b\\c' || char(10) WHERE seq = {s}",
    "UPDATE events SET prev_hash = hex(prev_hash) WHERE seq = {s}",
    "UPDATE events SET hash = substr(hash, 1, 31) WHERE seq = {s}",
    "UPDATE events SET content_sha256 = CAST(content_sha256 AS BLOB) WHERE seq = {s}",
    "UPDATE events SET region = 'DE', birth_date = '2001-01-01' WHERE seq = {s}",
    "UPDATE subjects SET key = NULL WHERE key IS NOT NULL AND pseudonym = "
    "(SELECT subject FROM events WHERE seq = {s})",
    "DELETE FROM subjects WHERE pseudonym = (SELECT subject FROM events WHERE seq = {s})",
    "UPDATE events SET sealed = 50000000000 WHERE seq = {s} AND sealed IS NOT NULL",
    "UPDATE subjects SET subject = CAST(X'6dff' AS TEXT) WHERE subject IS NOT NULL AND "
    "pseudonym = (SELECT subject FROM events WHERE seq = {s})",
]


def test_verify_says_the_same_with_and_without_it(open_ledger: OpenLedger, tmp_path: Path) -> None:
    ledger, log = build(open_ledger, f"sqlite:///{tmp_path / 'ledger.db'}", tmp_path)
    compiled, python = _reports(ledger, log, tmp_path)
    assert compiled.ok, compiled.problems
    assert (compiled.events, compiled.checkpoints) == (python.events, python.checkpoints)
    seen = 0
    for sql in TAMPERING + TYPES:
        for position in POSITIONS:
            with ledger.engine.begin() as conn:
                for table in ("events", "subjects"):
                    conn.exec_driver_sql(f"CREATE TABLE saved_{table} AS SELECT * FROM {table}")
                changed = conn.execute(text(sql.format(s=position))).rowcount
            try:
                if changed:
                    compiled, python = _reports(ledger, log, tmp_path)
            finally:
                with ledger.engine.begin() as conn:
                    for table in ("events", "subjects"):
                        conn.exec_driver_sql(f"DELETE FROM {table}")
                        conn.exec_driver_sql(f"INSERT INTO {table} SELECT * FROM saved_{table}")
                        conn.exec_driver_sql(f"DROP TABLE saved_{table}")
            if not changed:
                continue
            seen += 1
            where = (sql, position)
            assert not python.ok, where
            assert [str(p) for p in compiled.problems] == [str(p) for p in python.problems], where
            assert compiled.events == python.events, where
    assert seen >= 60


def test_the_python_walk_can_be_asked_for() -> None:
    """CONSENTGATE_PYTHON_WALK turns the compiled walk off (the benchmark's baseline)."""
    code = "from consentgate.ledger import walk; print(walk._native is None)"
    env = {**os.environ, walk.NO_NATIVE_ENV: "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "True", out.stderr


PLAINTEXTS = [
    b'{"note":"a\tb","region":"DE"}',  # a control character orjson refuses
    b'{"note":"\xff","region":"DE"}',  # not UTF-8
    b'{"region":"D\x00E"}',
    b'["DE"]',  # JSON, not an object
    b"not json",
    b'{"region":"DE","region":"FR"}',  # a repeated key
    b'{"region":"FR"}',  # well-formed, but not the clear copy
]


def test_sealed_fields_rewritten_with_the_members_key(
    open_ledger: OpenLedger, tmp_path: Path
) -> None:
    """Whoever can write the database holds the members' keys: sealed fields re-sealed
    with the right key and a rechained ledger leave only the sealed/clear check. Both
    walks report it, the same way, and neither fails on what the plaintext holds."""
    ledger, log = build(open_ledger, f"sqlite:///{tmp_path / 'ledger.db'}", tmp_path)
    with ledger.engine.begin() as conn:
        seq, digest, key = conn.exec_driver_sql(
            "SELECT e.seq, e.content_sha256, s.key FROM events e JOIN subjects s "
            "ON s.pseudonym = e.subject WHERE e.region = 'DE' AND s.key IS NOT NULL "
            "ORDER BY e.seq LIMIT 1"
        ).one()
        conn.exec_driver_sql("CREATE TABLE saved_events AS SELECT * FROM events")
        conn.exec_driver_sql("CREATE TABLE saved_head AS SELECT * FROM ledger_head")
    for plaintext in PLAINTEXTS:
        with ledger.engine.begin() as conn:
            sealed = seal(bytes(key), plaintext, digest.encode())
            conn.execute(
                text("UPDATE events SET sealed = :v WHERE seq = :s"), {"v": sealed, "s": seq}
            )
            rechain(conn, seq)
        try:
            compiled, python = _reports(ledger, log, tmp_path)
        finally:
            with ledger.engine.begin() as conn:
                for table, saved in (("events", "saved_events"), ("ledger_head", "saved_head")):
                    conn.exec_driver_sql(f"DELETE FROM {table}")
                    conn.exec_driver_sql(f"INSERT INTO {table} SELECT * FROM {saved}")
        assert [str(p) for p in compiled.problems] == [str(p) for p in python.problems]
        assert any(p.seq == seq for p in python.problems), (plaintext, python.problems)


def test_sizes_beyond_64_bits_and_uris(open_ledger: OpenLedger, tmp_path: Path) -> None:
    ledger, _ = build(open_ledger, f"sqlite:///{tmp_path / 'ledger.db'}", tmp_path)
    path = walk.sqlite_file(ledger.engine)
    assert path == str(tmp_path / "ledger.db")
    segments = []
    for compiled in (True, False):
        with (
            ledger.engine.connect() as conn,
            walk.lenient_cursor(conn.connection.driver_connection) as cur,
        ):
            keys = walk.load_keys(cur, ledger.secret, VerifyReport())
            segments.append(
                walk.walk(cur, "sqlite", 1, 301, {10**19, 37, 2**63 - 1}, keys, ledger.secret,
                          CHUNK, path if compiled else None)
            )  # fmt: skip
    assert segments[0] == segments[1]
    assert segments[0].good == 301
    assert 37 in segments[0].partial
    uri = open_ledger(f"sqlite:///file:{tmp_path / 'ledger.db'}?mode=ro&uri=true")
    assert walk.sqlite_file(uri.engine) is None  # URIs are walked in Python


def test_it_takes_every_row_of_a_sound_ledger(open_ledger: OpenLedger, tmp_path: Path) -> None:
    """Including text that JSON escapes (a quote, a backslash): the comparisons above
    compare the compiled walk, not the Python one twice."""
    ledger, _ = build(open_ledger, f"sqlite:///{tmp_path / 'ledger.db'}", tmp_path)
    ledger.record({"type": "consent", "subject": 'm"1\\', "purpose": "ai_training",
                   "choice": "granted", "source": 'web "beta" \\ form',
                   "at": "2025-02-01T00:00:00Z"})  # fmt: skip
    size = ledger.head().size
    path = walk.sqlite_file(ledger.engine)
    assert path is not None
    with (
        ledger.engine.connect() as conn,
        walk.lenient_cursor(conn.connection.driver_connection) as cur,
    ):
        keys = walk.load_keys(cur, ledger.secret, VerifyReport())
    sql = f"SELECT {', '.join(walk._WALKED)} FROM events WHERE seq <= ?2 ORDER BY seq"
    taken, *_, stopped = native.walk_file(
        path, sql, 1, size, ledger.secret, keys, walk.ERASED, set(), GENESIS, set(), CHUNK
    )
    assert (taken, stopped) == (size, False)
    assert size == 302
