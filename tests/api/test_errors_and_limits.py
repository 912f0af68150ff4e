"""Problem details for every kind of refusal, and per-caller rate limits."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.api.conftest import A, World, make_world


def problem(response: object) -> dict[str, object]:
    assert response.headers["content-type"] == "application/problem+json"  # type: ignore[attr-defined]
    body: dict[str, object] = response.json()  # type: ignore[attr-defined]
    assert body["status"] == response.status_code  # type: ignore[attr-defined]
    assert body["title"]
    assert body["detail"]
    return body


def test_bad_input_names_field_expected_and_found(world: World) -> None:
    with world.client("decide") as c:
        query = {"purpose": "ai_training", "at": "2025-01-01T00:00:00"}
        naive = c.get(f"/v1/subjects/{A}/decision", params=query)
        body = problem(naive)
        assert (naive.status_code, body["field"], body["found"]) == (
            422, "at", "2025-01-01T00:00:00"
        )  # fmt: skip
        assert "timezone" in str(body["expected"])
        unknown = c.post("/v1/decisions", json={"purpose": "ads", "subjects": [A]})
        body = problem(unknown)
        assert (body["field"], body["found"]) == ("purpose", "ads")
        assert body["expected"] == "one of ai_training, genai_features"
        missing = c.post("/v1/decisions", json={"purpose": "ai_training"})
        assert problem(missing)["field"] == "body.subjects"
        assert problem(missing)["found"] is None  # not the whole body again
        too_many = c.post("/v1/decisions", json={"purpose": "ai_training",
                                                  "subjects": ["x"] * 10_001})  # fmt: skip
        assert problem(too_many)["field"] == "body.subjects"
        broken = c.post("/v1/decisions", content=b"{not json",
                        headers={"content-type": "application/json"})  # fmt: skip
        assert broken.status_code == 422
        assert problem(broken)["field"] == "body"
        assert "valid JSON" in str(problem(broken)["expected"])
        form = c.post("/v1/decisions", content=b'{"purpose": "ai_training", "subjects": ["a"]}',
                      headers={"content-type": "text/plain"})  # fmt: skip
        assert form.status_code == 415
        assert (problem(form)["field"], problem(form)["found"]) == ("Content-Type", "text/plain")
        assert problem(c.get("/v1/nowhere"))["status"] == 404
        assert problem(c.delete("/v1/decisions"))["status"] == 405


def test_policy_errors_list_every_problem_and_change_nothing(world: World) -> None:
    before = world.ledger.policies()
    bad = '[policy]\nversion = "x"\nmin_age = "old"\n[purposes.a.modes]\n"*" = "sometimes"\n'
    with world.client("admin") as c:
        r = c.post("/v1/policy", json={"toml": bad})
    body = problem(r)
    assert r.status_code == 422
    assert len(body["problems"]) >= 2  # type: ignore[arg-type]
    assert world.ledger.policies() == before


def test_admin_reads_are_audited(world: World) -> None:
    with world.client("admin") as c:
        c.get(f"/v1/subjects/{A}")
        c.get(f"/v1/subjects/{A}/history")
        entries = c.get("/v1/audit", params={"subject": A}).json()
    assert [e["action"] for e in entries] == ["read_history", "read_subject"]
    assert {e["subject"] for e in entries} == {world.ledger.pseudonym(A)}
    assert all(e["actor"].startswith("key:") for e in entries)
    assert all(A not in str(e) for e in entries)  # members appear by pseudonym only


@pytest.fixture
def limited(tmp_path: object, db_url: str) -> Iterator[World]:
    yield from make_world(db_url, rate_per_second=2.0, rate_burst=3)


def test_rate_limit_per_caller(limited: World) -> None:
    with limited.client("decide") as c, limited.client("admin") as other:
        codes = [
            c.get(f"/v1/subjects/{A}/decision", params={"purpose": "ai_training"}).status_code
            for _ in range(5)
        ]
        assert codes[:3] == [200, 200, 200]
        assert 429 in codes[3:]
        refused = c.get(f"/v1/subjects/{A}/decision", params={"purpose": "ai_training"})
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) >= 1
        problem(refused)
        # Another key has its own bucket.
        assert other.get("/v1/policy").status_code == 200


HOSTILE = [
    ("ingest", "/v1/events", '{"events": [{"type": "signal", "subject": "h", "signal": "gpc", '
                             '"at": NaN}]}'),
    ("ingest", "/v1/events", '{"events": [{"type": "signal", "subject": "h", "signal": "gpc", '
                             '"at": "2025-01-01T00:00:00Z", "x": 1e400}]}'),
    ("sessions", "/v1/member-sessions", '{"subject": "h", "ttl_seconds": NaN}'),
    ("decide", "/v1/decisions", '{"purpose": "ai_training", "subjects": [Infinity]}'),
    ("decide", "/v1/decisions", '{"purpose": "ai_training", "subjects": ["\\ud800"]}'),
    ("decide", "/v1/decisions", '{"purpose": "\\ud800", "subjects": ["h"]}'),
    ("admin", "/v1/policy", '{"toml": "\\ud800"}'),
]  # fmt: skip


@pytest.mark.parametrize(("role", "path", "body"), HOSTILE)
def test_hostile_bodies_are_refused_not_crashed(
    world: World, role: str, path: str, body: str
) -> None:
    size = world.ledger.head().size
    with world.client(role) as c:
        r = c.post(path, content=body.encode(), headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    problem(r)
    assert world.ledger.head().size == size


def test_forged_token_with_odd_bytes_is_401(world: World) -> None:
    token = str(world.tokens["member A"])[:-1]
    with world.client(None) as c:
        r = c.get("/v1/me", headers={"Authorization": f"Bearer {token}\xe9".encode("latin-1")})
    assert r.status_code == 401


def test_refused_member_requests_record_no_gpc_and_erased_members_write_nothing(
    world: World,
) -> None:
    before = world.ledger.head().size
    with world.client("member A", **{"Sec-GPC": "1"}) as a:
        assert (
            a.put("/v1/me/choices/no_such_purpose", json={"choice": "granted"}).status_code == 422
        )
        assert a.put("/v1/me/choices/ai_training", json={"choice": "maybe"}).status_code == 422
    assert world.ledger.head().size == before
    world.ledger.record({"type": "erasure", "subject": A, "at": "2025-06-01T00:00:00Z"})
    with world.client("member A") as a:
        r = a.put("/v1/me/choices/ai_training", json={"choice": "granted"})
    assert r.status_code == 403
    assert world.ledger.head().size == before + 1


def test_session_issuance_is_audited(world: World) -> None:
    with world.client("sessions") as platform:
        assert platform.post("/v1/member-sessions", json={"subject": A}).status_code == 200
    with world.client("admin") as admin:
        entries = admin.get("/v1/audit", params={"subject": A}).json()
    assert entries[0]["action"] == "issue_member_session"


def test_failed_authentication_spends_the_address_budget(limited: World) -> None:
    with limited.client(None, Authorization="Bearer cg_0000000000000000_nope") as c:
        codes = [c.get("/v1/policy").status_code for _ in range(6)]
    assert codes[:3] == [401, 401, 401]
    assert 429 in codes[3:]
