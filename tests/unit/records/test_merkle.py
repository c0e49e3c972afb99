"""The decision log's Merkle tree against RFC 9162 / Certificate Transparency's reference vectors,
and against a naive computation written from the RFC's recursive definitions (§2.1.1, §2.1.3.1,
§2.1.4.1) for every tree up to 40 leaves."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from temporal_ciba.records._merkle import (
    Frontier,
    Tree,
    consistency_proof,
    leaf_hash,
    root_hash,
    verify_consistency,
    verify_inclusion,
)

# Certificate Transparency's reference leaves (its merkle_tree_test) and the root of each prefix.
CT_LEAVES = [bytes.fromhex(h) for h in ["", "00", "10", "2021", "3031", "40414243", "5051525354555657"]]
CT_LEAVES.append(bytes.fromhex("606162636465666768696a6b6c6d6e6f"))
CT_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
CT_INCLUSION = {
    (0, 8): [
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    (5, 8): [
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ],
}
CT_CONSISTENCY = {
    (2, 5): [
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    ],
}
HASHES = [leaf_hash(data) for data in CT_LEAVES]


# The RFC's definitions, word for word and slow.
def naive_root(leaves: list[bytes]) -> bytes:
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return hashlib.sha256(b"\x01" + naive_root(leaves[:k]) + naive_root(leaves[k:])).digest()


def naive_path(m: int, leaves: list[bytes]) -> list[bytes]:
    if len(leaves) == 1:
        return []
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    if m < k:
        return [*naive_path(m, leaves[:k]), naive_root(leaves[k:])]
    return [*naive_path(m - k, leaves[k:]), naive_root(leaves[:k])]


def naive_subproof(m: int, leaves: list[bytes], whole: bool) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if whole else [naive_root(leaves)]
    k = 1 << ((n - 1).bit_length() - 1)
    if m <= k:
        return [*naive_subproof(m, leaves[:k], whole), naive_root(leaves[k:])]
    return [*naive_subproof(m - k, leaves[k:], False), naive_root(leaves[:k])]


MANY = [leaf_hash(i.to_bytes(2, "big")) for i in range(40)]


def test_the_roots_are_certificate_transparencys() -> None:
    assert root_hash([]).hex() == hashlib.sha256(b"").hexdigest()
    for size in range(1, 9):
        assert root_hash(HASHES[:size]).hex() == CT_ROOTS[size - 1]
        frontier = Frontier()
        for leaf in HASHES[:size]:
            frontier.append(leaf)
        assert frontier.root.hex() == CT_ROOTS[size - 1]


@pytest.mark.parametrize(("index", "size"), list(CT_INCLUSION))
def test_inclusion_proofs_are_certificate_transparencys(index: int, size: int) -> None:
    proof = Tree(HASHES[:size]).inclusion_proof(index)
    assert [node.hex() for node in proof] == CT_INCLUSION[(index, size)]
    assert verify_inclusion(index, size, HASHES[index], proof, bytes.fromhex(CT_ROOTS[size - 1]))


@pytest.mark.parametrize(("old", "new"), list(CT_CONSISTENCY))
def test_consistency_proofs_are_certificate_transparencys(old: int, new: int) -> None:
    proof = consistency_proof(HASHES[:new], old)
    assert [node.hex() for node in proof] == CT_CONSISTENCY[(old, new)]
    old_root, new_root = (bytes.fromhex(CT_ROOTS[size - 1]) for size in (old, new))
    assert verify_consistency(old, new, old_root, new_root, proof)


def test_every_tree_up_to_40_leaves_agrees_with_the_rfcs_definitions() -> None:
    for size in range(1, len(MANY) + 1):
        leaves = MANY[:size]
        tree, root = Tree(leaves), naive_root(leaves)
        assert tree.root == root_hash(leaves) == root
        frontier = Frontier()
        for leaf in leaves:
            frontier.append(leaf)
        assert frontier.root == root and Frontier(size, frontier.hashes).root == root
        for index in range(size):
            proof = tree.inclusion_proof(index)
            assert proof == naive_path(index, leaves)
            assert verify_inclusion(index, size, leaves[index], proof, root)
            assert not verify_inclusion(index, size, MANY[(index + 1) % 40], proof, root)
            if size > 1:
                assert not verify_inclusion((index + 1) % size, size, leaves[index], proof, root)
        for old in range(size + 1):
            proof = consistency_proof(leaves, old)
            assert proof == (naive_subproof(old, leaves, True) if 0 < old < size else [])
            assert verify_consistency(old, size, naive_root(leaves[:old]), root, proof)


@given(
    size=st.integers(2, 40),
    data=st.data(),
)
def test_an_altered_proof_or_root_never_verifies(size: int, data: st.DataObject) -> None:
    leaves = MANY[:size]
    tree = Tree(leaves)
    index = data.draw(st.integers(0, size - 1))
    proof = tree.inclusion_proof(index)
    at = data.draw(st.integers(0, len(proof) - 1))
    flipped = [*proof[:at], bytes([proof[at][0] ^ 1]) + proof[at][1:], *proof[at + 1 :]]
    assert not verify_inclusion(index, size, leaves[index], flipped, tree.root)
    assert not verify_inclusion(index, size, leaves[index], proof[:-1], tree.root)
    assert not verify_inclusion(index, size, leaves[index], [*proof, tree.root], tree.root)
    old = data.draw(st.integers(1, size - 1))
    between = consistency_proof(leaves, old)
    old_root = naive_root(leaves[:old])
    rewritten = [*leaves[: old - 1], MANY[-1] if leaves[old - 1] != MANY[-1] else MANY[0], *leaves[old:]]
    assert not verify_consistency(old, size, naive_root(rewritten[:old]), tree.root, between)
    assert not verify_consistency(old, size, old_root, Tree(rewritten).root, between)
    assert not verify_consistency(old, size, old_root, tree.root, between[:-1])
    assert not verify_consistency(old, size, old_root, tree.root, [])


def test_a_forked_head_of_the_same_size_is_not_consistent() -> None:
    assert verify_consistency(5, 5, root_hash(MANY[:5]), root_hash(MANY[:5]), [])
    assert not verify_consistency(5, 5, root_hash(MANY[:5]), root_hash([*MANY[:4], MANY[9]]), [])
    assert not verify_consistency(6, 5, root_hash(MANY[:6]), root_hash(MANY[:5]), [])


@pytest.mark.parametrize(("old", "size"), [(1, 2), (3, 5), (4, 8), (6, 7)])
def test_a_consistency_proof_with_a_node_more_or_sizes_the_wrong_way_round_fails(old: int, size: int) -> None:
    leaves = MANY[:size]
    old_root, root = root_hash(leaves[:old]), root_hash(leaves)
    between = consistency_proof(leaves, old)
    assert verify_consistency(old, size, old_root, root, between)
    assert not verify_consistency(old, size, old_root, root, [*between, MANY[-1]])
    assert not verify_consistency(old, size, old_root, root, [between[0] + b"\x00", *between[1:]])
    # A newer tree never precedes an older one, not even with the same root (RFC 9162 §2.1.4.2).
    assert not verify_consistency(size, old, root, root, [])
    assert not verify_consistency(2, 1, old_root, old_root, [])
