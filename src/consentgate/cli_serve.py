"""`consentgate keys create|list|revoke` and `consentgate serve` (registered by cli.py)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from consentgate.access import SCOPES, ApiKey, KeyStore
from consentgate.cli import JsonOpt, State, emit_json, errors_as_exit, ledger, out
from consentgate.domain.timeutil import format_ts

keys_app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)


def _key_json(key: ApiKey) -> dict[str, object]:
    return {
        "key_id": key.key_id,
        "name": key.name,
        "scopes": sorted(key.scopes),
        "created": format_ts(key.created),
        "revoked": None if key.revoked is None else format_ts(key.revoked),
    }


def _store() -> KeyStore:
    return KeyStore(ledger().engine)


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="What the key is for (e.g. 'web backend').")],
    scope: Annotated[list[str], typer.Option("--scope", help=f"Repeatable: {', '.join(SCOPES)}.")],
    json_out: JsonOpt = False,
) -> None:
    """Create an API key. Its secret is printed once and stored only as a hash."""
    with errors_as_exit():
        new = _store().create(name=name, scopes=scope)
    if json_out:
        emit_json({**_key_json(new.key), "token": new.token})
        return
    out.print(f"key {new.key.key_id} ({', '.join(sorted(new.key.scopes))}) created.")
    out.print("Keep this secret now; it is not shown again:")
    out.print(new.token, highlight=False, soft_wrap=True)


@keys_app.command("list")
def keys_list(json_out: JsonOpt = False) -> None:
    """Every key, with its scopes and whether it was revoked (never the secrets)."""
    with errors_as_exit():
        keys = _store().list()
    if json_out:
        emit_json([_key_json(k) for k in keys])
        return
    table = Table("key id", "name", "scopes", "created", "revoked")
    for k in keys:
        revoked = "-" if k.revoked is None else format_ts(k.revoked)
        table.add_row(k.key_id, k.name, " ".join(sorted(k.scopes)), format_ts(k.created), revoked)
    out.print(table)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key id (see `keys list`).")],
) -> None:
    """Revoke a key: it and the member tokens it issued stop working."""
    with errors_as_exit():
        key = _store().revoke(key_id)
    assert key.revoked is not None
    out.print(f"key {key.key_id} revoked at {format_ts(key.revoked)}")


def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Server processes.")] = 1,
    rate: Annotated[
        float, typer.Option(help="Requests a second allowed per caller (token bucket).")
    ] = 200.0,
    burst: Annotated[int, typer.Option(min=1, help="Burst size per caller.")] = 400,
) -> None:
    """Serve the HTTP API (OpenAPI at /docs) over the ledger."""
    import os

    import uvicorn

    from consentgate.api import Settings

    with errors_as_exit():
        settings = Settings(
            db_url=State.db, signing_key=State.signing_key, rate_per_second=rate, rate_burst=burst
        )
        ledger().close()  # refuse to start on a database that holds no ledger
    os.environ.update(
        {
            "CONSENTGATE_DB": settings.db_url,
            "CONSENTGATE_RATE_PER_SECOND": str(rate),
            "CONSENTGATE_RATE_BURST": str(burst),
        }
    )
    if settings.signing_key is not None:
        os.environ["CONSENTGATE_SIGNING_KEY"] = str(settings.signing_key)
    out.print(f"serving {State.db} on http://{host}:{port} (API docs at /docs)")
    uvicorn.run(
        "consentgate.api.app:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="warning",
        access_log=False,
    )
