"""Real nodes for tests: real libp2p hosts on 127.0.0.1, the contracts on the embedded EVM
(eth-tester), and a stand-in trainer (no torch), all in one trio run. Shared by the node,
metrics, serve and audit tests."""

from __future__ import annotations

from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import trio

from p2pfl.chain.client import ChainClient
from p2pfl.chain.devnet import DEFAULT_GAS_FUNDS, ETHER, DevNet
from p2pfl.chain.providers import embedded_web3, fund
from p2pfl.core.cid import CID, blob_cid
from p2pfl.core.identity import NodeIdentity, peer_id_bytes_from_public
from p2pfl.manifest import TaskManifest
from p2pfl.net.config import NetConfig
from p2pfl.node import Node
from p2pfl.task_access import key_digest
from sim.faults import hold_host

STAKE = ETHER


@dataclass
class FakeTraining:
    delta: dict[str, np.ndarray]
    n_samples: int
    train_loss: float = 0.0
    seconds: float = 0.0


def trainer_for(index: int, scale: float = 0.01) -> Any:
    """Deltas shaped like the base model that agree in direction (so the filters keep
    them) and differ a little; node `index` finishes 50 ms x index late."""

    async def train(base: dict[str, np.ndarray], cfg: Any, seed: int) -> FakeTraining:
        rng = np.random.default_rng(seed)
        delta = {
            k: (scale + 0.1 * scale * rng.standard_normal(v.shape)).astype(np.float32)
            for k, v in base.items()
        }
        await trio.sleep(0.05 * index)
        return FakeTraining(delta, 10 + index)

    return train


def open_task(
    genesis_blob: bytes,
    *,
    n_nodes: int,
    committee: int,
    rounds: int,
    seed: int,
    name: str,
    model: str = "mlp",
    model_kwargs: dict[str, Any] | None = None,
    quorum_percent: int = 100,
    private: tuple[int, bytes] | None = None,
    privacy: dict[str, Any] | None = None,
    train: dict[str, Any] | None = None,
    collect_deadline_s: float = 10.0,
) -> tuple[DevNet, list[NodeIdentity], TaskManifest]:
    """Deploy, register `n_nodes` nodes with their real peer IDs, and open a task whose
    escrow pays `rounds` rounds; by default every update is needed for the collect quorum.
    `privacy`: the manifest's `[privacy]` table (e.g. {"updates": "committee"}); `train`:
    its `[train]` table.
    `private`: (access price in wei, task model key) opens a private task (the genesis
    blob is then the sealed one)."""
    w3 = embedded_web3()
    devnet = DevNet.create(w3, n_nodes=n_nodes, seed=seed, register=False)
    identities = [NodeIdentity(k) for k in devnet.keys]
    for ident, client in zip(identities, devnet.clients):
        fund(w3, ident.checksum_address, STAKE)
        client.register(
            peer_id_bytes_from_public(ident.compressed_public_key), ident.x25519_public_key, STAKE
        )
    dep = devnet.deployment
    reward = ETHER // 100
    manifest = TaskManifest(
        name=name,
        model=model,
        model_kwargs=model_kwargs or {},
        initial_model=str(blob_cid(genesis_blob)),
        chain_id=dep.chain_id,
        registry=dep.registry,
        ledger=dep.ledger,
        committee_size=committee,
        collect_deadline_s=collect_deadline_s,
        collect_quorum_percent=quorum_percent,
        view_timeout_s=6.0,
        commit_fallback_delay_s=3.0,
        redraw_timeout_s=40.0,
        reward_per_round_wei=reward,
        seed=seed,
        privacy=privacy or {},
        train=train or {},
    )
    fund(w3, devnet.admin.address, rounds * reward + DEFAULT_GAS_FUNDS)
    if private is not None:
        devnet.admin.create_private_task(
            manifest.task_id,
            CID.parse(manifest.initial_model).digest,
            committee,
            0,
            reward,
            rounds * reward,
            0,
            private[0],
            key_digest(manifest.task_id, private[1]),
        )
        return devnet, identities, manifest
    devnet.admin.create_task(
        manifest.task_id,
        CID.parse(manifest.initial_model).digest,
        committee,
        0,
        reward,
        rounds * reward,
        redraw_delay_s=0,
    )
    return devnet, identities, manifest


async def start_hosts(
    stack: AsyncExitStack, identities: list[NodeIdentity], tmp_path: Path, genesis_blob: bytes
) -> list[Any]:
    """One host per identity (host i stores its blocks in tmp_path/net{i}), each
    bootstrapped to the first, which holds the genesis model; stopped when `stack` exits."""
    hosts = await stack.enter_async_context(trio.open_nursery())
    stops = [trio.Event() for _ in identities]

    def stop_all() -> None:
        for stop in stops:
            stop.set()

    stack.callback(stop_all)
    nets: list[Any] = []
    for i, ident in enumerate(identities):
        bootstrap = (nets[0].listen_addrs[0],) if nets else ()
        cfg = NetConfig(
            data_dir=tmp_path / f"net{i}", bootstrap=bootstrap, dht=False, sync_interval_s=0.5
        )
        nets.append(await hosts.start(hold_host, cfg, ident.private_key, stops[i]))
    nets[0].put_blob(genesis_blob)  # the task creator holds the genesis model
    return nets


def make_nodes(
    devnet: DevNet,
    identities: list[NodeIdentity],
    nets: list[Any],
    manifest: TaskManifest,
    tmp_path: Path,
    trainer: Any = trainer_for,
    on_round_for: Any = None,
    model_keys: Any = None,
) -> list[Node]:
    """One node per host, each with its own chain client and `trainer(i)`; node i keeps its
    state in tmp_path/state{i}; `on_round_for(i)`: node i's round callback; `model_keys[i]`:
    node i's private task model key."""
    nodes = []
    for i, (ident, net) in enumerate(zip(identities, nets)):
        client = ChainClient(devnet.admin.w3, devnet.deployment, ident.private_key)
        nodes.append(
            Node(
                ident,
                manifest,
                client,
                net,
                None,
                tmp_path / f"state{i}",
                client_index=i,
                trainer=trainer(i),
                follow_poll_s=0.2,
                on_round=on_round_for(i) if on_round_for is not None else None,
                model_key=model_keys[i] if model_keys is not None else None,
            )
        )
    return nodes
