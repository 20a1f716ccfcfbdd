"""Generate protocol/vectors/merkle.json once: reward leaves, roots and proofs.

Run from the repo root: `.venv/bin/python protocol/vectors/make_merkle.py`.
Tests read the file and check p2pfl.core.merkle reproduces every entry.
"""

from __future__ import annotations

import json
from pathlib import Path

from eth_utils import keccak

from p2pfl.core.merkle import RewardTree, round_reward_leaves


def addr(i: int) -> bytes:
    return keccak(b"vector-address" + i.to_bytes(4, "big"))[:20]


CASES = [
    {"name": "empty", "reward": 10**18, "contributors": {}, "committee": [], "rejected": []},
    {
        "name": "one-contributor",
        "reward": 10**18,
        "contributors": {1: 50},
        "committee": [],
        "rejected": [],
    },
    {
        "name": "typical",
        "reward": 10**17,
        "contributors": {1: 100, 2: 250, 3: 7},
        "committee": [4, 5, 1],
        "rejected": [6],
    },
    {
        "name": "odd-layers",
        "reward": 999_999,
        "contributors": {i: i for i in range(1, 12)},
        "committee": [20, 21],
        "rejected": [30, 31],
    },
]


def main() -> None:
    out = []
    for case in CASES:
        leaves = round_reward_leaves(
            case["reward"],
            {addr(i): w for i, w in case["contributors"].items()},
            [addr(i) for i in case["committee"]],
            [addr(i) for i in case["rejected"]],
        )
        tree = RewardTree.build(leaves)
        out.append(
            {
                "name": case["name"],
                "reward": str(case["reward"]),
                "committee_share_bps": 2000,
                "contributors": {"0x" + addr(i).hex(): w for i, w in case["contributors"].items()},
                "committee": ["0x" + addr(i).hex() for i in case["committee"]],
                "rejected": ["0x" + addr(i).hex() for i in case["rejected"]],
                "leaves": [
                    {
                        "index": lf.index,
                        "role": lf.role,
                        "account": "0x" + lf.account.hex(),
                        "amount": str(lf.amount),
                        "hash": "0x" + lf.hash().hex(),
                        "proof": ["0x" + p.hex() for p in tree.proof(lf.index)],
                    }
                    for lf in leaves
                ],
                "root": "0x" + tree.root.hex(),
            }
        )
    path = Path(__file__).with_name("merkle.json")
    path.write_text(
        json.dumps(
            {"description": "reward Merkle trees (protocol/spec/chain.md)", "cases": out}, indent=1
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
