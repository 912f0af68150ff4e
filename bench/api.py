"""HTTP API benchmark (DESIGN §8, issue 5): online decisions and durable writes over
loopback, measured with wrk (a C load generator) against `consentgate serve`.

Run from the repository root (wrk: `apt-get install wrk`):

    .venv/bin/python bench/api.py [--events N] [--subjects M] [--seconds S] [--workers W]

Server and load generator share this machine. Each figure is printed beside a
baseline measured in the same run (STYLE 15):

- single decisions: `GET /v1/subjects/{id}/decision` for random known members, against
  `GET /.well-known/gpc.json` (the same server, auth and rate limiting skipped: the
  cost of HTTP alone) with the same connections;
- batch: `POST /v1/decisions` with 10,000 subjects, cold (members the server has not
  been asked about: its facts cache holds none) and warm (the same members again),
  against `Ledger.decisions` without the cache for the same subjects, in this process;
- durable writes: `POST /v1/events` with one new event each (one committed, fsynced
  transaction per request), against the ledger's `record()` in this process.

Targets: >= 1,000 single decisions/s with p99 <= 20 ms; a 10,000-subject batch in
<= 100 ms; >= 300 durable writes/s with p99 <= 150 ms; zero errors.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import consentgate
from consentgate.access import KeyStore
from ledger import OUT, _revision, bench_policy, events_file, load, machine

DECISION_LUA = r"""
local subjects = {}
local auth
init = function(args)
  for line in io.lines(os.getenv("CG_SUBJECTS")) do subjects[#subjects + 1] = line end
  auth = {Authorization = "Bearer " .. os.getenv("CG_TOKEN")}
  math.randomseed(os.time() + #args)
end
request = function()
  local s = subjects[math.random(#subjects)]
  return wrk.format("GET", "/v1/subjects/" .. s .. "/decision?purpose=ai_training", auth)
end
"""

WRITE_LUA = r"""
local n = 0
local headers
local tag
init = function(args)
  headers = {Authorization = "Bearer " .. os.getenv("CG_TOKEN"),
             ["Content-Type"] = "application/json"}
  tag = tostring(math.random(1, 1000000000))
end
request = function()
  n = n + 1
  local body = string.format(
    '{"events":[{"type":"consent","subject":"w%s-%d","purpose":"ai_training",' ..
    '"choice":"granted","at":"2026-01-01T00:00:00Z"}]}', tag, n)
  return wrk.format("POST", "/v1/events", headers, body)
end
"""

UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}


def parse_wrk(text: str) -> dict[str, Any]:
    """Requests/s, latency percentiles (ms) and error counts from `wrk --latency`."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    out: dict[str, Any] = {"rps": float(rps[1]) if rps else 0.0}
    percentile = r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s|m)\s*$"
    for pct, value, unit in re.findall(percentile, text, re.M):
        out[f"p{pct}_ms"] = float(value) * UNITS[unit]
    out["requests"] = int(re.search(r"(\d+) requests in", text)[1])  # type: ignore[index]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    out["errors"] = (int(non2xx[1]) if non2xx else 0) + (
        sum(int(x) for x in sock.groups()) if sock else 0
    )
    return out


def wrk(base: str, script: Path, seconds: int, connections: int, env: dict[str, str],
        path: str = "/") -> dict[str, Any]:  # fmt: skip
    cmd = ["wrk", "--latency", "-t", "1", "-c", str(connections), "-d", f"{seconds}s",
           "-s", str(script), base + path]  # fmt: skip
    run = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **env})
    if run.returncode != 0:
        raise SystemExit(f"wrk failed: {run.stderr}")
    return parse_wrk(run.stdout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def prepare(events: int, subjects: int) -> Path:
    """A ledger of `events` generated events (cached), copied for this run."""
    cached = OUT / f"api-{events}-{subjects}.db"
    if not cached.exists():
        source = events_file(events, subjects)
        tmp = cached.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)
        started = time.perf_counter()
        with consentgate.open(f"sqlite:///{tmp}") as ledger:
            ledger.apply_policy(bench_policy())
            ledger.import_events(source)
        tmp.replace(cached)
        print(f"ledger: imported {events:,} events in {time.perf_counter() - started:.0f} s")
    run = OUT / "api-run.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{run}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(cached, run)
    return run


def member_ids(url: str, n: int) -> list[str]:
    with consentgate.open(url) as ledger, ledger.engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT subject FROM subjects WHERE subject IS NOT NULL LIMIT ?", (n,)
        ).scalars()
        return list(rows)


def serve(url: str, workers: int) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "consentgate", "--db", url, "serve", "--port", str(port),
         "--workers", str(workers), "--rate", "1000000", "--burst", "1000000"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.get(base + "/.well-known/gpc.json")
            return proc, base
        except httpx.TransportError:
            if proc.poll() is not None:
                raise SystemExit(f"server failed: {proc.communicate()[1]}") from None
            time.sleep(0.2)
    raise SystemExit("server did not start")


def batch_figures(base: str, token: str, url: str, ids: list[str], reps: int) -> dict[str, float]:
    """Cold: three requests, each for 10,000 members not asked before (the server's
    facts cache holds none of them). Warm: one such set asked `reps` times more."""
    rng = random.Random(1)
    samples = [rng.sample(ids, 10_000) for _ in range(3)]
    cold: list[float] = []
    warm: list[float] = []
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}) as c:
        for i, subjects in enumerate([*samples, *[samples[0]] * reps]):
            started = time.perf_counter()
            r = c.post("/v1/decisions", json={"purpose": "ai_training", "subjects": subjects},
                       timeout=60)  # fmt: skip
            (cold if i < len(samples) else warm).append((time.perf_counter() - started) * 1e3)
            if r.status_code != 200 or len(r.json()["decisions"]) != len(subjects):
                raise SystemExit(f"batch failed: {r.status_code} {r.text[:300]}")
    lib: list[float] = []
    now = datetime.now(UTC)
    with consentgate.open(url) as ledger:  # no facts cache: the library's plain path
        for _ in range(reps + 1):
            started = time.perf_counter()
            list(ledger.decisions(purpose="ai_training", at=now, subjects=samples[0]))
            lib.append((time.perf_counter() - started) * 1e3)
    return {
        "cold_median_ms": statistics.median(cold),
        "warm_median_ms": statistics.median(warm),
        "warm_max_ms": max(warm),
        "library_median_ms": statistics.median(lib[1:]),
    }


def record_baseline(url: str, n: int) -> float:
    """Sequential `Ledger.record()` calls in this process: durable writes/s."""
    with consentgate.open(url) as ledger:
        started = time.perf_counter()
        for i in range(n):
            ledger.record({"type": "consent", "subject": f"b{i}", "purpose": "ai_training",
                           "choice": "granted", "at": "2026-01-01T00:00:00Z"})  # fmt: skip
        return n / (time.perf_counter() - started)


def report(results: dict[str, Any]) -> None:
    single, plain, batch, write = (results[k] for k in ("single", "baseline", "batch", "write"))
    write_base = results["write_baseline_rps"]
    errors = sum(results[k]["errors"] for k in ("baseline", "single", "write"))
    rows = [
        ("single decisions/s", f"{single['rps']:,.0f}, p99 {single['p99_ms']:.1f} ms",
         ">= 1000, p99 <= 20 ms", f"{single['rps'] / plain['rps']:.2f} x gpc.json "
         f"({plain['rps']:,.0f}/s, p99 {plain['p99_ms']:.1f} ms)"),
        ("batch of 10,000, warm", f"{batch['warm_median_ms']:.1f} ms "
         f"(max {batch['warm_max_ms']:.0f})", "<= 100 ms",
         f"{batch['warm_median_ms'] / batch['library_median_ms']:.2f} x Ledger.decisions "
         f"uncached ({batch['library_median_ms']:.1f} ms)"),
        ("batch of 10,000, cold", f"{batch['cold_median_ms']:.1f} ms", "<= 100 ms",
         f"{batch['cold_median_ms'] / batch['library_median_ms']:.2f} x Ledger.decisions "
         "uncached"),
        ("durable writes/s", f"{write['rps']:,.0f}, p99 {write['p99_ms']:.1f} ms",
         ">= 300, p99 <= 150 ms", f"{write['rps'] / write_base:.2f} x record() "
         f"({write_base:,.0f}/s)"),
        ("errors", str(errors), "0", ""),
    ]  # fmt: skip
    print()
    for row in rows:
        print(f"{row[0]:<26} {row[1]:<28} {row[2]:<22} {row[3]}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--subjects", type=int, default=200_000)
    ap.add_argument(
        "--seconds", type=int, default=120, help="length of the decision and write runs"
    )
    ap.add_argument("--workers", type=int, default=1, help="server processes")
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--write-connections", type=int, default=16)
    args = ap.parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install wrk")
    db = prepare(args.events, args.subjects)
    url = f"sqlite:///{db}"
    with consentgate.open(url) as ledger:
        keys = KeyStore(ledger.engine)
        token = keys.create(name="bench", scopes=["ingest", "decide"]).token
    ids = member_ids(url, 100_000)
    subjects_file = OUT / "api-subjects.txt"
    subjects_file.write_text("\n".join(ids) + "\n")
    scripts = {name: OUT / f"{name}.lua" for name in ("decide", "write", "plain")}
    scripts["decide"].write_text(DECISION_LUA)
    scripts["write"].write_text(WRITE_LUA)
    scripts["plain"].write_text("")
    env = {"CG_TOKEN": token, "CG_SUBJECTS": str(subjects_file)}
    proc, base = serve(url, args.workers)
    results: dict[str, Any] = {}
    try:
        s, c = args.seconds, args.connections
        wrk(base, scripts["decide"], 5, c, env)  # warm-up
        plain_s = max(5, s // 4)
        results["baseline"] = wrk(base, scripts["plain"], plain_s, c, env, "/.well-known/gpc.json")
        results["baseline"]["load"] = load()
        results["single"] = wrk(base, scripts["decide"], s, c, env)
        results["single"]["load"] = load()
        results["batch"] = batch_figures(base, token, url, ids, 10)
        results["write"] = wrk(base, scripts["write"], s, args.write_connections, env)
        results["write"]["load"] = load()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    results["write_baseline_rps"] = record_baseline(url, 300)
    facts = machine(None, _revision())
    print(json.dumps({"machine": facts, "args": vars(args), "results": results}, indent=2))
    report(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
