"""The ledger as a transparency log: signing keys, checkpoints, exported proofs.

A checkpoint is the C2SP signed note of (origin, size, Merkle root) at a moment
(`checkpoint.py`); it is stored in `checkpoints` and appended to an external log file
the operator keeps elsewhere. Proof bundles are JSON files that a third party checks
offline with the verifier key alone (`verify_bundle`, `consentgate verify-proof`,
or by hand as docs/integrity.md describes).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine

from consentgate.domain.errors import InputError, StorageError
from consentgate.ledger import merkle
from consentgate.ledger.chain import entry_of, lock_head, now_us, pseudonym_key
from consentgate.ledger.checkpoint import (
    Checkpoint,
    CheckpointError,
    Signer,
    Verifier,
    generate_key,
    open_checkpoint,
    sign,
)
from consentgate.ledger.rows import COLUMNS

__all__ = [
    "CONSISTENCY",
    "INCLUSION",
    "ProofError",
    "append_to_log",
    "checkpoint",
    "consistency_bundle",
    "create_signing_key",
    "inclusion_bundle",
    "load_signer",
    "load_verifier",
    "read_log",
    "verify_bundle",
]

INCLUSION = "consentgate inclusion proof v1"
CONSISTENCY = "consentgate consistency proof v1"


class ProofError(ValueError):
    """A proof bundle does not prove what it claims (or is not a proof bundle)."""


# -- keys ---------------------------------------------------------------------------


def create_signing_key(path: Path, name: str = "consentgate") -> str:
    """Write a new Ed25519 signer key to `path` (mode 0600) and its verifier key to
    `path.pub`; return the verifier key. Refuses to replace an existing key."""
    signer_key, verifier_key = generate_key(name)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise StorageError(f"signing key {str(path)!r} exists already; not replacing it") from None
    with os.fdopen(fd, "w") as fh:
        fh.write(signer_key + "\n")
    Path(f"{path}.pub").write_text(verifier_key + "\n")
    return verifier_key


def load_signer(path: Path) -> Signer:
    try:
        return Signer(path.read_text().strip())
    except OSError as err:
        raise InputError("signing key", "a readable signer key file", str(path)) from err
    except ValueError as err:
        raise InputError("signing key", "a signer key (PRIVATE+KEY+...)", str(err)) from None


def load_verifier(source: str | Path) -> Verifier:
    """A verifier key from its text or from a file holding it."""
    text = str(source)
    if "+" not in text or Path(text).exists():
        try:
            text = Path(source).read_text().strip()
        except OSError as err:
            raise InputError("verifier key", "a verifier key or a file holding one", text) from err
    try:
        return Verifier(text)
    except ValueError as err:
        raise InputError("verifier key", "NAME+KEYID+BASE64", str(err)) from None


# -- checkpoints --------------------------------------------------------------------


def checkpoint(conn: Connection, signer: Signer, origin: str) -> str:
    """Sign and store a checkpoint of the chain head (in the caller's write
    transaction); an existing checkpoint of the same size is returned instead. Refused,
    as appending is, unless the database is durable (`chain.check_durable`)."""
    head = lock_head(conn)
    mark = "%s" if conn.dialect.name == "postgresql" else "?"
    cur = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cur.execute(f"SELECT note FROM checkpoints WHERE size = {mark}", [head.size])
        found = cur.fetchone()
        if found is not None:
            return str(found[0])
        note = sign(Checkpoint(origin, head.size, head.root()), signer)
        cur.execute(
            f"INSERT INTO checkpoints (size, root, note, created_us) VALUES ({mark}, {mark}, "
            f"{mark}, {mark})",
            [head.size, head.root(), note, now_us()],
        )
        return note
    finally:
        cur.close()


def append_to_log(path: Path, *notes: str) -> int:
    """Append the signed notes the external log lacks, in the order given, durably
    (one blank line between notes); return how many were appended. A note stored in
    the database whose append was cut short by a crash is caught up this way."""
    logged = set(read_log(path.read_text())) if path.exists() else set()
    missing = [note for note in dict.fromkeys(notes) if note not in logged]
    if not missing:
        return 0
    with open(path, "a", encoding="utf-8") as fh:
        for note in missing:
            fh.write(("\n" if logged else "") + note)
            logged.add(note)
        fh.flush()
        os.fsync(fh.fileno())
    return len(missing)


def read_log(text: str) -> list[str]:
    """The signed notes of a checkpoint log (or a single note), in order.

    A note is its body (origin, size, root, optional extension lines), one blank
    line, and its signature lines; notes are separated by one blank line.
    """
    blocks = [b for b in text.split("\n\n")]
    notes = []
    for i in range(0, len(blocks) - 1, 2):
        body, sigs = blocks[i], blocks[i + 1]
        notes.append(body + "\n\n" + sigs.rstrip("\n") + "\n")
    if len(blocks) % 2 == 1 and blocks[-1].strip():
        raise InputError("checkpoint", "signed notes (body, blank line, signatures)", blocks[-1])
    return notes


def stored_checkpoints(conn: Connection) -> list[tuple[int, bytes, str]]:
    rows = conn.exec_driver_sql("SELECT size, root, note FROM checkpoints ORDER BY size").all()
    return [(int(size), bytes(root), str(note)) for size, root, note in rows]


# -- proofs -------------------------------------------------------------------------


def _leaves(conn: Connection, size: int) -> list[bytes]:
    """Merkle leaf hashes of the first `size` events."""
    cur = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    mark = "%s" if conn.dialect.name == "postgresql" else "?"
    try:
        cur.execute(f"SELECT hash FROM events WHERE seq <= {mark} ORDER BY seq", [size])
        leaves = [merkle.leaf_hash(bytes(h)) for (h,) in cur.fetchall()]
    finally:
        cur.close()
    if len(leaves) != size:
        raise StorageError(f"the ledger holds {len(leaves)} of the {size} events checkpointed")
    return leaves


def inclusion_bundle(engine: Engine, seqs: Iterable[int], note: str) -> dict[str, Any]:
    """Proofs that the events at `seqs` are in the log of the signed checkpoint
    `note` (whose size must cover them)."""
    size = _note_size(note)
    with engine.connect() as conn:
        secret = pseudonym_key(conn)
        leaves = _leaves(conn, size)
        items = []
        for seq in sorted(set(seqs)):
            if not 1 <= seq <= size:
                raise InputError("seq", f"a position from 1 to {size}", seq)
            row = conn.exec_driver_sql(
                "SELECT * FROM events WHERE seq = " + ("%(s)s" if _pg(conn) else ":s"),
                {"s": seq},
            ).one()
            values = tuple(row._mapping[c] for c in COLUMNS)
            items.append(
                {
                    "seq": seq,
                    "entry": entry_of(values, secret).decode(),
                    "prev_hash": bytes(row._mapping["prev_hash"]).hex(),
                    "proof": [h.hex() for h in merkle.inclusion_proof(leaves, seq - 1, size)],
                }
            )
    return {"type": INCLUSION, "checkpoint": note, "events": items}


def consistency_bundle(engine: Engine, old_note: str, new_note: str) -> dict[str, Any]:
    """A proof that the log of checkpoint `old_note` is a prefix of that of `new_note`."""
    old, new = _note_size(old_note), _note_size(new_note)
    if old > new:
        raise InputError("checkpoints", "the older checkpoint first", f"sizes {old} > {new}")
    with engine.connect() as conn:
        leaves = _leaves(conn, new)
    proof = merkle.consistency_proof(leaves, old, new)
    return {
        "type": CONSISTENCY,
        "old": old_note,
        "new": new_note,
        "proof": [p.hex() for p in proof],
    }


def verify_bundle(bundle: Any, verifier: Verifier) -> str:
    """Check a proof bundle against the verifier key; return what it proves, or
    raise ProofError naming what fails."""
    if not isinstance(bundle, dict) or bundle.get("type") not in (INCLUSION, CONSISTENCY):
        raise ProofError(f"not a proof bundle: expected type {INCLUSION!r} or {CONSISTENCY!r}")
    try:
        if bundle["type"] == CONSISTENCY:
            old = open_checkpoint(bundle["old"], verifier)
            new = open_checkpoint(bundle["new"], verifier)
            if old.origin != new.origin:
                raise ProofError(f"checkpoints of two logs: {old.origin!r} and {new.origin!r}")
            proof = [bytes.fromhex(h) for h in bundle["proof"]]
            if not merkle.verify_consistency(old.size, new.size, old.root, new.root, proof):
                raise ProofError(
                    f"the log at size {old.size} is NOT a prefix of the log at size {new.size}"
                )
            return f"{old.origin}: size {old.size} is a prefix of size {new.size}"
        cp = open_checkpoint(bundle["checkpoint"], verifier)
        if not bundle["events"]:
            raise ProofError("the bundle proves no event (its event list is empty)")
        for item in bundle["events"]:
            _verify_inclusion(item, cp)
        seqs = ", ".join(str(item["seq"]) for item in bundle["events"])
        return f"{cp.origin}: events {seqs} are in the log of size {cp.size}"
    except CheckpointError as err:
        raise ProofError(f"checkpoint: {err}") from None
    except (AttributeError, KeyError, TypeError, ValueError) as err:  # a malformed bundle
        if isinstance(err, ProofError):
            raise
        raise ProofError(f"malformed proof bundle: {err!r}") from None


def _verify_inclusion(item: dict[str, Any], cp: Checkpoint) -> None:
    seq = item["seq"]
    entry = item["entry"].encode()
    if json.loads(entry).get("seq") != seq or type(seq) is not int:
        raise ProofError(f"event {seq}: the entry is for position {json.loads(entry).get('seq')}")
    chained = hashlib.sha256(bytes.fromhex(item["prev_hash"]) + entry).digest()
    proof = [bytes.fromhex(h) for h in item["proof"]]
    if not merkle.verify_inclusion(merkle.leaf_hash(chained), seq - 1, cp.size, proof, cp.root):
        raise ProofError(f"event {seq} is NOT in the log of size {cp.size} (root differs)")


def _note_size(note: str) -> int:
    lines = note.split("\n")
    if len(lines) < 3 or not lines[1].isdigit():
        raise InputError("checkpoint", "a signed checkpoint note", note[:80])
    return int(lines[1])


def _pg(conn: Connection) -> bool:
    return conn.dialect.name == "postgresql"
