"""Member session tokens: short-lived, HMAC-signed, issued to the host platform (a
key with the `sessions` scope) for one member. The member's identity in the API
always comes from such a token, never from a path or a body field.

Format: ``cgm.<payload>.<tag>``, base64url without padding; the payload is JSON
``{"s": subject, "i": issuing key id, "e": expiry (Unix seconds)}`` and the tag is
HMAC-SHA256 over ``cgm.<payload>`` with the ledger's session key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson

__all__ = ["PREFIX", "MemberSession", "TokenError", "issue_token", "read_token"]

PREFIX = "cgm."


class TokenError(Exception):
    """A member token that is malformed, forged or expired (the message says which)."""


@dataclass(frozen=True, slots=True)
class MemberSession:
    subject: str
    issuer: str
    expires: datetime


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _tag(secret: bytes, signed: str) -> str:
    return _b64(hmac.new(secret, signed.encode(), hashlib.sha256).digest())


def issue_token(
    secret: bytes, *, subject: str, issuer: str, ttl: timedelta, now: datetime
) -> tuple[str, MemberSession]:
    expires = int((now + ttl).timestamp())
    payload = _b64(orjson.dumps({"s": subject, "i": issuer, "e": expires}))
    signed = PREFIX + payload
    session = MemberSession(subject, issuer, datetime.fromtimestamp(expires, UTC))
    return f"{signed}.{_tag(secret, signed)}", session


def read_token(secret: bytes, token: str, *, now: datetime) -> MemberSession:
    signed, _, tag = token.rpartition(".")
    if not signed.startswith(PREFIX) or not tag or not token.isascii():
        raise TokenError("not a member token")
    if not hmac.compare_digest(_tag(secret, signed), tag):
        raise TokenError("member token signature does not verify")
    try:
        body = orjson.loads(_unb64(signed[len(PREFIX) :]))
        session = MemberSession(
            str(body["s"]), str(body["i"]), datetime.fromtimestamp(int(body["e"]), UTC)
        )
    except (ValueError, KeyError, TypeError) as err:
        raise TokenError("member token payload is malformed") from err
    if session.expires <= now:
        raise TokenError("member token expired")
    return session
