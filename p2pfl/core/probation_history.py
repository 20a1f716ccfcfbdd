"""The probation history a node keeps: committed round -> {author: strike points}.

Every node rebuilds it from the proposals the chain committed, so all compute the same
probation (aggregation spec §4a); a restarted node reads it back. This module is the
history's byte format (canonical JSON, rounds and authors sorted); the file lives with the
node (p2pfl.node).
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from p2pfl.errors import P2PFLError

# Committed round -> {author address: strike points in that round}.
StrikeHistory = dict[int, dict[bytes, int]]


def encode_strikes(history: Mapping[int, Mapping[bytes, int]]) -> bytes:
    """Canonical bytes of `history` (rounds and authors sorted, addresses in hex)."""
    doc = {
        str(r): {a.hex(): p for a, p in sorted(authors.items())}
        for r, authors in sorted(history.items())
    }
    return json.dumps(doc).encode()


def decode_strikes(data: bytes) -> StrikeHistory:
    """The history `encode_strikes` wrote; P2PFLError if the bytes are not one."""
    try:
        doc = json.loads(data)
        return {
            int(r): {bytes.fromhex(a): int(p) for a, p in authors.items()}
            for r, authors in doc.items()
        }
    except (ValueError, TypeError, AttributeError) as exc:
        raise P2PFLError(f"probation history unreadable ({exc})") from exc


def forget_before(history: StrikeHistory, keep_from: int) -> None:
    """Drop the rounds before `keep_from` (out of every probation window), in place."""
    for r in [r for r in history if r < keep_from]:
        del history[r]
