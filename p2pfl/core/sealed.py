"""Sealed updates, the pure part (spec protocol/spec/sealing.md): the associated data a
delta is sealed under, and who holds a wrap of an update's content key.

The sealing itself (fresh keys, XChaCha20-Poly1305, sealed boxes) draws randomness and
runs in the node's workers (`p2pfl.sealing`); what the round machine decides from it --
which updates a committee can open in an attempt -- is here.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

# Domain tag of a delta's associated data; the version names the layout below.
DELTA_AAD_TAG = b"p2pfl/delta/v1"

Wraps = tuple[tuple[bytes, bytes], ...]  # (member address, wrapped key), sorted by member


def delta_aad(task: bytes, round_: int, signer: bytes) -> bytes:
    """What a delta is sealed under: `tag || task (32) || round (8, big-endian) || signer
    (20)`. A ciphertext opens only in its own (task, round, author): replayed into another
    update, another round or another task, it does not open."""
    return DELTA_AAD_TAG + bytes(task) + int(round_).to_bytes(8, "big") + bytes(signer)


def wrap_for(wraps: Wraps, member: bytes) -> bytes | None:
    """`member`'s wrap in `wraps`, or None."""
    for address, wrap in wraps:
        if address == member:
            return wrap
    return None


def members_of(wraps: Wraps) -> frozenset[bytes]:
    return frozenset(address for address, _ in wraps)


def foreign_members(wraps: Wraps, allowed: Collection[bytes]) -> list[bytes]:
    """Members of `wraps` outside `allowed` (a wrap for a node that is not on the committee
    it was meant for: the message is malformed)."""
    return [address for address, _ in wraps if address not in allowed]


def covers(committee: Iterable[bytes], author: bytes, wrapped: Collection[bytes]) -> bool:
    """Whether every member of `committee` but the author holds a wrap (`wrapped`): then
    the whole committee can open the author's delta, and it may be aggregated."""
    return all(member == author or member in wrapped for member in committee)
