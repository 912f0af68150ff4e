"""How a gate run and a replay are shown: Rich tables for people, JSON for scripts."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from consentgate.domain.decide import ALLOWED_REASONS, REASONS
from consentgate.gate.replay import Comparison, ReplayReport

__all__ = ["print_replay", "reason_table", "replay_json"]


def reason_table(manifest: dict[str, Any]) -> Table:
    """Kept and excluded records by reason, every reason code of DESIGN §3 listed."""
    total = manifest["rows"]["input"] or 1
    table = Table(
        caption=f"{manifest['purpose']} as of {manifest['as_of']}", caption_justify="left"
    )
    table.add_column("reason")
    table.add_column("outcome")
    table.add_column("records", justify="right")
    table.add_column("share", justify="right")
    for reason in REASONS:
        n = manifest["reasons"].get(reason, 0)
        kept = reason in ALLOWED_REASONS
        style = "green" if kept else ("dim" if n == 0 else "")
        table.add_row(
            reason, "kept" if kept else "excluded", f"{n:,}", f"{100 * n / total:.1f}%", style=style
        )
    rows = manifest["rows"]
    table.add_section()
    table.add_row("total kept", "", f"{rows['kept']:,}", f"{100 * rows['kept'] / total:.1f}%")
    table.add_row(
        "total excluded", "", f"{rows['excluded']:,}", f"{100 * rows['excluded'] / total:.1f}%"
    )
    return table


def _comparison_json(c: Comparison) -> dict[str, Any]:
    return {
        "ledger_size": c.ledger_size,
        "differences": c.total,
        "changes": [
            {"before": b, "after": a, "records": n} for (b, a), n in sorted(c.changes.items())
        ],
        "records": [
            {
                "record_id": d.record_id,
                "subject_id": d.subject_id,
                "before": d.before,
                "after": d.after,
            }
            for d in c.differences
        ],
    }


def replay_json(report: ReplayReport) -> dict[str, Any]:
    return {
        "run_id": report.manifest["run_id"],
        "clean": report.clean,
        "policy_changed": report.policy_changed,
        "reproduced": _comparison_json(report.reproduced),
        "current": _comparison_json(report.current),
    }


def print_replay(console: Console, report: ReplayReport, shown: int = 20) -> None:
    m = report.manifest
    console.print(
        f"replay of run {m['run_id']} ({m['purpose']} as of {m['as_of']}, "
        f"{m['rows']['input']:,} records)",
        highlight=False,
    )
    for title, comp in (
        (f"as of its checkpoint ({comp_size(report.reproduced)} events)", report.reproduced),
        (f"with every event recorded since ({comp_size(report.current)} events)", report.current),
    ):
        if comp.total == 0:
            console.print(f"  {title}: [green]no differences[/]", highlight=False)
            continue
        console.print(f"  {title}: [red]{comp.total:,} records differ[/]", highlight=False)
        table = Table("record", "member", "before", "after")
        for d in comp.differences[:shown]:
            table.add_row(d.record_id, d.subject_id or "", d.before, d.after)
        console.print(table)
        if comp.total > shown:
            console.print(f"  … and {comp.total - shown:,} more (--json lists up to 1,000)")
    if report.policy_changed:
        console.print("  note: the policy in force at the run's as-of has changed since the run")


def comp_size(c: Comparison) -> str:
    return f"{c.ledger_size:,}"
