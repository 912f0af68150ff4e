"""Schemathesis over the OpenAPI schema, in process, as each role: generated
requests (valid and invalid) never make the server fail."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

import consentgate
from consentgate.access import KeyStore, issue_token
from consentgate.api import Settings, create_app
from tests.api.conftest import A, member_events

EXAMPLES = 20  # per operation, generation mode and role
ROLES = ("anonymous", "member", "ingest", "decide", "admin", "sessions", "every scope")


@pytest.fixture(scope="module")
def api_app(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Any, dict[str, dict[str, str]]]]:
    url = f"sqlite:///{tmp_path_factory.mktemp('schemathesis') / 'ledger.db'}"
    with consentgate.open(url) as ledger:
        ledger.record_batch(member_events(A, "1990-05-01", "DE"))
        keys = KeyStore(ledger.engine)
        headers: dict[str, dict[str, str]] = {"anonymous": {}}
        for scope in ("ingest", "decide", "admin", "sessions"):
            headers[scope] = {
                "Authorization": f"Bearer {keys.create(name=scope, scopes=[scope]).token}"
            }
        every = keys.create(name="all", scopes=["ingest", "decide", "admin", "sessions"])
        headers["every scope"] = {"Authorization": f"Bearer {every.token}"}
        token, _ = issue_token(
            ledger.session_key, subject=A, issuer=every.key.key_id,
            ttl=timedelta(hours=1), now=datetime.now(UTC),
        )  # fmt: skip
        headers["member"] = {"Authorization": f"Bearer {token}"}
    app = create_app(Settings(db_url=url, rate_per_second=1e6, rate_burst=1_000_000))
    yield app, headers
    app.state.services.ledger.close()


def operations(app: Any) -> list[Any]:
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    return [result.ok() for result in schema.get_all_operations()]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_server_errors_for_any_role(
    api_app: tuple[Any, dict[str, dict[str, str]]], mode: GenerationMode
) -> None:
    app, headers = api_app
    tested = 0
    for operation in operations(app):

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: Any) -> None:
            for role in ROLES:
                case.call_and_validate(headers=headers[role], checks=[not_a_server_error])

        try:
            check()
            tested += 1
        except Unsatisfiable:
            # Negative mode: an operation that takes no input has no invalid request.
            assert mode is GenerationMode.NEGATIVE
    spec = app.openapi()["paths"]
    with_input = sum(
        bool(op.get("parameters") or op.get("requestBody"))
        for ops in spec.values()
        for op in ops.values()
    )
    assert tested >= (len(operations(app)) if mode is GenerationMode.POSITIVE else with_input)


def test_schema_declares_every_operations_access(
    api_app: tuple[Any, dict[str, dict[str, str]]],
) -> None:
    spec = api_app[0].openapi()
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            assert operation.get("x-access"), f"{method.upper()} {path} has no x-access"
