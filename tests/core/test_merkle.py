"""p2pfl.core.merkle: vectors, proofs, the contract's verification rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pfl.core.merkle import (
    EMPTY_ROOT,
    ROLE_COMMITTEE,
    ROLE_CONTRIBUTOR,
    ROLE_REJECTED,
    MerkleTree,
    RewardTree,
    build_leaves,
    hash_pair,
    round_reward_leaves,
    verify_proof,
)
from p2pfl.errors import P2PFLError

VECTORS = Path(__file__).resolve().parents[2] / "protocol" / "vectors" / "merkle.json"


def test_vectors() -> None:
    cases = json.loads(VECTORS.read_text())["cases"]
    assert len(cases) >= 4
    for case in cases:
        leaves = round_reward_leaves(
            int(case["reward"]),
            {bytes.fromhex(a[2:]): w for a, w in case["contributors"].items()},
            [bytes.fromhex(a[2:]) for a in case["committee"]],
            [bytes.fromhex(a[2:]) for a in case["rejected"]],
            case["committee_share_bps"],
        )
        tree = RewardTree.build(leaves)
        assert "0x" + tree.root.hex() == case["root"], case["name"]
        for leaf, want in zip(leaves, case["leaves"], strict=True):
            assert (leaf.index, leaf.role, "0x" + leaf.account.hex(), str(leaf.amount)) == (
                want["index"],
                want["role"],
                want["account"],
                want["amount"],
            )
            assert "0x" + leaf.hash().hex() == want["hash"]
            assert ["0x" + p.hex() for p in tree.proof(leaf.index)] == want["proof"]


def test_split_is_deterministic_and_never_exceeds_reward() -> None:
    a, b, c = b"\x01" * 20, b"\x02" * 20, b"\x03" * 20
    leaves = round_reward_leaves(1000, {b: 1, a: 2}, [c, a], [b"\x09" * 20])
    assert [(lf.role, lf.account) for lf in leaves] == [
        (ROLE_CONTRIBUTOR, a),
        (ROLE_CONTRIBUTOR, b),
        (ROLE_COMMITTEE, a),
        (ROLE_COMMITTEE, c),
        (ROLE_REJECTED, b"\x09" * 20),
    ]
    amounts = {(lf.role, lf.account): lf.amount for lf in leaves}
    assert amounts[(ROLE_CONTRIBUTOR, a)] == 800 * 2 // 3 and amounts[(ROLE_COMMITTEE, c)] == 100
    assert sum(lf.amount for lf in leaves) <= 1000


def test_empty_and_single() -> None:
    assert RewardTree.build([]).root == EMPTY_ROOT
    leaves = build_leaves([(ROLE_CONTRIBUTOR, b"\x05" * 20, 7)])
    tree = RewardTree.build(leaves)
    assert tree.root == leaves[0].hash() and tree.proof(0) == []


def test_rejects_bad_input() -> None:
    with pytest.raises(P2PFLError):
        build_leaves([(1, b"\x01" * 20, 1), (1, b"\x01" * 20, 2)])
    with pytest.raises(P2PFLError):
        round_reward_leaves(10, {b"\x01" * 20: 0}, [])
    with pytest.raises(P2PFLError):
        MerkleTree([b"\x00" * 32]).proof(1)


@given(st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=70))
def test_every_proof_verifies_and_wrong_leaves_do_not(hashes: list[bytes]) -> None:
    tree = MerkleTree(hashes)
    for i, h in enumerate(hashes):
        proof = tree.proof(i)
        assert verify_proof(proof, tree.root, h)
        assert len(proof) <= max(1, len(hashes) - 1).bit_length()
    outsider = hash_pair(b"\x00" * 32, b"\xff" * 32)
    if outsider not in hashes:
        assert not any(verify_proof(tree.proof(i), tree.root, outsider) for i in range(len(hashes)))
