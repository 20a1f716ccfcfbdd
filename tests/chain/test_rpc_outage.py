"""Chain calls from trio ride out an RPC outage (anvil stopped, restarted from its state
file): a commit sent into the outage lands once after it, a second member's copy of the
same commit reverts with the contract's reason instead of landing twice, and a call that
outlasts its tolerance fails with a clear `ChainUnreachable`."""

from __future__ import annotations

import logging

import pytest
import trio

from p2pfl.chain.client import ChainClient, ChainUnreachable
from p2pfl.chain.devnet import DevNet
from p2pfl.chain.providers import Anvil, rpc_web3
from p2pfl.chain.trio_client import run_chain
from p2pfl.core.merkle import RewardTree, round_reward_leaves
from p2pfl.errors import ChainError

from .conftest import GENESIS, REWARD, TASK, K, commit, first_draw, pairs

# One quick retry inside the blocking client (web3 adds its own ~2 s per request), so an
# unreachable chain surfaces as ChainUnreachable within seconds and run_chain takes over.
QUICK = {"retries": 1, "backoff_s": 0.1}
# Long enough for every pending call to have found the chain down at least once.
OUTAGE_S = 6.0


def _round_two(net: DevNet, base: bytes) -> tuple:
    """commit_round arguments for round 2, signed by a quorum of its committee."""
    info = net.admin.task_info(TASK)
    attempt, committee = first_draw(net, TASK, 2, base, info.quorum)
    assert attempt == 0
    result = (2).to_bytes(32, "big")
    contributors = {c.address: 10 + i for i, c in enumerate(net.clients[:4])}
    tree = RewardTree.build(round_reward_leaves(info.reward_per_round, contributors, committee, ()))
    sigs = net.votes(committee[: info.quorum], TASK, 2, 0, 0, base, result, tree.root)
    return (TASK, 2, 0, 0, base, result, tree.root, pairs(committee[: info.quorum], sigs))


def test_a_commit_sent_into_an_outage_lands_once_after_it(tmp_path, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="p2pfl.chain.trio_client")
    with Anvil(state_path=tmp_path / "state.json") as anvil:
        net = DevNet.create(anvil.web3(), 8)
        net.clients[0].create_task(TASK, GENESIS, K, 0, REWARD, 10 * REWARD, 0)
        r1 = commit(net, 1, GENESIS)
        args = _round_two(net, r1.result)
        # Two committee members hold the same certificate, each with its own connection.
        members = [
            ChainClient(rpc_web3(anvil.url), net.deployment, net.keys[i], **QUICK) for i in (1, 2)
        ]
        outcomes: dict[int, object] = {}

        async def submit(i: int, client: ChainClient) -> None:
            try:
                outcomes[i] = await run_chain(client, client.commit_round, *args)
            except ChainError as exc:
                outcomes[i] = exc

        async def main() -> None:
            anvil.stop()  # SIGTERM: the chain is dumped to the state file
            async with trio.open_nursery() as nursery:
                for i, client in enumerate(members):
                    nursery.start_soon(submit, i, client)
                await trio.sleep(OUTAGE_S)
                await trio.to_thread.run_sync(anvil.start)

        trio.run(main)

        landed = [o for o in outcomes.values() if not isinstance(o, Exception)]
        refused = [o for o in outcomes.values() if isinstance(o, ChainError)]
        assert len(landed) == 1 and len(refused) == 1, outcomes
        assert refused[0].revert_reason == "WrongRound(expected=3, got=2)"  # already committed
        assert net.admin.task_info(TASK).last_round == 2
        events = net.admin.commits(0, net.admin.block_number(), TASK)
        assert [e.round for e in events] == [1, 2]  # exactly one RoundCommitted per round
        assert events[1].tx_hash == landed[0].tx_hash
        retried = [
            r.getMessage() for r in caplog.records if "retrying commit_round" in r.getMessage()
        ]
        assert retried, "no commit was retried: the outage did not reach the submissions"
        again = [
            r.getMessage() for r in caplog.records if "chain reachable again" in r.getMessage()
        ]
        assert len(again) == 2 and any("WrongRound" in m for m in again), again


def test_a_call_outlasting_its_tolerance_fails_clearly(tmp_path) -> None:
    with Anvil(state_path=tmp_path / "state.json") as anvil:
        client = ChainClient(
            rpc_web3(anvil.url), DevNet.create(anvil.web3(), 1).deployment, **QUICK
        )
        anvil.stop()

        async def main() -> None:
            await run_chain(client, client.block_number, tolerate_s=0.5)

        with pytest.raises(ChainUnreachable, match="block number: chain unreachable") as info:
            trio.run(main)
        assert info.value.what == "block number" and info.value.tx_hash is None
