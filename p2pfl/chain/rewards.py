"""Reward files: a committed round's reward leaves and Merkle proofs, for `p2pfl claim`.

The node writes one when a round commits (after rebuilding the round's reward tree and
checking it against the on-chain root); `p2pfl claim FILE...` reads them. Format: JSON
{"task", "round", "root", "leaves": [{"index", "role", "account", "amount", "proof": [...]}]}
with hex strings for bytes and decimal strings for amounts.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from eth_utils import to_checksum_address

from p2pfl.core.merkle import RewardLeaf, RewardTree
from p2pfl.errors import ConfigError
from p2pfl.files import write_text_atomic


def hex32(text: str, name: str) -> bytes:
    raw = (
        bytes.fromhex(text.removeprefix("0x"))
        if all(c in "0123456789abcdefABCDEF" for c in text.removeprefix("0x"))
        else b""
    )
    if len(raw) != 32:
        raise ConfigError(f"{name} must be 32 bytes of hex, got {text!r}")
    return raw


@lru_cache(maxsize=1 << 16)
def _checksummed(account: bytes) -> str:
    """EIP-55 spelling of an address (~28 us each uncached: a round's file names every
    contributor, and the same accounts come back round after round)."""
    return str(to_checksum_address(account))


def write_reward_file(path: str | Path, task: bytes, round: int, tree: RewardTree) -> Path:
    """Save a committed round's reward leaves and proofs for `p2pfl claim`."""
    doc = {
        "task": "0x" + task.hex(),
        "round": round,
        "root": "0x" + tree.root.hex(),
        "leaves": [
            {
                "index": lf.index,
                "role": lf.role,
                "account": _checksummed(lf.account),
                "amount": str(lf.amount),
                "proof": ["0x" + p.hex() for p in tree.proof(lf.index)],
            }
            for lf in tree.leaves
        ],
    }
    return write_text_atomic(path, json.dumps(doc, indent=1) + "\n")


def read_reward_file(path: str | Path) -> tuple[bytes, int, list[tuple[RewardLeaf, list[bytes]]]]:
    try:
        doc = json.loads(Path(path).read_text())
        task = hex32(doc["task"], "task")
        leaves = [
            (
                RewardLeaf(
                    int(e["index"]),
                    int(e["role"]),
                    bytes.fromhex(e["account"][2:]),
                    int(e["amount"]),
                ),
                [bytes.fromhex(p[2:]) for p in e["proof"]],
            )
            for e in doc["leaves"]
        ]
        return task, int(doc["round"]), leaves
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise ConfigError(f"bad reward file {path}: {exc}") from exc
