"""Inputs and outputs of the round state machine (p2pfl/core/round.py).

Events go in (`RoundMachine.handle(event)`), actions come out. All are frozen
dataclasses carrying only protocol values (bytes, ints, messages), so a trio node, a
simulated network and a test can all produce and consume them.

Time enters only through `RoundStarted.now` and `Tick.now` (seconds, any epoch, the
caller's clock). Signatures of incoming messages are checked by the caller with the
task's `Domain` (it must do so anyway to validate gossip before forwarding); events
carry the signer it recovered, and the machine refuses an event whose
`verified_signer` differs from the message's `signer` field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Union

from p2pfl.core.messages import (
    Commit,
    Heartbeat,
    Proposal,
    Rewrap,
    Signed,
    Update,
    Vote,
    conflicting,
)
from p2pfl.errors import P2PFLError

# (author address, delta CID bytes): names one update's content within a round.
UpdateKey = tuple[bytes, bytes]


# --- events (in) ------------------------------------------------------------------------


@dataclass(frozen=True)
class RoundStarted:
    """The shell has the base model for `round` and the registry snapshot to draw from.

    `stakes` maps address -> active stake at the round's reference block (the block that
    committed round-1); it defines who may send updates and who sits on the committee.
    """

    round: int
    base: bytes  # binary CID of the model the round starts from
    stakes: Mapping[bytes, int]
    now: float
    # Authors the aggregation will leave out this round (the shell's probation record,
    # aggregation spec §4a): their updates do not count toward the early close of
    # collection, so a group of known attackers cannot fill the quorum and crowd honest
    # updates out. A local liveness input: nodes may differ, safety does not depend on it.
    probation: frozenset[bytes] = frozenset()
    # Sealed tasks: registered nodes whose on-chain X25519 key cannot be wrapped to (spec
    # sealing.md §4). Every node reads the same registry and so the same set; an update
    # needs no wrap for them to be usable, and they cannot open deltas (like a silent
    # member, the quorum does without them).
    unsealable: frozenset[bytes] = frozenset()


@dataclass(frozen=True)
class Tick:
    """The clock moved; fires any timer due at or before `now`."""

    now: float


@dataclass(frozen=True)
class LocalUpdateReady:
    """Our own training for `round` finished; the delta is stored locally as blocks.

    Sealed: `delta` names the ciphertext, `inline` is ciphertext, and `wraps` holds the
    content key wrapped to `StartTraining.recipients` (sorted by member)."""

    round: int
    delta: bytes  # binary CID of the canonical delta (sealed: of its ciphertext)
    n_samples: int
    norm: float
    inline: bytes = b""
    wraps: tuple[tuple[bytes, bytes], ...] = ()


@dataclass(frozen=True)
class UpdateReceived:
    update: Update
    verified_signer: bytes

    @property
    def message(self) -> Update:
        return self.update


@dataclass(frozen=True)
class DeltaAvailable:
    """Answer to `Fetch`: the delta's blocks are local and match the CID (ok), or not.

    `reason` names a failure that is the author's doing and is counted as a rejection
    (sealed deltas: "unwrap-failed", "undecryptable", "bad-wrap"); "" for a plain miss."""

    author: bytes
    delta: bytes
    ok: bool
    reason: str = ""


@dataclass(frozen=True)
class WrapsReady:
    """Answer to `WrapKey`: our update's content key wrapped to the attempt's members."""

    round: int
    attempt: int
    delta: bytes
    wraps: tuple[tuple[bytes, bytes], ...]


@dataclass(frozen=True)
class RewrapReceived:
    """An author's key wraps for a re-drawn committee (spec sealing.md, "re-draws")."""

    rewrap: Rewrap
    verified_signer: bytes

    @property
    def message(self) -> Rewrap:
        return self.rewrap


@dataclass(frozen=True)
class AggregateComputed:
    """Answer to `ComputeAggregate`: the rule's output over exactly `candidates`.

    `included`/`rejected` are as the aggregation rule reports them (sorted by author);
    `contributors_root` is the reward Merkle root for (included, rejected, committee).
    A non-empty `error` means the rule could not aggregate (e.g. nothing survived).
    """

    round: int
    attempt: int
    candidates: tuple[UpdateKey, ...]
    included: tuple[UpdateKey, ...] = ()
    rejected: tuple[tuple[bytes, str], ...] = ()
    result: bytes = b""
    contributors_root: bytes = b""
    error: str = ""


@dataclass(frozen=True)
class ProposalReceived:
    proposal: Proposal
    verified_signer: bytes

    @property
    def message(self) -> Proposal:
        return self.proposal


@dataclass(frozen=True)
class VoteReceived:
    vote: Vote
    verified_signer: bytes

    @property
    def message(self) -> Vote:
        return self.vote


@dataclass(frozen=True)
class CommitSeen:
    """A gossiped commit certificate (its vote signatures are checked by the machine)."""

    commit: Commit

    @property
    def message(self) -> Commit:
        return self.commit


@dataclass(frozen=True)
class HeartbeatReceived:
    """A node's signed heartbeat: it is alive (spec round.md "Timers / live quorum")."""

    heartbeat: Heartbeat
    verified_signer: bytes

    @property
    def message(self) -> Heartbeat:
        return self.heartbeat


@dataclass(frozen=True)
class ChainCommitted:
    """The RoundLedger accepted a commit for `round`: this is final."""

    round: int
    attempt: int
    view: int
    base: bytes
    result: bytes
    contributors_root: bytes


Event = Union[
    RoundStarted,
    Tick,
    LocalUpdateReady,
    UpdateReceived,
    DeltaAvailable,
    AggregateComputed,
    ProposalReceived,
    VoteReceived,
    CommitSeen,
    ChainCommitted,
    HeartbeatReceived,
    WrapsReady,
    RewrapReceived,
]

# The events that deliver a gossiped message (`.message`); the others come from the shell.
Gossip = (
    UpdateReceived
    | ProposalReceived
    | VoteReceived
    | CommitSeen
    | HeartbeatReceived
    | RewrapReceived
)


# --- actions (out) ----------------------------------------------------------------------


@dataclass(frozen=True)
class StartTraining:
    """Train on the local data from `base`, then send back `LocalUpdateReady(round, ...)`.

    Sealed tasks (`sealed`): seal the delta under a fresh key and wrap that key to each of
    `recipients` (ourselves, then the round's opening committee: sealing.md §2); () in a
    plain task."""

    round: int
    base: bytes
    recipients: tuple[bytes, ...] = ()
    sealed: bool = False


@dataclass(frozen=True)
class Publish:
    """Gossip a signed message (or a commit certificate) on the task's topic, or, when
    `to` names nodes (a task whose updates go to the committee only: `RoundConfig.
    updates_to_committee`: its updates, re-wraps, proposals and votes), send it to those
    nodes directly and to no one else."""

    message: Update | Proposal | Vote | Commit | Rewrap
    to: tuple[bytes, ...] | None = None  # None: gossip to every node of the task


@dataclass(frozen=True)
class Fetch:
    """Get the delta's blocks (inline bytes, any holder), verify, answer `DeltaAvailable`.

    Sealed: `wrap` is the content key wrapped to us; unwrap it, open the ciphertext under
    `delta_aad(task, round, author)`, then check the plaintext as a plain delta."""

    author: bytes
    delta: bytes
    wrap: bytes = b""


@dataclass(frozen=True)
class WrapKey:
    """Wrap our sealed update's content key (of `delta`) to `recipients`, the members of
    attempt `attempt` our update's own wraps miss; answer `WrapsReady`."""

    round: int
    attempt: int
    delta: bytes
    recipients: tuple[bytes, ...]


@dataclass(frozen=True)
class ComputeAggregate:
    """Run filter + rule over exactly `updates` (sorted by author) on top of `base`.

    Answer with `AggregateComputed(round, attempt, candidates=keys)`. `committee` is
    the attempt's committee, needed for the reward root (committee leaves).
    """

    round: int
    attempt: int
    base: bytes
    rule: str
    committee: tuple[bytes, ...]
    updates: tuple[Update, ...]

    @property
    def candidates(self) -> tuple[UpdateKey, ...]:
        return tuple((u.signer, u.delta) for u in self.updates)


@dataclass(frozen=True)
class SubmitCommit:
    """Call `commitRound` with this certificate (it may revert if someone was first)."""

    commit: Commit


@dataclass(frozen=True)
class Advance:
    """Round `round - 1` committed `base`: fetch it, then send `RoundStarted(round, base, ...)`."""

    round: int
    base: bytes


@dataclass(frozen=True)
class Evidence:
    """Two conflicting statements by one signer: slashable on-chain."""

    first: Signed
    second: Signed

    def __post_init__(self) -> None:
        if not conflicting(self.first, self.second):
            raise P2PFLError(
                "evidence needs two statements with one signer and key but different bodies"
            )

    @property
    def signer(self) -> bytes:
        return self.first.signer  # type: ignore[attr-defined, no-any-return]

    def contract_args(self) -> tuple[int, bytes, int, int, int, bytes, bytes, bytes, bytes]:
        """(kind, task, round, attempt, view, bodyA, sigA, bodyB, sigB) for the contract."""
        kind, task, round_, attempt, view = self.first.statement_key()
        return (
            kind,
            task,
            round_,
            attempt,
            view,
            self.first.body(),
            self.first.signature,  # type: ignore[attr-defined]
            self.second.body(),
            self.second.signature,  # type: ignore[attr-defined]
        )


@dataclass(frozen=True)
class ReportEvidence:
    evidence: Evidence


@dataclass(frozen=True)
class Rejected:
    """An incoming message was dropped. `penalize`: a protocol violation (gossip REJECT),
    not a benign miss such as a stale or duplicate message (gossip IGNORE)."""

    reason: str
    signer: bytes
    penalize: bool
    detail: str = field(default="", compare=False)


Action = Union[
    StartTraining,
    Publish,
    Fetch,
    ComputeAggregate,
    SubmitCommit,
    Advance,
    ReportEvidence,
    Rejected,
    WrapKey,
]


# --- gossip -> events --------------------------------------------------------------------


def event_for(message: object, verified_signer: bytes | None = None) -> Event | None:
    """The event that delivers a gossiped `message` to the machine (None: not a message
    the machine knows).

    `verified_signer` is the signer the caller recovered from the signature; None means
    the caller already checked that it is `message.signer` (the gossip validator,
    p2pfl.core.validation, does). A commit carries votes, not a signature of its own:
    the machine checks them.
    """
    if isinstance(message, Commit):
        return CommitSeen(message)
    if not isinstance(message, (Update, Proposal, Vote, Heartbeat, Rewrap)):
        return None
    signer = message.signer if verified_signer is None else verified_signer
    if isinstance(message, Heartbeat):
        return HeartbeatReceived(message, signer)
    if isinstance(message, Rewrap):
        return RewrapReceived(message, signer)
    if isinstance(message, Update):
        return UpdateReceived(message, signer)
    if isinstance(message, Proposal):
        return ProposalReceived(message, signer)
    return VoteReceived(message, signer)
