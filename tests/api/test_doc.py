"""docs/api.md is executable: its Python example runs against a live server."""

from __future__ import annotations

import re
from pathlib import Path

from consentgate.api import Settings, create_app
from tests.api.conftest import World
from tests.api.live import serve

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def test_api_doc_example_runs(world: World) -> None:
    code = re.findall(r"```python\n(.*?)```", DOC.read_text("utf-8"), re.S)[-1]
    platform_key = world.keys.create(name="doc", scopes=["ingest", "decide", "sessions"]).token
    url = world.ledger.engine.url.render_as_string(hide_password=False)
    app = create_app(Settings(db_url=url))
    with serve(app) as base:
        exec(compile(code, str(DOC), "exec"), {"base": base, "platform_key": platform_key})  # noqa: S102


def test_api_doc_names_every_route(world: World) -> None:
    text = DOC.read_text("utf-8")
    with world.client() as anyone:
        spec_paths = anyone.get("/openapi.json").json()["paths"]
    for path, operations in spec_paths.items():
        for method in operations:
            documented = path.replace("{subject}", "{id}")
            assert f"{method.upper()} {documented}" in text, f"{method.upper()} {path}"
