"""Many writer processes append to one ledger at once, on SQLite and on PostgreSQL.

Every append a writer was told succeeded is in the chain exactly once, the chain has
positions 1..n with no fork (no two events share a `prev_hash`), and it verifies, as
it does for a reader that verifies the live ledger while the writers run.

The writers are real processes, each with its own `consentgate.open`. They are forked
by one small launcher script that imported consentgate once (sixteen interpreters
importing it would cost more than the appends), and they all wait at a barrier so
that they start appending together.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

import consentgate
from consentgate.domain import parse_event
from consentgate.domain.timeutil import format_ts

from ..conftest import OpenLedger

WRITERS = 16
APPENDS = 500
SHARED = [f"shared-{k:02d}" for k in range(24)]  # members every writer writes about
REGIONS = ("US-CA", "US", "DE", "FR", "GB", "BR", "IN", "JP")
START = datetime(2024, 1, 1, tzinfo=UTC)
TIMEOUT = 600.0

# Forks one writer per job; each opens the ledger, reports ready, and starts when the
# launcher closes the barrier pipe. A record job records the lines of its file one by
# one and writes the id of each acknowledged event (an import job: the result of its
# single import) to its own file; failures go to another file, one JSON string a line.
LAUNCHER = r"""
import json, os, sys, time, traceback

import consentgate

url, spec = sys.argv[1], json.loads(sys.argv[2])


def run(job, ready, barrier):
    with consentgate.open(url) as ledger:
        os.write(ready, b"r")
        os.close(ready)
        os.read(barrier, 1)  # end of file: every writer goes
        if job["kind"] == "record":
            with open(job["events"], "rb") as fh:
                lines = fh.read().splitlines()
            with open(job["acks"], "w") as acks, open(job["errors"], "w") as errors:
                for line in lines:
                    try:
                        stored = ledger.record(json.loads(line))
                    except Exception as err:
                        errors.write(json.dumps(f"{type(err).__name__}: {err}") + "\n")
                    else:
                        acks.write(stored.event_id + "\n")
        else:
            try:
                result = ledger.import_events(job["file"])
            except Exception as err:
                out = {"error": type(err).__name__, "message": str(err)}
            else:
                out = {"added": result.added, "read": result.read}
            with open(job["acks"], "w") as fh:
                json.dump(out, fh)


ready_r, ready_w = os.pipe()
barrier_r, barrier_w = os.pipe()
pids = []
for job in spec:
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(ready_r)
            os.close(barrier_w)
            run(job, ready_w, barrier_r)
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    pids.append(pid)
os.close(ready_w)
os.close(barrier_r)
ready = 0
while ready < len(spec):
    got = os.read(ready_r, 64)
    if not got:
        break  # a writer died before it was ready; its status tells
    ready += len(got)
started = time.perf_counter()
print("go", ready, flush=True)
os.close(barrier_w)
codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]
print(json.dumps({"codes": codes, "seconds": time.perf_counter() - started}), flush=True)
"""


def _event(rng: random.Random, writer: int, i: int) -> dict[str, str]:
    """A distinct event (its own instant) of a mix of types, half of them about
    members shared by every writer, many with evidence fields (sealed)."""
    private = f"w{writer:02d}-m{rng.randrange(12)}"
    subject = rng.choice(SHARED) if rng.random() < 0.5 else private
    at = format_ts(START + timedelta(minutes=writer * 10_000 + i))
    roll = rng.random()
    ev: dict[str, str]
    if i in (APPENDS // 2, APPENDS - 3):  # erase one member of this writer, then a shared one
        target = f"w{writer:02d}-m0" if i == APPENDS // 2 else SHARED[writer]
        ev = {"type": "erasure", "subject": target, "at": at}
    elif roll < 0.3:
        ev = {"type": "profile", "subject": subject, "at": at, "region": rng.choice(REGIONS)}
        if rng.random() < 0.5:
            ev["birth_date"] = f"{rng.randrange(1950, 2005)}-0{rng.randrange(1, 10)}-15"
    elif roll < 0.8:
        ev = {
            "type": "consent",
            "subject": subject,
            "at": at,
            "purpose": rng.choice(("ai_training", "genai_features")),
            "choice": rng.choice(("granted", "withdrawn", "refused")),
        }
    else:
        ev = {"type": "signal", "subject": subject, "at": at, "signal": "gpc"}
    if rng.random() < 0.4:
        ev["ip"] = f"10.{writer}.{i // 256}.{i % 256}"
        ev["user_agent"] = "Mozilla/5.0 (concurrency test)"
    if i % 2 == 0:
        ev["event_id"] = f"w{writer:02d}-e{i:03d}"  # odd ones get an id derived from content
    return ev


def _write_jsonl(path: Path, events: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(ev) + "\n" for ev in events), "utf-8")
    return path


@contextmanager
def _launched(
    db_url: str, jobs: list[dict[str, str]], workdir: Path
) -> Iterator[subprocess.Popen[str]]:
    """Start the writers; yield once they are all appending; kill them all on error."""
    stderr = (workdir / "writers.stderr").open("w+b")
    proc = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, db_url, json.dumps(jobs)],
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        start_new_session=True,  # the launcher and its writers: one process group
    )
    try:
        assert proc.stdout is not None
        go = proc.stdout.readline().split()
        stderr.seek(0)
        assert go == ["go", str(len(jobs))], stderr.read().decode(errors="replace")
        yield proc
        out, _ = proc.communicate(timeout=TIMEOUT)
        stderr.seek(0)
        problems = stderr.read().decode(errors="replace")
        assert json.loads(out)["codes"] == [0] * len(jobs), problems
        assert proc.returncode == 0, problems
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        stderr.close()


def _verify_while_running(ledger: consentgate.Ledger, proc: subprocess.Popen[str]) -> list[int]:
    """Verify the live ledger again and again until the writers are done; return the
    size each verification saw (each must be sound)."""
    seen: list[int] = []
    deadline = time.monotonic() + TIMEOUT
    while proc.poll() is None and time.monotonic() < deadline:
        report = ledger.verify()
        assert report.ok, f"verify of the live ledger at {report.events} events: {report.problems}"
        seen.append(report.events)
        with suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=1.0)  # leave the writers most of the two cores
    return seen


def _stored(ledger: consentgate.Ledger) -> list[tuple[int, str, bytes]]:
    with ledger.engine.connect() as conn:
        rows = conn.execute(text("SELECT seq, event_id, prev_hash FROM events ORDER BY seq"))
        return [(int(seq), str(event_id), bytes(prev)) for seq, event_id, prev in rows]


def _assert_one_chain(ledger: consentgate.Ledger, expected: int) -> list[tuple[int, str, bytes]]:
    """Positions 1..expected, no two events on one predecessor, the head agrees, and
    the whole ledger verifies."""
    stored = _stored(ledger)
    assert [seq for seq, _, _ in stored] == list(range(1, expected + 1))
    forks = [h.hex() for h, n in Counter(prev for _, _, prev in stored).items() if n > 1]
    assert not forks, f"{len(forks)} events share a predecessor: the chain forked"
    assert ledger.head().size == expected == ledger.count_events()
    report = ledger.verify()
    assert report.ok, report.problems
    assert report.events == expected
    return stored


@pytest.mark.slow
def test_sixteen_writers_record_concurrently(
    open_ledger: OpenLedger, db_url: str, tmp_path: Path
) -> None:
    reader = open_ledger(db_url)  # creates the ledger before the writers open it
    rng = random.Random(20240101)
    jobs = []
    for w in range(WRITERS):
        events = [_event(rng, w, i) for i in range(APPENDS)]
        jobs.append(
            {
                "kind": "record",
                "events": str(_write_jsonl(tmp_path / f"events-{w:02d}.jsonl", events)),
                "acks": str(tmp_path / f"acks-{w:02d}.txt"),
                "errors": str(tmp_path / f"errors-{w:02d}.txt"),
            }
        )

    started = time.perf_counter()
    with _launched(db_url, jobs, tmp_path) as proc:
        seen = _verify_while_running(reader, proc)
    seconds = time.perf_counter() - started

    acks = {w: Path(job["acks"]).read_text().splitlines() for w, job in enumerate(jobs)}
    errors = [
        json.loads(line) for job in jobs for line in Path(job["errors"]).read_text().splitlines()
    ]
    total = sum(len(ids) for ids in acks.values())
    # With a 30 s busy timeout (SQLite) or a row lock (PostgreSQL), no append may fail.
    assert not errors, f"{len(errors)} appends failed, first: {errors[0]}"
    assert total == WRITERS * APPENDS

    stored = _assert_one_chain(reader, total)
    counts = Counter(event_id for _, event_id, _ in stored)
    acked = Counter(event_id for ids in acks.values() for event_id in ids)
    assert max(acked.values()) == 1, "two acknowledged appends returned one event id"
    assert counts == acked, "the stored events are not exactly the acknowledged ones"

    # The writers really interleaved: in chain order, the writer changes many times.
    writer_of = {event_id: w for w, ids in acks.items() for event_id in ids}
    order = [writer_of[event_id] for _, event_id, _ in stored]
    runs = 1 + sum(a != b for a, b in itertools.pairwise(order))
    assert runs > 4 * WRITERS, f"only {runs} runs of one writer: the writers hardly overlapped"
    # A reader verified the ledger while it grew (each time sound, see above).
    assert any(0 < size < total for size in seen), f"no verification mid-run: {seen}"

    # One key row per member however many writers met them first at the same time;
    # history finds every event of a shared member, from every writer.
    with reader.engine.connect() as conn:
        members = conn.execute(text("SELECT count(*) FROM subjects")).scalar_one()
    sent = [
        json.loads(line) for job in jobs for line in Path(job["events"]).read_text().splitlines()
    ]
    assert members == len({ev["subject"] for ev in sent})
    mixed = Counter(ev["subject"] for ev in sent)["shared-23"]
    assert len(reader.history("shared-23")) == mixed
    print(f"\n{db_url.split(':')[0]}: {total} acknowledged appends by {WRITERS} processes in "
          f"{seconds:.1f} s ({total / seconds:.0f}/s), {runs} writer runs, "
          f"{len(seen)} live verifications")  # fmt: skip


def _import_event(rng: random.Random, n: int) -> dict[str, str]:
    at = format_ts(START + timedelta(seconds=n))
    subject = f"m{rng.randrange(400)}"
    roll = rng.random()
    ev: dict[str, str]
    if roll < 0.3:
        ev = {"type": "profile", "subject": subject, "at": at, "region": rng.choice(REGIONS)}
    elif roll < 0.85:
        ev = {
            "type": "consent",
            "subject": subject,
            "at": at,
            "purpose": "ai_training",
            "choice": rng.choice(("granted", "withdrawn")),
        }
    else:
        ev = {"type": "signal", "subject": subject, "at": at, "signal": "gpc"}
    if rng.random() < 0.3:
        ev["note"] = f"evidence {n}"
    if rng.random() < 0.5:
        ev["event_id"] = f"pool-{n}"
    return ev


def _id(ev: dict[str, str]) -> str:
    return parse_event(ev).event_id


@pytest.mark.slow
def test_concurrent_imports_are_each_all_or_nothing(
    open_ledger: OpenLedger, db_url: str, tmp_path: Path
) -> None:
    """Four writers import overlapping files at once (each event is in two files,
    some twice in one), and a fifth a file whose last line is bad."""
    reader = open_ledger(db_url)
    rng = random.Random(7)
    pool = [_import_event(rng, n) for n in range(8_000)]
    files: list[list[dict[str, str]]] = []
    for k in range(4):
        lines = [pool[(2_000 * k + j) % len(pool)] for j in range(4_000)]
        lines += rng.sample(lines, 50)  # repeated within the file too
        rng.shuffle(lines)
        files.append(lines)
    own = [_import_event(rng, 10_000 + n) for n in range(1_500)]  # only in the bad file
    bad = rng.sample(pool, 1_500) + own
    rng.shuffle(bad)
    bad.append({"type": "consent", "subject": "m1", "at": "2024-05-01T00:00:00Z"})  # no purpose
    files.append(bad)
    jobs = [
        {
            "kind": "import",
            "file": str(_write_jsonl(tmp_path / f"import-{k}.jsonl", lines)),
            "acks": str(tmp_path / f"result-{k}.json"),
        }
        for k, lines in enumerate(files)
    ]

    with _launched(db_url, jobs, tmp_path) as proc:
        seen = _verify_while_running(reader, proc)

    results = [json.loads(Path(job["acks"]).read_text()) for job in jobs]
    assert results[4]["error"] == "EventError", results[4]
    assert f"import-4.jsonl:{len(bad)}" in results[4]["message"]
    assert all("error" not in r for r in results[:4]), results
    assert [r["read"] for r in results[:4]] == [len(lines) for lines in files[:4]]

    ids = [{_id(ev) for ev in lines} for lines in files[:4]]
    pool_ids = {_id(ev) for ev in pool}
    assert len(pool_ids) == len(pool)
    assert set().union(*ids) == pool_ids
    stored = _assert_one_chain(reader, len(pool_ids))
    seq_of = {event_id: seq for seq, event_id, _ in stored}
    assert set(seq_of) == pool_ids, "an imported event is missing, or there is one more"
    assert not {_id(ev) for ev in own} & set(seq_of), "the failed import left events behind"

    # The imports committed one after the other, each as one block: in some order, the
    # k-th to commit added exactly its events that no earlier one had, at the next
    # positions (an import finding all its events stored already adds nothing).
    def blocks(order: tuple[int, ...]) -> list[int] | None:
        done: set[str] = set()
        ends = [0]
        for k in order:
            new = ids[k] - done
            first = ends[-1] + 1
            if results[k]["added"] != len(new):
                return None
            if sorted(seq_of[i] for i in new) != list(range(first, first + len(new))):
                return None
            done |= new
            ends.append(ends[-1] + len(new))
        return ends

    fits = [ends for order in itertools.permutations(range(4)) if (ends := blocks(order))]
    assert fits, f"no commit order explains the positions: {results[:4]}"
    # ...and a reader never saw part of one.
    assert set(seen) <= set(fits[0]), f"a verification saw a partial import: {seen} vs {fits}"
