"""Every route x every role: each expected denial holds, each allowed call works,
and nothing of member B ever appears in what member A (or a denied caller asking
about B) gets back. A route without an access rule, or missing from this matrix,
fails here."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute

from consentgate.api import Settings, create_app
from consentgate.api.app import DOC_PATHS, _check_access_declared
from consentgate.domain.policy_file import default_policy_text
from tests.api.conftest import A, B, World

ROLES = [
    "anonymous", "member A", "member B", "ingest", "decide", "admin", "sessions",
    "expired token", "revoked key", "token of revoked issuer", "forged token",
    "malformed key", "wrong scope",
]  # fmt: skip

# One valid request per route: (method, path template) -> (path, query, json body).
REQUESTS: dict[tuple[str, str], tuple[str, dict[str, str], Any]] = {
    ("GET", "/.well-known/gpc.json"): ("/.well-known/gpc.json", {}, None),
    ("GET", "/openapi.json"): ("/openapi.json", {}, None),
    ("GET", "/docs"): ("/docs", {}, None),
    ("GET", "/docs/oauth2-redirect"): ("/docs/oauth2-redirect", {}, None),
    ("GET", "/redoc"): ("/redoc", {}, None),
    ("POST", "/v1/events"): (
        "/v1/events",
        {},
        {
            "events": [
                {
                    "type": "profile",
                    "subject": "member-c",
                    "region": "FR",
                    "at": "2025-03-01T00:00:00Z",
                }
            ]
        },
    ),
    ("POST", "/v1/decisions"): (
        "/v1/decisions",
        {},
        {"purpose": "ai_training", "subjects": [B]},
    ),
    ("GET", "/v1/subjects/{subject}/decision"): (
        f"/v1/subjects/{B}/decision",
        {"purpose": "ai_training"},
        None,
    ),
    ("POST", "/v1/member-sessions"): ("/v1/member-sessions", {}, {"subject": "member-c"}),
    ("GET", "/v1/me"): ("/v1/me", {}, None),
    ("GET", "/v1/me/choices"): ("/v1/me/choices", {}, None),
    ("GET", "/v1/me/history"): ("/v1/me/history", {}, None),
    ("PUT", "/v1/me/choices/{purpose}"): (
        "/v1/me/choices/genai_features",
        {},
        {"choice": "refused"},
    ),
    ("GET", "/v1/policy"): ("/v1/policy", {}, None),
    ("GET", "/v1/policy/versions"): ("/v1/policy/versions", {}, None),
    ("POST", "/v1/policy"): ("/v1/policy", {}, {"toml": default_policy_text()}),
    ("GET", "/v1/subjects/{subject}"): (f"/v1/subjects/{B}", {}, None),
    ("GET", "/v1/subjects/{subject}/history"): (f"/v1/subjects/{B}/history", {}, None),
    ("GET", "/v1/audit"): ("/v1/audit", {}, None),
}


@contextmanager
def built_app(world: World) -> Iterator[FastAPI]:
    """The app over the world's ledger, not served (its ledger closed afterwards)."""
    app = create_app(Settings(db_url=world.ledger.engine.url.render_as_string(False)))
    try:
        yield app
    finally:
        app.state.services.ledger.close()


def routes(app: FastAPI) -> dict[tuple[str, str], str]:
    """(method, path) -> access rule, for every route of the app."""
    out = {}
    for route in app.routes:
        if isinstance(route, APIRoute):
            for method in route.methods:
                out[(method, route.path)] = route.openapi_extra["x-access"]  # type: ignore[index]
        else:
            path = route.path  # type: ignore[attr-defined]
            assert path in DOC_PATHS, f"route {path} has no access rule"
            out[("GET", path)] = "public"
    return out


def expected(access: str, role: str) -> int | None:
    """The status `role` must get from a route with `access` (None: success)."""
    if access == "public":
        return None
    if role in ("anonymous", "expired token", "revoked key", "token of revoked issuer",
                "forged token", "malformed key"):  # fmt: skip
        return 401
    if access == "member":
        return None if role.startswith("member") else 403
    if role.startswith("member") or role == "wrong scope":
        return 403
    return None if access == f"scope:{role}" else 403


def test_every_route_has_an_access_rule_and_a_row_in_this_matrix(world: World) -> None:
    with built_app(world) as app:
        assert set(routes(app)) == set(REQUESTS), "add the new route to REQUESTS"


def test_a_route_without_an_access_rule_is_refused(world: World) -> None:
    with built_app(world) as app:

        @app.get("/v1/unguarded")
        def unguarded() -> dict[str, str]:
            return {}

        with pytest.raises(RuntimeError, match="/v1/unguarded declares no access rule"):
            _check_access_declared(app)


def test_every_route_against_every_role(world: World) -> None:
    with built_app(world) as app:
        table = routes(app)
    b_ids = world.b_identifiers()
    wrong = []
    for (method, template), access in sorted(table.items()):
        path, query, body = REQUESTS[(method, template)]
        for role in ROLES:
            if role == "wrong scope":
                scope = access.removeprefix("scope:")
                token = world.missing.get(scope, world.missing["admin"])
                client = world.client(None, Authorization=f"Bearer {token}")
            else:
                client = world.client(role)
            with client:
                response = client.request(method, path, params=query, json=body)
            want = expected(access, role)
            ok = response.is_success if want is None else response.status_code == want
            if not ok:
                wrong.append(f"{method} {template} as {role}: {response.status_code}, want "
                             f"{want or '2xx'}: {response.text[:200]}")  # fmt: skip
            if want == 401:
                assert response.headers.get("www-authenticate") == "Bearer"
            if want is not None:
                assert response.headers["content-type"] == "application/problem+json"
            # A (or anyone denied) must learn nothing of B; only routes that exist to
            # show B to staff (admin, decide) or B's own session may name B.
            may_see_b = role == "member B" or (want is None and access.startswith("scope:"))
            if not may_see_b and "/docs" not in path and "openapi" not in path:
                leaked = [i for i in b_ids if i in response.text]
                assert not leaked, f"{method} {template} as {role} leaked {leaked}"
    assert not wrong, "\n".join(wrong)


def test_member_a_sees_only_themselves(world: World) -> None:
    with world.client("member A") as a:
        me = a.get("/v1/me").json()
        history = a.get("/v1/me/history").json()
        choices = a.get("/v1/me/choices").json()
    assert me["subject"] == A
    assert me["birth_date"] == "1990-05-01"
    assert {e["subject"] for e in history["events"]} == {A}
    assert len(history["events"]) == len(world.ledger.history(A))
    assert [c["purpose"] for c in choices] == ["ai_training", "genai_features"]
    assert world.ledger.history(B)[-1].at.year == 2025  # B's record untouched
