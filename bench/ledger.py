"""Ledger benchmark (DESIGN §8): bulk import, as-of snapshot and decisions.

Run from the repository root:

    .venv/bin/python bench/ledger.py [--events N] [--subjects M] [--pg URL | --pg none]

Each figure is printed beside a baseline measured in the same run (STYLE 15):

- import: the ledger's `import_events` (JSON parsing, validation, content hashing,
  idempotent append) against a bare `sqlite3` `executemany` of the very same rows,
  pre-built in memory, into an identical table with the same indexes and pragmas;
  on PostgreSQL, against a bare `COPY` of those rows into a copy of the table;
- snapshot: `list(ledger.snapshot(...))` for every subject (default engine, and
  `engine="sql"` where the ledger offers engines), `Ledger.snapshot_table` when present,
  and `list(ledger.decisions(...))`, against a bare one-pass `GROUP BY subject` over the
  same rows that reads only the (subject, at_us) index (the floor of any snapshot).

The events file is generated once per (N, M) into bench/out/ and reused. The 1-minute
load average is recorded with every figure: the machine may be shared.
"""

from __future__ import annotations

import argparse
import calendar
import hashlib
import inspect
import json
import os
import platform
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from random import Random
from typing import Any

import psycopg
from sqlalchemy import text

import consentgate
from consentgate.domain.policy_file import default_policy_text
from consentgate.domain.timeutil import to_micros
from consentgate.ledger.database import _sqlite_pragmas  # the ledger's own settings
from consentgate.ledger.rows import COLUMNS

OUT = Path(__file__).resolve().parent / "out"
DEFAULT_PG = "postgresql+psycopg://consentgate:consentgate@127.0.0.1:5432/consentgate_bench"
GENERATOR_VERSION = 1  # bump when the generated data changes, so the cache is rebuilt
AS_OF = datetime(2026, 1, 1, tzinfo=UTC)
PURPOSE = "ai_training"

# --- synthetic events (DESIGN §5) ------------------------------------------------------

_START = calendar.timegm((2023, 1, 1, 0, 0, 0))
_JOIN_END = calendar.timegm((2025, 7, 1, 0, 0, 0))
_END = calendar.timegm((2026, 1, 1, 0, 0, 0))  # exclusive: every event is in 2023-2025
_DAY = 86_400
_NOTICES = ((calendar.timegm((2024, 6, 26, 0, 0, 0)), "2024-06-26"),)
_REGIONS = {  # weight per region; None = a profile without a region (unknown)
    "US-CA": 9, "US-TX": 6, "US-NY": 5, "US-FL": 4, "US-WA": 2, "US-IL": 2,
    "DE": 12, "FR": 10, "GB": 10, "BR": 10, "IN": 15, None: 15,
}  # fmt: skip
_KINDS = (  # cumulative probability of each kind of follow-up event
    (0.34, "granted"),
    (0.56, "withdrawn"),
    (0.70, "refused"),
    (0.90, "gpc"),
    (0.995, "move"),
    (1.0, "erasure"),
)
_MOVES = tuple(region for region in _REGIONS if region)
_SOURCES = ("privacy_page", "settings", "signup_banner", "mobile_app")
_BORN_FIRST = date(1945, 1, 1).toordinal()
_BORN_LAST = date(2010, 12, 31).toordinal()  # some members are minors until 2028


def _clock() -> Callable[[int], str]:
    days = [date.fromordinal(date(2023, 1, 1).toordinal() + d).isoformat() for d in range(1096)]
    hms = [f"T{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}Z" for s in range(_DAY)]

    def stamp(t: int) -> str:
        d, s = divmod(t - _START, _DAY)
        return days[d] + hms[s]

    return stamp


def _follow_up(rng: Random, subject: str, at: str, t: int) -> str:
    r = rng.random()
    kind = next(name for bound, name in _KINDS if r < bound)
    head = f'{{"type":"%s","subject":"{subject}","at":"{at}"'
    if kind == "gpc":
        return head % "signal" + ',"signal":"gpc"}\n'
    if kind == "erasure":
        return head % "erasure" + "}\n"
    if kind == "move":
        return head % "profile" + f',"region":"{rng.choice(_MOVES)}"}}\n'
    notice = next((v for start, v in reversed(_NOTICES) if t >= start), None)
    extra = f',"notice_version":"{notice}"' if notice else ""
    source = rng.choice(_SOURCES)
    return (
        head % "consent"
        + f',"purpose":"ai_training","choice":"{kind}","source":"{source}"{extra}}}\n'
    )


def generate(path: Path, n_events: int, n_subjects: int, seed: int = 20260101) -> None:
    """Write `n_events` JSON lines about `n_subjects` members, in day order, atomically.

    Every member has a profile event (region, birth date) when they join; the other
    events are consent choices for ai_training, GPC signals, moves and a few erasures,
    each for a random member at a random instant after they joined.
    """
    if n_events < n_subjects:
        raise SystemExit(f"--events: expected at least --subjects ({n_subjects}), found {n_events}")
    rng = Random(seed)
    stamp = _clock()
    regions = rng.choices(list(_REGIONS), weights=list(_REGIONS.values()), k=n_subjects)
    buckets: list[list[str]] = [[] for _ in range((_END - _START) // _DAY)]
    ids = [f"u{(i * 2654435761) % 2**32:08x}" for i in range(n_subjects)]  # opaque, unique
    joined = [rng.randrange(_START, _JOIN_END) for _ in range(n_subjects)]
    for subject, t, region in zip(ids, joined, regions, strict=True):
        born = date.fromordinal(rng.randint(_BORN_FIRST, _BORN_LAST)).isoformat()
        where = f',"region":"{region}"' if region else ""
        line = f'{{"type":"profile","subject":"{subject}","at":"{stamp(t)}"{where}'
        buckets[(t - _START) // _DAY].append(line + f',"birth_date":"{born}"}}\n')
    for _ in range(n_events - n_subjects):
        i = rng.randrange(n_subjects)
        t = rng.randrange(joined[i] + 1, _END)
        buckets[(t - _START) // _DAY].append(_follow_up(rng, ids[i], stamp(t), t))
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for bucket in buckets:
            fh.write("".join(bucket))
    tmp.replace(path)


def events_file(n_events: int, n_subjects: int) -> Path:
    path = OUT / f"events-v{GENERATOR_VERSION}-{n_events}-{n_subjects}.jsonl"
    if path.exists():
        print(f"events: reusing {path}")
        return path
    OUT.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    generate(path, n_events, n_subjects)
    print(f"events: generated {path.name} in {time.perf_counter() - started:.1f} s")
    return path


# --- measuring -------------------------------------------------------------------------

Results = dict[str, dict[str, Any]]
Row = tuple[Any, ...]

_ASK: dict[str, Any] = {"purpose": PURPOSE, "at": AS_OF}
_UNIQUE = "id_key"  # the idempotency key (unique index ux_events_id_key)
_INSERT = (
    f"INSERT INTO events ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))}) "
    f"ON CONFLICT ({_UNIQUE}) DO NOTHING"
)
_DDL = (
    "SELECT sql FROM sqlite_master WHERE tbl_name = 'events' AND sql IS NOT NULL "
    "ORDER BY type = 'index', name"
)


def load() -> float:
    return round(os.getloadavg()[0], 2)


def timed(results: Results, key: str, fn: Callable[[], Any]) -> Any:
    """Run `fn`, record its wall time and the load average under `key`, return its value."""
    started = time.perf_counter()
    value = fn()
    seconds = time.perf_counter() - started
    results[key] = {"seconds": round(seconds, 3), "load": load()}
    print(f"  {key}: {seconds:.2f} s (load {load():.2f})", flush=True)
    return value


def bench_policy() -> str:
    """The default policy, in force since 2020, plus the disclosure notice of the data."""
    text = default_policy_text().replace(
        'version = "default-1"', 'version = "bench-1"\neffective = 2020-01-01T00:00:00Z'
    )
    notice = '\n[[notices]]\nversion = "{0}"\neffective = {0}T00:00:00Z\npurposes = ["{1}"]\n'
    return text + "".join(notice.format(v, PURPOSE) for _, v in _NOTICES)


def measure_import(results: Results, prefix: str, ledger: consentgate.Ledger, path: Path) -> None:
    done = timed(results, f"{prefix}.import", lambda: ledger.import_events(path))
    entry = results[f"{prefix}.import"]
    entry.update(read=done.read, added=done.added, rate=round(done.read / entry["seconds"]))
    print(f"  {prefix}.import: {done.read:,} read, {done.added:,} added, {entry['rate']:,}/s")


def measure_queries(results: Results, prefix: str, ledger: consentgate.Ledger) -> None:
    """Snapshot (the default engine, and the portable SQL query when the ledger offers a
    choice), decisions, and the floor of any snapshot: a bare GROUP BY subject over the
    same events that reads only the (subject, at_us) index."""
    engines = ["default"]
    if "engine" in inspect.signature(ledger.snapshot).parameters:
        engines.append("sql")
    for engine in engines:
        key = f"{prefix}.snapshot" + ("" if engine == "default" else f"_{engine}")
        ask = _ASK if engine == "default" else {**_ASK, "engine": engine}
        facts = timed(results, key, lambda ask=ask: list(ledger.snapshot(**ask)))
        results[key]["subjects"] = len(facts)
        del facts
    if hasattr(ledger, "snapshot_table"):  # the same facts as one Arrow table (for the gate)
        table = timed(results, f"{prefix}.snapshot_table", lambda: ledger.snapshot_table(**_ASK))
        results[f"{prefix}.snapshot_table"]["subjects"] = table.num_rows
        del table
    decided = timed(results, f"{prefix}.decisions", lambda: list(ledger.decisions(**_ASK)))
    reasons: dict[str, int] = {}
    for _, decision in decided:
        reasons[decision.reason] = reasons.get(decision.reason, 0) + 1
    results[f"{prefix}.decisions"]["reasons"] = dict(sorted(reasons.items()))
    del decided
    floor = text(
        "SELECT subject, COUNT(*), MAX(at_us) FROM events WHERE at_us <= :t GROUP BY subject"
    )
    with ledger.engine.connect() as conn:
        timed(
            results,
            f"{prefix}.group_by",
            lambda: conn.execute(floor, {"t": to_micros(AS_OF)}).all(),
        )


def bench_sqlite(results: Results, events: Path) -> list[Row]:
    """Ledger import and queries on a fresh SQLite file; returns the stored rows."""
    db = OUT / "bench.db"
    ledger = consentgate.open(f"sqlite:///{_fresh(db)}")
    ledger.apply_policy(bench_policy())
    measure_import(results, "sqlite", ledger, events)
    measure_queries(results, "sqlite", ledger)
    ledger.close()
    with sqlite3.connect(db) as con:
        ddl = [sql for (sql,) in con.execute(_DDL)]
        rows = con.execute(f"SELECT {', '.join(COLUMNS)} FROM events ORDER BY seq").fetchall()
    con.close()
    bench_sqlite_floor(results, ddl, rows)
    return rows


def bench_sqlite_floor(results: Results, ddl: list[str], rows: list[Row]) -> None:
    """Bare `executemany` of the ledger's rows into an identical table (same DDL, pragmas)."""
    con = sqlite3.connect(_fresh(OUT / "floor.db"), isolation_level=None)
    _sqlite_pragmas(con, None)  # the ledger's own connection settings: like for like
    for sql in ddl:
        con.execute(sql)

    def insert() -> None:
        con.execute("BEGIN")
        con.executemany(_INSERT, rows)
        con.execute("COMMIT")

    timed(results, "sqlite.floor", insert)
    results["sqlite.floor"]["rate"] = round(len(rows) / results["sqlite.floor"]["seconds"])
    con.close()


def _fresh(path: Path) -> Path:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return path


def _conninfo(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def pg_unreachable(url: str) -> str | None:
    """Why the PostgreSQL server at `url` cannot be used, or None when it can."""
    try:
        with psycopg.connect(_conninfo(url), connect_timeout=3) as con:
            con.execute("SELECT 1")
    except psycopg.Error as err:
        return str(err).strip().splitlines()[0]
    return None


def bench_postgres(results: Results, url: str, events: Path, rows: list[Row]) -> None:
    """Ledger import and queries on an emptied PostgreSQL database, then a bare COPY."""
    with psycopg.connect(_conninfo(url), autocommit=True) as con:
        con.execute("DROP SCHEMA public CASCADE")  # every ledger table, whatever the version
        con.execute("CREATE SCHEMA public")
    ledger = consentgate.open(url)
    ledger.apply_policy(bench_policy())
    measure_import(results, "postgres", ledger, events)
    with ledger.engine.begin() as conn:  # what autovacuum does soon after a bulk load; untimed
        conn.exec_driver_sql("ANALYZE events")
    measure_queries(results, "postgres", ledger)
    ledger.close()
    with psycopg.connect(_conninfo(url)) as con:
        con.execute("CREATE TABLE events_floor (LIKE events INCLUDING ALL)")
        con.commit()

        def copy() -> None:
            with con.cursor().copy(f"COPY events_floor ({', '.join(COLUMNS)}) FROM STDIN") as cp:
                for row in rows:
                    cp.write_row(row)
            con.commit()

        timed(results, "postgres.floor", copy)
        con.execute("DROP TABLE events_floor")
        con.commit()
    results["postgres.floor"]["rate"] = round(len(rows) / results["postgres.floor"]["seconds"])


# --- report ----------------------------------------------------------------------------


def machine(pg_url: str | None, revision: str) -> dict[str, str]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next(
        (ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines() if "model name" in ln), "?"
    )
    mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    facts = {
        "cpu": model,
        "cores": f"{os.cpu_count()} (usable: {len(os.sched_getaffinity(0))})",
        "ram": f"{mem_kib / 2**20:.1f} GiB",
        "os": platform.platform(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "consentgate": f"{consentgate.__version__} at {revision}",
    }
    if pg_url:
        with psycopg.connect(_conninfo(pg_url)) as con:
            shown = [
                str((con.execute(f"SHOW {name}").fetchone() or ("?",))[0])
                for name in ("server_version", "shared_buffers", "work_mem", "max_wal_size")
            ]
        facts["postgresql"] = "{} (shared_buffers {}, work_mem {}, max_wal_size {})".format(*shown)
    return facts


def _revision() -> str:
    """The commit measured, plus a digest of any uncommitted changes under src/."""
    git = ["git", "-C", str(OUT.parent.parent)]
    try:
        head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True)
        diff = subprocess.run([*git, "diff", "HEAD", "--", "src"], capture_output=True)
    except OSError:
        return "unknown commit"
    changes = f" + uncommitted src/ changes {hashlib.sha256(diff.stdout).hexdigest()[:8]}"
    return head.stdout.decode().strip() + (changes if diff.stdout else "")


SNAPSHOT_TARGET_S = 10  # DESIGN §8: as-of snapshot of 1 M subjects from 5 M events
IMPORT_TARGETS = {"sqlite": 50_000, "postgres": 30_000}  # events/s (PostgreSQL: team goal)
FLOORS = {"sqlite": "bare executemany", "postgres": "bare COPY"}
TIMED = (  # (result key, label, held to the snapshot target?)
    ("snapshot", "snapshot ({subjects:,} subjects)", True),
    ("snapshot_sql", "snapshot, engine=sql", True),
    ("decisions", "decisions (all subjects)", True),
    ("snapshot_table", "snapshot_table (Arrow)", False),
)


def verdicts(r: Results) -> list[tuple[str, str, str, str, str]]:
    """(metric, measured, target, verdict, load) rows of the summary table."""
    table: list[tuple[str, str, str, str, str]] = []

    def add(name: str, key: str, value: str, target: str = "-", ok: bool | None = None) -> None:
        verdict = "-" if ok is None else ("pass" if ok else "FAIL")
        table.append((name, value, target, verdict, f"{r[key]['load']:.2f}"))

    for db, goal in IMPORT_TARGETS.items():
        if f"{db}.import" not in r:
            continue
        imp, base, grp = (r[f"{db}.{k}"] for k in ("import", "floor", "group_by"))
        rate = f"{imp['rate']:,} events/s"
        add(f"{db} import", f"{db}.import", rate, f">= {goal:,} events/s", imp["rate"] >= goal)
        add(f"{db} floor: {FLOORS[db]}", f"{db}.floor", f"{base['rate']:,} events/s", "baseline")
        ratio = f"{imp['seconds'] / base['seconds']:.1f}x"
        add(f"{db} import / floor (time)", f"{db}.import", ratio)
        for key, label, held in TIMED:
            if m := r.get(f"{db}.{key}"):
                secs, name = m["seconds"], f"{db} " + label.format(subjects=m.get("subjects", 0))
                target = f"<= {SNAPSHOT_TARGET_S} s" if held else "-"
                add(
                    name,
                    f"{db}.{key}",
                    f"{secs:.1f} s",
                    target,
                    secs <= SNAPSHOT_TARGET_S if held else None,
                )
        add(f"{db} floor: bare GROUP BY", f"{db}.group_by", f"{grp['seconds']:.1f} s", "baseline")
        for key in ("snapshot", "snapshot_sql"):
            if m := r.get(f"{db}.{key}"):
                ratio = f"{m['seconds'] / grp['seconds']:.1f}x"
                add(f"{db} {key} / GROUP BY", f"{db}.{key}", ratio)
    return table


def print_report(facts: dict[str, str], table: list[tuple[str, ...]]) -> None:
    print("\nmachine:")
    for name, value in facts.items():
        print(f"  {name:<12} {value}")
    header = ("metric", "measured", "target", "verdict", "load 1m")
    widths = [max(len(row[i]) for row in [header, *table]) for i in range(len(header))]
    print()
    for row in [header, tuple("-" * w for w in widths), *table]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5_000_000)
    parser.add_argument("--subjects", type=int, default=1_000_000)
    parser.add_argument(
        "--pg", default=None, help=f"PostgreSQL URL (default {DEFAULT_PG}); 'none' skips"
    )
    args = parser.parse_args(argv)
    print(
        f"ledger benchmark: {args.events:,} events, {args.subjects:,} subjects; load {load():.2f}"
    )
    revision = _revision()  # worker processes load the source again: it must not change
    events = events_file(args.events, args.subjects)
    results: Results = {
        "run": {
            "events": args.events,
            "subjects": args.subjects,
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
            "load": load(),
        }
    }
    rows = bench_sqlite(results, events)
    pg_url = None if args.pg == "none" else (args.pg or DEFAULT_PG)
    if pg_url and (why := pg_unreachable(pg_url)):
        print(f"postgres: skipped, {pg_url} is not reachable: {why}")
        pg_url = None
    if pg_url:
        bench_postgres(results, pg_url, events, rows)
    del rows
    facts = machine(pg_url, revision)
    if _revision() != revision:
        facts["consentgate"] += f" (changed during the run, now {_revision()}: run again)"
    table = verdicts(results)
    print_report(facts, table)
    (OUT / "ledger-results.json").write_text(json.dumps({"machine": facts, **results}, indent=2))
    if (args.events, args.subjects) != (5_000_000, 1_000_000):
        print(
            "\nnote: the targets of DESIGN §8 are stated for 5,000,000 events / 1,000,000 subjects"
        )
    return 0 if all(row[3] != "FAIL" for row in table) else 1


if __name__ == "__main__":
    sys.exit(main())
