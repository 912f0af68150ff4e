"""Member self-service: mass assignment, choices, and Global Privacy Control."""

from __future__ import annotations

import re
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

import httpx
import pytest

from consentgate.domain.events import SignalEvent
from tests.api.conftest import A, B, World


def gpc_signals(world: World, subject: str = A) -> int:
    return sum(isinstance(e, SignalEvent) for e in world.ledger.history(subject))


@pytest.mark.parametrize(
    "extra",
    [{"subject": B}, {"seq": 1}, {"recorded_at": "2020-01-01T00:00:00Z"}, {"scope": "admin"}],
)
def test_member_cannot_assign_protected_fields(world: World, extra: dict[str, object]) -> None:
    size = world.ledger.head().size
    before_a, before_b = world.ledger.history(A), world.ledger.history(B)
    with world.client("member A") as a:
        r = a.put("/v1/me/choices/ai_training", json={"choice": "withdrawn", **extra})
        assert r.status_code == 422
        assert r.json()["field"] == "body." + next(iter(extra))
        # The same names in the query string are ignored: A is still A.
        me = a.get("/v1/me", params={k: str(v) for k, v in extra.items()}).json()
    assert me["subject"] == A
    assert world.ledger.head().size == size
    assert world.ledger.history(A) == before_a
    assert world.ledger.history(B) == before_b


def test_session_request_cannot_carry_a_scope(world: World) -> None:
    with world.client("sessions") as platform:
        r = platform.post("/v1/member-sessions", json={"subject": A, "scope": "admin"})
        assert r.status_code == 422
        assert r.json()["field"] == "body.scope"
        token = platform.post("/v1/member-sessions", json={"subject": A}).json()["token"]
    # A member token is a member token, whatever was asked: admin routes refuse it.
    with world.client(None, Authorization=f"Bearer {token}") as member:
        assert member.get("/v1/policy").status_code == 403
        assert member.get("/v1/me").json()["subject"] == A


def test_events_cannot_carry_chain_fields(world: World) -> None:
    size = world.ledger.head().size
    event = {"type": "signal", "subject": A, "signal": "gpc", "at": "2025-06-01T00:00:00Z"}
    with world.client("ingest") as ingest:
        for name, value in (("seq", 1), ("recorded_at", "2020-01-01T00:00:00Z"), ("hash", "x")):
            r = ingest.post("/v1/events", json={"events": [{**event, name: value}]})
            assert r.status_code == 422
            assert (r.json()["field"], r.json()["where"]) == (name, "events[0]")
    assert world.ledger.head().size == size


def test_member_choice_is_recorded_with_notice_and_evidence(world: World) -> None:
    with world.client("member A", **{"User-Agent": "browser/1"}) as a:
        r = a.put("/v1/me/choices/ai_training", json={"choice": "withdrawn"})
        assert r.status_code == 200
        assert (r.json()["choice"], r.json()["reason"]) == ("withdrawn", "withdrawn")
        bad = a.put("/v1/me/choices/not_a_purpose", json={"choice": "granted"})
        assert bad.status_code == 422
        assert bad.json()["field"] == "purpose"
    last = world.ledger.history(A)[-1]
    assert last.type == "consent"
    assert last.evidence["user_agent"] == "browser/1"
    assert last.notice_version is None or last.notice_version  # the notice in force, if any
    decision = world.ledger.decide(A, purpose="ai_training")
    assert decision.reason == "withdrawn"


def test_gpc_header_records_one_signal_per_change(world: World) -> None:
    assert gpc_signals(world) == 0
    with world.client("member A") as a:
        for _ in range(5):
            assert a.get("/v1/me", headers={"Sec-GPC": "1"}).status_code == 200
        assert gpc_signals(world) == 1
        for value in ("0", "true", "yes", ""):
            a.get("/v1/me", headers={"Sec-GPC": value})  # not exactly "1": GPC is off
        assert gpc_signals(world) == 1
        a.get("/v1/me/choices", headers={"Sec-GPC": "1"})  # on again: a new signal
        assert gpc_signals(world) == 2
        a.get("/v1/me")  # no header: off
        a.get("/v1/me", headers=[("Sec-GPC", "0"), ("Sec-GPC", "1")])  # any header "1"
        assert gpc_signals(world) == 3
    assert gpc_signals(world, B) == 0
    # US-CA honours GPC: A's grant for ai_training (2025) is overridden by the signal.
    assert world.ledger.decide(A, purpose="ai_training").reason == "gpc"


def test_gpc_under_concurrent_requests_records_one_signal(world: World) -> None:
    with ExitStack() as stack:
        clients = [
            stack.enter_context(world.client("member B", **{"Sec-GPC": "1"})) for _ in range(12)
        ]
        for c in clients:  # connect first, so that the requests below leave together
            c.get("/.well-known/gpc.json")
        start = threading.Barrier(len(clients))

        def call(c: httpx.Client) -> int:
            start.wait()
            return c.get("/v1/me").status_code

        with ThreadPoolExecutor(len(clients)) as pool:
            assert set(pool.map(call, clients)) == {200}
    assert gpc_signals(world, B) == 1


def test_explicit_grant_with_gpc_on_stands(world: World) -> None:
    with world.client("member A", **{"Sec-GPC": "1"}) as a:
        a.get("/v1/me")
        r = a.put("/v1/me/choices/ai_training", json={"choice": "granted"})
        assert r.json()["reason"] == "consented"  # the member's own later choice wins
        a.get("/v1/me")  # GPC still on: no new signal, the grant stands
    assert gpc_signals(world) == 1
    assert world.ledger.decide(A, purpose="ai_training").reason == "consented"


def test_well_known_gpc_json(world: World) -> None:
    with world.client() as anyone:
        r = anyone.get("/.well-known/gpc.json")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["gpc"] is True
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", body["lastUpdate"])


def test_a_member_erased_with_a_future_date_is_erased_now(world: World) -> None:
    # Recording the erasure destroyed A's key and personal fields at once, whatever
    # its date: the member views must not show a decision the ledger would not give.
    world.ledger.record({"type": "erasure", "subject": A, "at": "2099-01-01T00:00:00Z"})
    with world.client("member A") as a:
        me = a.get("/v1/me").json()
        mine = a.get("/v1/me/choices").json()
        refused = a.put("/v1/me/choices/ai_training", json={"choice": "granted"})
    assert me["erased"] is True
    assert {c["reason"] for c in mine} == {"erased"}
    assert refused.status_code == 403
    assert world.ledger.decide(A, purpose="ai_training").reason == "erased"
