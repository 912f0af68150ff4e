"""Gate benchmark (DESIGN §8, issue 4): the DuckDB gate against its floor and against
the Hugging Face `datasets` route, on a generated corpus.

Run from the repository root:

    .venv/bin/python bench/gate.py [--rows N] [--sizes A,B,C] [--hf-rows M] [--skip-hf]

Each figure is printed beside a baseline measured in the same run (STYLE 15):

- gate: `consentgate.gate(...)` end to end, everything of a run included (ledger
  snapshot, decisions, exclusions, contributors, kept data, SHA-256 of every input
  and output, manifest), in a fresh process whose peak RSS is recorded;
- floor: a plain DuckDB `COPY` of the very same kept rows from the same input to
  Parquet, given the excluded positions for free (the cheapest way DuckDB writes
  exactly those rows); also the same COPY filtered by a given set of allowed
  subjects (no record-level rules; writes a few more rows);
- Hugging Face: `Dataset.from_parquet` -> `filter` with a Python set of allowed
  subjects (given for free) -> `to_parquet`, on the first `--hf-rows` rows (rows/s
  compared, the route being far too slow for the whole corpus);
- linearity: gate wall time at three corpus sizes.

The ledger is bench/ledger.py's (5 M events, 1 M members, bench/out/bench.db),
built there if missing; corpora are generated once into bench/out/ by DuckDB.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

OUT = Path(__file__).resolve().parent / "out"
ROOT = Path(__file__).resolve().parent.parent
LEDGER_DB = OUT / "bench.db"
KEY = OUT / "gate.key"
AS_OF = datetime(2026, 1, 1, tzinfo=UTC)
PURPOSE = "ai_training"
CORPUS_VERSION = 1
N_SUBJECTS = 1_000_000
N_EVENTS = 5_000_000


def corpus(rows: int) -> Path:
    """A Parquet directory of `rows` member posts (~150-byte text), made once."""
    target = OUT / f"corpus-v{CORPUS_VERSION}-{rows}"
    if target.exists():
        return target
    tmp = OUT / f".{target.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    con.execute("SET preserve_insertion_order = false")
    # Subjects as bench/ledger.py names them, plus 1% strangers; sources with private
    # messages and support chats; 2% sensitive; times from 2023 to 2025.
    # Text: a few words and 96 random bytes in base64 (~150 bytes, compresses little,
    # so the Parquet is about as large as the text).
    words = "['the', 'a', 'photo', 'today', 'great', 'team', 'launch', 'thanks']"
    rnd = "to_base64(unhex(sha256(CAST(i * 3 + {k} AS VARCHAR))))"
    per_file = 2_000_000
    for start in range(0, rows, per_file):
        n = min(per_file, rows - start)
        con.execute(f"""
COPY (
  SELECT 'p' || (i) AS post_id,
    CASE WHEN hash(i, 1) % 100 = 0 THEN 'stranger' || (hash(i, 2) % 10000)
         ELSE 'u' || lpad(lower(hex(
           (((hash(i, 3) % {N_SUBJECTS}) * 2654435761) % 4294967296))), 8, '0')
    END AS member_id,
    make_timestamptz(1672531200000000 + CAST(hash(i, 4) % 94608000000000 AS BIGINT)) AS created_at,
    ['post','post','post','comment','comment','private_message','support_chat']
      [CAST(1 + hash(i, 5) % 7 AS BIGINT)]
      AS source,
    hash(i, 6) % 50 = 0 AS sensitive,
    {words}[CAST(1 + hash(i, 7) % 8 AS BIGINT)] || ' ' || {rnd.format(k=0)} || ' '
      || {words}[CAST(1 + hash(i, 8) % 8 AS BIGINT)] || ' ' || {rnd.format(k=1)} || ' '
      || {rnd.format(k=2)} AS text
  FROM range({start}, {start + n}) t(i)
) TO '{tmp}/part-{start // per_file:05d}.parquet' (FORMAT parquet)
""")
    con.close()
    tmp.rename(target)
    return target


def ensure_ledger() -> None:
    """bench/ledger.py's ledger with a signing key and a checkpoint at its head."""
    import consentgate
    from consentgate.ledger import tlog

    if not LEDGER_DB.exists():
        subprocess.run(
            [sys.executable, str(ROOT / "bench" / "ledger.py"), "--pg", "none", "--keep-db"],
            check=True,
        )
    if not KEY.exists():
        tlog.create_signing_key(KEY)
    with consentgate.open(f"sqlite:///{LEDGER_DB}", signing_key=KEY) as ledger:
        ledger.checkpoint()


def run_gate(data: Path, out: Path) -> dict[str, Any]:
    """One gate run in a fresh process: wall time, peak RSS, manifest."""
    shutil.rmtree(out, ignore_errors=True)
    code = (
        "import json, sys, time, resource\n"
        "from datetime import datetime\n"
        "from consentgate.gate import Columns, gate\n"
        "t = time.perf_counter()\n"
        f"r = gate({str(data)!r}, ledger={f'sqlite:///{LEDGER_DB}'!r}, purpose={PURPOSE!r},\n"
        f"  as_of=datetime.fromisoformat({AS_OF.isoformat()!r}), out={str(out)!r},\n"
        f"  signing_key={str(KEY)!r}, columns=Columns(subject='member_id', time='created_at',"
        " id='post_id'))\n"
        "wall = time.perf_counter() - t\n"
        "rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024\n"
        "print(json.dumps({'wall': wall, 'rss': rss, 'manifest': r.manifest}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=ROOT
    )
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def floor_copy(data: Path, run: Path, scratch: Path) -> dict[str, float]:
    """Plain DuckDB COPYs of the kept rows, given what to keep for free."""
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    con.execute("SET preserve_insertion_order = false")
    files = sorted(str(p) for p in data.glob("*.parquet"))
    listed = "[" + ", ".join(f"'{f}'" for f in files) + "]"
    # Given: the excluded posts' positions and the allowed members (not timed).
    con.execute(f"""
CREATE TABLE excluded AS
SELECT (CAST(list_position({listed}, filename) - 1 AS BIGINT) << 40) | file_row_number AS pos
FROM read_parquet({listed}, filename=true, file_row_number=true)
SEMI JOIN read_parquet('{run}/exclusions.parquet') e ON e.record_id = post_id
""")
    con.execute(f"CREATE TABLE allowed AS SELECT * FROM read_parquet('{run}/contributors.parquet')")
    out: dict[str, float] = {}
    t = time.perf_counter()
    con.execute(f"""
COPY (SELECT t.* EXCLUDE (filename, file_row_number)
      FROM read_parquet({listed}, filename=true, file_row_number=true) t
      ANTI JOIN excluded x
        ON x.pos = (CAST(list_position({listed}, t.filename) - 1 AS BIGINT) << 40)
                   | t.file_row_number)
TO '{scratch}/kept.parquet' (FORMAT parquet)
""")
    out["copy_positions"] = time.perf_counter() - t
    out["copy_positions_rows"] = con.execute(
        f"SELECT count(*) FROM '{scratch}/kept.parquet'"
    ).fetchone()[0]  # type: ignore[index]
    t = time.perf_counter()
    con.execute(f"""
COPY (SELECT * FROM read_parquet({listed}) SEMI JOIN allowed a ON a.subject_id = member_id)
TO '{scratch}/kept-subjects.parquet' (FORMAT parquet)
""")
    out["copy_subjects"] = time.perf_counter() - t
    out["copy_subjects_rows"] = con.execute(
        f"SELECT count(*) FROM '{scratch}/kept-subjects.parquet'"
    ).fetchone()[0]  # type: ignore[index]
    con.close()
    shutil.rmtree(scratch, ignore_errors=True)
    return out


def hf_route(data: Path, run: Path, rows: int, scratch: Path) -> dict[str, float]:
    """What a user would write by hand with `datasets`: load the Parquet, filter
    with a Python set of allowed members (given for free), save as Parquet."""
    from datasets import Dataset, disable_progress_bars

    disable_progress_bars()
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    files = sorted(str(p) for p in data.glob("*.parquet"))
    sample = scratch / "sample.parquet"
    con.execute(
        f"COPY (SELECT * FROM read_parquet({files}) LIMIT {rows}) TO '{sample}' (FORMAT parquet)"
    )
    allowed = {
        s for (s,) in con.execute(f"SELECT subject_id FROM '{run}/contributors.parquet'").fetchall()
    }
    con.close()
    t = time.perf_counter()
    ds = Dataset.from_parquet(str(sample), cache_dir=str(scratch / "cache"))
    kept = ds.filter(lambda row: row["member_id"] in allowed)
    kept.to_parquet(str(scratch / "kept.parquet"))
    wall = time.perf_counter() - t
    shutil.rmtree(scratch, ignore_errors=True)
    return {"rows": rows, "wall": wall, "rows_per_s": rows / wall, "kept": len(kept)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20_000_000)
    parser.add_argument("--sizes", default="5000000,10000000", help="smaller sizes for linearity")
    parser.add_argument("--hf-rows", type=int, default=1_000_000)
    parser.add_argument("--skip-hf", action="store_true")
    args = parser.parse_args(argv)
    ensure_ledger()
    results: dict[str, Any] = {
        "machine": f"{platform.node()} {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "duckdb": duckdb.__version__,
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "load_before": os.getloadavg()[0],
    }
    data = corpus(args.rows)
    size = sum(p.stat().st_size for p in data.glob("*.parquet"))
    print(f"corpus: {args.rows:,} rows, {size / 1e9:.2f} GB Parquet ({data})", flush=True)
    run = run_gate(data, OUT / "gate-run")
    m = run["manifest"]
    print(
        f"gate: {run['wall']:.1f} s ({args.rows / run['wall']:,.0f} rows/s), peak RSS "
        f"{run['rss'] / 2**20:.0f} MiB, kept {m['rows']['kept']:,}",
        flush=True,
    )
    floor = floor_copy(data, OUT / "gate-run", OUT / "floor-scratch")
    best = min(floor["copy_positions"], floor["copy_subjects"])
    print(
        f"floor: COPY by positions {floor['copy_positions']:.1f} s "
        f"({floor['copy_positions_rows']:,} rows), "
        f"by subjects {floor['copy_subjects']:.1f} s ({floor['copy_subjects_rows']:,} rows)",
        flush=True,
    )
    ratio = run["wall"] / best
    print(f"ratio gate / fastest COPY: {ratio:.2f} (target <= 1.25)", flush=True)
    results.update(rows=args.rows, parquet_bytes=size, gate=run, floor=floor, ratio=ratio)
    if not args.skip_hf:
        hf = hf_route(data, OUT / "gate-run", args.hf_rows, OUT / "hf-scratch")
        speed = (args.rows / run["wall"]) / hf["rows_per_s"]
        print(
            f"Hugging Face route: {hf['rows']:,} rows in {hf['wall']:.1f} s "
            f"({hf['rows_per_s']:,.0f} rows/s);"
            f" gate is {speed:.0f}x faster per row (target >= 30)",
            flush=True,
        )
        results.update(hf=hf, hf_speedup=speed)
    linear = []
    for n in [int(x) for x in args.sizes.split(",") if x]:
        part = run_gate(corpus(n), OUT / "gate-run-size")
        linear.append({"rows": n, "wall": part["wall"], "rss": part["rss"]})
        print(
            f"linearity: {n:,} rows {part['wall']:.1f} s ({n / part['wall']:,.0f} rows/s)",
            flush=True,
        )
    linear.append({"rows": args.rows, "wall": run["wall"], "rss": run["rss"]})
    results["linearity"] = linear
    results["load_after"] = os.getloadavg()[0]
    (OUT / "gate-results.json").write_text(json.dumps(results, indent=1, default=str))
    shutil.rmtree(OUT / "gate-run-size", ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
