"""The node's chain transactions: commit certificates (`commitRound`) and equivocation
evidence (`submitEquivocation`). Either may revert because another member was first;
that is counted, not an error."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from p2pfl.chain.trio_client import run_chain
from p2pfl.core import round_events as ev
from p2pfl.core.cid import CID
from p2pfl.core.messages import Commit
from p2pfl.errors import ChainError
from p2pfl.node.ports import ChainPort
from p2pfl.node.roundlog import RoundLog

log = logging.getLogger("p2pfl.node")


class ChainTransactions:
    def __init__(
        self, chain: ChainPort, rounds: Mapping[int, RoundLog], count: Callable[[str], None]
    ) -> None:
        self.chain = chain
        self.rounds = rounds
        self.count = count

    async def submit_commit(self, commit: Commit) -> None:
        """Send the certificate with the (signer, signature) pairs the machine verified."""
        try:
            result = await run_chain(
                self.chain,
                self.chain.commit_round,
                commit.task,
                commit.round,
                commit.attempt,
                commit.view,
                CID.parse(commit.base).digest,
                CID.parse(commit.result).digest,
                commit.contributors_root,
                commit.votes,
            )
        except ChainError as exc:
            # Another member's commit usually landed first; the follower will see it.
            self.count("commit-not-ours")
            log.info(
                "commit of round %d not submitted by us: %s", commit.round, exc.revert_reason or exc
            )
            return
        self.count("commits-landed")
        entry = self.rounds.get(commit.round)
        if entry is not None:
            entry.commit_gas = result.gas_used
            entry.commit_tx = "0x" + result.tx_hash.hex()

    async def report_evidence(self, evidence: ev.Evidence) -> None:
        try:
            await run_chain(self.chain, self.chain.submit_equivocation, *evidence.contract_args())
            self.count("evidence-submitted")
        except ChainError as exc:
            self.count("evidence-not-ours")
            log.info(
                "evidence against %s not submitted: %s",
                evidence.signer.hex()[:8],
                exc.revert_reason or exc,
            )
