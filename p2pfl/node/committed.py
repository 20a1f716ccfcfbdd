"""What the node keeps of committed rounds: reward files (for `p2pfl claim`), the
probation history (strike points per committed round) and the round records (for
`p2pfl audit`), all on disk.

Both come from the proposal the chain's (result, contributors root) names: its reward
tree is rebuilt (p2pfl.core.round_result.committed_reward_tree) and checked against the
on-chain root; its rejections that are strikes enter the history, which every node
must hold alike so that later aggregates agree (aggregation spec §4a). The round record
is that proposal with the signed updates it names, as the gossip carried them
(p2pfl.core.audit.encode_round_record): what an auditor recomputes the round from.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path

from p2pfl.chain.client import RoundCommitted
from p2pfl.chain.rewards import write_reward_file
from p2pfl.core import aggregate as agg
from p2pfl.core.audit import encode_round_record
from p2pfl.core.cid import CID
from p2pfl.core.merkle import RewardTree
from p2pfl.core.messages import Proposal
from p2pfl.core.probation_history import (
    StrikeHistory,
    decode_strikes,
    encode_strikes,
    forget_before,
)
from p2pfl.core.round import DISCRETION_REASONS
from p2pfl.core.round_events import UpdateKey
from p2pfl.core.round_result import committed_reward_tree
from p2pfl.errors import P2PFLError
from p2pfl.files import write_bytes_atomic, write_text_atomic
from p2pfl.manifest import TaskManifest
from p2pfl.node.intake import Intake

log = logging.getLogger("p2pfl.node")

STRIKES_FILE = "strikes.json"
REWARDS_DIR = "rewards"
ROUNDS_DIR = "rounds"  # round records for `p2pfl audit`


def round_record_path(data_dir: Path, round_: int) -> Path:
    """Where the node keeps committed round `round_`'s record (`p2pfl audit` reads it)."""
    return data_dir / ROUNDS_DIR / f"round-{round_:06d}.msgpack"


def load_strikes(path: Path) -> StrikeHistory:
    """The probation history saved by `save_strikes` ({} if there is none yet)."""
    try:
        return decode_strikes(path.read_bytes())
    except FileNotFoundError:
        return {}
    except P2PFLError as exc:
        raise P2PFLError(f"{exc} in {path}; delete it to start afresh") from exc


def save_strikes(path: Path, strikes: StrikeHistory, keep_from: int) -> None:
    """Write the history atomically, dropping rounds before `keep_from` (out of every window)."""
    forget_before(strikes, keep_from)
    write_text_atomic(path, encode_strikes(strikes).decode())


class CommittedRounds:
    """Reward files and probation history of the rounds the chain committed."""

    def __init__(
        self,
        data_dir: Path,
        manifest: TaskManifest,
        spec: agg.RuleSpec,
        intake: Intake,
        count: Callable[[str], None],
        keys_of: Callable[[int], Mapping[UpdateKey, bytes]] = lambda round_: {},
    ) -> None:
        self.data_dir = data_dir
        self.manifest = manifest
        self.task = manifest.task_id
        self.spec = spec
        self.intake = intake  # the proposals and updates seen
        self.count = count
        # round -> content keys of the sealed deltas we opened (the round record keeps
        # them, so this node can audit its sealed rounds; spec sealing.md, "audit")
        self.keys_of = keys_of
        self.round_stakes: dict[
            int, dict[bytes, int]
        ] = {}  # registry snapshot each round drew from
        # Committed round -> {author: strike points} (the aggregation's probation history),
        # from the proposal the chain's (result, contributors root) names, once its reward
        # tree matched the root (or could not be rebuilt for a missing update); kept on
        # disk so a restarted node computes the same probation as the others.
        self.strikes: StrikeHistory = load_strikes(data_dir / STRIKES_FILE)

    def settle(
        self, event: RoundCommitted, base: bytes, result: bytes
    ) -> Callable[[], None] | None:
        """Rebuild and check the round's reward tree and record its strikes (in memory, at
        once: the next round's probation reads them); returns the file writes to run off
        the event loop (None: nothing to write)."""
        proposal = self._committed_proposal(event, result)
        if proposal is None:
            self.count("reward-file-unknown-proposal")
            return None
        save_record = self._round_record(proposal)
        stakes = self.round_stakes.get(event.round)
        if stakes is None:
            self.count("reward-file-unknown-proposal")
            return save_record
        writes = self._settle(event, proposal, base, stakes)

        def write() -> None:
            save_record()
            if writes is not None:
                writes()

        return write

    def knows_proposal(self, event: RoundCommitted, result: bytes) -> bool:
        """Whether the proposal the chain committed has reached us."""
        return self._committed_proposal(event, result) is not None

    def _committed_proposal(self, event: RoundCommitted, result: bytes) -> Proposal | None:
        """The proposal the chain's (round, result, contributors root) names, if seen."""
        return self.intake.proposals.get((event.round, result, event.contributors_root))

    def _lacks_updates(self, proposal: Proposal) -> bool:
        """Whether an update `proposal` includes never reached us (a task whose updates go
        to the committee only: a node off it holds none)."""
        return not all(key in self.intake.updates for key in proposal.included)

    def missing_updates(self, event: RoundCommitted, result: bytes) -> Proposal | None:
        """The committed proposal, if it includes an update we lack, else None."""
        proposal = self._committed_proposal(event, result)
        return proposal if proposal is not None and self._lacks_updates(proposal) else None

    def complete(
        self, event: RoundCommitted, base: bytes, result: bytes
    ) -> Callable[[], None] | None:
        """After the missing updates arrived: the round record and reward file `settle` had
        to leave out (its strikes are recorded already); None when nothing is new."""
        proposal = self._committed_proposal(event, result)
        stakes = self.round_stakes.get(event.round)
        if proposal is None or stakes is None:
            return None
        save_record = self._round_record(proposal)
        tree = self._reward_tree(event, proposal, base, stakes)
        if tree is None:
            return save_record
        save_rewards = self._reward_file(event.round, tree)

        def write() -> None:
            save_record()
            save_rewards()

        return write

    def _reward_tree(
        self, event: RoundCommitted, proposal: Proposal, base: bytes, stakes: dict[bytes, int]
    ) -> RewardTree | None:
        """The round's reward tree if we hold every update it weighs and its root is the
        chain's (else None, counted)."""
        tree = committed_reward_tree(
            proposal,
            self.intake.updates,
            task=self.task,
            attempt=event.attempt,
            base_digest=CID.parse(base).digest,
            stakes=stakes,
            committee_size=self.manifest.committee_size,
            reward_per_round_wei=self.manifest.reward_per_round_wei,
        )
        if tree is None:
            self.count("reward-file-missing-update")
            return None
        if tree.root != event.contributors_root:
            self.count("reward-root-mismatch")
            log.warning("round %d: rebuilt reward root differs from the chain's", event.round)
            return None
        return tree

    def _reward_file(self, round_: int, tree: RewardTree) -> Callable[[], None]:
        folder = self.data_dir / REWARDS_DIR
        path = folder / f"round-{round_:06d}.json"

        def write() -> None:
            folder.mkdir(exist_ok=True)
            write_reward_file(path, self.task, round_, tree)

        return write

    def _settle(
        self, event: RoundCommitted, proposal: Proposal, base: bytes, stakes: dict[bytes, int]
    ) -> Callable[[], None] | None:
        """`settle` once the proposal and the round's stakes are known."""
        if self._lacks_updates(proposal):
            # No weights, so no tree to check; the strikes need only the proposal the
            # chain's (result, root) names, so the history does not get a hole.
            self.count("reward-file-missing-update")
            return self._record_strikes(event.round, proposal)
        tree = self._reward_tree(event, proposal, base, stakes)
        if tree is None:  # the root differs from the chain's (counted)
            return None
        save_history = self._record_strikes(event.round, proposal)
        save_rewards = self._reward_file(event.round, tree)

        def write() -> None:
            save_rewards()
            if save_history is not None:
                save_history()

        return write

    def _round_record(self, proposal: Proposal) -> Callable[[], None]:
        """The write of the round's record: the proposal and the updates it names that we
        hold (included ones by key; the filter's rejections by author and round)."""
        held = self.intake.updates
        updates = [held[key] for key in proposal.included if key in held]
        rejected = {a for a, why in proposal.rejected if why not in DISCRETION_REASONS}
        if rejected:
            updates.extend(
                u for (a, _), u in held.items() if a in rejected and u.round == proposal.round
            )
        data = encode_round_record(proposal, updates, self.keys_of(proposal.round))
        path = round_record_path(self.data_dir, proposal.round)

        def write() -> None:
            path.parent.mkdir(exist_ok=True)
            write_bytes_atomic(path, data)

        return write

    def _record_strikes(self, round_: int, proposal: Proposal) -> Callable[[], None] | None:
        """Add the committed round's strike points to the probation history; returns the
        write of its file."""
        rule = self.spec.probation
        if rule is None:
            return None
        self.strikes[round_] = agg.strike_points(proposal.rejected, rule)
        forget_before(self.strikes, round_ - rule.window)
        data = encode_strikes(self.strikes).decode()
        path = self.data_dir / STRIKES_FILE

        def write() -> None:
            write_text_atomic(path, data)

        return write

    def record(self, round_: int) -> dict[bytes, int]:
        """Authors' strike points over the probation window before `round_` (`aggregate`'s
        `record`; empty without a probation rule)."""
        rule = self.spec.probation
        if rule is None:
            return {}
        if any(r not in self.strikes for r in rule.rounds(round_)):
            # Joined late or missed a proposal: our probation may differ from the
            # committee's, and then we cannot verify (we do not vote) -- never a wrong vote.
            self.count("probation-history-missing")
        return rule.record(round_, self.strikes)
