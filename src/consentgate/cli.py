"""The `consentgate` command line (Typer + Rich). Thin: parse, call the library, render.

Exit codes: 0 success, 2 bad input or an unusable database (message on stderr).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn
from rich.table import Table

from consentgate.domain.errors import ConsentGateError, InputError, PolicyError
from consentgate.domain.events import event_to_json
from consentgate.domain.timeutil import format_ts, parse_ts
from consentgate.ledger import DEFAULT_URL, Ledger, open_ledger

app = typer.Typer(
    name="consentgate",
    help="Decide which members' data may train AI models, enforce it, and prove it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
policy_app = typer.Typer(help="Show and apply jurisdiction policies.", no_args_is_help=True)
events_app = typer.Typer(help="Import consent events.", no_args_is_help=True)
app.add_typer(policy_app, name="policy")
app.add_typer(events_app, name="events")

out = Console()
if not out.is_terminal:  # pipes and CI logs: wide enough for the decision tables
    out = Console(width=150)
err = Console(stderr=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


class State:
    db: str = DEFAULT_URL


@app.callback()
def _main(
    db: Annotated[
        str,
        typer.Option(envvar="CONSENTGATE_DB", help="Ledger database URL (SQLite or PostgreSQL)."),
    ] = DEFAULT_URL,
) -> None:
    State.db = db


def fail(message: str) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


@contextmanager
def errors_as_exit() -> Iterator[None]:
    """Library errors become a clear message on stderr and exit code 2."""
    try:
        yield
    except PolicyError as exc:
        fail(str(exc))
    except ConsentGateError as exc:
        fail(str(exc))


def ledger(*, create: bool = False) -> Ledger:
    return open_ledger(State.db, create=create)


def parse_at(value: str | None, field: str) -> datetime:
    if value is None:
        return datetime.now(UTC)
    return parse_ts(value, field=field)


def emit_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


@app.command()
def init() -> None:
    """Create (or upgrade) the ledger and apply the default policy if it has none."""
    with errors_as_exit():
        led = ledger(create=True)
        current = led.policy_at()
    out.print(f"ledger ready at [bold]{State.db}[/] · policy in force: {current.version}")


@policy_app.command("apply")
def policy_apply(
    file: Annotated[Path, typer.Argument(help="Policy TOML file.")],
    as_json: JsonOpt = False,
) -> None:
    """Validate a policy file and store it as a new version."""
    with errors_as_exit():
        try:
            text = file.read_text("utf-8")
        except OSError as exc:
            raise InputError("FILE", "a readable policy TOML file", str(file)) from exc
        led = ledger(create=True)
        applied = led.apply_policy(text)
        now_in_force = led.policy_at()
    info = {
        "version": applied.policy.version,
        "sha256": applied.policy.sha256,
        "effective": format_ts(applied.effective),
        "in_force_now": now_in_force.version,
    }
    if as_json:
        emit_json(info)
        return
    out.print(
        f"applied policy {info['version']} (sha256 {info['sha256'][:12]}…), "
        f"effective {info['effective']}"
    )
    if now_in_force.sha256 != applied.policy.sha256:
        out.print(
            f"[yellow]note:[/] version {now_in_force.version} has a later effective time "
            "and stays in force now; this version governs decisions before it."
        )


@policy_app.command("show")
def policy_show(
    at: Annotated[str | None, typer.Option(help="Instant (ISO 8601 with timezone).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Show the policy in force (and the history of applied versions)."""
    with errors_as_exit():
        led = ledger()
        when = parse_at(at, "--at")
        policy = led.policy_at(when)
        history = led.policies()
    if as_json:
        emit_json(
            {
                "in_force": {"version": policy.version, "sha256": policy.sha256},
                "history": [
                    {
                        "version": a.policy.version,
                        "sha256": a.policy.sha256,
                        "effective": format_ts(a.effective),
                        "applied": format_ts(a.applied),
                    }
                    for a in history
                ],
                "text": policy.source_text,
            }
        )
        return
    table = Table(title=f"policy versions (in force at {format_ts(when)}: {policy.version})")
    for col in ("version", "sha256", "effective", "applied"):
        table.add_column(col)
    for a in history:
        table.add_row(
            a.policy.version, a.policy.sha256[:12], format_ts(a.effective), format_ts(a.applied)
        )
    out.print(table)
    out.print(policy.source_text, markup=False, highlight=False)


@events_app.command("import")
def events_import(
    file: Annotated[Path, typer.Argument(help="JSON Lines file of events.")],
    as_json: JsonOpt = False,
) -> None:
    """Import events, all or nothing; re-importing the same file adds nothing."""
    with errors_as_exit():
        led = ledger(create=True)
        size = file.stat().st_size if file.exists() else 0
        with _progress(size, visible=not as_json and out.is_terminal) as advance:
            result = led.import_events(file, progress=advance)
    summary = {"read": result.read, "added": result.added, "duplicates": result.duplicates}
    if as_json:
        emit_json(summary)
    else:
        out.print(
            f"imported {file}: {result.read:,} events read, {result.added:,} added, "
            f"{result.duplicates:,} already in the ledger"
        )


@contextmanager
def _progress(total: int, *, visible: bool) -> Iterator[Callable[[int], None]]:
    columns = (BarColumn(), DownloadColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err, transient=True, disable=not visible) as bar:
        task = bar.add_task("import", total=total or None)
        yield lambda done: bar.update(task, completed=done)


@app.command()
def decide(
    subject: Annotated[str, typer.Argument(help="Subject (member) id.")],
    purpose: Annotated[str, typer.Option(help="Purpose, e.g. ai_training.")],
    at: Annotated[str | None, typer.Option(help="Instant (ISO 8601 with timezone).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """May SUBJECT's data be used for PURPOSE at AT (default now)? With the reason."""
    with errors_as_exit():
        led = ledger()
        when = parse_at(at, "--at")
        decision = led.decide(subject, purpose=purpose, at=when)
        version = led.policy_at(when).version
    result = {
        "subject": subject,
        "purpose": purpose,
        "at": format_ts(when),
        "allowed": decision.allowed,
        "reason": decision.reason,
        "policy_version": version,
    }
    if as_json:
        emit_json(result)
        return
    verdict = "[green]ALLOWED[/]" if decision.allowed else "[red]EXCLUDED[/]"
    out.print(f"{subject} · {purpose} · {result['at']}: {verdict} ({decision.reason})")


@app.command()
def history(
    subject: Annotated[str, typer.Argument(help="Subject (member) id.")],
    as_json: JsonOpt = False,
) -> None:
    """Every event recorded for SUBJECT, oldest first."""
    with errors_as_exit():
        events = ledger().history(subject)
    if as_json:
        emit_json([event_to_json(ev) for ev in events])
        return
    if not events:
        out.print(f"no events for {subject}")
        return
    table = Table(title=f"history of {subject}")
    for col in ("at", "type", "details", "event id"):
        table.add_column(col)
    for ev in events:
        body = event_to_json(ev)
        details = ", ".join(
            f"{k}={v}" for k, v in body.items() if k not in ("type", "subject", "at", "event_id")
        )
        table.add_row(body["at"], ev.type, details, ev.event_id[:12])
    out.print(table)


@app.command()
def demo(
    workdir: Annotated[Path, typer.Option(help="Folder for the demo files.")] = Path("demo"),
    members: Annotated[int, typer.Option(min=1, help="Synthetic members.")] = 100_000,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 7,
) -> None:
    """Build a synthetic platform, import its consent history, show the decisions."""
    from consentgate.demo import run_demo

    with errors_as_exit():
        run_demo(workdir=workdir, members=members, seed=seed, console=out)


def main() -> None:
    """Entry point of the `consentgate` script."""
    app()


if __name__ == "__main__":
    main()
