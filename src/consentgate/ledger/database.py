"""Opening a ledger database: URL handling, durable settings, migrations."""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

from consentgate.domain.errors import StorageError

__all__ = ["DEFAULT_URL", "WRITE", "connect", "lock_writers", "migrate", "writer_queue"]

DEFAULT_URL = "sqlite:///consentgate.db"
WRITER_WAIT_SECONDS = 30  # as PRAGMA busy_timeout below


def _normalise(url: str) -> str:
    """`postgresql://` and `postgres://` mean psycopg 3, the driver consentgate ships."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # Transactions are begun by `_sqlite_begin`, not by the driver's own implicit
    # BEGIN, so that writers can ask for the write lock up front.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA page_size=16384")  # takes effect only when the file is created
    cur.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
    cur.execute("PRAGMA synchronous=FULL")  # a commit survives power loss in WAL mode
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA cache_size=-524288")  # up to 512 MiB: index pages stay hot on big imports
    cur.execute("PRAGMA secure_delete=ON")  # erased keys and ids are overwritten, not freed
    cur.close()


#: Execution option of a connection whose transactions write the ledger.
WRITE = {"consentgate_write": True}


def _sqlite_begin(conn: Connection) -> None:
    """BEGIN IMMEDIATE for writers: the write lock is taken before anything is read,
    so the chain head a writer reads is still the head when it appends."""
    write = conn.get_execution_options().get("consentgate_write")
    conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def connect(url: str = DEFAULT_URL) -> Engine:
    """Create an engine for `url` and prove it can be used, or raise StorageError."""
    try:
        parsed = make_url(_normalise(url))
        if parsed.get_backend_name() not in ("sqlite", "postgresql"):
            raise StorageError(
                f"database URL {url!r}: expected sqlite:///PATH or postgresql://..., "
                f"found backend {parsed.get_backend_name()!r}"
            )
        # A file database needs no liveness check; a server connection may have dropped.
        sqlite = parsed.get_backend_name() == "sqlite"
        engine = create_engine(parsed, pool_pre_ping=not sqlite)
        if parsed.get_backend_name() == "sqlite":
            event.listen(engine, "connect", _sqlite_pragmas)
            event.listen(engine, "begin", _sqlite_begin)
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
        except BaseException:
            engine.dispose()
            raise
    except (ArgumentError, NoSuchModuleError, SQLAlchemyError) as err:
        reason = str(getattr(err, "orig", None) or err).strip().splitlines()[0]
        raise StorageError(f"cannot open database {url!r}: {reason}") from None
    return engine


def _alembic_config() -> Config:
    ini = resources.files("consentgate.ledger").joinpath("alembic.ini")
    cfg = Config(str(ini))
    cfg.set_main_option(
        "script_location", str(resources.files("consentgate.ledger") / "migrations")
    )
    return cfg


def lock_writers(conn: Connection) -> None:
    """Serialise with every other writer of this database for the rest of the
    transaction (SQLite: the transaction began IMMEDIATE, which holds the lock)."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_LOCK_ID})")


_LOCK_ID = 0x636F6E73656E74  # "consent": the advisory lock of consentgate's writers


@contextmanager
def writer_queue(engine: Engine) -> Iterator[None]:
    """SQLite file: hold an exclusive `flock` on `<database>-writers.lock` for the
    block (writers of every process and thread wait in the kernel, woken at once);
    anything else: nothing. The database's own write lock still decides; this only
    replaces SQLite's sleeping busy wait between writers that use it. A writer
    waits at most WRITER_WAIT_SECONDS (as SQLite's busy timeout), then StorageError."""
    path = engine.url.database if engine.dialect.name == "sqlite" else None
    if not path or path == ":memory:" or path.startswith("file:"):
        yield
        return
    fd = os.open(f"{path}-writers.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + WRITER_WAIT_SECONDS
        pause = 0.0001
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise StorageError(
                        f"the ledger stayed locked by another writer for "
                        f"{WRITER_WAIT_SECONDS} s (a long import?); try again later"
                    ) from None
                time.sleep(pause)
                pause = min(pause * 2, 0.001)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def migrate(engine: Engine) -> None:
    """Bring the schema to the latest migration (exactly as in production), under
    the writers' lock: processes opening a new ledger at once migrate it once."""
    cfg = _alembic_config()
    with engine.connect() as conn:
        conn.execution_options(**WRITE)
        with conn.begin():
            lock_writers(conn)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")


def is_initialised(engine: Engine) -> bool:
    return inspect(engine).has_table("events")
