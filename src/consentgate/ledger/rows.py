"""Conversion between domain events and `events` table rows."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import date
from typing import Any

from consentgate.domain.events import (
    ConsentEvent,
    ErasureEvent,
    Event,
    ProfileEvent,
    SignalEvent,
)
from consentgate.domain.timeutil import from_micros

__all__ = ["COLUMNS", "event_from_row", "id_key"]

COLUMNS = (
    "id_key",
    "event_id",
    "content_sha256",
    "type",
    "subject",
    "at_us",
    "purpose",
    "choice",
    "signal",
    "region",
    "birth_date",
    "source",
    "notice_version",
    "evidence",
    "recorded_us",
)


def id_key(event_id: str) -> int:
    """The indexed key of an event id: SHA-256's first 8 bytes as a signed integer.
    Two ids sharing a key (odds ~n²/2⁶⁵) are refused at import, never merged."""
    return int.from_bytes(hashlib.sha256(event_id.encode()).digest()[:8], "big", signed=True)


def event_from_row(row: Mapping[str, Any]) -> Event:
    """Rebuild the domain event stored in `row`."""
    common: dict[str, Any] = {
        "subject": row["subject"],
        "at": from_micros(row["at_us"]),
        "event_id": row["event_id"],
        "evidence": json.loads(row["evidence"]) if row["evidence"] else {},
    }
    kind = row["type"]
    if kind == "profile":
        born = row["birth_date"]
        return ProfileEvent(
            region=row["region"],
            birth_date=date.fromisoformat(born) if born else None,
            **common,
        )
    if kind == "consent":
        return ConsentEvent(
            purpose=row["purpose"],
            choice=row["choice"],
            source=row["source"],
            notice_version=row["notice_version"],
            **common,
        )
    if kind == "signal":
        return SignalEvent(signal=row["signal"], **common)
    return ErasureEvent(**common)
