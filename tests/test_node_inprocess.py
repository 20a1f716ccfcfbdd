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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import trio

from p2pfl.chain.devnet import DEFAULT_GAS_FUNDS, ETHER, DevNet
from p2pfl.chain.providers import embedded_web3, fund
from p2pfl.core.cid import CID, blob_cid
from p2pfl.core.identity import NodeIdentity, peer_id_bytes_from_public
from p2pfl.core.tensors import decode_tensors, encode_tensors
from p2pfl.manifest import TaskManifest
from p2pfl.net.config import NetConfig
from p2pfl.node import Node, RoundLog
from sim.faults import hold_host

N_NODES = 5
COMMITTEE = 3  # two nodes sit out of every round's committee
ROUNDS = 3
SIZE = 256
STAKE = ETHER


@dataclass
class FakeTraining:
    delta: dict[str, np.ndarray]
    n_samples: int
    train_loss: float = 0.0
    seconds: float = 0.0


def trainer_for(index: int) -> Any:
    """Deltas that agree in direction (so the filters keep them), differ a little."""

    async def train(base: dict[str, np.ndarray], cfg: Any, seed: int) -> FakeTraining:
        rng = np.random.default_rng(seed)
        delta = (0.01 + 0.001 * rng.standard_normal(SIZE)).astype(np.float32)
        await trio.sleep(0.05 * index)
        return FakeTraining({"w": delta}, 10 + index)

    return train


def open_task(genesis_blob: bytes) -> tuple[DevNet, list[NodeIdentity], TaskManifest]:
    w3 = embedded_web3()
    devnet = DevNet.create(w3, n_nodes=N_NODES, seed=5, register=False)
    identities = [NodeIdentity(k) for k in devnet.keys]
    for ident, client in zip(identities, devnet.clients):
        fund(w3, ident.checksum_address, STAKE)
        client.register(
            peer_id_bytes_from_public(ident.compressed_public_key), ident.x25519_public_key, STAKE
        )
    dep = devnet.deployment
    reward = ETHER // 100
    manifest = TaskManifest(
        name="node-inprocess",
        model="mlp",
        initial_model=str(blob_cid(genesis_blob)),
        chain_id=dep.chain_id,
        registry=dep.registry,
        ledger=dep.ledger,
        committee_size=COMMITTEE,
        collect_deadline_s=10.0,
        collect_quorum_percent=100,
        view_timeout_s=6.0,
        commit_fallback_delay_s=3.0,
        redraw_timeout_s=40.0,
        reward_per_round_wei=reward,
        seed=5,
    )
    fund(w3, devnet.admin.account.address, ROUNDS * reward + DEFAULT_GAS_FUNDS)
    devnet.admin.create_task(
        manifest.task_id,
        CID.parse(manifest.initial_model).digest,
        COMMITTEE,
        0,
        reward,
        ROUNDS * reward,
        redraw_delay_s=0,
    )
    return devnet, identities, manifest


async def test_nodes_off_the_committee_survive_several_commits(tmp_path: Path) -> None:
    genesis_blob = encode_tensors({"w": np.zeros(SIZE, np.float32)})
    devnet, identities, manifest = open_task(genesis_blob)
    reported: dict[int, list[RoundLog]] = {i: [] for i in range(N_NODES)}
    nodes: list[Node] = []
    async with AsyncExitStack() as stack:
        hosts = await stack.enter_async_context(trio.open_nursery())
        stops = [trio.Event() for _ in identities]
        stack.callback(lambda: [s.set() for s in stops])
        nets: list[Any] = []
        for i, ident in enumerate(identities):
            bootstrap = (nets[0].listen_addrs[0],) if nets else ()
            cfg = NetConfig(
                data_dir=tmp_path / f"net{i}", bootstrap=bootstrap, dht=False, sync_interval_s=0.5
            )
            nets.append(await hosts.start(hold_host, cfg, ident.private_key, stops[i]))
        nets[0].put_blob(genesis_blob)  # the task creator holds the genesis model

        for i, (ident, net) in enumerate(zip(identities, nets)):

            def on_round(entry: RoundLog, i: int = i, net: Any = net) -> None:
                # As the CLI's accuracy evaluation does: the committed model, from the store.
                weights = decode_tensors(net.store.read_blob(CID.parse(entry.result)))
                assert weights["w"].shape == (SIZE,)
                reported[i].append(entry)

            client = type(devnet.clients[i])(devnet.admin.w3, devnet.deployment, ident.private_key)
            nodes.append(
                Node(
                    ident,
                    manifest,
                    client,
                    net,
                    None,
                    tmp_path / f"state{i}",
                    client_index=i,
                    trainer=trainer_for(i),
                    on_round=on_round,
                    follow_poll_s=0.2,
                )
            )
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
