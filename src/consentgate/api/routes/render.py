"""Library values as response bodies."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Response

from consentgate.domain.events import Event, event_to_json
from consentgate.domain.timeutil import format_ts
from consentgate.members import Choice, Profile


def json_response(body: Any, status: int = 200) -> Response:
    """A JSON response serialised by orjson (the hot routes skip model validation)."""
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def profile_body(p: Profile) -> dict[str, Any]:
    return {
        "subject": p.subject,
        "region": p.region,
        "birth_date": None if p.birth_date is None else p.birth_date.isoformat(),
        "erased": p.erased,
        "events": p.events,
    }


def choice_body(c: Choice) -> dict[str, Any]:
    return {
        "purpose": c.purpose,
        "title": c.title,
        "choice": c.choice,
        "chosen_at": None if c.chosen_at is None else format_ts(c.chosen_at),
        "allowed": c.decision.allowed,
        "reason": c.decision.reason,
    }


def history_body(subject: str, events: list[Event]) -> dict[str, Any]:
    return {"subject": subject, "events": [event_to_json(e) for e in events]}
