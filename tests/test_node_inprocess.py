"""Nodes on real libp2p hosts and a real chain (the contracts on the embedded EVM), in one
trio run, with a stand-in trainer (no torch): what a node does around the round machine.

The regression: a node off the committee learns that a round committed before it holds
the new model (it fetched no delta and computed no aggregate). It used to report the
round (`on_round`, whose CLI callback evaluates `entry.result` from the block store)
right away and died with "no block <model CID>". Now a round is reported once its model
is held: the callback here reads the model from the store at once, on every node.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trio

from p2pfl.core.cid import CID
from p2pfl.core.tensors import decode_tensors, encode_tensors
from p2pfl.node import RoundLog
from tests.realnodes import make_nodes, open_task, start_hosts

N_NODES = 5
COMMITTEE = 3  # two nodes sit out of every round's committee
ROUNDS = 3
SIZE = 256


async def test_nodes_off_the_committee_survive_several_commits(tmp_path: Path) -> None:
    genesis_blob = encode_tensors({"w": np.zeros(SIZE, np.float32)})
    devnet, identities, manifest = open_task(
        genesis_blob, n_nodes=N_NODES, committee=COMMITTEE, rounds=ROUNDS, seed=5,
        name="node-inprocess",
    )  # fmt: skip
    reported: dict[int, list[RoundLog]] = {i: [] for i in range(N_NODES)}
    async with AsyncExitStack() as stack:
        nets = await start_hosts(stack, identities, tmp_path, genesis_blob)

        def on_round_for(i: int) -> Any:
            def on_round(entry: RoundLog) -> None:
                # As the CLI's accuracy evaluation does: the committed model, from the store.
                weights = decode_tensors(nets[i].store.read_blob(CID.parse(entry.result)))
                assert weights["w"].shape == (SIZE,)
                reported[i].append(entry)

            return on_round

        nodes = make_nodes(devnet, identities, nets, manifest, tmp_path, on_round_for=on_round_for)
        with trio.fail_after(150):
            async with trio.open_nursery() as nursery:
                for node in nodes:
                    nursery.start_soon(node.run, ROUNDS)

    assert devnet.admin.task_info(manifest.task_id).last_round >= ROUNDS
    for i, node in enumerate(nodes):
        assert node.finished.is_set(), f"node {i} did not finish"
        assert [e.round for e in reported[i]][:ROUNDS] == list(range(1, ROUNDS + 1)), (
            f"node {i}: {reported[i]}"
        )
    # Some node sat out of some committee, and it too reported every round.
    outsiders = [(i, e.round) for i in reported for e in reported[i] if not e.member]
    assert outsiders, "every node was on every committee: the test did not test anything"
    results = {e.round: e.result for i in reported for e in reported[i]}
    for i in reported:
        assert {e.round: e.result for e in reported[i]} == {
            r: results[r] for r in (e.round for e in reported[i])
        }


async def run_one_member_pushes(
    tmp_path: Path, name: str, privacy: dict[str, Any], train: dict[str, Any] | None = None
) -> tuple[list[Any], list[Any], list[Any], dict[str, int]]:
    """N_NODES nodes, all connected, on a 2-round task whose updates go to the committee,
    each author pushing its update to one member only (the others relay it). Returns the
    hosts, the nodes, each committed round's proposal (asserting that every round
    committed with every update) and the nodes' counters summed."""
    from p2pfl.node.roundlog import Behaviour

    # 32 KB deltas: over the inline limit, so the members fetch what they pulled. A member
    # pushed nothing relays only MEMBER_PULL_UNPUSHED_S (10 s) into the round while it
    # collects: a 30 s collect deadline leaves it the time to.
    genesis_blob = encode_tensors({"w": np.zeros(8192, np.float32)})
    devnet, identities, manifest = open_task(
        genesis_blob, n_nodes=N_NODES, committee=COMMITTEE, rounds=2, seed=5,
        name=name, privacy=privacy, train=train, collect_deadline_s=30.0,
    )  # fmt: skip
    async with AsyncExitStack() as stack:
        nets = await start_hosts(stack, identities, tmp_path, genesis_blob)
        for i, net in enumerate(nets):  # (the hosts know only the first's address)
            for other in nets[i + 1 :]:
                await net.connect(other.listen_addrs[0])
        nodes = make_nodes(devnet, identities, nets, manifest, tmp_path)
        for node in nodes:
            node.behaviour = Behaviour(direct_members=1)
        with trio.fail_after(150):
            async with trio.open_nursery() as nursery:
                for node in nodes:
                    nursery.start_soon(node.run, 2)

    chain = devnet.admin
    commits = chain.commits(0, chain.block_number(), manifest.task_id)
    assert sorted(c.round for c in commits) == [1, 2]
    proposals = []
    for commit in commits:
        proposal = next(
            p
            for n in nodes
            for (r, _, root), p in n.intake.proposals.items()
            if r == commit.round and root == commit.contributors_root
        )
        assert len(proposal.included) == N_NODES, proposal.included
        proposals.append(proposal)
    names = {k for n in nodes for k in n.counters}
    total = {k: sum(n.counters.get(k, 0) for n in nodes) for k in names}
    return nets, nodes, proposals, total


async def test_members_pull_from_each_other_the_updates_pushed_to_the_others(
    tmp_path: Path,
) -> None:
    """Updates to the committee (`[privacy] updates = "committee"`), each author pushing
    its update to one member only: the members pull from each other what was pushed to the
    others, the deltas attached to the pulls' answers, and every round commits with every
    update (sealed: the pulled updates carry each member's wrap)."""
    nets, _, _, total = await run_one_member_pushes(
        tmp_path, "member-pulls", {"updates": "committee"}
    )
    # Each author pushed to one member: the others pulled it from that member (or from one
    # that pulled it), its delta attached to the pull's answer instead of fetched as blocks.
    assert total.get("member-pulled", 0) > 0, total
    served = sum(net.metrics().get("pull-attachments-served", 0) for net in nets)
    assert served > 0, served
    assert total.get("deltas-attached", 0) > 0, total
    for bad in ("push-gave-up", "round-pull-incomplete", "round-pull-rejected"):
        assert total.get(bad, 0) == 0, (bad, total)


@pytest.mark.parametrize("sealed", [False, True])
async def test_float16_deltas_reach_the_members_in_half_the_bytes(
    tmp_path: Path, sealed: bool
) -> None:
    """`[train] delta_float16`: every node rounds its delta to float16 values (error
    feedback) and sends it to the members in half the bytes -- unsealed, pushed and relayed
    as its float16 packing, which the members unpack and check against its CID; sealed, the
    packing is what is sealed, so the ciphertext the CID names is half the size. The rounds
    commit with every update."""
    nets, nodes, proposals, total = await run_one_member_pushes(
        tmp_path,
        f"float16-deltas-{sealed}",
        {"updates": "committee", "sealed": sealed},
        {"delta_float16": True},
    )
    stored = []
    for proposal in proposals:
        for _, delta in proposal.included:
            holder = next(n for n in nodes if n.net.store.has_blob(CID.parse(delta)))
            stored.append(holder.net.store.read_blob(CID.parse(delta)))
    model_bytes = len(encode_tensors({"w": np.zeros(8192, np.float32)}))
    if sealed:  # (the stand-in trainer's deltas are not float16 values of themselves)
        assert all(len(blob) < 0.6 * model_bytes for blob in stored)
    else:
        for blob in stored:
            w = decode_tensors(blob)["w"]
            assert np.array_equal(w.astype(np.float16).astype(np.float32), w)
        assert total.get("deltas-sent-packed", 0) > 0, total
        served = sum(net.metrics().get("pull-attachments-served", 0) for net in nets)
        assert served > 0, served  # relayed packed, unpacked by the puller
    assert total.get("deltas-attached", 0) > 0, total
    for bad in ("delta-packing-invalid", "delta-attachment-mismatch", "push-gave-up"):
        assert total.get(bad, 0) == 0, (bad, total)
    for bad in ("fetch-failed", "sealed-undecryptable"):
        assert total.get(bad, 0) == 0, (bad, total)


async def test_a_node_the_committed_proposal_reached_late_still_settles_the_round(
    tmp_path: Path,
) -> None:
    """Updates to the committee: the certificate and the chain can outrun the gossip of
    the proposal they name (100 nodes on 2 cores: ~1 node in 5 a round). Here no node
    hears round 1's proposal by gossip or sync (the members are sent it directly): a node
    off the committee waits for it, then pulls it from a member, and still writes the
    round's reward file and record and records its strikes. Before, it wrote neither file
    and left a hole in its probation history."""
    from p2pfl.core.messages import Proposal, decode_message
    from p2pfl.net.gossip import Verdict
    from p2pfl.node.committed import REWARDS_DIR

    genesis_blob = encode_tensors({"w": np.zeros(SIZE, np.float32)})
    devnet, identities, manifest = open_task(
        genesis_blob, n_nodes=N_NODES, committee=COMMITTEE, rounds=2, seed=5,
        name="late-proposal", privacy={"updates": "committee"},
    )  # fmt: skip
    async with AsyncExitStack() as stack:
        nets = await start_hosts(stack, identities, tmp_path, genesis_blob)
        for i, net in enumerate(nets):
            for other in nets[i + 1 :]:
                await net.connect(other.listen_addrs[0])
        nodes = make_nodes(devnet, identities, nets, manifest, tmp_path)

        def deaf_to_round_1_proposals(gossip: Any) -> Any:
            admit = gossip._admit

            def filtered(state: Any, data: bytes, msg_id: bytes, peer: str, via: str,
                         attachment: bytes = b"") -> Any:  # fmt: skip
                if via in ("gossip", "sync"):
                    message = decode_message(data)
                    if isinstance(message, Proposal) and message.round == 1:
                        return Verdict.IGNORE  # (not held: as if it had not arrived yet)
                return admit(state, data, msg_id, peer, via, attachment)

            return filtered

        for net in nets:
            net.gossip._admit = deaf_to_round_1_proposals(net.gossip)
        with trio.fail_after(150):
            async with trio.open_nursery() as nursery:
                for node in nodes:
                    nursery.start_soon(node.run, 2)

    chain = devnet.admin
    commits = {c.round: c for c in chain.commits(0, chain.block_number(), manifest.task_id)}
    assert sorted(commits) == [1, 2]
    followers = [n for n in nodes if not n.rounds[1].member]
    assert followers, "every node was on round 1's committee: the test tested nothing"
    for i, node in enumerate(nodes):
        assert (tmp_path / f"state{i}" / REWARDS_DIR / "round-000001.json").exists(), i
        assert 1 in node.committed.strikes  # the probation history has no hole
    for node in followers:
        assert node.counters.get("settle-waited-for-proposal", 0) >= 1, node.counters
        assert node.counters.get("proposal-pulled", 0) >= 1, node.counters
        assert node.counters.get("reward-file-unknown-proposal", 0) == 0, node.counters
