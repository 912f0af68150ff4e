"""`consentgate demo`: a synthetic platform end to end, in under a minute.

It writes a population of members as events, a policy with the platform's notice
history, imports both into a fresh SQLite ledger and shows, for `ai_training`,
who may be used and why, by region, at two dates; then it generates a corpus of a
million member posts and gates it, showing the records kept and excluded by reason.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

from consentgate.domain.decide import REASONS
from consentgate.domain.facts import evaluator
from consentgate.domain.policy_file import default_policy_text
from consentgate.domain.regions import EEA
from consentgate.gate.options import Columns
from consentgate.gate.report import reason_table
from consentgate.gate.run import gate
from consentgate.ledger import Ledger, open_ledger
from consentgate.ledger.tlog import create_signing_key, load_verifier
from consentgate.synthetic import (
    NOTICE_DISCLOSURE,
    NOTICE_RECONSENT,
    write_events_jsonl,
    write_posts_parquet,
)

__all__ = ["DEMO_DATES", "demo_policy_text", "region_group", "run_demo"]

PURPOSE = "ai_training"
# Inside the 30-day notice window of the disclosure, and after the re-consent notice.
DEMO_DATES = (datetime(2024, 7, 15, tzinfo=UTC), datetime(2025, 10, 1, tzinfo=UTC))
GATE_AT = DEMO_DATES[1]
POSTS = 1_000_000  # synthetic member posts the demo gates
GROUPS = ("US", "EEA", "GB", "CH", "CA", "BR", "IN", "other", "unknown")


def demo_policy_text() -> str:
    """The default policy plus the demo platform's notice history, in force since 2019."""
    head = 'version = "default-1"'
    text = default_policy_text()
    if head not in text:
        raise RuntimeError("the default policy no longer starts with its version line")
    text = text.replace(head, 'version = "demo-1"\neffective = 2019-01-01T00:00:00Z', 1)
    return text + (
        "\n[[notices]]\n"
        'version = "2019-01-01"\n'
        "effective = 2019-01-01T00:00:00Z\n"
        "purposes = []                         # the original privacy policy: no AI use\n"
        "\n[[notices]]\n"
        f'version = "{NOTICE_DISCLOSURE}"\n'
        f"effective = {NOTICE_DISCLOSURE}T00:00:00Z\n"
        'purposes = ["ai_training", "genai_features"]\n'
        "\n[[notices]]\n"
        f'version = "{NOTICE_RECONSENT}"\n'
        f"effective = {NOTICE_RECONSENT}T00:00:00Z\n"
        'purposes = ["ai_training", "genai_features"]\n'
        'reconsent = ["ai_training"]            # material change: earlier grants lapse\n'
    )


def region_group(region: str | None) -> str:
    """The display group of a region code."""
    if region is None:
        return "unknown"
    country = region.split("-", 1)[0]
    if country in EEA:
        return "EEA"
    return country if country in GROUPS else "other"


def decision_counts(ledger: Ledger, at: datetime) -> Counter[tuple[str, str]]:
    """(reason, region group) -> subjects, from the ledger's SQL snapshot as of `at`."""
    policy = ledger.policy_at(at)
    counts: Counter[tuple[str, str]] = Counter()
    decide_facts = evaluator(policy, PURPOSE, at)
    for facts in ledger.snapshot(purpose=PURPOSE, at=at):
        group = region_group(facts.region_latest or facts.region_first)
        counts[decide_facts(facts).reason, group] += 1
    return counts


def _table(counts: Counter[tuple[str, str]], at: datetime) -> Table:
    total = sum(counts.values())
    allowed = sum(
        n for (reason, _), n in counts.items() if reason in ("consented", "default_allowed")
    )
    table = Table(
        title=f"{PURPOSE} decisions at {at:%Y-%m-%d}: {allowed:,} of {total:,} members "
        f"allowed ({allowed / max(total, 1):.1%})",
        title_justify="left",
    )
    table.add_column("reason")
    for group in GROUPS:
        table.add_column(group, justify="right")
    table.add_column("total", justify="right")
    for reason in REASONS:
        row = [counts.get((reason, g), 0) for g in GROUPS]
        if any(row):
            style = "green" if reason in ("consented", "default_allowed") else None
            table.add_row(reason, *(f"{n:,}" for n in row), f"{sum(row):,}", style=style)
    return table


def run_demo(*, workdir: Path, members: int, seed: int, console: Console) -> None:
    started = time.perf_counter()
    workdir.mkdir(parents=True, exist_ok=True)
    db_path = workdir / "consentgate.db"
    key_path = workdir / "signing.key"
    for stale in (db_path, Path(f"{db_path}-wal"), key_path, Path(f"{key_path}.pub")):
        stale.unlink(missing_ok=True)
    Path(f"{key_path}.checkpoints").unlink(missing_ok=True)
    events_path = workdir / "events.jsonl"
    policy_path = workdir / "policy.toml"
    count = write_events_jsonl(events_path, members, seed=seed)
    policy_path.write_text(demo_policy_text(), "utf-8")
    console.print(
        f"[bold]1.[/] wrote {count:,} events of {members:,} synthetic members to {events_path}"
    )

    url = f"sqlite:///{db_path}"
    create_signing_key(key_path)
    ledger = open_ledger(url, signing_key=key_path)
    applied = ledger.apply_policy(policy_path.read_text("utf-8"))
    console.print(
        f"[bold]2.[/] applied {policy_path} (policy {applied.policy.version}; notices "
        + ", ".join(n.version for n in applied.policy.notices)
        + ")"
    )
    result = ledger.import_events(events_path)
    console.print(f"[bold]3.[/] imported {result.added:,} events into {url}")
    note = ledger.checkpoint()
    report = ledger.verify(verifier=load_verifier(f"{key_path}.pub"), external=[note])
    status = "verified" if report.ok else f"NOT VERIFIED ({report.first_bad})"
    console.print(
        f"[bold]4.[/] signed checkpoint at size {report.events:,} "
        f"({ledger.checkpoint_log}); hash chain and checkpoints {status} "
        f"in {report.seconds:.1f} s"
    )
    for at in DEMO_DATES:
        console.print()
        console.print(_table(decision_counts(ledger, at), at))
    console.print()
    posts_dir = workdir / "posts"
    run_dir = workdir / "gate-run"
    n_posts = write_posts_parquet(posts_dir, members, POSTS, seed=seed)
    console.print(f"[bold]5.[/] wrote {n_posts:,} synthetic member posts to {posts_dir}/")
    gated = gate(
        posts_dir,
        ledger=ledger,
        purpose=PURPOSE,
        as_of=GATE_AT,
        out=run_dir,
        columns=Columns(id="post_id"),
        overwrite=True,
    )
    m = gated.manifest
    console.print(
        f"[bold]6.[/] gated them for {PURPOSE} as of {m['as_of']}: kept {m['rows']['kept']:,}, "
        f"excluded {m['rows']['excluded']:,}, against signed checkpoint {m['ledger']['size']:,} "
        f"-> {run_dir}/"
    )
    console.print(reason_table(m))
    console.print()
    console.print(f"done in {time.perf_counter() - started:.1f} s. Try next:")
    db = f"--db {url} --signing-key {key_path}"
    for cmd in (
        f"consentgate {db} gate --replay {run_dir}/manifest.json",
        f"consentgate {db} gate {posts_dir} --purpose ai_training --as-of 2024-07-15T00:00:00Z "
        f"--id-col post_id --out {workdir}/gate-2024",
        f"consentgate {db} verify --checkpoint {key_path}.checkpoints",
        f"consentgate {db} prove --subject m000001 --out {workdir}/proof.json",
        f"consentgate {db} verify-proof {workdir}/proof.json",
        f"consentgate {db} decide m000001 --purpose ai_training --at 2025-10-01T00:00:00Z",
        f"consentgate {db} history m000001",
        f"consentgate {db} policy show",
        f"consentgate {db} events import {events_path}   # again: adds nothing",
    ):
        console.print(f"  .venv/bin/{cmd}", highlight=False, markup=False)
