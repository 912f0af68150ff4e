"""A writer killed with SIGKILL at random moments loses no acknowledged event.

A writer process appends in a loop, single events (`record`) and files of 50 events
(`import_events`), on a ledger with a signing key that checkpoints often, and after
each acknowledged write prints what was acknowledged to its standard output, flushed.
The test kills it after a random (seeded) delay, reads the acknowledgements it had
received, and reopens the ledger as a restarted service would: every acknowledged
event is there, every file is there entirely or not at all, and the ledger, its
stored checkpoints and its external checkpoint log verify. The same ledger is reused
from cycle to cycle, so it keeps growing across crashes.

The writers are forked by one small script that imported consentgate once, so that a
cycle costs the kill delay rather than an interpreter start; the delay runs from the
fork, so some kills land while the writer is still opening the ledger.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson
import pytest
from sqlalchemy import text

import consentgate
from consentgate.domain import parse_event
from consentgate.ledger import tlog

CYCLES = 50
BATCH = 50
CHECKPOINT_EVERY = 60
MAX_DELAY = 0.4  # seconds from the fork to the kill

# Reads "CYCLE SEED" lines; for each, forks a writer whose standard output and error
# go to files of that cycle, prints the writer's pid, then its exit status once it
# is killed. A writer that fails prints the traceback and waits for its kill, so
# that its pid stays its own until then.
ZYGOTE = r"""
import os, random, signal, sys, traceback

import orjson

import consentgate

url, key, workdir = sys.argv[1:4]
zygote = os.getpid()


def event(rng, tag):
    subject = f"m{rng.randrange(300)}"
    day = f"2024-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}"
    at = f"{day}T{rng.randrange(24):02d}:00:00Z"
    roll = rng.random()
    if roll < 0.3:
        region = rng.choice(("US", "DE", "BR-SP"))
        ev = {"type": "profile", "subject": subject, "at": at, "region": region}
        if rng.random() < 0.5:
            ev["birth_date"] = f"{rng.randrange(1950, 2005)}-03-01"
    elif roll < 0.8:
        purpose = rng.choice(("ai_training", "genai_features"))
        choice = rng.choice(("granted", "withdrawn", "refused"))
        ev = {"type": "consent", "subject": subject, "at": at, "purpose": purpose, "choice": choice}
    elif roll < 0.995:
        ev = {"type": "signal", "subject": subject, "at": at, "signal": "gpc"}
    else:
        ev = {"type": "erasure", "subject": subject, "at": at}
    if rng.random() < 0.5:
        ev["event_id"] = tag
    else:
        ev["note"] = tag  # unique content: the id derived from it is unique too
    if rng.random() < 0.4:
        ev["ip"] = f"192.0.2.{rng.randrange(1, 255)}"
    return ev


def write(cycle, seed):
    rng = random.Random(seed)
    ledger = consentgate.open(url, signing_key=key, checkpoint_every=int(sys.argv[4]))
    print("opened", flush=True)
    n = 0
    while os.getppid() == zygote:  # never outlive the test
        n += 1
        if rng.random() < 0.25:
            path = os.path.join(workdir, f"batch-{cycle:03d}-{n:04d}.jsonl")
            lines = [event(rng, f"c{cycle}-{n}-{j}") for j in range(int(sys.argv[5]))]
            with open(path + ".tmp", "wb") as fh:
                fh.write(b"".join(orjson.dumps(ev) + b"\n" for ev in lines))
            os.replace(path + ".tmp", path)
            print("importing", path, flush=True)
            ledger.import_events(path)
            print("imported", path, flush=True)
        else:
            stored = ledger.record(event(rng, f"c{cycle}-{n}"))
            print("recorded", stored.event_id, flush=True)


for line in sys.stdin:
    cycle, seed = map(int, line.split())
    out = os.open(os.path.join(workdir, f"out-{cycle:03d}.txt"), os.O_WRONLY | os.O_CREAT, 0o644)
    err = os.open(os.path.join(workdir, f"err-{cycle:03d}.txt"), os.O_WRONLY | os.O_CREAT, 0o644)
    pid = os.fork()
    if pid == 0:
        try:
            os.dup2(out, 1)
            os.dup2(err, 2)
            write(cycle, seed)
        except BaseException:
            traceback.print_exc()
            sys.stderr.flush()
        while os.getppid() == zygote:
            signal.pause()
        os._exit(1)
    os.close(out)
    os.close(err)
    print(pid, flush=True)
    print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), flush=True)
"""


@contextmanager
def _zygote(db_url: str, key: Path, workdir: Path) -> Iterator[subprocess.Popen[str]]:
    args = [db_url, str(key), str(workdir), str(CHECKPOINT_EVERY), str(BATCH)]
    stderr = (workdir / "zygote.stderr").open("w+b")
    proc = subprocess.Popen(
        [sys.executable, "-c", ZYGOTE, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        assert proc.stdin is not None
        assert proc.stdout is not None
        proc.stdin.close()  # the zygote ends; a writer still running sees it go
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stdout.close()
        stderr.close()


def _kill_one_writer(proc: subprocess.Popen[str], cycle: int, seed: int, delay: float) -> None:
    """Fork a writer, let it run for `delay` seconds, SIGKILL it."""
    assert proc.stdin is not None
    assert proc.stdout is not None
    proc.stdin.write(f"{cycle} {seed}\n")
    proc.stdin.flush()
    said = proc.stdout.readline()
    assert said.strip().isdigit(), f"no writer forked: {said!r} (see zygote.stderr)"
    pid = int(said)
    try:
        time.sleep(delay)
    finally:
        os.kill(pid, signal.SIGKILL)
        status = proc.stdout.readline().strip()
    assert status == str(-signal.SIGKILL), f"writer {pid} ended with {status!r}"


def _acknowledged(out: Path) -> list[tuple[str, str]]:
    """The complete lines the writer printed: (what, id or file)."""
    lines = out.read_text().split("\n")[:-1]  # the last piece has no newline: not received
    return [(what, rest) for what, _, rest in (line.partition(" ") for line in lines)]


def _ids_of(path: Path) -> set[str]:
    return {parse_event(orjson.loads(line)).event_id for line in path.read_bytes().splitlines()}


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_no_acknowledged_event(db_url: str, tmp_path: Path) -> None:
    key = tmp_path / "ledger.key"
    verifier = tlog.load_verifier(tlog.create_signing_key(key))
    log = Path(f"{key}.checkpoints")
    with consentgate.open(db_url, signing_key=key):
        pass  # the ledger exists before the first writer starts
    rng = random.Random(9162)
    acked: set[str] = set()  # every event id acknowledged so far, in any cycle
    batches: dict[Path, tuple[set[str], bool]] = {}  # file -> (its ids, stored?)
    stats = dict.fromkeys(("recorded", "imported", "before open", "in import", "committed"), 0)
    started = time.perf_counter()
    with _zygote(db_url, key, tmp_path) as zygote:
        for cycle in range(CYCLES):
            _kill_one_writer(zygote, cycle, rng.randrange(2**32), rng.uniform(0, MAX_DELAY))
            err = (tmp_path / f"err-{cycle:03d}.txt").read_text()
            assert not err, f"cycle {cycle}: the writer failed:\n{err}"
            said = _acknowledged(tmp_path / f"out-{cycle:03d}.txt")
            recorded = {rest for what, rest in said if what == "recorded"}
            imported = {Path(rest) for what, rest in said if what == "imported"}
            started_import = [Path(rest) for what, rest in said if what == "importing"]
            stats["recorded"] += len(recorded)
            stats["imported"] += len(imported)
            stats["before open"] += ("opened", "") not in said
            in_flight = [p for p in started_import if p not in imported]
            stats["in import"] += len(in_flight)

            with consentgate.open(db_url, signing_key=key) as ledger:  # the restart
                with ledger.engine.connect() as conn:
                    stored = set(conn.execute(text("SELECT event_id FROM events")).scalars())
                external = [log.read_text()] if log.exists() else []
                report = ledger.verify(verifier=verifier, external=external)
            assert report.ok, f"cycle {cycle}: {report.problems}"
            assert report.events == len(stored)
            # A writer killed between its commit and its checkpoint leaves that checkpoint
            # to the next commit (Ledger._appended): once an acknowledged write took the
            # ledger to CHECKPOINT_EVERY events or more, a signed checkpoint exists.
            acked_now = acked | recorded | {i for path in imported for i in _ids_of(path)}
            assert report.checkpoints > 0 or len(acked_now & stored) < CHECKPOINT_EVERY

            for path in imported:
                acked.update(_ids_of(path))
            acked |= recorded
            lost = acked - stored
            assert not lost, (
                f"cycle {cycle}: {len(lost)} acknowledged events lost: {sorted(lost)[:5]}"
            )

            for path in sorted(tmp_path.glob(f"batch-{cycle:03d}-*.jsonl")):
                ids = _ids_of(path)
                assert len(ids) == BATCH
                batches[path] = (ids, ids <= stored)
                stats["committed"] += path in in_flight and ids <= stored  # not acknowledged
            for path, (ids, was_stored) in batches.items():
                present = ids & stored
                assert present in (set(), ids), (
                    f"cycle {cycle}: {path.name} is partly stored ({len(present)} of {len(ids)})"
                )
                assert (present == ids) == was_stored, f"{path.name} changed after a restart"
    seconds = time.perf_counter() - started

    # The test did what it claims: both kinds of write were acknowledged, kills landed
    # in the middle of imports, and signed checkpoints reached the external log.
    assert stats["recorded"] > CYCLES, stats
    assert stats["imported"] > CYCLES // 2, stats
    assert stats["in import"] > 0, stats
    assert report.external > 0
    print(f"\n{db_url.split(':')[0]}: {CYCLES} kills in {seconds:.1f} s, {stats}, "
          f"{report.events} events, {report.checkpoints} stored checkpoints, "
          f"{report.external} in the external log")  # fmt: skip


def test_a_checkpoint_a_killed_writer_missed_is_made_by_the_next_write(
    db_url: str, tmp_path: Path
) -> None:
    """A writer killed after its commit and before its checkpoint: the commit that
    follows signs the checkpoint (here the first writer had no key, which leaves the
    same state: events past a multiple of checkpoint_every, no checkpoint)."""
    key = tmp_path / "ledger.key"
    tlog.create_signing_key(key)
    every = 5

    def event(i: int) -> dict[str, str]:
        return {"type": "signal", "subject": f"m{i}", "signal": "gpc",
                "at": f"2025-01-01T00:00:{i:02d}Z"}  # fmt: skip

    with consentgate.open(db_url, checkpoint_every=every) as unsigned:
        for i in range(7):
            unsigned.record(event(i))
    with consentgate.open(db_url, signing_key=key, checkpoint_every=every) as ledger:
        assert ledger.latest_checkpoint() is None
        ledger.record(event(7))  # 8 events: no multiple of 5 passed by this write
        note = ledger.latest_checkpoint()
        assert note is not None
        assert "\n8\n" in note
        ledger.record(event(8))  # 9: nothing missed, nothing passed
        assert ledger.latest_checkpoint() == note
