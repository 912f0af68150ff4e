"""Appending a batch of events given as JSON objects (the HTTP API's ingestion):
validated first, item by item, then appended in one transaction, all or nothing;
optionally made idempotent by a caller's key (`Once`), in the same transaction.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import orjson
from sqlalchemy import Connection, delete, insert, select, tuple_

from consentgate.domain.errors import InputError, UnknownPurposeError
from consentgate.domain.events import ValidEvent, validate_event
from consentgate.ledger.chain import Appender, now_us
from consentgate.ledger.parsing import row_of
from consentgate.ledger.schema import idempotent_requests

__all__ = ["MAX_BATCH", "BatchResult", "IdempotencyConflict", "Once", "append_batch", "validate"]

#: The most events one request may carry.
MAX_BATCH = 10_000
#: How long an idempotency key is remembered (as Stripe's API does): a retry within a
#: day gets the first answer; after that the key may name a new request.
IDEMPOTENCY_US = 24 * 3600 * 1_000_000
#: Expired keys deleted by one keyed write at most (the table stays near a day of keys).
_SWEEP = 100


@dataclass(frozen=True, slots=True)
class Once:
    """An idempotency key: `actor` (who asks) and `key` (theirs) name the request;
    `request_sha256` is the digest of its content."""

    actor: str
    key: str
    request_sha256: str

    @staticmethod
    def digest(content: Any) -> str:
        # The standard encoder: request bodies may hold integers beyond 64 bits.
        text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class IdempotencyConflict(InputError):
    """An idempotency key used again for a different request."""


@dataclass(frozen=True, slots=True)
class BatchResult:
    """What a batch did: events received, events added (the rest were already
    stored), their ids in order, and the ledger size after the commit. `replayed`:
    this is the stored answer to an earlier request with the same idempotency key."""

    received: int
    added: int
    event_ids: list[str]
    size: int
    replayed: bool = False

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        del out["replayed"]
        return out


def validate(batch: Sequence[Mapping[str, Any]], purposes: Collection[str]) -> list[ValidEvent]:
    """Every event checked; the first bad one raises, located as `events[i]`."""
    if len(batch) > MAX_BATCH:
        raise InputError("events", f"at most {MAX_BATCH} events", len(batch))
    out = []
    for i, obj in enumerate(batch):
        try:
            out.append(validate_event(obj, purposes=purposes))
        except UnknownPurposeError as err:
            raise err.located(f"events[{i}]") from None
        except InputError as err:
            raise err.located(f"events[{i}]") from None
    return out


def _stored_answer(conn: Connection, once: Once) -> BatchResult | None:
    t = idempotent_requests.c
    row = conn.execute(
        select(t.request_sha256, t.response).where(t.actor == once.actor, t.idem_key == once.key)
    ).one_or_none()
    if row is None:
        return None
    if row.request_sha256 != once.request_sha256:
        raise IdempotencyConflict(
            "Idempotency-Key",
            "a new key for a request with different content",
            once.key,
        )
    return BatchResult(**orjson.loads(row.response), replayed=True)


def _forget_expired(conn: Connection, once: Once, cutoff_us: int) -> None:
    """Delete this key if it expired, and up to _SWEEP other expired keys."""
    t = idempotent_requests.c
    conn.execute(
        delete(idempotent_requests).where(
            t.actor == once.actor, t.idem_key == once.key, t.created_us < cutoff_us
        )
    )
    oldest = (
        select(t.actor, t.idem_key)
        .where(t.created_us < cutoff_us)
        .order_by(t.created_us)
        .limit(_SWEEP)
    )
    conn.execute(delete(idempotent_requests).where(tuple_(t.actor, t.idem_key).in_(oldest)))


def append_batch(
    conn: Connection, appender: Appender, valid: Sequence[ValidEvent], once: Once | None
) -> BatchResult:
    """Append `valid` (checked by `validate`) with `appender`, which holds the head
    lock of the write transaction on `conn`; the caller finishes it. With `once`, a
    key seen before (also earlier in this transaction) returns the stored answer and
    appends nothing: the lock makes concurrent replays wait for the first to commit."""
    recorded = now_us()
    if once is not None:
        _forget_expired(conn, once, recorded - IDEMPOTENCY_US)
        if (answer := _stored_answer(conn, once)) is not None:
            return answer
    start = appender.head.size
    rows = [row_of(v, appender.secret, recorded) for v in valid]
    try:
        appender.append(rows, range(len(rows)), name="events")
    except InputError as err:  # said of `events:<index>`: name it like validation does
        if not err.where.startswith("events:"):
            raise
        raise err.located(f"events[{err.where.removeprefix('events:')}]") from None
    size = appender.head.size
    result = BatchResult(len(valid), size - start, [v.event_id for v in valid], size)
    if once is not None:
        conn.execute(
            insert(idempotent_requests).values(
                actor=once.actor,
                idem_key=once.key,
                request_sha256=once.request_sha256,
                response=orjson.dumps(result.to_json()).decode(),
                created_us=recorded,
            )
        )
    return result
