"""Ingestion: all or nothing, idempotent by event id and by Idempotency-Key, also
under concurrent replays."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import text

from consentgate.ledger.batch import IDEMPOTENCY_US
from tests.api.conftest import World


def batch(n: int, subject: str = "member-x") -> dict[str, Any]:
    return {
        "events": [
            {"type": "consent", "subject": f"{subject}-{i}", "purpose": "ai_training",
             "choice": "granted", "at": "2025-05-01T00:00:00Z"}
            for i in range(n)
        ]
    }  # fmt: skip


def test_batch_is_all_or_nothing(world: World) -> None:
    size = world.ledger.head().size
    body = batch(3)
    body["events"].append({"type": "consent", "subject": "y", "at": "2025-05-01T00:00:00Z",
                           "purpose": "ai_training", "choice": "maybe"})  # fmt: skip
    with world.client("ingest") as c:
        r = c.post("/v1/events", json=body)
        assert r.status_code == 422
        problem = r.json()
        assert (problem["where"], problem["field"], problem["found"]) == (
            "events[3]",
            "choice",
            "maybe",
        )
        assert problem["expected"] == "one of granted, withdrawn, refused"
        assert world.ledger.head().size == size
        naive = batch(1)
        naive["events"][0]["at"] = "2025-05-01T00:00:00"
        assert c.post("/v1/events", json=naive).json()["field"] == "at"
        ok = c.post("/v1/events", json=batch(3))
        assert ok.json()["added"] == 3
        again = c.post("/v1/events", json=batch(3))  # same events: added once
        assert (again.json()["received"], again.json()["added"]) == (3, 0)
        reused = batch(2, "other")
        reused["events"][1]["event_id"] = ok.json()["event_ids"][0]  # an id, other content
        conflict = c.post("/v1/events", json=reused)
        assert conflict.status_code == 422
        assert (conflict.json()["where"], conflict.json()["field"]) == ("events[1]", "event_id")
    assert world.ledger.head().size == size + 3


def test_idempotency_key_replays_the_first_answer(world: World) -> None:
    with world.client("ingest", **{"Idempotency-Key": "req-1"}) as c:
        first = c.post("/v1/events", json=batch(2))
        replay = c.post("/v1/events", json=batch(2))
        assert first.status_code == replay.status_code == 200
        assert replay.content == first.content  # the original answer, byte for byte
        assert replay.headers["idempotent-replayed"] == "true"
        assert "idempotent-replayed" not in first.headers
        size = world.ledger.head().size
        other = c.post("/v1/events", json=batch(1, "someone-else"))
        assert other.status_code == 422
        assert other.json()["field"] == "Idempotency-Key"
        assert world.ledger.head().size == size


def test_idempotency_keys_belong_to_their_key(world: World) -> None:
    other = world.keys.create(name="second platform", scopes=["ingest"]).token
    with world.client("ingest", **{"Idempotency-Key": "k"}) as one:
        assert one.post("/v1/events", json=batch(1, "p1")).status_code == 200
    with world.client(None, Authorization=f"Bearer {other}", **{"Idempotency-Key": "k"}) as two:
        r = two.post("/v1/events", json=batch(1, "p2"))  # same key text, other caller
        assert r.status_code == 200
        assert r.json()["added"] == 1


def test_concurrent_replays_write_once_and_answer_alike(world: World) -> None:
    size = world.ledger.head().size
    body = batch(20, "burst")

    def send(_: int) -> tuple[int, bytes, bool]:
        with world.client("ingest", **{"Idempotency-Key": "burst-1"}) as c:
            r = c.post("/v1/events", json=body)
            return r.status_code, r.content, "idempotent-replayed" in r.headers

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(send, range(16)))
    assert {status for status, _, _ in results} == {200}
    assert len({content for _, content, _ in results}) == 1
    assert sum(not replayed for _, _, replayed in results) == 1
    assert world.ledger.head().size == size + 20
    assert all(world.ledger.history(f"burst-{i}")[0].type == "consent" for i in range(20))


def test_idempotency_keys_expire_after_a_day(world: World) -> None:
    """A key is remembered for IDEMPOTENCY_US: within it, other content is refused;
    once it expired the key may name a new request, and expired keys are swept."""
    with world.client("ingest", **{"Idempotency-Key": "daily"}) as c:
        assert c.post("/v1/events", json=batch(1, "day-1")).status_code == 200
        assert c.post("/v1/events", json=batch(1, "day-1b")).status_code == 422
        with world.ledger.engine.begin() as conn:
            stale = conn.execute(
                text("UPDATE idempotent_requests SET created_us = created_us - :age"),
                {"age": IDEMPOTENCY_US + 1},
            ).rowcount
            assert stale == 1
            for i in range(3):  # expired keys of other requests, to be swept
                conn.execute(
                    text("INSERT INTO idempotent_requests VALUES ('someone', :k, :h, '{}', 0)"),
                    {"k": f"old-{i}", "h": "0" * 64},
                )
        fresh = c.post("/v1/events", json=batch(1, "day-2"))
        assert fresh.status_code == 200
        assert "idempotent-replayed" not in fresh.headers
        assert fresh.json()["added"] == 1
        replay = c.post("/v1/events", json=batch(1, "day-2"))
        assert replay.headers["idempotent-replayed"] == "true"
    with world.ledger.engine.connect() as conn:
        left = conn.execute(text("SELECT idem_key FROM idempotent_requests")).scalars().all()
    assert sorted(left) == ["daily"]
