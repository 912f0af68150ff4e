"""What the routes use, built once by `create_app` and kept on `app.state`."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from consentgate.access import KeyStore, RateLimiter
from consentgate.api.settings import Settings
from consentgate.ledger import Ledger

__all__ = ["Services", "services"]


@dataclass(frozen=True, slots=True)
class Services:
    settings: Settings
    ledger: Ledger
    keys: KeyStore
    limiter: RateLimiter
    session_key: bytes


async def services(request: Request) -> Services:
    """(async: no I/O, so FastAPI runs it on the event loop, not in a thread)"""
    found: Services = request.app.state.services
    return found
