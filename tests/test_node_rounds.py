"""The node's round nurseries and event queue (p2pfl.node.rounds, p2pfl.node.queue)."""

from __future__ import annotations

import trio

from p2pfl.core import round_events as ev
from p2pfl.node.queue import EventQueue
from p2pfl.node.rounds import RoundNurseries


async def test_advancing_cancels_the_rounds_workers_and_only_them() -> None:
    nurseries = RoundNurseries()
    finished: list[str] = []

    async def worker(name: str, seconds: float) -> None:
        await trio.sleep(seconds)
        finished.append(name)

    async with trio.open_nursery() as parent:
        await nurseries.open(parent, 1)
        assert nurseries.start_soon(1, worker, "r1-slow", 10)
        assert nurseries.start_soon(1, worker, "r1-fast", 0)
        await trio.sleep(0.01)
        await nurseries.open(parent, 2)
        assert nurseries.start_soon(2, worker, "r2", 0.05)
        nurseries.close_before(2)  # round 1 committed: its slow worker is cancelled
        assert not nurseries.start_soon(1, worker, "late", 0)  # no new work for a closed round
        assert nurseries.rounds() == [2]
        await trio.sleep(0.1)
        nurseries.close_before(3)
    assert finished == ["r1-fast", "r2"]


async def test_the_queue_is_bounded_and_loses_nothing() -> None:
    queue = EventQueue(size=2)
    got: list[float] = []
    async with trio.open_nursery() as nursery:

        async def produce() -> None:
            for i in range(10):
                await queue.put(ev.Tick(float(i)))  # waits while the queue is full

        nursery.start_soon(produce)
        await trio.sleep(0.05)
        assert queue.pending() == 2  # the producer waits instead of growing the queue
        async for event in queue:
            got.append(event.now)  # type: ignore[union-attr]
            if len(got) == 10:
                break
    assert got == [float(i) for i in range(10)]


def test_every_action_of_the_machine_has_a_handler(tmp_path) -> None:
    """The node's action table covers `round_events.Action` exactly: a new action type
    fails here instead of raising KeyError in a running node."""
    from types import SimpleNamespace
    from typing import get_args

    from p2pfl.core.cid import blob_cid
    from p2pfl.core.identity import NodeIdentity
    from p2pfl.core.signing import Domain
    from p2pfl.manifest import TaskManifest
    from p2pfl.node import Node

    manifest = TaskManifest(
        name="t",
        model="mlp",
        initial_model=str(blob_cid(b"genesis")),
        chain_id=1,
        registry="0x" + "11" * 20,
        ledger="0x" + "22" * 20,
    )
    chain = SimpleNamespace(domain=lambda: Domain(1, b"\x22" * 20))
    node = Node(NodeIdentity(b"\x01" * 32), manifest, chain, SimpleNamespace(), None, tmp_path)  # type: ignore[arg-type]
    assert set(node._actions) == set(get_args(ev.Action))
