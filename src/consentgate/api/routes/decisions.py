"""Online decisions: "may I use this member's data for this purpose now?"."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response

from consentgate.api.routes.render import json_response
from consentgate.api.schemas import DecisionOut, DecisionsIn, DecisionsOut
from consentgate.api.security import Access, guard
from consentgate.api.services import Services, services
from consentgate.domain.timeutil import format_ts, parse_ts

router = APIRouter(tags=["decisions"])


def _when(at: str | None) -> datetime:
    return datetime.now(UTC) if at is None else parse_ts(at, field="at")


@router.post("/v1/decisions", response_model=DecisionsOut, **guard(Access.DECIDE))
def post_decisions(body: DecisionsIn, svc: Annotated[Services, Depends(services)]) -> Response:
    """Decisions for up to 10,000 members at once (DESIGN §3, collection time = `at`)."""
    when = _when(body.at)
    unique = list(dict.fromkeys(body.subjects))
    decided = dict(
        svc.ledger.decisions(purpose=body.purpose, at=when, subjects=unique, engine="sql")
    )
    out = [
        {"subject": s, "allowed": decided[s].allowed, "reason": decided[s].reason}
        for s in body.subjects
    ]
    return json_response({"purpose": body.purpose, "at": format_ts(when), "decisions": out})


@router.get("/v1/subjects/{subject}/decision", response_model=DecisionOut, **guard(Access.DECIDE))
async def get_decision(
    subject: Annotated[str, Path(min_length=1, max_length=256)],
    purpose: Annotated[str, Query(min_length=1, max_length=256)],
    svc: Annotated[Services, Depends(services)],
    at: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    """The decision for one member."""
    decision = svc.ledger.decide(subject, purpose=purpose, at=_when(at))
    return json_response(
        {"subject": subject, "allowed": decision.allowed, "reason": decision.reason}
    )
