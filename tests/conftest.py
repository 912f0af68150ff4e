"""Shared fixtures: one ledger contract suite runs on every backend.

PostgreSQL comes from CONSENTGATE_TEST_PG_URL. Locally without it those tests skip
with a reason; with CI=true a missing PostgreSQL is an error, never a skip.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest
from sqlalchemy import create_engine, text

import consentgate

PG_ENV = "CONSENTGATE_TEST_PG_URL"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _reset_postgres(url: str) -> None:
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
    finally:
        engine.dispose()


def postgres_url() -> str:
    url = os.environ.get(PG_ENV)
    if not url:
        if IN_CI:
            pytest.fail(f"CI=true but {PG_ENV} is not set: PostgreSQL tests must run in CI")
        pytest.skip(f"PostgreSQL not configured: set {PG_ENV} (see .ci/run)")
    return url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL for an empty database on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.db'}"
        return
    url = postgres_url()
    _reset_postgres(url)
    yield url


OpenLedger = Callable[..., consentgate.Ledger]


@pytest.fixture
def open_ledger() -> Iterator[OpenLedger]:
    """`consentgate.open`, with every ledger opened in the test closed afterwards."""
    opened: list[consentgate.Ledger] = []

    def _open(url: str, **kwargs: object) -> consentgate.Ledger:
        ledger = consentgate.open(url, **kwargs)  # type: ignore[arg-type]
        opened.append(ledger)
        return ledger

    yield _open
    for ledger in opened:
        ledger.close()


def compiled_module(name: str, what: str) -> ModuleType:
    """A compiled module of consentgate: with CI=true it must have been built (`.ci/run`
    installs the headers it needs): fail loudly; elsewhere skip without it."""
    if IN_CI:
        return importlib.import_module(name)
    return pytest.importorskip(
        name, reason=f"{what} was not built (no C compiler, or no OpenSSL/SQLite headers)"
    )
