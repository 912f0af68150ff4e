"""What the gate must do beyond the plain COPY floor, measured alone (issue 4).

Run from the repository root after `bench/gate.py` (it reuses that run's corpus and
outputs in bench/out/):

    .venv/bin/python bench/gate_parts.py

In one process: the floor of bench/gate.py (a plain DuckDB COPY of the kept rows, given
the excluded positions for free), then two pieces of work DESIGN §5 requires of every
gate run, each alone: writing `exclusions.parquet` again from the finished one (a
lower bound on producing it: nothing is decided or joined), and SHA-256 of the input
files (the manifest's input digest). It prints them beside the 25 % allowance that the
issue's "<= 1.25 x the floor" leaves.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time

import duckdb

from gate import OUT, floor_copy


def main() -> None:
    data = next(OUT.glob("corpus-v1-20000000"))
    run = OUT / "gate-run"
    scratch = OUT / "parts-scratch"
    floor = floor_copy(data, run, scratch)["copy_positions"]
    print(f"floor: plain COPY of the kept rows {floor:.2f} s", flush=True)
    scratch.mkdir(exist_ok=True)
    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    started = time.perf_counter()
    con.execute(
        f"COPY (SELECT * FROM '{run}/exclusions.parquet') "
        f"TO '{scratch}/exclusions.parquet' (FORMAT parquet)"
    )
    exclusions = time.perf_counter() - started
    rows = con.execute(f"SELECT count(*) FROM '{scratch}/exclusions.parquet'").fetchone()
    con.close()
    shutil.rmtree(scratch, ignore_errors=True)
    print(f"exclusions.parquet written again: {rows[0] if rows else 0:,} rows, {exclusions:.2f} s")
    started = time.perf_counter()
    size = 0
    for path in sorted(data.glob("*.parquet")):
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            while chunk := fh.read(8 << 20):
                digest.update(chunk)
                size += len(chunk)
    hashing = time.perf_counter() - started
    print(f"SHA-256 of the input: {size / 1e9:.2f} GB, {hashing:.2f} s of one core")
    allowance = 0.25 * floor
    print(
        f"allowance of 1.25 x: {allowance:.2f} s; these two alone need at least "
        f"{exclusions + hashing / 2:.2f} s on 2 cores (load {os.getloadavg()[0]:.2f})"
    )


if __name__ == "__main__":
    main()
