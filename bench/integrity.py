"""Integrity benchmark (issue: tamper-evident ledger; DESIGN §8): what the hash chain
costs on append, and how fast `verify` re-computes it.

Run from the repository root:

    .venv/bin/python bench/integrity.py [--events N] [--subjects M] [--pg URL | --pg none]

Same run, same events file (generated once by bench/ledger.py's generator):

- append: `import_events` into a fresh ledger (parse, validate, seal personal fields,
  hash chain, Merkle frontier, one transaction) against the very same import with the
  chain hashing switched off (`Appender(hashing=False)`: no entry encoding, no
  SHA-256, no Merkle), on the same backend. Target: hashed <= 1.3 x plain.
- verify: `Ledger.verify()` of the hashed ledger (chain, Merkle roots of the stored
  checkpoints, sealed personal fields, pseudonyms). Target: >= 200,000 events/s on
  SQLite.

Prints the machine and a table; writes bench/out/integrity-results.json; exits 1 when
a target is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parent))
import consentgate
import ledger as ledger_bench
from consentgate.ledger import walk
from consentgate.ledger.database import WRITE
from consentgate.ledger.importer import import_stream

OUT = ledger_bench.OUT
APPEND_RATIO_TARGET = 1.3
VERIFY_TARGET = 200_000  # events/s on SQLite


def fresh(url: str) -> str:
    if url.startswith("sqlite"):
        path = Path(url.split("///", 1)[1])
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        return url
    engine = consentgate.ledger.database.connect(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    return url


def append(url: str, events: Path, *, hashing: bool) -> dict[str, Any]:
    """Import `events` into a fresh ledger at `url`, hashing on or off."""
    ledger = consentgate.open(fresh(url))
    ledger.apply_policy(ledger_bench.bench_policy())
    purposes = ledger.known_purposes()
    started = time.perf_counter()
    with open(events, "rb") as fh, ledger.engine.connect() as conn:
        conn.execution_options(**WRITE)
        with conn.begin():
            result, _ = import_stream(
                conn,
                fh,
                purposes=purposes,
                secret=ledger.secret,
                name=str(events),
                size_hint=os.fstat(fh.fileno()).st_size,
                hashing=hashing,
            )
    seconds = time.perf_counter() - started
    ledger.close()
    rate = round(result.added / seconds)
    label = "hashed" if hashing else "plain"
    load = ledger_bench.load()
    print(f"  {label} append: {result.added:,} events in {seconds:.1f} s ({rate:,}/s, load {load})")
    return {"seconds": round(seconds, 3), "events": result.added, "rate": rate, "load": load}


def verify(url: str, *, python: bool = False) -> dict[str, Any]:
    """`Ledger.verify()`; with `python`, the Python walk alone (no compiled walk),
    in this process and in the worker processes it starts."""
    saved = walk._native
    if python:
        os.environ[walk.NO_NATIVE_ENV] = "1"
        walk._native = None
    try:
        ledger = consentgate.open(url)
        report = ledger.verify()
        ledger.close()
    finally:
        os.environ.pop(walk.NO_NATIVE_ENV, None)
        walk._native = saved
    rate = round(report.events / report.seconds)
    label = "verify, Python walk" if python else "verify"
    print(
        f"  {label}: {report.events:,} events in {report.seconds:.1f} s ({rate:,}/s, "
        f"ok={report.ok}, load {ledger_bench.load()})"
    )
    if not report.ok:
        print(f"  verify problems: {[str(p) for p in report.problems[:3]]}")
    return {
        "seconds": round(report.seconds, 3),
        "events": report.events,
        "rate": rate,
        "ok": report.ok,
        "load": ledger_bench.load(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--subjects", type=int, default=200_000)
    parser.add_argument("--pg", default=None, help="PostgreSQL URL; 'none' skips")
    args = parser.parse_args(argv)
    print(f"integrity benchmark: {args.events:,} events, {args.subjects:,} subjects")
    revision = ledger_bench._revision()
    events = ledger_bench.events_file(args.events, args.subjects)
    urls = {"sqlite": f"sqlite:///{OUT / 'integrity.db'}"}
    pg = None if args.pg == "none" else (args.pg or ledger_bench.DEFAULT_PG)
    if pg and (why := ledger_bench.pg_unreachable(pg)):
        print(f"postgres: skipped, {pg} is not reachable: {why}")
        pg = None
    if pg:
        urls["postgres"] = pg
    results: dict[str, Any] = {"run": {"events": args.events, "subjects": args.subjects}}
    table: list[tuple[str, str, str, str, str]] = []
    for db, url in urls.items():
        print(f"{db}:")
        plain = append(url, events, hashing=False)
        hashed = append(url, events, hashing=True)
        checked = verify(url)
        baseline = verify(url, python=True)
        results[db] = {"plain": plain, "hashed": hashed, "verify": checked, "python": baseline}
        ratio = hashed["seconds"] / plain["seconds"]
        verdict = "pass" if ratio <= APPEND_RATIO_TARGET else "FAIL"
        table += [
            (f"{db} append, plain", f"{plain['rate']:,} events/s", "baseline", "-",
             f"{plain['load']}"),
            (f"{db} append, hash chain", f"{hashed['rate']:,} events/s", "-", "-",
             f"{hashed['load']}"),
            (f"{db} hashed / plain (time)", f"{ratio:.2f}x", f"<= {APPEND_RATIO_TARGET}x",
             verdict, f"{hashed['load']}"),
        ]  # fmt: skip
        target = f">= {VERIFY_TARGET:,}/s" if db == "sqlite" else "-"
        ok = checked["ok"] and (db != "sqlite" or checked["rate"] >= VERIFY_TARGET)
        table += [
            (f"{db} verify, Python walk only", f"{baseline['rate']:,} events/s", "baseline",
             "-", f"{baseline['load']}"),
            (f"{db} verify" + ("" if db == "sqlite" else " (Python walk: nothing compiled)"),
             f"{checked['rate']:,} events/s", target, "pass" if ok else "FAIL",
             f"{checked['load']}"),
        ]  # fmt: skip
        if db == "sqlite":  # the compiled walk reads SQLite files only
            table.append(
                (f"{db} verify / Python walk (speed)",
                 f"{checked['rate'] / baseline['rate']:.2f}x", "-", "-", f"{checked['load']}")
            )  # fmt: skip
    facts = ledger_bench.machine(pg, revision)
    ledger_bench.print_report(facts, table)
    (OUT / "integrity-results.json").write_text(json.dumps({"machine": facts, **results}, indent=2))
    return 0 if all(row[3] != "FAIL" for row in table) else 1


if __name__ == "__main__":
    sys.exit(main())
