"""Stake-weighted threshold sortition: who sits on a round's committee, who leads.

The same integer formulas run in the RoundLedger contract (one O(1) check per
signer), so every honest node and the chain agree on membership bit for bit:

    seed   = keccak256(task ‖ uint64 round ‖ base ‖ uint32 attempt)
    ticket = uint256(keccak256(seed ‖ address))
    member iff ticket / 2^256 < k · stake / total   (probability capped at 1)

computed without fractions as `ticket // ((2^256 - 1) // total) < k · stake`.
The committee's size is random around k; leader of view v is the member with the
v-th lowest ticket (ties on ticket -- probability 2^-256 -- broken by address).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from eth_utils import keccak

from p2pfl.errors import P2PFLError

UINT256_MAX = 2**256 - 1


def round_seed(task: bytes, round: int, base: bytes, attempt: int = 0) -> bytes:
    """Seed of the draw for (task, round, base model digest, re-draw attempt)."""
    if len(task) != 32 or len(base) != 32:
        raise P2PFLError("task and base must be 32-byte digests")
    return keccak(task + round.to_bytes(8, "big") + base + attempt.to_bytes(4, "big"))


def draw(
    task: bytes, round: int, base: bytes, attempt: int, stakes: Mapping[bytes, int], k: int
) -> list[bytes]:
    """The committee of one draw: `committee_for` on `round_seed`, in leader order."""
    return committee_for(round_seed(task, round, base, attempt), stakes, k)


def ticket(seed: bytes, address: bytes) -> int:
    """A node's lottery ticket for one draw: lower is better."""
    if len(seed) != 32 or len(address) != 20:
        raise P2PFLError("seed must be 32 bytes and address 20 bytes")
    return int.from_bytes(keccak(seed + address), "big")


def is_eligible(ticket_value: int, stake: int, total_stake: int, k: int) -> bool:
    """Threshold test, exactly as the contract computes it (integer, no overflow)."""
    if stake <= 0 or total_stake <= 0 or k <= 0:
        return False
    if k * stake >= total_stake:
        return True
    return ticket_value // (UINT256_MAX // total_stake) < k * stake


def committee_for(seed: bytes, stakes: Mapping[bytes, int], k: int) -> list[bytes]:
    """Members for one draw, in leader order (ascending ticket, then address).

    `stakes` maps 20-byte address -> active stake at the round's reference block; the
    total is taken over that same mapping.
    """
    total = sum(s for s in stakes.values() if s > 0)
    drawn = []
    for address, stake in stakes.items():
        t = ticket(seed, address)
        if is_eligible(t, stake, total, k):
            drawn.append((t, address))
    drawn.sort()
    return [address for _, address in drawn]


def leader_of(committee: list[bytes], view: int) -> bytes:
    """Leader of view `view`: the member with the view-th lowest ticket, cyclically."""
    if not committee:
        raise P2PFLError("empty committee has no leader")
    return committee[view % len(committee)]


def commit_quorum(k: int, task_quorum: int = 0) -> int:
    """Votes a commit needs: ceil(2k/3), or the task's own higher quorum."""
    return max(math.ceil(2 * k / 3), task_quorum)


def expected_committee_size(stakes: Mapping[bytes, int], k: int) -> float:
    """Mean committee size: sum over nodes of min(1, k·stake/total)."""
    total = sum(s for s in stakes.values() if s > 0)
    if total == 0:
        return 0.0
    return sum(min(1.0, k * s / total) for s in stakes.values() if s > 0)


def committee_shortfall_probability(stakes: Mapping[bytes, int], k: int, quorum: int) -> float:
    """P(committee size < quorum): the chance a draw must be re-drawn.

    Exact Poisson-binomial by dynamic programming over the per-node probabilities.
    """
    total = sum(s for s in stakes.values() if s > 0)
    if total == 0:
        return 1.0
    dist = [1.0]
    for s in stakes.values():
        if s <= 0:
            continue
        p = min(1.0, k * s / total)
        nxt = [0.0] * (len(dist) + 1)
        for size, mass in enumerate(dist):
            nxt[size] += mass * (1 - p)
            nxt[size + 1] += mass * p
        dist = nxt
    return sum(dist[:quorum])
