"""Who is calling, and may they call this route.

Every route declares one access rule (`Access`), both as a dependency that enforces
it and as `x-access` in the OpenAPI operation; `create_app` refuses to build an app
with a route that has none. Callers authenticate with `Authorization: Bearer` and
either an API key (`cg_...`, with scopes) or a member session token (`cgm....`).
A member's identity comes from the token only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.security import HTTPBearer

from consentgate.access import ApiKey, MemberSession, TokenError, read_token
from consentgate.access.tokens import PREFIX as TOKEN_PREFIX
from consentgate.api.problems import Forbidden, RateLimited, Unauthenticated
from consentgate.api.services import Services, services

__all__ = ["Access", "Caller", "KeyCaller", "MemberCaller", "gpc_on", "guard"]


BEARER = HTTPBearer(
    auto_error=False,
    description="An API key (`cg_...`) or a member session token (`cgm....`).",
)
PROBLEM_MEDIA = "application/problem+json"
PROBLEM: dict[str, Any] = {
    "type": "object",
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "field": {"type": "string"},
        "expected": {"type": "string"},
        "found": {},
        "where": {"type": "string"},
    },
    "required": ["type", "title", "status", "detail"],
}


class Access(StrEnum):
    """The access rule of a route."""

    PUBLIC = "public"
    MEMBER = "member"  # a member session token; the member is the token's subject
    INGEST = "scope:ingest"
    DECIDE = "scope:decide"
    ADMIN = "scope:admin"
    SESSIONS = "scope:sessions"

    @property
    def scope(self) -> str | None:
        return self.value.removeprefix("scope:") if self.value.startswith("scope:") else None


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated caller: a key or a member (anonymous callers have none)."""

    key: ApiKey | None = None
    member: MemberSession | None = None

    @property
    def actor(self) -> str:
        if self.key is not None:
            return f"key:{self.key.key_id}"
        return "member" if self.member is not None else "anonymous"


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("expected an `Authorization: Bearer <key or token>` header")
    return token.strip()


def _authenticate(svc: Services, token: str) -> Caller:
    if token.startswith(TOKEN_PREFIX):
        try:
            session = read_token(svc.session_key, token, now=datetime.now(UTC))
        except TokenError as err:
            raise Unauthenticated(str(err)) from None
        if not svc.keys.is_active(session.issuer):
            raise Unauthenticated("member token issued by a revoked key")
        return Caller(member=session)
    key = svc.keys.authenticate(token)
    if key is None:
        raise Unauthenticated("unknown, malformed or revoked API key")
    return Caller(key=key)


def _address(request: Request) -> str:
    return request.client.host if request.client else "?"


def _limit(svc: Services, who: str) -> None:
    wait = svc.limiter.take(who)
    if wait:
        raise RateLimited(svc.limiter.retry_after(wait))


def _check(access: Access, request: Request, svc: Services) -> Caller:
    token = _bearer(request) if access is not Access.PUBLIC else None
    if token is None:
        if access is not Access.PUBLIC:
            raise Unauthenticated("this route needs an API key or a member token")
        _limit(svc, "addr:" + _address(request))
        return Caller()
    try:
        caller = _authenticate(svc, token)
    except Unauthenticated:
        _limit(svc, "addr:" + _address(request))
        raise  # failed attempts spend the client address's budget
    if access is Access.MEMBER:
        if caller.member is None:
            raise Forbidden("this route is for members, with a member session token")
        _limit(svc, "member:" + caller.member.subject)
        return caller
    if caller.key is None or access.scope not in caller.key.scopes:
        raise Forbidden(f"this route needs an API key with the {access.scope!r} scope")
    _limit(svc, caller.actor)
    return caller


def guard(access: Access) -> dict[str, Any]:
    """Route keyword arguments declaring and enforcing `access`."""

    # async: run on the event loop rather than in a worker thread. Its only I/O is a
    # key lookup when the key is not cached (once per key_cache_seconds).
    async def dependency(request: Request, svc: Annotated[Services, Depends(services)]) -> Caller:
        caller = _check(access, request, svc)
        request.state.caller = caller
        return caller

    if access is Access.PUBLIC:
        return {"dependencies": [Depends(dependency)], "openapi_extra": {"x-access": "public"}}
    return {
        # BEARER only declares the scheme in OpenAPI (the Authorize button of /docs);
        # `dependency` does the checking.
        "dependencies": [Security(BEARER), Depends(dependency)],
        "openapi_extra": {"x-access": access.value},
        "responses": {
            status: {"description": text, "content": {PROBLEM_MEDIA: {"schema": PROBLEM}}}
            for status, text in (
                (401, "no, expired, forged or revoked credential"),
                (403, "a credential without this route's access"),
                (422, "bad input: field, expected, found"),
                (429, "rate limit; see Retry-After"),
            )
        },
    }


async def caller(request: Request) -> Caller:
    found: Caller = request.state.caller
    return found


def gpc_on(request: Request) -> bool:
    """Global Privacy Control: on when any `Sec-GPC` header is exactly `1`."""
    return any(v.strip() == "1" for v in request.headers.getlist("sec-gpc"))


async def member(request: Request) -> MemberSession:
    """The calling member (after `guard(Access.MEMBER)`)."""
    session = request.state.caller.member
    if not isinstance(session, MemberSession):  # pragma: no cover - guard(MEMBER) ran first
        raise Forbidden("this route is for members")
    return session


def note_gpc(request: Request, svc: Services, session: MemberSession) -> None:
    """Record the member's GPC header (routes call it once the request is valid:
    a refused request records nothing)."""
    svc.ledger.note_gpc(session.subject, gpc_on(request), evidence=evidence(request))


def evidence(request: Request) -> dict[str, str]:
    """The evidence fields of a member's own request (stored sealed, DESIGN §5)."""
    out = {}
    agent = request.headers.get("user-agent", "")
    if agent and agent.isprintable():
        out["user_agent"] = agent[:256]
    if request.client is not None:
        out["ip"] = _address(request)
    return out


KeyCaller = Annotated[Caller, Depends(caller)]
MemberCaller = Annotated[MemberSession, Depends(member)]
