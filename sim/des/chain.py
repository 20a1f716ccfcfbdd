"""The chain model: blocks every `block_time_s`, transactions included `inclusion_blocks`
after they reach the RPC, and a Python mirror of the RoundLedger's rules (protocol/spec/
chain.md; contracts/): a commit is accepted when its round is the last committed + 1, its
base is the last result, its signers are distinct members of the attempt's committee
(the same sortition, p2pfl.core.sortition) and at least the quorum, attempt a comes no
earlier than a x `redraw_delay_s` after the last commit (RedrawTooEarly), and it is the
first valid commit of the round (later ones revert). Equivocation evidence slashes the signer's
stake: it drops out of the stakes snapshot of the rounds that start after."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from p2pfl.core.cid import CID
from p2pfl.core.messages import Commit
from p2pfl.core.round_events import ChainCommitted, Evidence
from p2pfl.core.signing import Domain
from p2pfl.core.sortition import commit_quorum, committee_for, round_seed
from p2pfl.errors import InvalidMessage
from sim.des.scenario import ChainSection


@dataclass
class ChainStats:
    commits_submitted: int = 0
    commits_reverted: int = 0
    reverts: dict[str, int] = field(default_factory=dict)
    evidence_submitted: int = 0
    slashed: dict[bytes, float] = field(default_factory=dict)  # signer -> inclusion time


class Chain:
    def __init__(
        self,
        spec: ChainSection,
        task: bytes,
        domain: Domain,
        genesis: bytes,
        stakes: dict[bytes, int],
        committee_size: int,
        schedule: Callable[[float, Callable[[], None]], None],
        redraw_delay_s: float = 0.0,
    ) -> None:
        self.spec = spec
        self.redraw_delay_s = redraw_delay_s  # the task's redrawDelay
        self.task = task
        self.domain = domain
        self.stakes = dict(stakes)
        self.k = committee_size
        self.quorum = commit_quorum(committee_size)
        self.last_round = 0
        self.last_result = genesis  # binary CID
        self.committed: dict[int, ChainCommitted] = {}
        self.committed_at: dict[int, float] = {}
        self.stakes_of_round: dict[int, dict[bytes, int]] = {1: dict(stakes)}
        self.stats = ChainStats()
        self._schedule = schedule  # (at, callback): the engine's timer
        self._on_commit: list[Callable[[ChainCommitted, float], None]] = []

    def on_commit(self, listener: Callable[[ChainCommitted, float], None]) -> None:
        self._on_commit.append(listener)

    def inclusion_time(self, sent_at: float) -> float:
        """The block that includes a transaction sent at `sent_at`."""
        bt = self.spec.block_time_s
        arrives = sent_at + self.spec.rpc_s
        if bt <= 0:
            return arrives
        return (math.floor(arrives / bt) + self.spec.inclusion_blocks) * bt

    def submit_commit(self, commit: Commit, sent_at: float) -> None:
        self.stats.commits_submitted += 1
        at = self.inclusion_time(sent_at)
        self._schedule(at, lambda: self._include_commit(commit, at))

    def submit_evidence(self, evidence: Evidence, sent_at: float) -> None:
        self.stats.evidence_submitted += 1
        at = self.inclusion_time(sent_at)
        self._schedule(at, lambda: self._include_evidence(evidence, at))

    def _revert(self, why: str) -> None:
        self.stats.commits_reverted += 1
        self.stats.reverts[why] = self.stats.reverts.get(why, 0) + 1

    def _include_commit(self, c: Commit, at: float) -> None:
        if c.task != self.task:
            return self._revert("wrong-task")
        if c.round != self.last_round + 1:
            return self._revert("not-next-round")
        if c.base != self.last_result:
            return self._revert("wrong-base")
        if at < self.committed_at.get(c.round - 1, 0.0) + c.attempt * self.redraw_delay_s:
            return self._revert("redraw-too-early")
        stakes = self.stakes_of_round[c.round]
        seed = round_seed(self.task, c.round, CID.parse(c.base).digest, c.attempt)
        members = set(committee_for(seed, stakes, self.k))
        try:
            signers = c.verify_votes(self.domain)
        except InvalidMessage:
            return self._revert("bad-signature")
        if len(set(signers)) != len(signers):
            return self._revert("duplicate-signer")
        if not set(signers) <= members:
            return self._revert("not-member")
        if len(signers) < self.quorum:
            return self._revert("below-quorum")
        event = ChainCommitted(c.round, c.attempt, c.view, c.base, c.result, c.contributors_root)
        self.last_round, self.last_result = c.round, c.result
        self.committed[c.round] = event
        self.committed_at[c.round] = at
        # The next round's snapshot: stakes at the block that committed this round.
        self.stakes_of_round[c.round + 1] = dict(self.stakes)
        for listener in self._on_commit:
            listener(event, at)
        return None

    def _include_evidence(self, evidence: Evidence, at: float) -> None:
        signer = evidence.signer
        if signer in self.stats.slashed:
            return  # already slashed: the contract refuses evidence twice
        try:
            evidence.first.verify(self.domain)
            evidence.second.verify(self.domain)
        except InvalidMessage:
            return
        self.stats.slashed[signer] = at
        self.stakes[signer] = 0
