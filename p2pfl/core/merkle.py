"""Reward Merkle trees: the `contributorsRoot` a committee votes on and the proofs to claim.

Leaf (57 bytes hashed; never 64, so a leaf can never pass for an inner node):

    leaf = keccak256(uint32 index ‖ uint8 role ‖ address account ‖ uint256 amount)

`role` is CONTRIBUTOR (its update was aggregated), COMMITTEE (member of the round's
sortition committee for the committed attempt) or REJECTED (its update was filtered
out; amount 0, used only to lower its reputation on-chain). `amount` is in wei.
`index` is the leaf's position after sorting by (role, account); the contract keeps one
"used" bit per index, so the index is bound into the leaf.

Inner node = keccak256(min(a, b) ‖ max(a, b)) (sorted pairs, like OpenZeppelin's
MerkleProof). Layers pair nodes (0,1), (2,3), ...; an odd last node moves up unchanged.
The root of no leaves is 32 zero bytes (nothing can be claimed against it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum

from eth_utils import keccak

from p2pfl.errors import P2PFLError

ROLE_CONTRIBUTOR = 1
ROLE_COMMITTEE = 2
ROLE_REJECTED = 3

BPS = 10_000
# Committee members split this share of the round reward equally: verifying and
# aggregating costs them real work, but contributors' data is what the task pays for.
DEFAULT_COMMITTEE_SHARE_BPS = 2_000
UINT32_MAX = 2**32 - 1
EMPTY_ROOT = bytes(32)


class Role(IntEnum):
    CONTRIBUTOR = ROLE_CONTRIBUTOR
    COMMITTEE = ROLE_COMMITTEE
    REJECTED = ROLE_REJECTED


@dataclass(frozen=True)
class RewardLeaf:
    """One leaf of a round's reward tree."""

    index: int
    role: int
    account: bytes  # 20-byte address
    amount: int  # wei

    def hash(self) -> bytes:
        return leaf_hash(self.index, self.role, self.account, self.amount)


def leaf_hash(index: int, role: int, account: bytes, amount: int) -> bytes:
    """keccak256(abi.encodePacked(uint32 index, uint8 role, address account, uint256 amount))."""
    if not 0 <= index <= UINT32_MAX or not 0 <= role <= 255 or not 0 <= amount < 2**256:
        raise P2PFLError("leaf field out of range")
    if len(account) != 20:
        raise P2PFLError("account must be a 20-byte address")
    return keccak(
        index.to_bytes(4, "big") + bytes([role]) + bytes(account) + amount.to_bytes(32, "big")
    )


def hash_pair(a: bytes, b: bytes) -> bytes:
    """Commutative inner node: keccak256 of the two children in ascending byte order."""
    return keccak(a + b) if a < b else keccak(b + a)


class MerkleTree:
    """A tree over already-hashed leaves, in the given order."""

    def __init__(self, leaf_hashes: Sequence[bytes]) -> None:
        layers = [list(leaf_hashes)]
        while len(layers[-1]) > 1:
            prev = layers[-1]
            nxt = [hash_pair(prev[i], prev[i + 1]) for i in range(0, len(prev) - 1, 2)]
            if len(prev) % 2:
                nxt.append(prev[-1])
            layers.append(nxt)
        self._layers = layers

    @property
    def root(self) -> bytes:
        return self._layers[-1][0] if self._layers[0] else EMPTY_ROOT

    def proof(self, index: int) -> list[bytes]:
        """Sibling hashes from the leaf up (levels where the node has no sibling are skipped)."""
        if not 0 <= index < len(self._layers[0]):
            raise P2PFLError(f"leaf index {index} out of range")
        out = []
        for layer in self._layers[:-1]:
            sibling = index ^ 1
            if sibling < len(layer):
                out.append(layer[sibling])
            index //= 2
        return out


def verify_proof(proof: Sequence[bytes], root: bytes, leaf: bytes) -> bool:
    """What the contract checks: fold the proof with sorted-pair hashing."""
    h = leaf
    for p in proof:
        h = hash_pair(h, p)
    return h == root


def build_leaves(entries: Sequence[tuple[int, bytes, int]]) -> list[RewardLeaf]:
    """Sort (role, account, amount) entries by (role, account) and assign indices.

    A (role, account) pair may appear once; an account may hold several roles.
    """
    ordered = sorted(entries, key=lambda e: (e[0], bytes(e[1])))
    seen = set()
    leaves = []
    for i, (role, account, amount) in enumerate(ordered):
        key = (role, bytes(account))
        if key in seen:
            raise P2PFLError(f"duplicate leaf for role {role} and account 0x{bytes(account).hex()}")
        seen.add(key)
        leaves.append(RewardLeaf(i, int(role), bytes(account), int(amount)))
    return leaves


def round_reward_leaves(
    reward_wei: int,
    contributors: Mapping[bytes, int],
    committee: Sequence[bytes],
    rejected: Sequence[bytes] = (),
    committee_share_bps: int = DEFAULT_COMMITTEE_SHARE_BPS,
) -> list[RewardLeaf]:
    """The reward leaves of a round, split deterministically (integer floor division).

    - `committee` (the committee drawn for the committed attempt) shares
      `reward * committee_share_bps // 10000` equally; with no contributors the
      committee gets nothing extra (the rest stays unpaid in the round);
    - `contributors` (address -> weight, e.g. n_samples of the aggregated update)
      share the rest pro rata;
    - `rejected` addresses get amount-0 REJECTED leaves.
    Rounding dust is never assigned, so the amounts sum to at most `reward_wei`.
    """
    if reward_wei < 0 or not 0 <= committee_share_bps <= BPS:
        raise P2PFLError("reward must be >= 0 and committee share within 0..10000 bps")
    members = sorted({bytes(a) for a in committee})
    committee_pool = reward_wei * committee_share_bps // BPS if members else 0
    contributor_pool = reward_wei - committee_pool
    total_weight = sum(w for w in contributors.values() if w > 0)
    entries: list[tuple[int, bytes, int]] = []
    for address, weight in contributors.items():
        if weight <= 0:
            raise P2PFLError("contributor weights must be positive")
        entries.append(
            (ROLE_CONTRIBUTOR, bytes(address), contributor_pool * weight // total_weight)
        )
    for address in members:
        entries.append((ROLE_COMMITTEE, address, committee_pool // len(members)))
    for address in sorted({bytes(a) for a in rejected}):
        entries.append((ROLE_REJECTED, address, 0))
    return build_leaves(entries)


@dataclass(frozen=True)
class RewardTree:
    """Leaves plus their tree: `root` is the round's contributorsRoot."""

    leaves: tuple[RewardLeaf, ...]
    tree: MerkleTree

    @classmethod
    def build(cls, leaves: Sequence[RewardLeaf]) -> RewardTree:
        for i, leaf in enumerate(leaves):
            if leaf.index != i:
                raise P2PFLError("leaf indices must be 0..n-1 in order (use build_leaves)")
        return cls(tuple(leaves), MerkleTree([leaf.hash() for leaf in leaves]))

    @property
    def root(self) -> bytes:
        return self.tree.root

    def proof(self, index: int) -> list[bytes]:
        return self.tree.proof(index)

    def leaves_of(self, account: bytes) -> list[RewardLeaf]:
        """Every leaf (any role) of one account."""
        return [leaf for leaf in self.leaves if leaf.account == bytes(account)]
