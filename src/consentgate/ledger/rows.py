"""Conversion between domain events and `events` table rows."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import date
from typing import Any

from consentgate.domain.events import (
    EVIDENCE_FIELDS,
    ConsentEvent,
    ErasureEvent,
    Event,
    ProfileEvent,
    SignalEvent,
)
from consentgate.domain.timeutil import from_micros

__all__ = ["COLUMNS", "PARSED", "event_from_row", "id_key"]

COLUMNS = (
    "seq",
    "id_key",
    "event_id",
    "content_sha256",
    "type",
    "subject",
    "at_us",
    "purpose",
    "choice",
    "signal",
    "source",
    "notice_version",
    "region",
    "birth_date",
    "sealed",
    "recorded_us",
    "prev_hash",
    "hash",
)

#: What the parser hands the writer for each event, in this order.
PARSED = (
    "id_key",
    "event_id",
    "content_sha256",
    "type",
    "subject",  # the member id, in clear: the writer keeps it only in `subjects`
    "pseudonym",
    "at_us",
    "purpose",
    "choice",
    "signal",
    "source",
    "notice_version",
    "region",
    "birth_date",
    "personal",  # canonical JSON of the PERSONAL fields present, or None
    "recorded_us",
    "entry_head",  # the chain entry up to `sealed` (chain.entry_parts)
    "entry_tail",  # the chain entry after `seq`
)


def id_key(event_id: str) -> int:
    """The indexed key of an event id: SHA-256's first 8 bytes as a signed integer.
    Two ids sharing a key (odds ~n²/2⁶⁵) are refused at import, never merged."""
    return int.from_bytes(hashlib.sha256(event_id.encode()).digest()[:8], "big", signed=True)


def event_from_row(row: Mapping[str, Any], subject: str, personal: Mapping[str, str]) -> Event:
    """Rebuild the domain event stored in `row`, for the member `subject`, with its
    opened personal fields (empty once the member is erased)."""
    common: dict[str, Any] = {
        "subject": subject,
        "at": from_micros(row["at_us"]),
        "event_id": row["event_id"],
        "evidence": {k: personal[k] for k in EVIDENCE_FIELDS if k in personal},
    }
    kind = row["type"]
    if kind == "profile":
        born = personal.get("birth_date")
        return ProfileEvent(
            region=personal.get("region"),
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
