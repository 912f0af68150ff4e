"""RFC 6962 / RFC 9162 Merkle hashes and proofs.

Three independent checks of `consentgate.ledger.merkle`:

- the published test vectors of the Certificate Transparency reference implementations
  (roots of the trees over the eight standard test leaves, audit paths, consistency
  proofs), copied as hex;
- a reference written here straight from the recursive definitions of RFC 9162 2.1
  (MTH, PATH, SUBPROOF), compared at every size up to a few hundred leaves;
- seeded single-bit mutations of valid proofs, judged by a reference verifier that
  rebuilds the roots along the recursive definitions instead of RFC 9162's bit loops.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence

import pytest

from consentgate.ledger import merkle
from consentgate.ledger.merkle import (
    EMPTY_ROOT,
    RootBuilder,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    verify_consistency,
    verify_inclusion,
)

# --- Published vectors (certificate-transparency, trillian, transparency-dev/merkle) ---

LEAVES = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]

# ROOTS[n - 1] is the root of the tree over the first n test leaves.
ROOTS = [
    bytes.fromhex(h)
    for h in (
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    )
]


def _hexes(*values: str) -> list[bytes]:
    return [bytes.fromhex(v) for v in values]


# (leaf index, tree size, audit path); the sources list them with 1-based leaf numbers.
INCLUSION_VECTORS = [
    (0, 1, []),
    (
        0,
        8,
        _hexes(
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ),
    ),
    (
        5,
        8,
        _hexes(
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ),
    ),
    (2, 3, _hexes("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125")),
    (
        1,
        5,
        _hexes(
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ),
    ),
]

# (old size, new size, consistency proof)
CONSISTENCY_VECTORS = [
    (1, 1, []),
    (
        1,
        8,
        _hexes(
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ),
    ),
    (
        6,
        8,
        _hexes(
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ),
    ),
    (
        2,
        5,
        _hexes(
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ),
    ),
    (
        6,
        7,
        _hexes(
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ),
    ),
]

TEST_HASHES = [leaf_hash(d) for d in LEAVES]
SOME_HASH = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")


def test_hash_functions_match_published_values() -> None:
    # From the RFC 6962 hasher tests of transparency-dev/merkle.
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert leaf_hash(b"").hex() == (
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    )
    assert leaf_hash(b"L123456").hex() == (
        "395aa064aa4c29f7010acfe3f25db9485bbd4b91897b6ad7ad547639252b4d56"
    )
    assert node_hash(b"N123", b"N456").hex() == (
        "aa217fe888e47007fa15edab33c2b492a722cb106c64667fc2b044444de66bbb"
    )
    assert leaf_hash(b"") != EMPTY_ROOT


@pytest.mark.parametrize("size", range(1, 9))
def test_roots_match_published_vectors(size: int) -> None:
    assert merkle.root(TEST_HASHES[:size]) == ROOTS[size - 1]
    builder = RootBuilder()
    builder.extend(TEST_HASHES[:size])
    assert builder.size == size
    assert builder.root() == ROOTS[size - 1]


def test_empty_tree() -> None:
    assert merkle.root([]) == EMPTY_ROOT
    assert RootBuilder().root() == EMPTY_ROOT
    assert RootBuilder().size == 0


@pytest.mark.parametrize(("index", "size", "path"), INCLUSION_VECTORS)
def test_inclusion_vectors(index: int, size: int, path: list[bytes]) -> None:
    assert inclusion_proof(TEST_HASHES, index, size) == path
    leaf, root = TEST_HASHES[index], ROOTS[size - 1]
    assert verify_inclusion(leaf, index, size, path, root)

    # The corruptions of the reference implementations' verifier tests.
    rejected = [
        (leaf, index - 1, size, path, root),
        (leaf, index + 1, size, path, root),
        (leaf, index ^ 2, size, path, root),
        (leaf, index, size * 2, path, root),
        (leaf, index, size // 2, path, root),
        (b"WrongLeaf", index, size, path, root),
        (SOME_HASH, index, size, path, root),
        (leaf, index, size, path, EMPTY_ROOT),
        (leaf, index, size, path, SOME_HASH),
        (leaf, index, size, [*path, b""], root),
        (leaf, index, size, [*path, root], root),
        (leaf, index, size, [b"", *path], root),
        (leaf, index, size, [root, *path], root),
    ]
    if path:
        rejected.append((leaf, index, size, path[:-1], root))
    if len(path) > 1:
        rejected.append((leaf, index, size, [path[0], SOME_HASH, *path[1:]], root))
    for i in range(len(path)):
        flipped = bytes([path[i][0] ^ 8]) + path[i][1:]
        rejected.append((leaf, index, size, [*path[:i], flipped, *path[i + 1 :]], root))
    for case in rejected:
        assert not verify_inclusion(*case), case


@pytest.mark.parametrize(("old", "new", "proof"), CONSISTENCY_VECTORS)
def test_consistency_vectors(old: int, new: int, proof: list[bytes]) -> None:
    assert consistency_proof(TEST_HASHES, old, new) == proof
    old_root, new_root = ROOTS[old - 1], ROOTS[new - 1]
    assert verify_consistency(old, new, old_root, new_root, proof)
    if not proof:
        return
    rejected = [
        (old - 1, new, old_root, new_root, proof),
        (old + 1, new, old_root, new_root, proof),
        (old ^ 2, new, old_root, new_root, proof),
        (old, new * 2, old_root, new_root, proof),
        (old, new // 2, old_root, new_root, proof),
        (old, new, b"WrongRoot", new_root, proof),
        (old, new, old_root, b"WrongRoot", proof),
        (old, new, new_root, old_root, proof),
        (old, new, old_root, new_root, []),
        (old, new, old_root, new_root, [*proof, b""]),
        (old, new, old_root, new_root, [*proof, old_root]),
        (old, new, old_root, new_root, [*proof, new_root]),
        (old, new, old_root, new_root, [b"", *proof]),
        (old, new, old_root, new_root, [old_root, *proof]),
        (old, new, old_root, new_root, [new_root, *proof]),
        (old, new, old_root, new_root, [proof[0], *proof]),
        (old, new, old_root, new_root, proof[:-1]),
    ]
    for i in range(len(proof)):
        flipped = bytes([proof[i][0] ^ 16]) + proof[i][1:]
        rejected.append((old, new, old_root, new_root, [*proof[:i], flipped, *proof[i + 1 :]]))
    for case in rejected:
        assert not verify_consistency(*case), case


def test_consistency_edge_cases() -> None:
    a, b = ROOTS[0], ROOTS[1]
    assert verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    assert verify_consistency(0, 5, EMPTY_ROOT, ROOTS[4], [])
    assert verify_consistency(1, 1, a, a, [])
    assert not verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT])
    assert not verify_consistency(0, 1, EMPTY_ROOT, a, [EMPTY_ROOT])
    assert not verify_consistency(0, 1, a, a, [])  # a size-0 tree's root is EMPTY_ROOT
    assert not verify_consistency(1, 1, a, b, [])
    assert not verify_consistency(1, 1, a, a, [a])
    assert not verify_consistency(1, 0, a, EMPTY_ROOT, [])
    assert not verify_consistency(2, 1, b, a, [])
    assert not verify_consistency(1, 2, a, b, [])  # a real extension needs a proof
    assert consistency_proof(TEST_HASHES, 0, 8) == []
    assert consistency_proof(TEST_HASHES, 8, 8) == []


# --- A reference from the recursive definitions of RFC 9162 2.1 ------------------------


def _k(n: int) -> int:
    """The largest power of two smaller than n, by search rather than bit tricks."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(d: Sequence[bytes]) -> bytes:
    if not d:
        return hashlib.sha256().digest()
    if len(d) == 1:
        return d[0]
    k = _k(len(d))
    return hashlib.sha256(b"\x01" + ref_mth(d[:k]) + ref_mth(d[k:])).digest()


def ref_path(m: int, d: Sequence[bytes]) -> list[bytes]:
    if len(d) == 1:
        return []
    k = _k(len(d))
    if m < k:
        return [*ref_path(m, d[:k]), ref_mth(d[k:])]
    return [*ref_path(m - k, d[k:]), ref_mth(d[:k])]


def ref_subproof(m: int, d: Sequence[bytes], whole: bool) -> list[bytes]:
    if m == len(d):
        return [] if whole else [ref_mth(d)]
    k = _k(len(d))
    if m <= k:
        return [*ref_subproof(m, d[:k], whole), ref_mth(d[k:])]
    return [*ref_subproof(m - k, d[k:], False), ref_mth(d[:k])]


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def ref_verify_inclusion(leaf: bytes, m: int, n: int, path: list[bytes], root: bytes) -> bool:
    """Fold the path along the sides PATH puts each sibling on."""
    if not 0 <= m < n:
        return False

    def sides(m: int, n: int) -> list[bool]:  # True: the sibling is on the left
        if n == 1:
            return []
        k = _k(n)
        return [*sides(m, k), False] if m < k else [*sides(m - k, n - k), True]

    side_list = sides(m, n)
    if len(side_list) != len(path):
        return False
    r = leaf
    for p, left in zip(path, side_list, strict=True):
        r = _node(p, r) if left else _node(r, p)
    return r == root


def ref_verify_consistency(m: int, n: int, old: bytes, new: bytes, proof: list[bytes]) -> bool:
    """Rebuild both roots along SUBPROOF, consuming the proof in order."""
    if not 0 <= m <= n:
        return False
    if m == 0:
        return not proof and old == hashlib.sha256().digest()
    if m == n:
        return not proof and old == new
    items = iter(proof)

    def rebuild(m: int, n: int, whole: bool) -> tuple[bytes, bytes]:
        if m == n:
            if whole:
                return old, old
            x = next(items)
            return x, x
        k = _k(n)
        if m <= k:
            o, w = rebuild(m, k, whole)
            return o, _node(w, next(items))
        o, w = rebuild(m - k, n - k, False)
        z = next(items)
        return _node(z, o), _node(z, w)

    try:
        got_old, got_new = rebuild(m, n, True)
    except StopIteration:
        return False
    return next(items, None) is None and got_old == old and got_new == new


def _hashes(count: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    return [leaf_hash(rng.randbytes(rng.randrange(0, 40))) for _ in range(count)]


def test_reference_agrees_with_published_vectors() -> None:
    # The reference must be right before it judges anything.
    for n in range(1, 9):
        assert ref_mth(TEST_HASHES[:n]) == ROOTS[n - 1]
    for index, size, path in INCLUSION_VECTORS:
        assert ref_path(index, TEST_HASHES[:size]) == path
        assert ref_verify_inclusion(TEST_HASHES[index], index, size, path, ROOTS[size - 1])
    for old, new, proof in CONSISTENCY_VECTORS:
        if old < new:
            assert ref_subproof(old, TEST_HASHES[:new], True) == proof
        assert ref_verify_consistency(old, new, ROOTS[old - 1], ROOTS[new - 1], proof)


def test_root_and_builder_match_reference_at_every_size() -> None:
    hashes = _hashes(300, seed=1)
    builder = RootBuilder()
    for n in range(301):
        expected = ref_mth(hashes[:n])
        assert merkle.root(hashes[:n]) == expected, n
        assert builder.size == n
        assert builder.root() == expected, n
        assert builder.root() == expected, n  # asking twice changes nothing
        if n < 300:
            builder.append(hashes[n])


def test_inclusion_proofs_for_all_pairs() -> None:
    hashes = _hashes(65, seed=2)
    for n in range(1, 65):
        tree_root = ref_mth(hashes[:n])
        for m in range(n):
            path = inclusion_proof(hashes, m, n)
            assert path == ref_path(m, hashes[:n]), (m, n)
            assert verify_inclusion(hashes[m], m, n, path, tree_root), (m, n)
            assert not verify_inclusion(hashes[m], m, n, path, ref_mth(hashes[: n + 1]))


def test_consistency_proofs_for_all_pairs() -> None:
    hashes = _hashes(64, seed=3)
    roots = [ref_mth(hashes[:n]) for n in range(65)]
    for n in range(65):
        for m in range(n + 1):
            proof = consistency_proof(hashes, m, n)
            expected = ref_subproof(m, hashes[:n], True) if 0 < m < n else []
            assert proof == expected, (m, n)
            assert verify_consistency(m, n, roots[m], roots[n], proof), (m, n)
            if 0 < m < n:
                other = _hashes(n, seed=1000 + n)
                assert not verify_consistency(m, n, roots[m], ref_mth(other), proof)


def test_proofs_in_a_larger_tree() -> None:
    hashes = _hashes(1500, seed=4)
    rng = random.Random(5)
    for _ in range(20):
        n = rng.randrange(1, 1501)
        m = rng.randrange(n)
        assert inclusion_proof(hashes, m, n) == ref_path(m, hashes[:n])
        assert consistency_proof(hashes, m, n) == (ref_subproof(m, hashes[:n], True) if m else [])


def _flip(data: bytes, rng: random.Random) -> bytes:
    i = rng.randrange(len(data))
    return data[:i] + bytes([data[i] ^ (1 << rng.randrange(8))]) + data[i + 1 :]


def _flip_int(value: int, rng: random.Random) -> int:
    # Mostly bits near the size of the tree, sometimes a high bit of a 64-bit size.
    bit = rng.choice([rng.randrange(max(value.bit_length(), 1) + 2), 63])
    return value ^ (1 << bit)


def test_single_bit_mutations_are_rejected() -> None:
    """10,000 seeded single-bit flips of valid proofs: no false accepts.

    A mutated size or index can describe the same hashing as the original (a path for
    leaf 0 of 5 leaves is also a well-formed path for leaf 0 of 7 leaves: the same
    siblings, on the same sides). Such a statement is not forged, it is the same claim
    about the same root; the recursive reference verifier recognises it, and the test
    sets it aside instead of counting it. Everything else must be rejected, and the
    verifier must agree with the reference on every mutation.
    """
    hashes = _hashes(200, seed=6)
    roots = [ref_mth(hashes[:n]) for n in range(201)]
    rng = random.Random(7)
    rejected = 0
    same_claim: list[str] = []
    false_accepts: list[str] = []
    disagreements: list[str] = []
    for _ in range(10_000):
        if rng.random() < 0.5:
            n = rng.randrange(1, 201)
            m = rng.randrange(n)
            leaf, path, root = hashes[m], inclusion_proof(hashes, m, n), roots[n]
            fields = ["leaf", "root", "index", "size"] + (["proof"] if path else [])
            field = rng.choice(fields)
            if field == "leaf":
                leaf = _flip(leaf, rng)
            elif field == "root":
                root = _flip(root, rng)
            elif field == "index":
                m = _flip_int(m, rng)
            elif field == "size":
                n = _flip_int(n, rng)
            else:
                i = rng.randrange(len(path))
                path = [*path[:i], _flip(path[i], rng), *path[i + 1 :]]
            got = verify_inclusion(leaf, m, n, path, root)
            expected = ref_verify_inclusion(leaf, m, n, path, root)
            what = f"inclusion {field}: m={m} n={n}"
        else:
            n = rng.randrange(1, 201)
            m = rng.randrange(1, n + 1)
            old, new, proof = roots[m], roots[n], consistency_proof(hashes, m, n)
            fields = ["old_root", "new_root", "old_size", "new_size"] + (["proof"] if proof else [])
            field = rng.choice(fields)
            if field == "old_root":
                old = _flip(old, rng)
            elif field == "new_root":
                new = _flip(new, rng)
            elif field == "old_size":
                m = _flip_int(m, rng)
            elif field == "new_size":
                n = _flip_int(n, rng)
            else:
                i = rng.randrange(len(proof))
                proof = [*proof[:i], _flip(proof[i], rng), *proof[i + 1 :]]
            got = verify_consistency(m, n, old, new, proof)
            expected = ref_verify_consistency(m, n, old, new, proof)
            what = f"consistency {field}: m={m} n={n}"
        if got != expected:
            disagreements.append(what)
        if expected:
            same_claim.append(what)
        elif got:
            false_accepts.append(what)
        else:
            rejected += 1
    assert not false_accepts
    assert not disagreements
    # Only sizes and indices can restate the same claim; a flipped hash never does.
    assert {w.split(":")[0] for w in same_claim} <= {
        "inclusion index",
        "inclusion size",
        "consistency old_size",
        "consistency new_size",
    }, same_claim
    assert rejected + len(same_claim) == 10_000
    assert rejected > 9_000


def test_generation_rejects_out_of_range_arguments() -> None:
    hashes = TEST_HASHES
    for index, size in [(0, 0), (8, 8), (-1, 4), (0, 9), (3, -1)]:
        with pytest.raises(ValueError, match=r"leaf index|tree size"):
            inclusion_proof(hashes, index, size)
    with pytest.raises(ValueError, match="new size 9"):
        consistency_proof(hashes, 1, 9)
    with pytest.raises(ValueError, match="old size 5"):
        consistency_proof(hashes, 5, 4)
    with pytest.raises(ValueError, match="old size -1"):
        consistency_proof(hashes, -1, 4)
    with pytest.raises(ValueError, match="32 bytes"):
        RootBuilder().append(b"leaf data, not a hash")


def test_verification_never_raises_on_bad_input() -> None:
    leaf, root, path = TEST_HASHES[0], ROOTS[7], INCLUSION_VECTORS[1][2]
    bad_inclusion: list[tuple[object, ...]] = [
        (leaf, -1, 8, path, root),
        (leaf, True, 8, path, root),
        (leaf, 0, 8.0, path, root),
        (leaf, "0", 8, path, root),
        (None, 0, 8, path, root),
        (leaf, 0, 8, None, root),
        (leaf, 0, 8, [None, *path[1:]], root),
        (leaf, 0, 8, "abc", root),
        (leaf, 0, 8, path, root.hex()),
        (leaf[:31], 0, 8, path, root),
        (leaf, 0, 0, [], root),
        (leaf, 0, 2**200, path, root),
    ]
    for case in bad_inclusion:
        assert verify_inclusion(*case) is False, case  # type: ignore[arg-type]
    old, new, proof = ROOTS[5], ROOTS[7], CONSISTENCY_VECTORS[2][2]
    bad_consistency: list[tuple[object, ...]] = [
        (-6, 8, old, new, proof),
        (6, 8.5, old, new, proof),
        (6, 8, old, new, None),
        (6, 8, old, new, [*proof[:2], 5]),
        (6, 8, None, new, proof),
        (6, 8, old, new[:16], proof),
        (6, 2**100, old, new, proof),
    ]
    for case in bad_consistency:
        assert verify_consistency(*case) is False, case  # type: ignore[arg-type]
    # bytearray hashes are accepted like bytes.
    as_bytearrays = [bytearray(p) for p in path]
    assert verify_inclusion(bytearray(leaf), 0, 8, as_bytearrays, root)  # type: ignore[arg-type]


def test_root_builder_state_restores_at_every_size() -> None:
    leaves = [merkle.leaf_hash(bytes([i % 256, i // 256])) for i in range(70)]
    builder = merkle.RootBuilder()
    for n, leaf in enumerate(leaves, start=1):
        builder.append(leaf)
        again = merkle.RootBuilder.restore(builder.size, builder.state())
        assert again.root() == builder.root() == merkle.root(leaves[:n])
        again.append(leaves[0])
        assert again.root() == merkle.root([*leaves[:n], leaves[0]])
    with pytest.raises(ValueError, match="does not fit"):
        merkle.RootBuilder.restore(3, builder.state())
