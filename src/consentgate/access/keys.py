"""API keys: `cg_<key id>_<secret>`, shown once at creation and stored only as the
SHA-256 of the secret. A key carries scopes and can be revoked; a revoked key never
authenticates again (within `cache_seconds` in processes that cached it).

The secret is 256 random bits, so a plain SHA-256 (not a slow password hash) is
enough: there is nothing to guess. Comparison is in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, insert, select, update

from consentgate.domain.errors import InputError
from consentgate.domain.timeutil import from_micros
from consentgate.ledger.chain import now_us
from consentgate.ledger.schema import api_keys

__all__ = ["SCOPES", "ApiKey", "KeyStore", "NewKey"]

#: ingest: POST events; decide: ask decisions; admin: policy, member records, audit;
#: sessions: issue member session tokens (held by the host platform's backend).
SCOPES = ("admin", "decide", "ingest", "sessions")
PREFIX = "cg_"


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A stored key, without its secret."""

    key_id: str
    name: str
    scopes: frozenset[str]
    created: datetime
    revoked: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked is None


@dataclass(frozen=True, slots=True)
class NewKey:
    """A key just created: `token` is the only copy of the secret."""

    key: ApiKey
    token: str


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def _check_scopes(scopes: Iterable[str]) -> frozenset[str]:
    chosen = frozenset(scopes)
    unknown = sorted(chosen - set(SCOPES))
    if not chosen or unknown:
        raise InputError("scopes", "one or more of " + ", ".join(SCOPES), sorted(chosen))
    return chosen


def _check_name(name: str) -> str:
    if not name.strip() or len(name) > 256 or not name.isprintable():
        raise InputError("name", "non-empty printable text of at most 256 characters", name)
    return name


def _key_of(r: Mapping[Any, Any]) -> ApiKey:
    """A stored row (or the values just inserted) as an ApiKey."""
    return ApiKey(
        key_id=r["key_id"],
        name=r["name"],
        scopes=frozenset(r["scopes"].split()),
        created=from_micros(r["created_us"]),
        revoked=None if r["revoked_us"] is None else from_micros(r["revoked_us"]),
    )


class KeyStore:
    """The API keys of one ledger database."""

    def __init__(self, engine: Engine, *, cache_seconds: float = 5.0) -> None:
        self.engine = engine
        self.cache_seconds = cache_seconds
        # key id -> (looked up at, (secret digest, key) or None for an unknown id)
        self._cache: dict[str, tuple[float, tuple[bytes, ApiKey] | None]] = {}
        self._lock = threading.Lock()

    def create(self, *, name: str, scopes: Iterable[str]) -> NewKey:
        chosen = _check_scopes(scopes)
        key_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
        row = {
            "key_id": key_id,
            "name": _check_name(name),
            "scopes": " ".join(sorted(chosen)),
            "secret_sha256": _digest(secret),
            "created_us": now_us(),
            "revoked_us": None,
        }
        with self.engine.begin() as conn:
            conn.execute(insert(api_keys).values(**row))
        return NewKey(_key_of(row), f"{PREFIX}{key_id}_{secret}")

    def list(self) -> list[ApiKey]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(api_keys).order_by(api_keys.c.created_us)).all()
        return [_key_of(r._mapping) for r in rows]

    def get(self, key_id: str) -> ApiKey:
        with self.engine.connect() as conn:
            row = conn.execute(select(api_keys).where(api_keys.c.key_id == key_id)).one_or_none()
        if row is None:
            raise InputError("key_id", "the id of an existing key (see `keys list`)", key_id)
        return _key_of(row._mapping)

    def revoke(self, key_id: str) -> ApiKey:
        """Revoke the key (a second revocation keeps the first time)."""
        self.get(key_id)
        with self.engine.begin() as conn:
            conn.execute(
                update(api_keys)
                .where(api_keys.c.key_id == key_id, api_keys.c.revoked_us.is_(None))
                .values(revoked_us=now_us())
            )
        with self._lock:
            self._cache.pop(key_id, None)
        return self.get(key_id)

    def authenticate(self, token: str) -> ApiKey | None:
        """The active key `token` names, or None (malformed, unknown, wrong secret,
        revoked)."""
        if not token.startswith(PREFIX):
            return None
        key_id, _, secret = token[len(PREFIX) :].partition("_")
        if not key_id or not secret:
            return None
        found = self._lookup(key_id)
        if found is None:
            return None
        digest, key = found
        if not hmac.compare_digest(digest, _digest(secret)) or not key.active:
            return None
        return key

    def is_active(self, key_id: str) -> bool:
        found = self._lookup(key_id)
        return found is not None and found[1].active

    def _lookup(self, key_id: str) -> tuple[bytes, ApiKey] | None:
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(key_id)
        if cached is not None and now - cached[0] < self.cache_seconds:
            return cached[1]
        with self.engine.connect() as conn:
            row = conn.execute(select(api_keys).where(api_keys.c.key_id == key_id)).one_or_none()
        found = None if row is None else (bytes(row.secret_sha256), _key_of(row._mapping))
        with self._lock:
            if len(self._cache) > 100_000:  # unknown ids sent on purpose: start over
                self._cache.clear()
            self._cache[key_id] = (now, found)
        return found
