"""An API world: a ledger with two members, keys for every role, and the app served
by a real HTTP server on loopback, on each ledger backend."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

import consentgate
from consentgate.access import KeyStore, issue_token
from consentgate.api import Settings, create_app
from tests.api.live import serve

A, B = "member-a-7f3c", "member-b-91d2"
B_BIRTH = "1985-03-04"


def member_events(subject: str, born: str, region: str) -> list[dict[str, str]]:
    return [
        {"type": "profile", "subject": subject, "at": "2024-01-02T10:00:00Z",
         "region": region, "birth_date": born, "user_agent": f"agent of {subject}"},
        {"type": "consent", "subject": subject, "purpose": "ai_training", "choice": "granted",
         "at": "2025-01-02T10:00:00Z", "source": "settings_page"},
        {"type": "consent", "subject": subject, "purpose": "genai_features",
         "choice": "withdrawn", "at": "2025-02-02T10:00:00Z", "ip": "203.0.113.9"},
    ]  # fmt: skip


@dataclass
class World:
    base: str
    ledger: consentgate.Ledger
    keys: KeyStore
    tokens: dict[str, str | None]
    missing: dict[str, str] = field(default_factory=dict)  # scope -> key lacking only it

    def client(self, role: str | None = None, **headers: str) -> httpx.Client:
        token = None if role is None else self.tokens[role]
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return httpx.Client(base_url=self.base, headers=headers, timeout=30)

    def b_identifiers(self) -> list[str]:
        """Strings that identify member B and must never reach member A."""
        ids = [B, B_BIRTH, str(self.ledger.pseudonym(B)), f"agent of {B}"]
        return ids + [e.event_id for e in self.ledger.history(B)]


def make_world(url: str, **settings: object) -> Iterator[World]:
    ledger = consentgate.open(url)
    try:
        ledger.import_events(_jsonl(member_events(A, "1990-05-01", "US-CA")))
        ledger.import_events(_jsonl(member_events(B, B_BIRTH, "US-CA")))
        keys = KeyStore(ledger.engine, cache_seconds=0)
        tokens: dict[str, str | None] = {"anonymous": None}
        for scope in ("ingest", "decide", "admin", "sessions"):
            tokens[scope] = keys.create(name=f"{scope} key", scopes=[scope]).token
        all_scopes = ["ingest", "decide", "admin", "sessions"]
        revoked = keys.create(name="revoked", scopes=all_scopes)
        keys.revoke(revoked.key.key_id)
        tokens["revoked key"] = revoked.token
        issuer = keys.create(name="issuer", scopes=["sessions"])
        now = datetime.now(UTC)
        session_key = ledger.session_key
        for role, subject in (("member A", A), ("member B", B)):
            tokens[role] = issue_token(
                session_key, subject=subject, issuer=issuer.key.key_id,
                ttl=timedelta(minutes=10), now=now,
            )[0]  # fmt: skip
        tokens["expired token"] = issue_token(
            session_key, subject=A, issuer=issuer.key.key_id,
            ttl=timedelta(minutes=10), now=now - timedelta(hours=1),
        )[0]  # fmt: skip
        gone = keys.create(name="issuer, revoked", scopes=["sessions"])
        tokens["token of revoked issuer"] = issue_token(
            session_key, subject=A, issuer=gone.key.key_id, ttl=timedelta(minutes=10), now=now
        )[0]
        keys.revoke(gone.key.key_id)
        missing = {}
        for scope in all_scopes:
            others = [s for s in all_scopes if s != scope]
            missing[scope] = keys.create(name=f"all but {scope}", scopes=others).token
        tokens["forged token"] = str(tokens["member A"])[:-4] + "AAAA"
        tokens["malformed key"] = "cg_nope"
        app = create_app(Settings(db_url=url, key_cache_seconds=0, **settings))  # type: ignore[arg-type]
        with serve(app) as base:
            yield World(base, ledger, keys, tokens, missing)
    finally:
        ledger.close()


def _jsonl(events: list[dict[str, str]]) -> Path:
    import json
    import tempfile

    fd, name = tempfile.mkstemp(suffix=".jsonl")
    with open(fd, "w") as fh:
        fh.writelines(json.dumps(e) + "\n" for e in events)
    return Path(name)


@pytest.fixture
def world(db_url: str) -> Iterator[World]:
    """The world on each backend (SQLite file; PostgreSQL when configured)."""
    yield from make_world(db_url, rate_per_second=10_000.0, rate_burst=10_000)
