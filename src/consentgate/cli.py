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
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from consentgate.domain.errors import ConsentGateError, InputError, PolicyError
from consentgate.domain.events import event_to_json
from consentgate.domain.timeutil import format_ts, parse_ts
from consentgate.ledger import DEFAULT_URL, Ledger, open_ledger, tlog
from consentgate.ledger.checkpoint import Verifier

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
    signing_key: Path | None = None
    checkpoint_log: Path | None = None


@app.callback()
def _main(
    db: Annotated[
        str,
        typer.Option(envvar="CONSENTGATE_DB", help="Ledger database URL (SQLite or PostgreSQL)."),
    ] = DEFAULT_URL,
    signing_key: Annotated[
        Path | None,
        typer.Option(
            envvar="CONSENTGATE_SIGNING_KEY",
            help="Ed25519 signer key file of the ledger's checkpoints (`init` creates it).",
        ),
    ] = None,
    checkpoint_log: Annotated[
        Path | None,
        typer.Option(
            envvar="CONSENTGATE_CHECKPOINT_LOG",
            help="External append-only file of signed checkpoints [default: KEY.checkpoints].",
        ),
    ] = None,
) -> None:
    State.db = db
    State.signing_key = signing_key
    State.checkpoint_log = checkpoint_log


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
    except OSError as exc:  # a file that cannot be read or written
        fail(str(exc))


def ledger(*, create: bool = False) -> Ledger:
    key = State.signing_key
    if key is not None and not key.exists():
        raise InputError("--signing-key", "an existing key file (`init` creates one)", str(key))
    return open_ledger(
        State.db, create=create, signing_key=key, checkpoint_log=State.checkpoint_log
    )


def parse_at(value: str | None, field: str) -> datetime:
    if value is None:
        return datetime.now(UTC)
    return parse_ts(value, field=field)


def emit_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


@app.command()
def init() -> None:
    """Create (or upgrade) the ledger and apply the default policy if it has none.
    With --signing-key FILE that does not exist yet, also create the signing key."""
    with errors_as_exit():
        key = State.signing_key
        created = key is not None and not key.exists()
        if key is not None and created:
            tlog.create_signing_key(key)
        led = ledger(create=True)
        current = led.policy_at()
    out.print(f"ledger ready at [bold]{State.db}[/] · policy in force: {current.version}")
    if key is not None:
        verb = "created" if created else "using"
        out.print(
            f"{verb} signing key {key} · publish the verifier key {key}.pub: "
            f"{Path(f'{key}.pub').read_text().strip() if Path(f'{key}.pub').exists() else '?'}",
            highlight=False,
        )


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
def checkpoint(as_json: JsonOpt = False) -> None:
    """Sign a checkpoint of the ledger now; store it and append it to the external log."""
    with errors_as_exit():
        led = ledger()
        note = led.checkpoint()
        log = led.checkpoint_log
    if as_json:
        emit_json({"note": note, "log": None if log is None else str(log)})
        return
    sys.stdout.write(note)
    if log is not None:
        err.print(f"appended to {log}")


KeyOpt = Annotated[
    str | None,
    typer.Option("--key", help="Verifier key (text or file) [default: SIGNING_KEY.pub]."),
]


def _verifier(key: str | None) -> Verifier | None:
    if key is None and State.signing_key is not None:
        pub = Path(f"{State.signing_key}.pub")
        key = str(pub) if pub.exists() else None
    return None if key is None else tlog.load_verifier(key)


@app.command()
def verify(
    checkpoint: Annotated[
        list[Path] | None,
        typer.Option(
            "--checkpoint",
            help="External signed checkpoint (or log of them) to check against; repeatable.",
        ),
    ] = None,
    key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Re-compute the hash chain, every checkpoint and the sealed personal data; name
    the first bad event. Exit 1 when anything does not verify."""
    with errors_as_exit():
        texts = []
        for path in checkpoint or []:
            try:
                texts.append(path.read_text("utf-8"))
            except OSError as exc:
                raise InputError("--checkpoint", "a readable checkpoint file", str(path)) from exc
        verifier = _verifier(key)
        if texts and verifier is None:
            raise InputError("--key", "the verifier key, to check external checkpoints", None)
        report = ledger().verify(verifier=verifier, external=texts)
    first = report.first_bad
    summary = {
        "ok": report.ok,
        "events": report.events,
        "checkpoints": report.checkpoints,
        "external_checkpoints": report.external,
        "signatures_checked": verifier is not None,
        "first_bad": None if first is None else {"seq": first.seq, "problem": first.what},
        "problems": [str(p) for p in report.problems],
        "seconds": round(report.seconds, 3),
    }
    if as_json:
        emit_json(summary)
    elif report.ok:
        out.print(
            f"[green]verified[/]: {report.events:,} events, {report.checkpoints} stored and "
            f"{report.external} external checkpoints ({report.seconds:.1f} s)"
            + ("" if verifier else " · signatures not checked: no --key")
        )
    else:
        err.print(f"[bold red]NOT VERIFIED[/]: first bad: {first}", highlight=False)
        for problem in report.problems[1:10]:
            err.print(f"  also: {problem}", highlight=False)
    if not report.ok:
        raise typer.Exit(1)


@app.command()
def prove(
    seqs: Annotated[list[int] | None, typer.Argument(help="Event positions (seq).")] = None,
    subject: Annotated[
        str | None, typer.Option(help="Prove every event of this member instead.")
    ] = None,
    consistency: Annotated[
        tuple[Path, Path] | None,
        typer.Option(help="Prove that checkpoint OLD is a prefix of checkpoint NEW."),
    ] = None,
    checkpoint: Annotated[
        Path | None, typer.Option(help="Signed checkpoint to prove against [default: latest].")
    ] = None,
    output: Annotated[Path | None, typer.Option("--out", help="Write the bundle here.")] = None,
) -> None:
    """Export an inclusion or consistency proof bundle (JSON) for offline checking."""
    with errors_as_exit():
        led = ledger()
        if consistency is not None:
            old, new = (p.read_text("utf-8") for p in consistency)
            bundle = tlog.consistency_bundle(led.engine, old, new)
        else:
            note = checkpoint.read_text("utf-8") if checkpoint else led.latest_checkpoint()
            if note is None:
                raise InputError("--checkpoint", "a signed checkpoint (see `checkpoint`)", None)
            wanted = list(seqs or []) + (led.positions(subject) if subject else [])
            if not wanted:
                raise InputError("SEQ", "event positions or --subject", None)
            bundle = tlog.inclusion_bundle(led.engine, wanted, note)
    text = json.dumps(bundle, indent=2) + "\n"
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, "utf-8")
        err.print(f"wrote {output}")


@app.command("verify-proof")
def verify_proof(
    bundle: Annotated[Path, typer.Argument(help="Proof bundle (JSON) from `prove`.")],
    key: KeyOpt = None,
) -> None:
    """Check a proof bundle offline against the verifier key. Exit 1 when it fails."""
    with errors_as_exit():
        verifier = _verifier(key)
        if verifier is None:
            raise InputError("--key", "the verifier key of the ledger", None)
        try:
            data = json.loads(bundle.read_text("utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError("BUNDLE", "a readable JSON proof bundle", str(bundle)) from exc
        try:
            claim = tlog.verify_bundle(data, verifier)
        except tlog.ProofError as exc:
            err.print(f"[bold red]PROOF FAILS[/]: {exc}", highlight=False)
            raise typer.Exit(1) from None
    out.print(f"[green]proof holds[/]: {claim}", highlight=False)


@app.command("gate")
def gate_command(
    input: Annotated[
        list[str] | None,
        typer.Argument(help="Parquet file, directory or glob; JSON Lines or CSV file."),
    ] = None,
    purpose: Annotated[str | None, typer.Option(help="Purpose, e.g. ai_training.")] = None,
    as_of: Annotated[
        str | None,
        typer.Option("--as-of", help="Evaluation time T (ISO 8601 with timezone) [default: now]."),
    ] = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Output directory (must not exist).")
    ] = None,
    subject_col: Annotated[str, typer.Option(help="Column of member ids.")] = "subject_id",
    time_col: Annotated[str, typer.Option(help="Column of collection times.")] = "collected_at",
    id_col: Annotated[
        str | None, typer.Option(help="Column of record ids [default: file and row number].")
    ] = None,
    source_col: Annotated[str, typer.Option(help="Column of record sources.")] = "source",
    sensitive_col: Annotated[str, typer.Option(help="Column of sensitive flags.")] = "sensitive",
    source: Annotated[
        str | None, typer.Option(help="Source of every record (overrides --source-col).")
    ] = None,
    naive_timestamps: Annotated[
        str | None,
        typer.Option("--naive-timestamps", help="'utc': read times without a timezone as UTC."),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option(help="Replace a previous run's --out directory.")
    ] = False,
    engine: Annotated[str, typer.Option(help="Gate engine: duckdb.")] = "duckdb",
    replay: Annotated[
        Path | None,
        typer.Option(help="Re-evaluate the run of this manifest.json and report differences."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Gate a dataset: keep the records that may be used for PURPOSE, write the
    exclusions with their reasons, the contributors and a manifest to --out."""
    from consentgate.gate import Columns, gate
    from consentgate.gate.report import reason_table

    with errors_as_exit():
        if replay is not None:
            _replay(replay, as_json)
            return
        if not input:
            raise InputError("INPUT", "a dataset file, directory or glob (or --replay)", "nothing")
        if purpose is None:
            raise InputError("--purpose", "a purpose, e.g. ai_training", "nothing")
        if out_dir is None:
            raise InputError("--out", "an output directory", "nothing")
        when = parse_at(as_of, "--as-of")
        columns = Columns(
            subject=subject_col,
            time=time_col,
            id=id_col,
            source=source_col,
            sensitive=sensitive_col,
        )
        led = ledger()
        visible = not as_json and err.is_terminal
        with _steps(visible) as step:
            result = gate(
                input,
                ledger=led,
                purpose=purpose,
                out=out_dir,
                as_of=when,
                columns=columns,
                source=source,
                naive_timestamps=naive_timestamps,
                overwrite=overwrite,
                progress=step,
                engine=engine,
            )
    m = result.manifest
    if as_json:
        emit_json(m)
        return
    out.print(reason_table(m))
    rows = m["rows"]
    out.print(
        f"kept {rows['kept']:,} of {rows['input']:,} records ({m['subjects']['kept']:,} of "
        f"{m['subjects']['input']:,} members) · ledger checkpoint {m['ledger']['size']:,} · "
        f"policy {m['policy']['version']} · written to {result.out}/",
        highlight=False,
    )
    print_replay_hint(result.out)


def print_replay_hint(run: Path) -> None:
    out.print(f"check it later: consentgate gate --replay {run}/manifest.json", highlight=False)


def _replay(manifest: Path, as_json: bool) -> None:
    from consentgate.gate.replay import replay as run_replay
    from consentgate.gate.report import print_replay, replay_json

    report = run_replay(manifest, ledger())
    if as_json:
        emit_json(replay_json(report))
    else:
        print_replay(out, report)
    if not report.clean:
        raise typer.Exit(1)


@contextmanager
def _steps(visible: bool) -> Iterator[Callable[[str], None]]:
    """A Rich progress display naming the gate's current step."""
    from consentgate.gate.run import STEPS

    columns = (TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=True, disable=not visible) as bar:
        task = bar.add_task("gate", total=len(STEPS))

        def step(name: str) -> None:
            done = STEPS.index(name) if name in STEPS else 0
            bar.update(task, completed=done, description=name)

        yield step


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


# Registered last: these commands use the helpers above.
from consentgate.cli_serve import keys_app, serve  # noqa: E402

app.add_typer(keys_app, name="keys")
app.command()(serve)


def main() -> None:
    """Entry point of the `consentgate` script."""
    app()


if __name__ == "__main__":
    main()
