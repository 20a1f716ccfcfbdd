"""Gossip validation: the checks a node runs on a message *before* forwarding it.

Pure and stateless apart from two inputs the node supplies: who is registered, and
which round it is in. A message failing here is dropped at the first honest hop and
never forwarded (libp2p topic validators run before forwarding). The round machine
applies the stateful checks afterwards (base, membership, duplicates, equivocation).

Verdicts: ACCEPT; REJECT (a protocol violation: forged, malformed, unregistered, a
replay of a long-finished round — the sending peer is penalised); IGNORE (not wrong,
just not useful to forward now: a round too far ahead of ours).
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass

from p2pfl.core.messages import Commit, decode_message
from p2pfl.core.signing import Domain
from p2pfl.errors import InvalidMessage

ACCEPT, REJECT, IGNORE = "accept", "reject", "ignore"

# Rounds around ours that are still forwarded: the previous one (nodes follow the chain
# with a little lag, so its last votes and certificate are still in flight) and the next
# one (faster nodes start it a little earlier). Anything older is a replay.
ROUNDS_BEHIND_FORWARDED = 1
ROUNDS_AHEAD_FORWARDED = 1


@dataclass(frozen=True)
class Verdict:
    action: str  # ACCEPT, REJECT or IGNORE
    reason: str = ""


def check_gossip(
    data: bytes,
    *,
    task: bytes,
    domain: Domain,
    registered: Container[bytes] | None = None,
    current_round: int | None = None,
) -> Verdict:
    """Decode, check task, round window, signature(s) and registration."""
    try:
        message = decode_message(data)
        if message.task != task:
            return Verdict(REJECT, "wrong-task")
        if current_round is not None and current_round > 0:
            if message.round < current_round - ROUNDS_BEHIND_FORWARDED:
                return Verdict(REJECT, "replayed-round")
            if message.round > current_round + ROUNDS_AHEAD_FORWARDED:
                return Verdict(IGNORE, "future-round")
        if isinstance(message, Commit):
            signers = message.verify_votes(domain)
        else:
            signers = (message.verify(domain),)
    except InvalidMessage as exc:
        return Verdict(REJECT, exc.reason)
    if registered is not None and any(s not in registered for s in signers):
        return Verdict(REJECT, "unregistered-signer")
    return Verdict(ACCEPT)
