"""Key rotation with real nodes (#15): a node rotates its key on-chain between rounds and
restarts with the new key on the same data dir. Rounds whose registry snapshot predates
the rotation hold the old key (its statements stay verifiable: the audit of every round
holds), the first round drawn after it includes the new key, and nothing is lost: the
stake and reputation are the node's, under its new address."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import numpy as np
import trio

from p2pfl.chain.client import ChainClient
from p2pfl.chain.providers import fund
from p2pfl.cli.audit import audit_task, store_reader
from p2pfl.core.identity import NodeIdentity, peer_id_bytes_from_public
from p2pfl.core.tensors import encode_tensors
from p2pfl.net.blockstore import BlockStore
from p2pfl.net.config import NetConfig
from p2pfl.node import Node, RoundLog
from sim.faults import hold_host
from tests.realnodes import STAKE, make_nodes, open_task, start_hosts, trainer_for

N_NODES = 4
COMMITTEE = 3
ROUNDS = 3
SIZE = 128
NEW_KEY = b"\x6b" * 32
ROTATING = 3  # the node that rotates


async def test_a_node_rotates_its_key_between_rounds(tmp_path: Path) -> None:
    genesis_blob = encode_tensors({"w": np.zeros(SIZE, np.float32)})
    devnet, identities, manifest = open_task(
        genesis_blob, n_nodes=N_NODES, committee=COMMITTEE, rounds=ROUNDS, seed=23,
        name="rotation", quorum_percent=75,
    )  # fmt: skip
    old = identities[ROTATING]
    new = NodeIdentity(NEW_KEY)
    seen: dict[int, list[RoundLog]] = {i: [] for i in range(N_NODES)}

    def on_round_for(i: int) -> Any:
        return seen[i].append

    rotation: list[Any] = []
    async with AsyncExitStack() as stack:
        nets = await start_hosts(stack, identities, tmp_path, genesis_blob)
        nodes = make_nodes(devnet, identities, nets, manifest, tmp_path, on_round_for=on_round_for)
        hosts = await stack.enter_async_context(trio.open_nursery())
        stop_new = trio.Event()
        stack.callback(stop_new.set)

        async def rotate_and_restart() -> None:
            await nodes[ROTATING].run(1)  # round 1 with the first key
            # The rotation lands while round 2 runs: round 2's snapshot (round 1's commit
            # block) still holds the old key, round 3's holds the new one.
            client = ChainClient(devnet.w3, devnet.deployment, old.private_key)
            fund(devnet.w3, new.checksum_address, STAKE // 10)
            rotation.append(
                client.rotate_key(
                    new.private_key,
                    peer_id_bytes_from_public(new.compressed_public_key),
                    new.x25519_public_key,
                )  # fmt: skip
            )
            # The node restarts with its new key (a new libp2p identity) on its data dir.
            config = NetConfig(
                data_dir=tmp_path / f"net{ROTATING}-new",
                bootstrap=(nets[0].listen_addrs[0],),
                dht=False,
                sync_interval_s=0.5,
            )
            net = await hosts.start(hold_host, config, new.private_key, stop_new)
            rotated = Node(
                new,
                manifest,
                ChainClient(devnet.w3, devnet.deployment, new.private_key),
                net,
                None,
                tmp_path / f"state{ROTATING}",  # the same data dir
                client_index=ROTATING,
                trainer=trainer_for(ROTATING),
                follow_poll_s=0.2,
                on_round=seen[ROTATING].append,
            )
            await rotated.run(ROUNDS)

        with trio.fail_after(150):
            async with trio.open_nursery() as nursery:
                for node in nodes[:ROTATING]:
                    nursery.start_soon(node.run, ROUNDS)
                nursery.start_soon(rotate_and_restart)

    chain = ChainClient(devnet.w3, devnet.deployment)
    assert chain.task_info(manifest.task_id).last_round >= ROUNDS
    commits = {c.round: c for c in chain.commits(0, chain.block_number(), manifest.task_id)}
    assert commits[1].block_number < rotation[0].block_number < commits[2].block_number

    def included(round_: int) -> set[bytes]:
        return {a for i in seen for e in seen[i] if e.round == round_ for a in e.included}

    assert old.address in included(1) and new.address not in included(1)
    assert new.address not in included(2)  # not registered in round 2's snapshot
    assert new.address in included(3) and old.address not in included(3)
    # Stake and reputation moved; the old key's statements (round 1) still verify: the
    # audit of every round holds on an honest node's records.
    info = chain.node_info(new.address)
    assert (info.stake, info.reputation, info.active) == (STAKE, 1000, True)
    assert not chain.node_info(old.address).active
    verdicts = audit_task(
        manifest,
        chain,
        tmp_path / "state0",
        store_reader(BlockStore(tmp_path / "net0" / "blocks")),
        last_round=ROUNDS - 1,
    )
    assert [v.round for v in verdicts] == list(range(1, ROUNDS)), verdicts
    assert all(v.holds for v in verdicts), [v.line() for v in verdicts]
