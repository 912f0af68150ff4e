"""Routes anyone may call."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response

from consentgate.api.routes.render import json_response
from consentgate.api.schemas import GpcOut
from consentgate.api.security import Access, guard
from consentgate.api.services import Services, services

router = APIRouter(tags=["public"])


@router.get("/.well-known/gpc.json", response_model=GpcOut, **guard(Access.PUBLIC))
async def gpc_json(svc: Annotated[Services, Depends(services)]) -> Response:
    """Global Privacy Control support (w3c.github.io/gpc): this service honours
    `Sec-GPC: 1`; `lastUpdate` is when the policy in force took effect."""
    since = svc.ledger.applied_policy_at().effective
    return json_response({"gpc": True, "lastUpdate": since.date().isoformat()})
