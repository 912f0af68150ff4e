"""Member self-service: the member's own profile, choices and history, and their
choice for a purpose. The member is the subject of their session token; no path or
body field can name another. A `Sec-GPC: 1` header records a `gpc` signal when it
turns on (`security.note_gpc`, called once the request is valid)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, Response

from consentgate import members
from consentgate.api.problems import Forbidden
from consentgate.api.routes.render import choice_body, history_body, json_response, profile_body
from consentgate.api.schemas import ChoiceIn, ChoiceOut, HistoryOut, ProfileOut
from consentgate.api.security import Access, MemberCaller, evidence, guard, note_gpc
from consentgate.api.services import Services, services

router = APIRouter(tags=["members"])
Svc = Annotated[Services, Depends(services)]


@router.get("/v1/me", response_model=ProfileOut, **guard(Access.MEMBER))
def get_me(request: Request, me: MemberCaller, svc: Svc) -> Response:
    """The member's profile as the ledger holds it."""
    note_gpc(request, svc, me)
    return json_response(profile_body(members.profile(svc.ledger, me.subject)))


@router.get("/v1/me/choices", response_model=list[ChoiceOut], **guard(Access.MEMBER))
def get_my_choices(request: Request, me: MemberCaller, svc: Svc) -> Response:
    """The member's latest choice for each purpose and what it means now."""
    note_gpc(request, svc, me)
    return json_response([choice_body(c) for c in members.choices(svc.ledger, me.subject)])


@router.get("/v1/me/history", response_model=HistoryOut, **guard(Access.MEMBER))
def get_my_history(request: Request, me: MemberCaller, svc: Svc) -> Response:
    """Every event of the member, oldest first (personal fields included)."""
    note_gpc(request, svc, me)
    return json_response(history_body(me.subject, svc.ledger.history(me.subject)))


@router.put("/v1/me/choices/{purpose}", response_model=ChoiceOut, **guard(Access.MEMBER))
def put_my_choice(
    purpose: Annotated[str, Path(min_length=1, max_length=256)],
    body: ChoiceIn,
    request: Request,
    me: MemberCaller,
    svc: Svc,
) -> Response:
    """Grant, withdraw or refuse one purpose; recorded with the notice in force.
    Refused (403) for a member whose data was erased."""
    svc.ledger.purpose_policy(purpose, datetime.now(UTC))  # an unknown purpose: 422
    if members.profile(svc.ledger, me.subject).erased:
        raise Forbidden("this member's data was erased; nothing more is recorded for them")
    note_gpc(request, svc, me)  # before the choice: the member's explicit choice is later
    members.set_choice(
        svc.ledger, me.subject, purpose=purpose, choice=body.choice, evidence=evidence(request)
    )
    mine = next(c for c in members.choices(svc.ledger, me.subject) if c.purpose == purpose)
    return json_response(choice_body(mine))
