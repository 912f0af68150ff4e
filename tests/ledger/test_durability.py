"""The durability guard: no write unless a commit survives a crash.

SQLite must run WAL with synchronous FULL (or EXTRA); PostgreSQL must have `fsync`
and `synchronous_commit` on (`local` and the standby levels wait for the local
flush too). The settings are weakened the way an operator or a connection pool
could: SQLite pragmas on every new connection of the ledger's engine, PostgreSQL's
`synchronous_commit` per session through the URL. Every refused write leaves the
ledger exactly as it was.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, event
from sqlalchemy.engine import make_url

import consentgate
from consentgate.errors import StorageError
from consentgate.ledger import tlog

from ..conftest import IN_CI, OpenLedger, _reset_postgres, postgres_url
from .eventgen import POLICY

SEED = {"type": "profile", "subject": "m1", "at": "2024-01-02T10:00:00Z", "region": "US-CA"}
NEW = [
    {"type": "profile", "subject": "m2", "at": "2024-01-03T10:00:00Z", "region": "DE"},
    {"type": "signal", "subject": "m1", "signal": "gpc", "at": "2024-01-04T10:00:00Z"},
]


@dataclass
class Setup:
    ledger: consentgate.Ledger
    log: Path  # the external checkpoint log


def _with_options(url: str, **settings: str) -> str:
    """`url` with PostgreSQL run-time settings for every session (libpq `options`)."""
    options = " ".join(f"-c{name}={value}" for name, value in settings.items())
    return (
        make_url(url).update_query_dict({"options": options}).render_as_string(hide_password=False)
    )


def _sqlite(open_ledger: OpenLedger, tmp_path: Path, key: Path, pragmas: dict[str, str]) -> Setup:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = open_ledger(url, signing_key=key)
    ledger.record(SEED)

    def weaken(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        for name, value in pragmas.items():
            cur.execute(f"PRAGMA {name}={value}")
        cur.close()

    # Runs after the ledger's own pragmas (listeners run in order), then only new
    # connections exist.
    event.listen(ledger.engine, "connect", weaken)
    ledger.engine.dispose()
    with ledger.engine.connect() as conn:
        for name, value in pragmas.items():
            found = str(conn.exec_driver_sql(f"PRAGMA {name}").scalar())
            expected = {"OFF": "0", "NORMAL": "1", "FULL": "2", "EXTRA": "3"}.get(value, value)
            assert found.lower() == expected.lower(), f"PRAGMA {name} is {found}, not {value}"
    return Setup(ledger, Path(f"{key}.checkpoints"))


def _postgres(open_ledger: OpenLedger, key: Path, settings: dict[str, str]) -> Setup:
    url = postgres_url()
    _reset_postgres(url)
    with consentgate.open(url) as durable:
        durable.record(SEED)
    weak = _with_options(url, **settings)
    ledger = open_ledger(weak, signing_key=key)
    with ledger.engine.connect() as conn:
        for name, value in settings.items():
            assert conn.exec_driver_sql(f"SHOW {name}").scalar() == value
    return Setup(ledger, Path(f"{key}.checkpoints"))


@pytest.fixture
def key(tmp_path: Path) -> Path:
    path = tmp_path / "ledger.key"
    tlog.create_signing_key(path)
    return path


REFUSED = [
    pytest.param(
        "sqlite",
        {"synchronous": "OFF"},
        r"refusing to write: SQLite is not durable \(journal_mode = wal, synchronous = OFF; "
        r"expected synchronous FULL or EXTRA, and a journal on disk, as consentgate sets\)",
        id="sqlite-synchronous-off",
    ),
    pytest.param(
        "sqlite",
        {"synchronous": "NORMAL"},
        r"SQLite is not durable \(journal_mode = wal, synchronous = NORMAL; "
        r"expected synchronous FULL or EXTRA, and a journal on disk, as consentgate sets\)",
        id="sqlite-synchronous-normal",
    ),
    pytest.param(
        "sqlite",
        {"journal_mode": "MEMORY"},
        r"SQLite is not durable \(journal_mode = memory, synchronous = FULL; expected",
        id="sqlite-journal-memory",
    ),
    pytest.param(
        "postgresql",
        {"synchronous_commit": "off"},
        r"refusing to write: PostgreSQL is not durable \(fsync = on, synchronous_commit = off; "
        r"both must be on\)",
        id="postgresql-synchronous_commit-off",
        marks=pytest.mark.postgres,
    ),
]


def _setup(
    open_ledger: OpenLedger, tmp_path: Path, key: Path, backend: str, settings: dict[str, str]
) -> Setup:
    if backend == "sqlite":
        return _sqlite(open_ledger, tmp_path, key, settings)
    return _postgres(open_ledger, key, settings)


def _state(setup: Setup) -> tuple[Any, ...]:
    """Everything a write could change, read on a connection of the ledger."""
    with setup.ledger.engine.connect() as conn:
        tables = {
            name: conn.exec_driver_sql(f"SELECT count(*) FROM {name}").scalar()
            for name in ("events", "subjects", "checkpoints", "policy_versions")
        }
        head = tuple(conn.exec_driver_sql("SELECT size, hash, frontier FROM ledger_head").one())
    log = setup.log.read_bytes() if setup.log.exists() else None
    return tables, head, log


def _jsonl(path: Path, events: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(ev) + "\n" for ev in events), "utf-8")
    return path


@pytest.mark.parametrize(("backend", "settings", "message"), REFUSED)
def test_writes_are_refused_unless_durable(
    open_ledger: OpenLedger,
    tmp_path: Path,
    key: Path,
    backend: str,
    settings: dict[str, str],
    message: str,
) -> None:
    setup = _setup(open_ledger, tmp_path, key, backend, settings)
    ledger = setup.ledger
    before = _state(setup)
    assert before[0]["events"] == 1
    with pytest.raises(StorageError, match=message) as refusal:
        ledger.record(NEW[0])
    assert "\n" not in str(refusal.value), "one line, fit for the command line"
    with pytest.raises(StorageError, match=message):
        ledger.import_events(_jsonl(tmp_path / "new.jsonl", NEW))
    with pytest.raises(StorageError, match=message):
        ledger.checkpoint()
    assert _state(setup) == before
    # Reading is not refused.
    assert [e.type for e in ledger.history("m1")] == ["profile"]
    assert ledger.verify().ok


def test_a_policy_is_not_applied_unless_durable(
    open_ledger: OpenLedger, tmp_path: Path, key: Path
) -> None:
    setup = _setup(open_ledger, tmp_path, key, "sqlite", {"synchronous": "OFF"})
    before = _state(setup)
    refusal: StorageError | None = None
    try:
        setup.ledger.apply_policy(POLICY)
    except StorageError as err:
        refusal = err
    assert _state(setup) == before, "a policy version was stored on a non-durable database"
    assert "SQLite is not durable" in str(refusal)


DURABLE = [
    pytest.param("sqlite", {"synchronous": "EXTRA"}, id="sqlite-synchronous-extra"),
    pytest.param(
        "postgresql",
        {"synchronous_commit": "local"},
        id="postgresql-synchronous_commit-local",
        marks=pytest.mark.postgres,
    ),
    pytest.param(
        "postgresql",
        {"synchronous_commit": "on"},
        id="postgresql-synchronous_commit-on",
        marks=pytest.mark.postgres,
    ),
]


@pytest.mark.parametrize(("backend", "settings"), DURABLE)
def test_durable_settings_are_accepted(
    open_ledger: OpenLedger, tmp_path: Path, key: Path, backend: str, settings: dict[str, str]
) -> None:
    """The same set-up with durable values writes: the refusals above come from the
    values, not from the way they are set."""
    setup = _setup(open_ledger, tmp_path, key, backend, settings)
    ledger = setup.ledger
    ledger.record(NEW[0])
    assert ledger.import_events(_jsonl(tmp_path / "new.jsonl", NEW)).added == 1
    note = ledger.checkpoint()
    assert setup.log.read_text().endswith(note)
    assert ledger.count_events() == 3
    assert ledger.verify().ok


@pytest.fixture
def superuser_pg() -> str:
    url = postgres_url()
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            superuser = conn.exec_driver_sql(
                "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
            ).scalar()
    finally:
        engine.dispose()
    if not superuser:
        if IN_CI:
            pytest.fail("CI=true: .ci/run makes the test role a superuser for this test")
        pytest.skip(
            "fsync is a server-wide setting only a superuser can change (ALTER SYSTEM); "
            "the test role is not one"
        )
    _reset_postgres(url)
    return url


def _set_fsync(url: str, value: str | None) -> None:
    """ALTER SYSTEM (RESET when None) and reload; wait until new sessions see it."""
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(
                "ALTER SYSTEM RESET fsync" if value is None else f"ALTER SYSTEM SET fsync = {value}"
            )
            conn.exec_driver_sql("SELECT pg_reload_conf()")
        deadline = time.monotonic() + 10
        while True:
            with engine.connect() as conn:
                now = conn.exec_driver_sql("SHOW fsync").scalar()
            if now == (value or "on"):
                return
            assert time.monotonic() < deadline, f"fsync is still {now} after the reload"
            time.sleep(0.05)
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_postgres_with_fsync_off_is_refused(
    superuser_pg: str, open_ledger: OpenLedger, tmp_path: Path
) -> None:
    """fsync is server-wide: for a moment every session of the server is refused."""
    ledger = open_ledger(superuser_pg)
    ledger.record(SEED)
    _set_fsync(superuser_pg, "off")
    try:
        ledger.engine.dispose()
        with pytest.raises(StorageError, match=r"PostgreSQL is not durable \(fsync = off, "):
            ledger.record(NEW[0])
        with pytest.raises(StorageError, match=r"fsync = off"):
            ledger.import_events(_jsonl(tmp_path / "new.jsonl", NEW))
    finally:
        _set_fsync(superuser_pg, None)
    assert ledger.count_events() == 1


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSENTGATE_")}
    return subprocess.run(
        [sys.executable, "-m", "consentgate", *args],
        env={**env, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.postgres
def test_cli_refuses_to_import_when_not_durable(tmp_path: Path) -> None:
    """SQLite pragmas cannot be set from a URL; PostgreSQL's session settings can."""
    url = postgres_url()
    _reset_postgres(url)
    with consentgate.open(url) as ledger:
        ledger.record(SEED)
    events = _jsonl(tmp_path / "new.jsonl", NEW)
    weak = _with_options(url, synchronous_commit="off")
    done = _cli("--db", weak, "events", "import", str(events))
    assert done.returncode == 2, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: refusing to write: PostgreSQL is not durable")
    assert "synchronous_commit = off" in lines[0]
    assert done.stdout == ""
    with consentgate.open(url) as ledger:
        assert ledger.count_events() == 1
    # The same command on a durable session imports.
    done = _cli("--db", url, "events", "import", str(events), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"read": 2, "added": 2, "duplicates": 0}
