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
