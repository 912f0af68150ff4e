"""Proof bundles: exported to a file, checked offline with the verifier key alone.

On the ledger of test_tamper.build_ledger (222 events, four signed checkpoints, two
erasures), on each backend:

- an inclusion bundle of every event against every checkpoint that covers it, after a
  round trip through a JSON file, verifies once the ledger is closed, and each entry is
  the event as stored (its chained hash is the stored hash);
- a consistency bundle between every pair of checkpoints (older first) verifies;
- 320 seeded changes to an inclusion bundle and 200 to a consistency bundle (a bit of
  an entry, of prev_hash, of a proof hash; a proof hash dropped or added; the position,
  alone or with the entry's; two entries swapped; a bit of a note's size, root or
  signature, or any character of a note; the notes swapped) and another ledger's
  verifier key are all refused with ProofError: no false accept;
- bundles of the wrong shape are refused with ProofError too, never another exception;
- the events of a member erased after a checkpoint keep verifying inclusion proofs,
  against the checkpoints signed before and after the erasure and after `vacuum()`,
  with the same entry bytes, which hold none of the member's personal data in clear.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import random
from pathlib import Path
from typing import Any

import pytest

from consentgate.errors import InputError
from consentgate.ledger import tlog
from consentgate.ledger.chain import ids_commitment
from consentgate.ledger.tlog import ProofError

from ..conftest import OpenLedger
from .test_tamper import Built, build_ledger


def size_of(note: str) -> int:
    return int(note.split("\n")[1])


def round_trip(bundle: dict[str, Any], path: Path) -> Any:
    path.write_text(json.dumps(bundle, indent=1), "utf-8")
    return json.loads(path.read_text("utf-8"))


def stored_events(built: Built) -> dict[int, tuple[str, int, bytes, bytes]]:
    """seq -> (keyed commitment to the ids, pseudonym, prev_hash, hash) as stored."""
    secret = built.ledger.secret
    with built.ledger.engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT seq, event_id, content_sha256, id_key, subject, prev_hash, hash "
            "FROM events ORDER BY seq"
        ).all()
    return {
        seq: (ids_commitment(secret, eid, digest, key), subject, bytes(prev), bytes(h))
        for seq, eid, digest, key, subject, prev, h in rows
    }


def test_inclusion_proofs_of_every_event_verify_offline(
    open_ledger: OpenLedger, db_url: str, tmp_path: Path
) -> None:
    built = build_ledger(open_ledger, db_url, tmp_path)
    ledger = built.ledger
    origin = ledger.origin
    notes = tlog.read_log(built.log)
    stored = stored_events(built)
    assert len(notes) >= 4
    assert size_of(notes[-1]) == len(stored)
    files = []
    for note in notes:
        size = size_of(note)
        bundle = tlog.inclusion_bundle(ledger.engine, range(size, 0, -1), note)
        files.append((size, tmp_path / f"inclusion-{size}.json"))
        round_trip(bundle, files[-1][1])
        for outside in (0, size + 1):
            with pytest.raises(InputError):
                tlog.inclusion_bundle(ledger.engine, [outside], note)
    ledger.close()  # from here on: the files and the verifier key, nothing else
    for size, path in files:
        bundle = json.loads(path.read_text("utf-8"))
        said = tlog.verify_bundle(bundle, built.verifier)
        assert said.startswith(f"{origin}: events 1, 2, ")
        assert said.endswith(f"log of size {size}")
        assert [item["seq"] for item in bundle["events"]] == list(range(1, size + 1))
        for item in bundle["events"]:
            ids, subject, prev, hashed = stored[item["seq"]]
            entry = json.loads(item["entry"])
            assert (entry["seq"], entry["ids"], entry["subject"]) == (item["seq"], ids, subject)
            assert bytes.fromhex(item["prev_hash"]) == prev
            assert hashlib.sha256(prev + item["entry"].encode()).digest() == hashed


def test_consistency_proofs_between_every_pair_of_checkpoints_verify_offline(
    open_ledger: OpenLedger, db_url: str, tmp_path: Path
) -> None:
    built = build_ledger(open_ledger, db_url, tmp_path)
    ledger = built.ledger
    origin = ledger.origin
    notes = tlog.read_log(built.log)
    files = []
    for i, old in enumerate(notes):
        for j, new in enumerate(notes):
            if i > j:
                with pytest.raises(InputError):
                    tlog.consistency_bundle(ledger.engine, old, new)
                continue
            files.append((size_of(old), size_of(new), tmp_path / f"consistency-{i}-{j}.json"))
            round_trip(tlog.consistency_bundle(ledger.engine, old, new), files[-1][2])
    ledger.close()
    assert len(files) == len(notes) * (len(notes) + 1) // 2
    for old_size, new_size, path in files:
        said = tlog.verify_bundle(json.loads(path.read_text("utf-8")), built.verifier)
        assert said == f"{origin}: size {old_size} is a prefix of size {new_size}"


# -- changed bundles ------------------------------------------------------------------


def flip_text(text: str, rng: random.Random, lo: int = 0, hi: int | None = None) -> str:
    """One bit of one (ASCII) character between `lo` and `hi` flipped."""
    i = rng.randrange(lo, len(text) if hi is None else hi)
    return text[:i] + chr(ord(text[i]) ^ (1 << rng.randrange(7))) + text[i + 1 :]


def flip_hex(value: str, rng: random.Random) -> str:
    data = bytearray(bytes.fromhex(value))
    data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    return data.hex()


def flip_b64(value: str, rng: random.Random) -> str:
    data = bytearray(base64.b64decode(value))
    data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    return base64.b64encode(bytes(data)).decode()


def change_note(note: str, rng: random.Random, part: str) -> str:
    """A bit of the size, the root or the signature of a signed note, or any character."""
    lines = note.split("\n")  # origin, size, root, "", signature line, ""
    if part == "size":
        lines[1] = str(int(lines[1]) ^ (1 << rng.randrange(9)))
    elif part == "root":
        lines[2] = flip_b64(lines[2], rng)
    elif part == "signature":
        dash_name, signature = lines[4].rsplit(" ", 1)
        lines[4] = f"{dash_name} {flip_b64(signature, rng)}"
    else:
        i = rng.randrange(len(note))
        other = rng.choice([c for c in "0123456789abcXYZ+/= \n\u2014" if c != note[i]])
        return note[:i] + other + note[i + 1 :]
    return "\n".join(lines)


def change_inclusion(bundle: dict[str, Any], rng: random.Random, i: int) -> tuple[str, Any]:
    changed = copy.deepcopy(bundle)
    items = changed["events"]
    item = rng.choice(items)
    target = INCLUSION_TARGETS[i % len(INCLUSION_TARGETS)]
    if target == "entry":
        item["entry"] = flip_text(item["entry"], rng)
    elif target == "prev_hash":
        item["prev_hash"] = flip_hex(item["prev_hash"], rng)
    elif target == "proof hash":
        j = rng.randrange(len(item["proof"]))
        item["proof"][j] = flip_hex(item["proof"][j], rng)
    elif target == "proof length":
        if rng.random() < 0.5:
            del item["proof"][rng.randrange(len(item["proof"]))]
        else:
            item["proof"].insert(rng.randrange(len(item["proof"]) + 1), rng.randbytes(32).hex())
    elif target == "seq":
        item["seq"] = item["seq"] + rng.choice((-1, 1)) * rng.randrange(1, 300)
    elif target == "moved":
        # The position changed consistently in the entry too (a different entry).
        entry = json.loads(item["entry"])
        size = size_of(bundle["checkpoint"])
        entry["seq"] = item["seq"] = rng.choice([s for s in range(1, size + 1) if s != item["seq"]])
        item["entry"] = json.dumps(entry, separators=(",", ":"), sort_keys=True)
    elif target == "swapped":
        other = rng.choice([x for x in items if x is not item])
        for key in ("entry", "prev_hash"):
            item[key], other[key] = other[key], item[key]
    else:
        changed["checkpoint"] = change_note(changed["checkpoint"], rng, target)
    return f"{target} of event {item['seq']}", changed


INCLUSION_TARGETS = (
    "entry", "prev_hash", "proof hash", "proof length", "seq", "moved", "swapped",
    "size", "root", "signature", "any character",
)  # fmt: skip


def change_consistency(bundle: dict[str, Any], rng: random.Random, i: int) -> tuple[str, Any]:
    changed = copy.deepcopy(bundle)
    target = CONSISTENCY_TARGETS[i % len(CONSISTENCY_TARGETS)]
    proof = changed["proof"]
    if target == "proof hash":
        j = rng.randrange(len(proof))
        proof[j] = flip_hex(proof[j], rng)
    elif target == "proof length":
        if rng.random() < 0.5:
            del proof[rng.randrange(len(proof))]
        else:
            proof.insert(rng.randrange(len(proof) + 1), rng.randbytes(32).hex())
    elif target == "swapped notes":
        changed["old"], changed["new"] = changed["new"], changed["old"]
    else:
        which, part = target.split(" ", 1)
        changed[which] = change_note(changed[which], rng, part)
    return target, changed


CONSISTENCY_TARGETS = (
    "proof hash", "proof length", "swapped notes",
    "old size", "old root", "old signature", "old any character",
    "new size", "new root", "new signature", "new any character",
)  # fmt: skip


def test_a_changed_bundle_or_another_key_is_refused(
    open_ledger: OpenLedger, db_url: str, tmp_path: Path
) -> None:
    built = build_ledger(open_ledger, db_url, tmp_path)
    engine = built.ledger.engine
    notes = tlog.read_log(built.log)
    last = notes[-1]
    n = size_of(last)
    erased_member = built.ledger.pseudonym(built.erased[0])
    erased_seq = min(s for s, (_, ps, _, _) in stored_events(built).items() if ps == erased_member)
    seqs = [1, 2, erased_seq, n // 2, n - 1, n]
    inclusion = round_trip(tlog.inclusion_bundle(engine, seqs, last), tmp_path / "inc.json")
    consistency = [
        round_trip(tlog.consistency_bundle(engine, old, new), tmp_path / f"con-{k}.json")
        for k, (old, new) in enumerate(((notes[0], last), (notes[1], notes[2])))
    ]
    assert all(bundle["proof"] for bundle in consistency)
    for bundle in (inclusion, *consistency):
        tlog.verify_bundle(bundle, built.verifier)  # the originals verify

    other = tlog.create_signing_key(tmp_path / "another-ledger.key")
    stranger = tlog.load_verifier(other)
    for bundle in (inclusion, *consistency):
        with pytest.raises(ProofError, match="no signature by the expected key"):
            tlog.verify_bundle(bundle, stranger)

    rng = random.Random("proof flips")
    cases = [change_inclusion(inclusion, rng, i) for i in range(320)]
    cases += [change_consistency(consistency[i % 2], rng, i) for i in range(200)]
    accepted, unchanged = [], []
    for label, changed in cases:
        if changed in (inclusion, *consistency):
            unchanged.append(label)
            continue
        try:
            said = tlog.verify_bundle(changed, built.verifier)
        except ProofError:
            continue
        accepted.append(f"{label}: {said}")
    assert not unchanged, f"changes that changed nothing: {unchanged}"
    assert not accepted, f"{len(accepted)} false accepts:\n" + "\n".join(accepted)


def test_a_bundle_of_the_wrong_shape_is_refused(
    open_ledger: OpenLedger, db_url: str, tmp_path: Path
) -> None:
    """A bundle comes from outside: any JSON at all gets a ProofError, nothing else."""
    built = build_ledger(open_ledger, db_url, tmp_path)
    notes = tlog.read_log(built.log)
    inclusion = tlog.inclusion_bundle(built.ledger.engine, [1, 5], notes[-1])
    consistency = tlog.consistency_bundle(built.ledger.engine, notes[0], notes[-1])
    item = inclusion["events"][0]

    def inc(**changes: Any) -> dict[str, Any]:
        return {**inclusion, **changes}

    def event(**changes: Any) -> dict[str, Any]:
        return inc(events=[{**item, **changes}])

    def drop(bundle: dict[str, Any], key: str) -> dict[str, Any]:
        return {k: v for k, v in bundle.items() if k != key}

    shapes: list[Any] = [
        None, [], "bundle", 5, {}, {"type": "something else"},
        drop(inclusion, "checkpoint"), drop(inclusion, "events"), drop(consistency, "proof"),
        inc(checkpoint=None), inc(checkpoint=5), inc(checkpoint=[notes[-1]]),
        inc(events=None), inc(events=5), inc(events="events"), inc(events={"1": item}),
        inc(events=[None]), inc(events=[[1, 2]]), inc(events=[]),
        event(seq="1"), event(seq=True), event(seq=1.0), event(seq=None),
        event(entry=None), event(entry=5), event(entry="[1]"), event(entry="null"),
        event(entry="{}"), event(entry="not json"),
        event(prev_hash=None), event(prev_hash="zz"), event(prev_hash=5),
        event(proof=None), event(proof="00"), event(proof=[5]), event(proof=["zz"]),
        {**consistency, "old": None}, {**consistency, "new": 5}, {**consistency, "proof": None},
        {**consistency, "proof": [None]}, {**consistency, "proof": "00" * 32},
    ]  # fmt: skip
    escaped = []
    for shape in shapes:
        try:
            said = tlog.verify_bundle(shape, built.verifier)
        except ProofError:
            continue
        except Exception as err:  # what escapes is what this test reports
            escaped.append(f"{json.dumps(shape)[:120]}: {type(err).__name__}: {err}")
        else:
            escaped.append(f"{json.dumps(shape)[:120]}: accepted ({said})")
    assert not escaped, "\n".join(escaped)


# -- erasure keeps the proof ----------------------------------------------------------


def test_an_erased_members_events_keep_verifying_proofs(
    open_ledger: OpenLedger, db_url: str, tmp_path: Path
) -> None:
    built = build_ledger(open_ledger, db_url, tmp_path)
    ledger = built.ledger
    member = built.erased[0]
    ps = ledger.pseudonym(member)
    notes = tlog.read_log(built.log)
    before = [note for note in notes if size_of(note) <= built.erased_at[member]][-1]
    stored = stored_events(built)
    earlier = [seq for seq, (_, subject, _, _) in stored.items() if subject == ps]
    covered = [seq for seq in earlier if seq <= size_of(before)]
    assert covered, "the checkpoint signed before the erasure covers some of their events"
    assert len(covered) < len(earlier), "and the member has events after it too"
    personal = {
        ev[field]
        for ev in built.events
        if ev["subject"] == member
        for field in ("region", "birth_date", "ip", "user_agent")
        if field in ev
    }
    assert personal
    history = ledger.history(member)
    assert len(history) == len(earlier), "erasure keeps the member's events"
    assert not any(getattr(ev, "region", None) or ev.evidence for ev in history)

    entries: dict[int, set[str]] = {}
    ledger.vacuum()
    for note in (before, notes[-1]):
        seqs = covered if note is before else earlier
        bundle = round_trip(
            tlog.inclusion_bundle(ledger.engine, seqs, note), tmp_path / "erased.json"
        )
        assert tlog.verify_bundle(bundle, built.verifier).endswith(f"size {size_of(note)}")
        for item in bundle["events"]:
            entries.setdefault(item["seq"], set()).add(item["entry"])
            entry = json.loads(item["entry"])
            assert entry["subject"] == ps
            assert member not in item["entry"]
            # No personal field, and no personal value (the clear ones are gone too).
            assert not entry.keys() & {"region", "birth_date", "ip", "user_agent"}
            assert not personal & {str(v) for v in entry.values()}, entry
            assert not any(v in item["entry"] for v in personal if not v.isalnum()), entry
    assert set(entries) == set(earlier)
    assert all(len(texts) == 1 for texts in entries.values()), "one entry, before and after"
    report = ledger.verify(verifier=built.verifier, external=[built.log])
    assert report.ok, report.problems
