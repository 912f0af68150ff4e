"""Merkle tree hashes and proofs for an append-only log (RFC 6962, RFC 9162 section 2.1).

The log is a list of entries d[0], d[1], ... d[n-1]. Its tree hash MTH, as in RFC 9162:

- a leaf's hash is SHA-256(0x00 || d[i]) (`leaf_hash`);
- an interior node's hash is SHA-256(0x01 || left || right) (`node_hash`); the distinct
  prefixes keep a leaf from ever passing for an interior node (second preimages);
- the tree over n > 1 leaves splits at k, the largest power of two below n:
  MTH(D[0:n]) = node_hash(MTH(D[0:k]), MTH(D[k:n])); one leaf is its own leaf hash;
- the empty tree's hash is SHA-256 of nothing (`EMPTY_ROOT`).

Every function here takes *leaf hashes*, not entries, so callers hash entries once.

- `root` is MTH. `RootBuilder` computes the same root while leaves stream past: it keeps
  one hash per set bit of the size (the roots of the perfect subtrees the prefix splits
  into, the "compact range"), so memory and `root()` are O(log n) and `append` costs one
  node hash amortised.
- `inclusion_proof` / `verify_inclusion`: the audit path of RFC 9162 2.1.3 (proves that
  a leaf is at an index of the tree with a given root and size).
- `consistency_proof` / `verify_consistency`: RFC 9162 2.1.4 (proves that the tree of
  the old size is a prefix of the tree of the new size, given both roots).

The verification functions follow RFC 9162 2.1.3.2 and 2.1.4.2 step by step. They never
raise: any malformed input (a hash that is not 32 bytes, a negative or inconsistent size,
too few or too many proof elements) gives False. Edge cases the RFC leaves to the caller:
old size == new size needs an empty proof and equal roots; old size 0 needs an empty proof
and the old root must be `EMPTY_ROOT` (any tree extends the empty one). Note that a proof
binds a root, not a size: the same path can be valid for several sizes (a proof for leaf 0
of 5 leaves also verifies as leaf 0 of 7 against the same root). The size is bound to the
root by the signed checkpoint (`consentgate.ledger.checkpoint`), not by the proof.

Proof generation recomputes the needed subtree hashes from the leaf hashes: O(n) hashing,
pair by pair a level at a time, with no recursion.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from hashlib import sha256

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "RootBuilder",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "root",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
EMPTY_ROOT = sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    """SHA-256(0x00 || data): the hash of one log entry."""
    return sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right): the hash of an interior node."""
    return sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly below n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def _mth(hashes: Sequence[bytes]) -> bytes:
    """MTH over leaf hashes, a level at a time.

    Pairing neighbours and carrying an odd last node up unchanged builds exactly the
    RFC tree: the left part of every split is a perfect subtree, so on each level the
    only unpaired node is the rightmost one.
    """
    level = hashes
    if not level:
        return EMPTY_ROOT
    while len(level) > 1:
        pairs = iter(level)
        paired = [sha256(b"\x01" + a + b).digest() for a, b in zip(pairs, pairs, strict=False)]
        if len(level) & 1:
            paired.append(level[-1])
        level = paired
    return level[0]


def root(leaf_hashes: Sequence[bytes]) -> bytes:
    """The tree hash over all of `leaf_hashes` (`EMPTY_ROOT` for none)."""
    return _mth(leaf_hashes)


class RootBuilder:
    """Streams leaf hashes; `root()` is the tree hash of all appended so far.

    `_stack` holds the roots of the perfect subtrees the current size splits into, largest
    (leftmost) first: one per set bit of the size.
    """

    __slots__ = ("_size", "_stack")

    def __init__(self) -> None:
        self._size = 0
        self._stack: list[bytes] = []

    @property
    def size(self) -> int:
        """How many leaf hashes have been appended."""
        return self._size

    def append(self, leaf_hash: bytes) -> None:
        """Add the next leaf hash (32 bytes)."""
        if len(leaf_hash) != HASH_SIZE:
            raise ValueError(f"a leaf hash is {HASH_SIZE} bytes, got {len(leaf_hash)}")
        n = self._size
        self._size = n + 1
        stack = self._stack
        # Each trailing 1 bit of the old size is a perfect subtree the new leaf completes.
        while n & 1:
            leaf_hash = sha256(b"\x01" + stack.pop() + leaf_hash).digest()
            n >>= 1
        stack.append(leaf_hash)

    def frontier(self) -> list[bytes]:
        """The live list of subtree roots, largest first, for a compiled appender that
        pushes and pops it exactly as `append` does; it then calls `advance`."""
        return self._stack

    def advance(self, count: int) -> None:
        """Count `count` leaves appended to `frontier()` by a compiled appender."""
        self._size += count

    def state(self) -> bytes:
        """The subtree roots, concatenated: with `size`, all a later `restore` needs."""
        return b"".join(self._stack)

    @classmethod
    def restore(cls, size: int, state: bytes) -> RootBuilder:
        """The builder that `state()` was taken from, at `size` leaves."""
        if size < 0 or len(state) != HASH_SIZE * size.bit_count():
            raise ValueError(f"a state of {len(state)} bytes does not fit a tree of size {size}")
        builder = cls()
        builder._size = size
        builder._stack = [state[i : i + HASH_SIZE] for i in range(0, len(state), HASH_SIZE)]
        return builder

    def copy(self) -> RootBuilder:
        return RootBuilder.restore(self._size, self.state())

    def extend(self, leaf_hashes: Iterable[bytes]) -> None:
        """Append each leaf hash in turn."""
        append = self.append
        for h in leaf_hashes:
            append(h)

    def root(self) -> bytes:
        """The tree hash of the leaves appended so far (O(log n))."""
        stack = self._stack
        if not stack:
            return EMPTY_ROOT
        h = stack[-1]
        for left in reversed(stack[:-1]):
            h = sha256(b"\x01" + left + h).digest()
        return h


def _check_size(leaf_hashes: Sequence[bytes], size: int, what: str) -> None:
    if size < 0 or size > len(leaf_hashes):
        raise ValueError(f"{what} {size} is outside 0..{len(leaf_hashes)} (the leaves given)")


def inclusion_proof(leaf_hashes: Sequence[bytes], index: int, size: int) -> list[bytes]:
    """PATH(index, D[0:size]) of RFC 9162 2.1.3.1: sibling hashes, leaf level first."""
    _check_size(leaf_hashes, size, "tree size")
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is outside the tree of size {size}")
    path: list[bytes] = []
    lo, hi = 0, size  # the subtree D[lo:hi] that holds the leaf
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            path.append(_mth(leaf_hashes[lo + k : hi]))
            hi = lo + k
        else:
            path.append(_mth(leaf_hashes[lo : lo + k]))
            lo += k
    path.reverse()
    return path


def consistency_proof(leaf_hashes: Sequence[bytes], old_size: int, new_size: int) -> list[bytes]:
    """PROOF(old_size, D[0:new_size]) of RFC 9162 2.1.4.1 (empty if old_size is 0 or equal)."""
    _check_size(leaf_hashes, new_size, "new size")
    if not 0 <= old_size <= new_size:
        raise ValueError(f"old size {old_size} is outside 0..{new_size} (the new size)")
    if old_size in (0, new_size):
        return []
    # SUBPROOF(m, D[lo:hi], b), unrolled: each step appends one hash after the subproof.
    proof: list[bytes] = []
    lo, hi, m, whole_old_tree = 0, new_size, old_size, True
    while m != hi - lo:
        k = _split(hi - lo)
        if m <= k:
            proof.append(_mth(leaf_hashes[lo + k : hi]))
            hi = lo + k
        else:
            proof.append(_mth(leaf_hashes[lo : lo + k]))
            lo += k
            m -= k
            whole_old_tree = False
    if not whole_old_tree:
        proof.append(_mth(leaf_hashes[lo:hi]))
    proof.reverse()
    return proof


def _is_hash(value: object) -> bool:
    return isinstance(value, bytes | bytearray) and len(value) == HASH_SIZE


def _is_size(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _hashes(proof: object) -> list[bytes] | None:
    if not isinstance(proof, Sequence) or not all(_is_hash(p) for p in proof):
        return None
    return [bytes(p) for p in proof]


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """RFC 9162 2.1.3.2: is `leaf_hash` at `index` of the tree of `size` with `root`?"""
    path = _hashes(proof)
    if path is None or not (_is_hash(leaf_hash) and _is_hash(root)):
        return False
    if not (_is_size(index) and _is_size(size)) or index >= size:
        return False
    fn, sn = index, size - 1
    r = bytes(leaf_hash)
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """RFC 9162 2.1.4.2: is the tree of `old_size` a prefix of the tree of `new_size`?"""
    path = _hashes(proof)
    if path is None or not (_is_hash(old_root) and _is_hash(new_root)):
        return False
    if not (_is_size(old_size) and _is_size(new_size)) or old_size > new_size:
        return False
    if old_size == 0:
        return not path and old_root == EMPTY_ROOT
    if old_size == new_size:
        return not path and old_root == new_root
    if not path:
        return False
    if old_size & (old_size - 1) == 0:  # a power of two: the old root is a node of the new tree
        path.insert(0, bytes(old_root))
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == old_root and sr == new_root and sn == 0
