"""The Merkle tree of the decision log, as RFC 9162 §2.1 defines it (Certificate Transparency).

Leaf hash SHA-256(0x00 || leaf), node hash SHA-256(0x01 || left || right); the tree of n leaves
splits at the largest power of two below n. Inclusion proofs (§2.1.3) show a leaf's place in a
tree of a given size; consistency proofs (§2.1.4) show that a tree is an earlier one with leaves
appended, nothing before removed, reordered or rewritten. Everything here is pure and works on
32-byte hashes; the store keeps the leaf hashes, the writer a compact range (`Frontier`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

HASH_SIZE = 32


def leaf_hash(data: bytes) -> bytes:
    """SHA-256(0x00 || data)."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly below n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def _levels(leaves: Sequence[bytes]) -> list[list[bytes]]:
    """The tree's levels bottom up: each pairs its nodes, an odd last one carried up unchanged.

    Carrying the last node up gives exactly RFC 9162's left-balanced tree."""
    levels = [list(leaves)]
    while len(levels[-1]) > 1:
        below = levels[-1]
        levels.append(
            [node_hash(below[i], below[i + 1]) if i + 1 < len(below) else below[i] for i in range(0, len(below), 2)]
        )
    return levels


def root_hash(leaves: Sequence[bytes]) -> bytes:
    """MTH(leaves): the root hash of the tree of these leaf hashes (SHA-256 of nothing when empty)."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    return _levels(leaves)[-1][0]


class Tree:
    """The tree of `leaves` (leaf hashes), its levels kept for proofs."""

    def __init__(self, leaves: Sequence[bytes]) -> None:
        self.size = len(leaves)
        self._levels = _levels(leaves) if leaves else [[]]

    @property
    def root(self) -> bytes:
        return self._levels[-1][0] if self.size else hashlib.sha256(b"").digest()

    def inclusion_proof(self, index: int) -> list[bytes]:
        """The audit path of leaf `index` in this tree, leaf to root (RFC 9162 §2.1.3.1)."""
        if not 0 <= index < self.size:
            raise IndexError(f"no leaf {index} in a tree of {self.size}")
        proof = []
        for level in self._levels[:-1]:
            sibling = index ^ 1
            if sibling < len(level):
                proof.append(level[sibling])
            index //= 2
        return proof


def consistency_proof(leaves: Sequence[bytes], old_size: int) -> list[bytes]:
    """The proof that the tree of `leaves[:old_size]` is a prefix of the tree of `leaves` (RFC 9162 §2.1.4.1)."""
    if not 0 <= old_size <= len(leaves):
        raise IndexError(f"no tree of {old_size} within {len(leaves)} leaves")
    if old_size in (0, len(leaves)):
        return []
    return _subproof(old_size, leaves, True)


def _subproof(m: int, leaves: Sequence[bytes], whole: bool) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if whole else [root_hash(leaves)]
    k = _split(n)
    if m <= k:
        return [*_subproof(m, leaves[:k], whole), root_hash(leaves[k:])]
    return [*_subproof(m - k, leaves[k:], False), root_hash(leaves[:k])]


def verify_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes) -> bool:
    """Whether `proof` places `leaf` at `index` of the tree of `size` whose root is `root` (RFC 9162 §2.1.3.2)."""
    if not 0 <= index < size or any(len(node) != HASH_SIZE for node in proof):
        return False
    fn, sn, r = index, size - 1, leaf
    for node in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(node, r)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, node)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]) -> bool:
    """Whether `proof` shows the tree (old_size, old_root) is a prefix of (new_size, new_root) (RFC 9162 §2.1.4.2)."""
    if not 0 <= old_size <= new_size or any(len(node) != HASH_SIZE for node in proof):
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    if old_size == 0:
        return not proof
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # a power of two: the old root is the proof's first node
        path.insert(0, old_root)
    if not path:
        return False
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for node in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(node, fr)
            sr = node_hash(node, sr)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, node)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == old_root and sr == new_root


class Frontier:
    """A compact range of the tree: the roots of its perfect subtrees, largest first.

    What a writer keeps to append a leaf and compute the root in O(log n), without the leaves:
    the subtrees are those of the binary digits of the size (e.g. 6 leaves: one of 4, one of 2)."""

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        if len(hashes) != bin(size).count("1"):
            raise ValueError(f"a compact range of {size} leaves has {bin(size).count('1')} hashes, not {len(hashes)}")
        self.size = size
        self.hashes = list(hashes)

    def append(self, leaf: bytes) -> None:
        """Add a leaf hash at the right."""
        hashes, carried, size = self.hashes, leaf, self.size
        while size & 1:
            carried = node_hash(hashes.pop(), carried)
            size >>= 1
        hashes.append(carried)
        self.size += 1

    @property
    def root(self) -> bytes:
        """MTH of the leaves appended so far: the subtrees folded right to left."""
        if not self.hashes:
            return hashlib.sha256(b"").digest()
        root = self.hashes[-1]
        for subtree in reversed(self.hashes[:-1]):
            root = node_hash(subtree, root)
        return root
