"""Event ingestion: the platform's backend sends consent changes and signals."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Response

from consentgate.api.routes.render import json_response
from consentgate.api.schemas import EventsIn, EventsOut
from consentgate.api.security import Access, KeyCaller, guard
from consentgate.api.services import Services, services
from consentgate.domain.errors import InputError
from consentgate.ledger.batch import Once

router = APIRouter(tags=["ingestion"])


@router.post("/v1/events", response_model=EventsOut, status_code=200, **guard(Access.INGEST))
def post_events(
    body: EventsIn,
    caller: KeyCaller,
    svc: Annotated[Services, Depends(services)],
    idempotency_key: Annotated[str | None, Header(max_length=256)] = None,
) -> Response:
    """Append a batch of events, all or nothing. Events already stored (same
    `event_id`, same content) are skipped. With an `Idempotency-Key` header, a
    repeated request gets the first answer (header `Idempotent-Replayed: true`);
    the same key with a different body is refused (422)."""
    once = None
    if idempotency_key is not None:
        if not idempotency_key.strip() or not idempotency_key.isprintable():
            raise InputError("Idempotency-Key", "printable text", idempotency_key)
        once = Once(caller.actor, idempotency_key, Once.digest(body.events))
    result = svc.ledger.record_batch(body.events, once=once)
    response = json_response(result.to_json())
    if result.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response
