"""Signed checkpoints: the C2SP signed-note and tlog-checkpoint formats.

Interoperability is checked against published data from other implementations: the
example key and note of Go's golang.org/x/mod/sumdb/note, the Ed25519 test vector of
RFC 8032, and checkpoints signed by the Go checksum database (sum.golang.org).
"""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from consentgate.ledger.checkpoint import (
    Checkpoint,
    CheckpointError,
    Signer,
    Verifier,
    generate_key,
    open_checkpoint,
    sign,
)
from consentgate.ledger.merkle import EMPTY_ROOT

EM_DASH = "\u2014"

# The example of golang.org/x/mod/sumdb/note's documentation.
GO_SIGNER = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VERIFIER = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
GO_SIGNATURE = (
    "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM="
)

# RFC 8032 section 7.1, TEST 1: secret key (seed), public key, signature of the empty message.
RFC8032_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC8032_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
RFC8032_EMPTY_SIG = bytes.fromhex(
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
)

# The Go checksum database's verifier key (built into the go command) and two of its
# published checkpoints, the second with a witness cosignature by an unknown key.
SUMDB_VERIFIER = "sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8"
SUMDB_NOTE = (
    "go.sum database tree\n"
    "6476701\n"
    "mb8QLQIs0Z0yP5Cstq6guj87oXWeC9gEM8oVikmm9Wk=\n"
    "\n"
    "\u2014 sum.golang.org Az3grsLX85Gz+s1SiTbgkuqxgItqFq7gsMUEyVnrsa9LM7Us9S+1xbFIGu95949rj4nPRYfv"
    "imWEPWL+o3GeoWwOoAw=\n"
)
SUMDB_COSIGNED_NOTE = (
    "go.sum database tree\n"
    "15067302\n"
    "gJyioq6dwR9n+NjEWORfYmH+ubeYm3kH42BBQ0bTpYI=\n"
    "\n"
    "\u2014 sum.golang.org Az3grp1rvWOs5NKlr/xR4GLN/CDyzzakmt1o61uSxYKpK1SerqOP2ClbX/peKUZjYnyomH5X"
    "z7GZG3TpB7OeKn4E2ww=\n"
    "\u2014 test.example.com qTGhC/xIPQ0AXKHK6Y+9ypRfuvMZWPjRXM8NiOg5M1WREn07VQXyuIXM3NRNav3ieVFLU"
    "qDRK77PWDmL6w8w84UqeAw=\n"
)

ORIGIN = "example.org/consent-ledger"
ROOT = hashlib.sha256(b"some tree").digest()


@pytest.fixture(scope="module")
def keys() -> tuple[Signer, Verifier]:
    signer_key, verifier_key = generate_key(ORIGIN)
    return Signer(signer_key), Verifier(verifier_key)


def _signed(body: str, signer: Signer) -> str:
    """A note built here, not by `sign`: any body text, correctly signed."""
    blob = base64.b64encode(signer.key_id + signer.sign(body.encode())).decode()
    return f"{body}\n{EM_DASH} {signer.name} {blob}\n"


# --- Interoperability -------------------------------------------------------------------


def test_go_note_example_byte_for_byte() -> None:
    signer = Signer(GO_SIGNER)
    verifier = Verifier(GO_VERIFIER)
    assert signer.name == verifier.name == "PeterNeumann"
    assert signer.key_id.hex() == verifier.key_id.hex() == "c74f20a3"
    assert signer.verifier_key == GO_VERIFIER
    # Ed25519 is deterministic: the same key and text give Go's signature exactly.
    signature = signer.sign(GO_TEXT.encode())
    assert base64.b64encode(signer.key_id + signature).decode() == GO_SIGNATURE
    assert _signed(GO_TEXT, signer) == f"{GO_TEXT}\n{EM_DASH} PeterNeumann {GO_SIGNATURE}\n"
    # The signature verifies; the text is then refused as a checkpoint body (no size line).
    with pytest.raises(CheckpointError, match=r"body has 2 line\(s\)"):
        open_checkpoint(f"{GO_TEXT}\n{EM_DASH} PeterNeumann {GO_SIGNATURE}\n", verifier)


def test_sum_golang_org_checkpoints_open() -> None:
    verifier = Verifier(SUMDB_VERIFIER)
    checkpoint = open_checkpoint(SUMDB_NOTE, verifier)
    assert checkpoint == Checkpoint(
        "go.sum database tree",
        6476701,
        base64.b64decode("mb8QLQIs0Z0yP5Cstq6guj87oXWeC9gEM8oVikmm9Wk="),
    )
    # Our encoding of that checkpoint is the body the Go server signed.
    assert SUMDB_NOTE.startswith(checkpoint.body().decode() + "\n")
    cosigned = open_checkpoint(SUMDB_COSIGNED_NOTE, verifier)
    assert cosigned.size == 15067302
    # A single changed digit of a real signed size is caught.
    with pytest.raises(CheckpointError, match=r"bad signature by sum\.golang\.org"):
        open_checkpoint(SUMDB_NOTE.replace("6476701", "6476702"), verifier)


def test_key_format_known_answer() -> None:
    name = "example.org/log"
    signer_key, verifier_key = generate_key(name, seed=RFC8032_SEED)
    # The public key, computed by the RFC, not by the code under test.
    assert (
        Ed25519PrivateKey.from_private_bytes(RFC8032_SEED).public_key().public_bytes_raw()
        == RFC8032_PUBLIC
    )
    key_id = hashlib.sha256(name.encode() + b"\n" + b"\x01" + RFC8032_PUBLIC).digest()[:4].hex()
    assert verifier_key == f"{name}+{key_id}+" + base64.b64encode(b"\x01" + RFC8032_PUBLIC).decode()
    assert signer_key == (
        f"PRIVATE+KEY+{name}+{key_id}+" + base64.b64encode(b"\x01" + RFC8032_SEED).decode()
    )
    signer, verifier = Signer(signer_key), Verifier(verifier_key)
    assert signer.key_id == verifier.key_id == bytes.fromhex(key_id)
    assert signer.verifier_key == verifier_key
    assert signer.sign(b"") == RFC8032_EMPTY_SIG
    assert verifier.verify(b"", RFC8032_EMPTY_SIG)
    assert not verifier.verify(b"x", RFC8032_EMPTY_SIG)


# --- Round trips ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "checkpoint",
    [
        Checkpoint(ORIGIN, 5_000_000, ROOT),
        Checkpoint(ORIGIN, 0, EMPTY_ROOT),
        Checkpoint("log.example/\u00e9\u00e8 \u2014 tree", 2**64 - 1, ROOT),
    ],
)
def test_round_trip(checkpoint: Checkpoint, keys: tuple[Signer, Verifier]) -> None:
    signer, verifier = keys
    note = sign(checkpoint, signer)
    assert note.startswith(checkpoint.body().decode() + "\n" + EM_DASH + " " + ORIGIN + " ")
    assert open_checkpoint(note, verifier) == checkpoint
    assert checkpoint.body() == (
        f"{checkpoint.origin}\n{checkpoint.size}\n"
        f"{base64.b64encode(checkpoint.root).decode()}\n".encode()
    )


def test_extension_lines_and_other_signatures_are_ignored(keys: tuple[Signer, Verifier]) -> None:
    signer, verifier = keys
    body = f"{ORIGIN}\n7\n{base64.b64encode(ROOT).decode()}\nextension one\n\u00e9xtension 2\n"
    assert open_checkpoint(_signed(body, signer), verifier) == Checkpoint(ORIGIN, 7, ROOT)
    witness_signer = Signer(generate_key("witness.example")[0])
    witness_line = _signed(body, witness_signer).split("\n\n")[1]
    cosigned = _signed(body, signer) + witness_line
    assert open_checkpoint(cosigned, verifier).size == 7
    witness_first = body + "\n" + witness_line + _signed(body, signer).split("\n\n")[1]
    assert open_checkpoint(witness_first, verifier).size == 7
    assert open_checkpoint(cosigned, Verifier(witness_signer.verifier_key)).size == 7


# --- Tampering --------------------------------------------------------------------------


def test_every_single_byte_change_is_rejected(keys: tuple[Signer, Verifier]) -> None:
    """Every position of the body and signature line, every other byte value; deletions."""
    signer, verifier = keys
    note = sign(Checkpoint(ORIGIN, 1234, ROOT), signer).encode()
    assert open_checkpoint(note.decode(), verifier) == Checkpoint(ORIGIN, 1234, ROOT)
    variants: list[bytes] = []
    for i in range(len(note)):
        variants.append(note[:i] + note[i + 1 :])
        variants.extend(note[:i] + bytes([v]) + note[i + 1 :] for v in range(256) if v != note[i])
    accepted = []
    for variant in variants:
        # Bytes that are not UTF-8 stay in the text as unpaired surrogates.
        text = variant.decode("utf-8", "surrogateescape")
        try:
            open_checkpoint(text, verifier)
        except CheckpointError:
            continue
        accepted.append(variant)
    assert not accepted
    assert len(variants) == len(note) * 256


def test_changed_verifier_key_rejects(keys: tuple[Signer, Verifier]) -> None:
    """Each one-bit change of the verifier key text: the key is refused or the note is."""
    signer, _ = keys
    note = sign(Checkpoint(ORIGIN, 9, ROOT), signer)
    key = signer.verifier_key.encode()
    for i in range(len(key)):
        for bit in range(8):
            changed = (key[:i] + bytes([key[i] ^ (1 << bit)]) + key[i + 1 :]).decode("latin-1")
            try:
                other = Verifier(changed)
            except ValueError:
                continue
            with pytest.raises(CheckpointError):
                open_checkpoint(note, other)


def test_wrong_verifier(keys: tuple[Signer, Verifier]) -> None:
    signer, _ = keys
    note = sign(Checkpoint(ORIGIN, 3, ROOT), signer)
    same_name = Verifier(generate_key(ORIGIN)[1])
    with pytest.raises(CheckpointError, match=r"no signature by the expected key .*unknown key"):
        open_checkpoint(note, same_name)
    with pytest.raises(CheckpointError, match=r"no signature by the expected key other\.example"):
        open_checkpoint(note, Verifier(generate_key("other.example")[1]))
    # The right name and key id on a signature by another key.
    impostor = Signer(generate_key(ORIGIN)[0])
    blob = base64.b64encode(signer.key_id + impostor.sign(Checkpoint(ORIGIN, 3, ROOT).body()))
    forged = f"{Checkpoint(ORIGIN, 3, ROOT).body().decode()}\n{EM_DASH} {ORIGIN} {blob.decode()}\n"
    with pytest.raises(CheckpointError, match="bad signature"):
        open_checkpoint(forged, keys[1])


# --- Malformed notes and bodies ---------------------------------------------------------

B64_ROOT = base64.b64encode(ROOT).decode()


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (f"{ORIGIN}\n01\n{B64_ROOT}\n", r"malformed tree size '01'"),
        (f"{ORIGIN}\n-1\n{B64_ROOT}\n", r"malformed tree size '-1'"),
        (f"{ORIGIN}\n+1\n{B64_ROOT}\n", r"malformed tree size '\+1'"),
        (f"{ORIGIN}\n 1\n{B64_ROOT}\n", r"malformed tree size ' 1'"),
        (f"{ORIGIN}\n1_000\n{B64_ROOT}\n", r"malformed tree size '1_000'"),
        (f"{ORIGIN}\n\u0663\n{B64_ROOT}\n", r"malformed tree size"),  # an Arabic-Indic 3
        (f"{ORIGIN}\n\n{B64_ROOT}\n", r"malformed tree size ''"),
        (f"{ORIGIN}\n18446744073709551616\n{B64_ROOT}\n", r"larger than 2\*\*64-1"),
        (f"{ORIGIN}\n5\n{base64.b64encode(ROOT[:31]).decode()}\n", r"root hash .* 31 bytes"),
        (f"{ORIGIN}\n5\n{base64.b64encode(ROOT + b'x').decode()}\n", r"root hash .* 33 bytes"),
        (f"{ORIGIN}\n5\nnot base64!\n", r"malformed root hash"),
        (f"{ORIGIN}\n5\n{B64_ROOT.rstrip('=')}\n", r"malformed root hash"),
        (f"{ORIGIN}\n5\n{B64_ROOT[:-2]}{chr(ord(B64_ROOT[-2]) + 1)}=\n", r"malformed root hash"),
        (f"\n5\n{B64_ROOT}\n", r"origin \(line 1\) is empty"),
        (f"{ORIGIN}\n5\n", r"body has 2 line\(s\)"),
        (f"{ORIGIN}\n5\n{B64_ROOT}\n\nextension\n", r"extension line 4 is empty"),
    ],
)
def test_malformed_body(body: str, problem: str, keys: tuple[Signer, Verifier]) -> None:
    signer, verifier = keys
    # Correctly signed, so the error must come from the body itself.
    with pytest.raises(CheckpointError, match=problem):
        open_checkpoint(_signed(body, signer), verifier)


def test_malformed_notes(keys: tuple[Signer, Verifier]) -> None:
    signer, verifier = keys
    good = sign(Checkpoint(ORIGIN, 5, ROOT), signer)
    body, signature_line = good.split("\n\n")
    name_and_blob = signature_line[2:-1]
    cases = [
        (body + "\n" + signature_line, "no blank line separating the body"),
        (body + "\n\n", "no signature lines"),
        (good[:-1], "does not end with a newline"),
        (body + "\n\n- " + name_and_blob + "\n", "line 1 does not start with an em dash"),
        (body + "\n\n" + EM_DASH + name_and_blob + "\n", "line 1 does not start with an em dash"),
        (good.replace(f"{ORIGIN} ", f"{ORIGIN}  "), "line 1: signature is not valid base64"),
        (good.replace("=\n", "\n"), "line 1: signature is not valid base64"),
        (good[: -len("x=\n")] + "!=\n", "line 1: signature is not valid base64"),
        (good.replace(f"{ORIGIN} ", "+bad "), r"line 1: malformed key name '\+bad'"),
        (f"{body}\n\n{EM_DASH}  {name_and_blob}\n", "line 1: malformed key name ''"),
        (f"{body}\n\n{signature_line}{EM_DASH} a AAAA\n", "line 2: signature is too short"),
        (good.replace("\n", "\r\n"), "control character at offset"),
        (good.replace("5", "\t5", 1), "control character at offset"),
        (good.replace(ORIGIN, ORIGIN + "\udcff"), "not valid text"),
        (good + f"{EM_DASH} other AAAAAAAA\n" * 100, "more than 100 signatures"),
    ]
    for text, problem in cases:
        with pytest.raises(CheckpointError, match=problem):
            open_checkpoint(text, verifier)


def test_non_canonical_signature_base64_is_rejected(keys: tuple[Signer, Verifier]) -> None:
    """68 bytes leave 2 unused bits in the last base64 digit; setting them is refused."""
    signer, verifier = keys
    good = sign(Checkpoint(ORIGIN, 5, ROOT), signer)
    blob = good.rsplit(" ", 1)[1][:-1]
    assert blob.endswith("=")
    assert not blob.endswith("==")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = alphabet.index(blob[-2])
    variant = blob[:-2] + alphabet[last | 1] + "="
    assert variant != blob
    assert base64.b64decode(variant) == base64.b64decode(blob)
    with pytest.raises(CheckpointError, match="not valid base64"):
        open_checkpoint(good.replace(blob, variant), verifier)


# --- Keys -------------------------------------------------------------------------------


def test_malformed_keys() -> None:
    signer_key, verifier_key = generate_key("log.example", seed=bytes(32))
    name, key_id, key = verifier_key.split("+", 2)
    wrong_id = f"{int(key_id, 16) ^ 1:08x}"
    verifier_cases = [
        (f"{name}+{wrong_id}+{key}", f"key id {wrong_id} does not match"),
        (f"{name}+{key_id[:7]}+{key}", "is not 8 lowercase hex digits"),
        (f"{name}+{key_id[:7]}g+{key}", "is not 8 lowercase hex digits"),
        (f"{name}+{key_id.upper()}+{key}", "is not 8 lowercase hex digits"),
        (f"+{key_id}+{key}", "malformed key name"),
        (f"a b+{key_id}+{key}", "malformed key name"),
        (f"{name}+{key_id}+{key}!", "not valid base64"),
        (f"{name}+{key_id}+" + base64.b64encode(b"\x02" + bytes(32)).decode(), "algorithm"),
        (f"{name}+{key_id}+" + base64.b64encode(b"\x01" + bytes(31)).decode(), "31 bytes"),
        (f"{name}+{key_id}", "the key itself is missing"),
        ("", "malformed key name"),
    ]
    for text, problem in verifier_cases:
        with pytest.raises(ValueError, match=problem):
            Verifier(text)
    with pytest.raises(ValueError, match="does not start with PRIVATE\\+KEY\\+"):
        Signer(verifier_key)
    with pytest.raises(ValueError, match=f"key id {wrong_id} does not match"):
        Signer(signer_key.replace(key_id, wrong_id))
    with pytest.raises(ValueError, match=r"signer key: .*not valid base64"):
        Signer(signer_key + "A")
    with pytest.raises(ValueError, match="malformed key name"):
        generate_key("has+plus")
    with pytest.raises(ValueError, match="seed is 32 bytes"):
        generate_key("log.example", seed=bytes(16))
    assert Signer(signer_key).verifier_key == verifier_key
    assert "PRIVATE" not in repr(Signer(signer_key))


def test_checkpoint_values_are_validated() -> None:
    for origin, size, root, problem in [
        ("", 1, ROOT, "origin"),
        ("two\nlines", 1, ROOT, "origin"),
        ("bad\ud800", 1, ROOT, "origin"),
        (ORIGIN, -1, ROOT, "tree size"),
        (ORIGIN, 2**64, ROOT, "tree size"),
        (ORIGIN, True, ROOT, "tree size"),
        (ORIGIN, 1, ROOT[:31], "root hash"),
    ]:
        with pytest.raises(ValueError, match=problem):
            Checkpoint(origin, size, root)
