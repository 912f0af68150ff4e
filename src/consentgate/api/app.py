"""`create_app(settings)`: the HTTP API over one ledger."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.routing import APIRoute

from consentgate import __version__
from consentgate.access import KeyStore, RateLimiter
from consentgate.api import problems
from consentgate.api.routes import admin, decisions, ingest, members, public, sessions
from consentgate.api.services import Services
from consentgate.api.settings import Settings
from consentgate.ledger import open_ledger

__all__ = ["DOC_PATHS", "app_from_env", "create_app"]

#: Routes FastAPI adds for the documentation; public.
DOC_PATHS = frozenset({"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})

DESCRIPTION = """\
Consent ledger, online decisions and member self-service (docs/api.md).

Authenticate with `Authorization: Bearer <token>`: an API key (`cg_...`, scopes
`ingest`, `decide`, `admin`, `sessions`) or a member session token (`cgm....`).
Each operation's `x-access` says who may call it. Errors are
`application/problem+json` naming the field, what was expected and what was found.
"""


def create_app(settings: Settings) -> FastAPI:
    """The API over the ledger at `settings.db_url` (which must be initialised)."""
    ledger = open_ledger(settings.db_url, create=False, signing_key=settings.signing_key)
    ledger.group_commit()  # concurrent ingestion requests share commits
    ledger.cache_facts()  # batch decisions reuse members' facts until their events change
    svc = Services(
        settings=settings,
        ledger=ledger,
        keys=KeyStore(ledger.engine, cache_seconds=settings.key_cache_seconds),
        limiter=RateLimiter(settings.rate_per_second, settings.rate_burst),
        session_key=ledger.session_key,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        ledger.close()

    app = FastAPI(
        title="consentgate",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.services = svc
    problems.install(app)
    for module in (public, ingest, decisions, sessions, members, admin):
        # The routes as they are (no prefix): `app.routes` lists every route itself,
        # which is what the access check below and the tests walk.
        app.router.routes.extend(module.router.routes)
    _check_access_declared(app)
    return app


def _check_access_declared(app: FastAPI) -> None:
    """Refuse to serve a route without an access rule."""
    for route in app.routes:
        if isinstance(route, APIRoute):
            if "x-access" not in (route.openapi_extra or {}):
                raise RuntimeError(f"route {route.path} declares no access rule (security.guard)")
        elif getattr(route, "path", None) not in DOC_PATHS:
            raise RuntimeError(f"route {getattr(route, 'path', route)!r} has no access rule")


def app_from_env() -> FastAPI:
    """The app with `Settings.from_env()` (for `uvicorn --factory` and its workers)."""
    return create_app(Settings.from_env())
