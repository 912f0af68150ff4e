"""Member sessions: the host platform, which has signed its member in, asks for a
short-lived token that lets the member's browser call the self-service routes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Response

from consentgate.access import issue_token, write_audit
from consentgate.api.routes.render import json_response
from consentgate.api.schemas import SessionIn, SessionOut
from consentgate.api.security import Access, KeyCaller, guard
from consentgate.api.services import Services, services
from consentgate.domain.errors import InputError
from consentgate.domain.timeutil import format_ts

router = APIRouter(tags=["sessions"])


@router.post("/v1/member-sessions", response_model=SessionOut, **guard(Access.SESSIONS))
def post_member_session(
    body: SessionIn, caller: KeyCaller, svc: Annotated[Services, Depends(services)]
) -> Response:
    """A member token for `subject`, valid `ttl_seconds` (default and maximum set
    by the server)."""
    settings = svc.settings
    ttl = body.ttl_seconds or settings.session_ttl_seconds
    if ttl > settings.max_session_ttl_seconds:
        raise InputError("ttl_seconds", f"at most {settings.max_session_ttl_seconds}", ttl)
    if not body.subject.isprintable() or body.subject.isspace():
        raise InputError("subject", "printable text", body.subject)
    assert caller.key is not None
    token, session = issue_token(
        svc.session_key,
        subject=body.subject,
        issuer=caller.key.key_id,
        ttl=timedelta(seconds=ttl),
        now=datetime.now(UTC),
    )
    write_audit(
        svc.ledger.engine,
        actor=caller.actor,
        action="issue_member_session",
        subject=svc.ledger.pseudonym(body.subject),
        detail=f"expires {format_ts(session.expires)}",
    )
    return json_response(
        {"token": token, "subject": session.subject, "expires": format_ts(session.expires)}
    )
