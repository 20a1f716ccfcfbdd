"""The node's round nurseries and event queue (p2pfl.node.rounds, p2pfl.node.queue)."""

from __future__ import annotations

from typing import Any

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


async def test_the_ticker_wakes_for_deadlines_and_collection_not_four_times_a_second(
    tmp_path: Any, autojump_clock: Any
) -> None:
    """A node whose machine has nothing due ticks every IDLE_TICK_S (it ticked every
    DEFAULT_TICK_S whatever the phase); an event that starts a collection brings the
    ticker's wait forward, and a collecting machine ticks every DEFAULT_TICK_S; an event
    reaching a machine whose clock is DEFAULT_TICK_S old is preceded by a Tick, so the
    machine stamps it with the current time."""
    from types import SimpleNamespace

    from p2pfl.core.cid import blob_cid
    from p2pfl.core.identity import NodeIdentity
    from p2pfl.core.round import Phase
    from p2pfl.core.signing import Domain
    from p2pfl.manifest import TaskManifest
    from p2pfl.node import Node
    from p2pfl.node.node import DEFAULT_TICK_S, IDLE_TICK_S

    genesis = blob_cid(b"genesis")
    manifest = TaskManifest(
        name="t",
        model="mlp",
        initial_model=str(genesis),
        chain_id=1,
        registry="0x" + "11" * 20,
        ledger="0x" + "22" * 20,
    )
    chain = SimpleNamespace(domain=lambda: Domain(1, b"\x22" * 20))
    node = Node(
        NodeIdentity(b"\x01" * 32),
        manifest,
        chain,  # type: ignore[arg-type]
        SimpleNamespace(),  # type: ignore[arg-type]
        None,
        tmp_path,
        clock=trio.current_time,
    )
    ticks: list[float] = []

    async def event_loop() -> None:
        async for event in node.queue:
            ticks.append(trio.current_time())
            node._handle(event)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(node._ticker)
        nursery.start_soon(event_loop)
        await trio.sleep(10 * IDLE_TICK_S + 0.1)  # before any round: nothing is due
        assert len(ticks) == 10
        ticks.clear()
        # Seven registered nodes, k = 7: this node is on the committee and collects.
        stakes = {NodeIdentity(bytes([i]) * 32).address: 100 for i in range(1, 8)}
        started = trio.current_time()
        node._handle(ev.RoundStarted(1, genesis.to_bytes(), stakes, started))
        assert node.machine.phase is Phase.COLLECTING
        await trio.sleep(4 * DEFAULT_TICK_S - 0.05)
        assert ticks[0] - started <= DEFAULT_TICK_S + 0.011  # not the 2 s wait it was in
        assert len(ticks) == 3
        nursery.cancel_scope.cancel()
    stale = node.machine.now
    await trio.sleep(DEFAULT_TICK_S)
    node._handle(ev.Tick(stale))  # a Tick is not preceded by another
    assert node.machine.now == stale
    node._handle(ev.DeltaAvailable(b"\x09" * 20, b"no such delta", False))
    assert node.machine.now == trio.current_time()
