"""Pseudonyms and keyed commitments are standard HMAC-SHA256; sealing round-trips."""

from __future__ import annotations

import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consentgate.ledger.sealing import KeyedHash, SealError, new_key, pseudonym, seal, unseal


@given(st.binary(min_size=0, max_size=200), st.binary(max_size=300))
def test_keyed_hash_is_hmac_sha256(key: bytes, message: bytes) -> None:
    assert KeyedHash(key)(message) == hmac.digest(key, message, "sha256")


def test_pseudonym_is_the_first_eight_bytes_of_the_hmac() -> None:
    secret = b"s" * 32
    full = hmac.digest(secret, b"m1", "sha256")
    assert pseudonym(secret, "m1") == int.from_bytes(full[:8], "big", signed=True)
    assert pseudonym(secret, "m1") != pseudonym(b"t" * 32, "m1")


def test_sealed_fields_open_only_with_their_key_and_event() -> None:
    key = new_key()
    sealed = seal(key, b'{"ip":"10.0.0.1"}', b"digest-1")
    assert unseal(key, sealed, b"digest-1") == b'{"ip":"10.0.0.1"}'
    assert seal(key, b"x", b"d") != seal(key, b"x", b"d")  # a fresh nonce each time
    with pytest.raises(SealError):
        unseal(new_key(), sealed, b"digest-1")
    with pytest.raises(SealError):
        unseal(key, sealed, b"digest-2")
    flipped = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(SealError):
        unseal(key, flipped, b"digest-1")
