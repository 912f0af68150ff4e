"""Signed checkpoints: a log's size and Merkle root, signed with Ed25519.

The formats are those of the transparency-log ecosystem (C2SP tlog-checkpoint and
signed-note, as implemented by Go's golang.org/x/mod/sumdb/note), so standard tools and
witnesses can read them.

Checkpoint body (UTF-8 text, every line ending in a newline)::

    <origin>                  the log's identity, e.g. "example.org/consent-ledger"
    <size>                    tree size, ASCII decimal without leading zeros
    <root>                    the RFC 6962 root (`consentgate.ledger.merkle`), standard
                              base64 of the 32 bytes
    [<extension line>...]     optional, non-empty; read past and ignored here

Signed note: the body, one empty line, then one line per signature::

    — <key name> <base64(key id || Ed25519 signature of the body bytes)>

The line starts with U+2014 EM DASH and a space. A note may carry several signatures
(cosigners, witnesses). `open_checkpoint` requires a signature line with the verifier's
name and key id, and every such line must verify; lines by other keys must be well formed
but are not checked (as in Go, they cannot be).

Keys, as text::

    verifier key: <name>+<key id>+<base64(0x01 || 32-byte Ed25519 public key)>
    signer key:   PRIVATE+KEY+<name>+<key id>+<base64(0x01 || 32-byte Ed25519 seed)>

0x01 names the algorithm (Ed25519). The key id is the first 4 bytes of
SHA-256(name || "\\n" || 0x01 || public key), as 8 lowercase hex digits in key text and
as 4 bytes at the start of a signature, so a verifier can tell keys of one name apart.
A name is non-empty and has no whitespace and no "+".

Parsing is strict so that a note or a key has exactly one spelling: base64 must be
canonical (Go's decoder also accepts set unused trailing bits), key ids lowercase (Go also
takes uppercase), and control characters other than newline are refused. Sizes are at
most 2**64 - 1, as in Go. The signature is checked before the body is parsed. Callers
must still compare the returned origin with the log they expect.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from dataclasses import dataclass
from hashlib import sha256

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "Signer",
    "Verifier",
    "generate_key",
    "open_checkpoint",
    "sign",
]

_ALG_ED25519 = b"\x01"
_SIG_PREFIX = "\N{EM DASH} "
_MAX_SIGNATURES = 100  # as Go's note.Open: bounds the work an untrusted note can cause
_MAX_SIZE = 2**64 - 1
_SIZE = re.compile(r"0|[1-9][0-9]*")
_KEY_ID = re.compile(r"[0-9a-f]{8}")


class CheckpointError(ValueError):
    """A signed checkpoint was malformed, unsigned by the expected key, or forged."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes | None:
    """Decode canonical standard base64 (padded, no stray bits); None if it is not."""
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return data if _b64(data) == text else None


def _control_char(text: str) -> int | None:
    """The offset of the first control character other than newline, if any."""
    for i, c in enumerate(text):
        if c < " " and c != "\n":
            return i
    return None


def _valid_name(name: str) -> bool:
    return bool(name) and "+" not in name and not any(c.isspace() or c < " " for c in name)


def _key_id(name: str, public_key: bytes) -> bytes:
    return sha256(name.encode() + b"\n" + _ALG_ED25519 + public_key).digest()[:4]


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def _parse_key(text: str, kind: str) -> tuple[str, bytes, bytes]:
    """Split `<name>+<key id>+<base64(0x01 || 32 bytes)>` into name, key id and the 32 bytes."""
    name, _, rest = text.partition("+")
    key_id_hex, _, key_b64 = rest.partition("+")
    if not _valid_name(name):
        raise ValueError(f"{kind} key: malformed key name {name!r}")
    if not _KEY_ID.fullmatch(key_id_hex):
        raise ValueError(f"{kind} key: key id {key_id_hex!r} is not 8 lowercase hex digits")
    if not key_b64:
        raise ValueError(f"{kind} key: the key itself is missing after the key id")
    raw = _unb64(key_b64)
    if raw is None:
        raise ValueError(f"{kind} key: the key is not valid base64")
    if raw[:1] != _ALG_ED25519:
        raise ValueError(f"{kind} key: unsupported algorithm (first byte must be 0x01, Ed25519)")
    if len(raw) != 33:
        raise ValueError(f"{kind} key: the Ed25519 key is {len(raw) - 1} bytes, expected 32")
    return name, bytes.fromhex(key_id_hex), raw[1:]


def _check_key_id(kind: str, name: str, given: bytes, public_key: bytes) -> None:
    expected = _key_id(name, public_key)
    if given != expected:
        raise ValueError(
            f"{kind} key: key id {given.hex()} does not match the name and key"
            f" (expected {expected.hex()})"
        )


class Verifier:
    """A verifier key: checks signatures by one named Ed25519 key."""

    __slots__ = ("_public", "key_id", "name")

    def __init__(self, key: str) -> None:
        name, key_id, public = _parse_key(key, "verifier")
        _check_key_id("verifier", name, key_id, public)
        self.name = name
        self.key_id = key_id
        self._public = Ed25519PublicKey.from_public_bytes(public)

    def verify(self, message: bytes, signature: bytes) -> bool:
        """Whether `signature` is this key's Ed25519 signature of `message`."""
        try:
            self._public.verify(signature, message)
        except InvalidSignature:
            return False
        return True

    def __repr__(self) -> str:
        return f"Verifier({self.name}+{self.key_id.hex()})"


class Signer:
    """A signer key: signs with one named Ed25519 key. Keep the key text secret.

    `verifier_key` is the matching verifier key text, to publish.
    """

    __slots__ = ("_private", "key_id", "name", "verifier_key")

    def __init__(self, key: str) -> None:
        prefix = "PRIVATE+KEY+"
        if not key.startswith(prefix):
            raise ValueError("signer key: does not start with PRIVATE+KEY+")
        name, key_id, seed = _parse_key(key[len(prefix) :], "signer")
        self._private = Ed25519PrivateKey.from_private_bytes(seed)
        public = _raw_public(self._private.public_key())
        _check_key_id("signer", name, key_id, public)
        self.name = name
        self.key_id = key_id
        self.verifier_key = f"{name}+{key_id.hex()}+{_b64(_ALG_ED25519 + public)}"

    def sign(self, message: bytes) -> bytes:
        """The 64-byte Ed25519 signature of `message`."""
        return self._private.sign(message)

    def __repr__(self) -> str:
        return f"Signer({self.name}+{self.key_id.hex()})"


def generate_key(name: str, *, seed: bytes | None = None) -> tuple[str, str]:
    """A new key pair for `name`: (signer key text, verifier key text).

    `seed` (32 bytes) derives the key deterministically, for tests and known answers;
    by default it comes from the operating system's random source.
    """
    if not _valid_name(name):
        raise ValueError(f"malformed key name {name!r}: it must be non-empty, no spaces, no '+'")
    if seed is None:
        seed = os.urandom(32)
    if len(seed) != 32:
        raise ValueError(f"an Ed25519 seed is 32 bytes, got {len(seed)}")
    public = _raw_public(Ed25519PrivateKey.from_private_bytes(seed).public_key())
    key_id = _key_id(name, public).hex()
    signer = f"PRIVATE+KEY+{name}+{key_id}+{_b64(_ALG_ED25519 + seed)}"
    verifier = f"{name}+{key_id}+{_b64(_ALG_ED25519 + public)}"
    return signer, verifier


@dataclass(frozen=True)
class Checkpoint:
    """A log's origin (identity), tree size and Merkle root (32 bytes)."""

    origin: str
    size: int
    root: bytes

    def __post_init__(self) -> None:
        origin, size, root = self.origin, self.size, self.root
        if not isinstance(origin, str) or not origin or any(c < " " for c in origin):
            raise ValueError(f"origin {origin!r} must be one non-empty line of text")
        try:
            origin.encode()
        except UnicodeEncodeError:
            raise ValueError(f"origin {origin!r} is not valid text") from None
        if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= _MAX_SIZE:
            raise ValueError(f"tree size {size!r} is not an integer in 0..2**64-1")
        if not isinstance(root, bytes) or len(root) != 32:
            raise ValueError(f"root hash {root!r} is not 32 bytes")

    def body(self) -> bytes:
        """The signed text: origin, size and base64 root, one per line."""
        return f"{self.origin}\n{self.size}\n{_b64(self.root)}\n".encode()


def sign(checkpoint: Checkpoint, signer: Signer) -> str:
    """The signed note: the checkpoint body, an empty line and `signer`'s signature line."""
    body = checkpoint.body()
    signature = signer.key_id + signer.sign(body)
    return f"{body.decode()}\n{_SIG_PREFIX}{signer.name} {_b64(signature)}\n"


def _split_note(text: str) -> tuple[str, list[str]]:
    """The body (ending in a newline) and signature lines of a signed note."""
    try:
        text.encode()
    except UnicodeEncodeError:
        raise CheckpointError("checkpoint note is not valid text (unpaired surrogate)") from None
    bad = _control_char(text)
    if bad is not None:
        raise CheckpointError(f"checkpoint note has a control character at offset {bad}")
    split = text.rfind("\n\n")
    if split < 0:
        raise CheckpointError(
            "checkpoint note has no blank line separating the body from the signatures"
        )
    body, signatures = text[: split + 1], text[split + 2 :]
    if not signatures:
        raise CheckpointError("checkpoint note has no signature lines")
    if not signatures.endswith("\n"):
        raise CheckpointError("checkpoint note does not end with a newline")
    lines = signatures[:-1].split("\n")
    if len(lines) > _MAX_SIGNATURES:
        raise CheckpointError(f"checkpoint note has more than {_MAX_SIGNATURES} signatures")
    return body, lines


def _check_signatures(body: bytes, lines: list[str], verifier: Verifier) -> None:
    """Require a valid signature by `verifier`; every line must be well formed."""
    verified = False
    others: list[str] = []
    for number, line in enumerate(lines, start=1):
        if not line.startswith(_SIG_PREFIX):
            raise CheckpointError(
                f"signature line {number} does not start with an em dash (U+2014) and a space"
            )
        name, _, sig_b64 = line[len(_SIG_PREFIX) :].partition(" ")
        if not _valid_name(name):
            raise CheckpointError(f"signature line {number}: malformed key name {name!r}")
        blob = _unb64(sig_b64)
        if blob is None:
            raise CheckpointError(f"signature line {number}: signature is not valid base64")
        if len(blob) < 5:
            raise CheckpointError(f"signature line {number}: signature is too short")
        key_id, signature = blob[:4], blob[4:]
        if name != verifier.name or key_id != verifier.key_id:
            others.append(f"{name}+{key_id.hex()}")
            continue
        if not verifier.verify(body, signature):
            raise CheckpointError(
                f"signature line {number}: bad signature by {name}+{key_id.hex()}"
                " (the note was altered or signed by another key)"
            )
        verified = True
    if not verified:
        raise CheckpointError(
            f"no signature by the expected key {verifier.name}+{verifier.key_id.hex()}"
            f"; signed only by unknown key(s): {', '.join(others)}"
        )


def _parse_body(body: str) -> Checkpoint:
    lines = body[:-1].split("\n")
    if len(lines) < 3:
        raise CheckpointError(
            f"checkpoint body has {len(lines)} line(s), expected origin, size and root hash"
        )
    origin, size_text, root_text = lines[:3]
    if not origin:
        raise CheckpointError("checkpoint origin (line 1) is empty")
    if not _SIZE.fullmatch(size_text) or len(size_text) > 20:
        raise CheckpointError(
            f"malformed tree size {size_text!r} (line 2): expected a decimal number"
            " without sign or leading zeros"
        )
    size = int(size_text)
    if size > _MAX_SIZE:
        raise CheckpointError(f"tree size {size_text} (line 2) is larger than 2**64-1")
    root = _unb64(root_text)
    if root is None:
        raise CheckpointError(f"malformed root hash {root_text!r} (line 3): not canonical base64")
    if len(root) != 32:
        raise CheckpointError(f"root hash (line 3) is {len(root)} bytes, expected 32")
    for number, line in enumerate(lines[3:], start=4):
        if not line:
            raise CheckpointError(f"checkpoint extension line {number} is empty")
    return Checkpoint(origin, size, root)


def open_checkpoint(text: str, verifier: Verifier) -> Checkpoint:
    """Check a signed note's signature by `verifier`, then parse its checkpoint body.

    Raises `CheckpointError` naming the problem. The caller still compares `origin`
    with the log it expects.
    """
    body, lines = _split_note(text)
    _check_signatures(body.encode(), lines, verifier)
    return _parse_body(body)
