"""Faults for in-process simulations: nodes that die, a leader that dies after proposing,
a network partition that heals.

    [faults]
    kill_fraction = 0.3     # of the nodes, killed `kill_delay_s` into round `kill_round`
    kill_round = 2
    kill_leader_round = 2   # the first node to propose in this round dies right after
    partition_round = 2     # split the nodes in two halves for `partition_s`
    partition_s = 30.0
    rpc_outage_round = 2    # --processes only: anvil stopped once round 1 is committed
    rpc_outage_s = 30.0     # ... (plus rpc_outage_delay_s), restarted with its state

A killed node is what a closed laptop is: its protocol tasks are cancelled and its
libp2p host shuts down (no more gossip forwarding, no more block serving). Each host
therefore lives in its own task (`hold_host`), so it can be closed while the others run.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import trio

from p2pfl.core.messages import Proposal, decode_message
from p2pfl.errors import ConfigError, InvalidMessage
from sim.strict import build

log = logging.getLogger("p2pfl.sim.faults")

# Salt of the seeded choice of killed nodes (independent of the attacker choice).
KILL_SALT = 0xDEAD
# How often the fault injector looks at the nodes' rounds.
POLL_S = 0.1


@dataclass(frozen=True)
class FaultSpec:
    """The scenario's `[faults]` table (strict)."""

    kill_fraction: float = 0.0
    kill_round: int = 2
    kill_delay_s: float = 1.0  # after the first node starts `kill_round`: mid-training
    kill_leader_round: int = 0  # 0 = off
    partition_round: int = 0  # 0 = off
    partition_s: float = 30.0
    # A chain RPC outage (sim/processes.py, --processes only): anvil is stopped
    # `rpc_outage_delay_s` after round `rpc_outage_round - 1` is committed and restarted
    # from its state file `rpc_outage_s` later, on the same port.
    rpc_outage_round: int = 0  # 0 = off
    rpc_outage_s: float = 30.0
    rpc_outage_delay_s: float = 0.0

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> FaultSpec:
        spec = build(cls, raw, "faults", non_negative=(int, float))
        if not 0.0 <= spec.kill_fraction < 1.0:
            raise ConfigError("faults.kill_fraction must be in [0, 1)")
        return spec

    @property
    def active(self) -> bool:
        """Any in-process fault (the RPC outage is `rpc_outage_round`, processes mode only)."""
        return self.kill_fraction > 0 or self.kill_leader_round > 0 or self.partition_round > 0


def kill_set(spec: FaultSpec, nodes: int, seed: int) -> tuple[int, ...]:
    """The nodes killed mid-round: round(fraction x n), chosen by the seed."""
    count = int(math.floor(spec.kill_fraction * nodes + 0.5))
    order = np.random.default_rng([seed, KILL_SALT]).permutation(nodes).tolist()
    return tuple(sorted(order[:count]))


async def hold_host(
    config: Any, private_key: bytes, stop: trio.Event, task_status: Any = trio.TASK_STATUS_IGNORED
) -> None:
    """Run one libp2p host until `stop` is set (its own task, so it can die alone)."""
    from p2pfl.net.host import open_node_host

    async with open_node_host(config, private_key) as net:
        task_status.started(net)
        await stop.wait()


@dataclass
class FaultLog:
    killed: dict[int, float]  # node index -> time of death (perf_counter)
    killed_round: dict[int, int]  # node index -> round it was in when killed
    leader_killed: int | None = None
    leader_kill_round: int = 0
    partition: tuple[tuple[int, ...], tuple[int, ...]] | None = None
    partition_window: tuple[float, float] | None = None

    @classmethod
    def empty(cls) -> FaultLog:
        return cls(killed={}, killed_round={})


class Killer:
    """Owns every node's cancel scope and host stop event; kills on demand."""

    def __init__(self, host_stops: list[trio.Event], record: FaultLog) -> None:
        self.host_stops = host_stops
        self.scopes: list[trio.CancelScope] = [trio.CancelScope() for _ in host_stops]
        self.nodes: list[Any] = []
        self.log = record

    async def run_node(self, index: int, node: Any, stop_after_round: int) -> None:
        """`node.run` under a scope the killer can cancel."""
        with self.scopes[index]:
            await node.run(stop_after_round)

    def kill(self, index: int) -> None:
        if index in self.log.killed:
            return
        node = self.nodes[index]
        self.log.killed[index] = time.perf_counter()
        self.log.killed_round[index] = node.machine.round
        self.scopes[index].cancel()
        self.host_stops[index].set()
        node.finished.set()  # it will never finish its rounds: nobody should wait for it
        log.info("killed node %d in round %d", index, node.machine.round)

    def alive(self) -> list[int]:
        return [i for i in range(len(self.nodes)) if i not in self.log.killed]


class LeaderKillNet:
    """Network adapter that kills its node right after it publishes a proposal in `round`."""

    def __init__(self, inner: Any, index: int, round_: int, killer: Killer) -> None:
        self._inner = inner
        self._index = index
        self._round = round_
        self._killer = killer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def connected_peers(self) -> list[str]:
        return self._inner.connected_peers()  # type: ignore[no-any-return]

    def metrics(self) -> dict[str, object]:
        return self._inner.metrics()  # type: ignore[no-any-return]

    async def publish(self, topic: str, data: bytes, synced: bool = True) -> bytes:
        msg_id = await self._inner.publish(topic, data, synced)
        try:
            message = decode_message(data)
        except InvalidMessage:
            return msg_id
        record = self._killer.log
        if (
            isinstance(message, Proposal)
            and message.round == self._round
            and record.leader_killed is None
        ):
            record.leader_killed = self._index
            record.leader_kill_round = message.round
            self._killer.kill(self._index)
        return msg_id


async def inject(spec: FaultSpec, killer: Killer, nets: list[Any], seed: int, say: Any) -> None:
    """Background task: the scheduled kills and partitions of the scenario."""
    nodes = killer.nodes

    async def wait_round(r: int) -> None:
        while max(n.machine.round for n in nodes) < r:
            if all(n.finished.is_set() for n in nodes):
                raise _Done()
            await trio.sleep(POLL_S)

    try:
        async with trio.open_nursery() as nursery:
            if spec.kill_fraction > 0:

                async def kill_some() -> None:
                    await wait_round(spec.kill_round)
                    await trio.sleep(spec.kill_delay_s)
                    victims = kill_set(spec, len(nodes), seed)
                    say(f"  fault: killing nodes {list(victims)} in round {spec.kill_round}")
                    for i in victims:
                        killer.kill(i)

                nursery.start_soon(kill_some)
            if spec.partition_round > 0:

                async def split() -> None:
                    await wait_round(spec.partition_round)
                    await partition(spec, killer, nets, seed, say)

                nursery.start_soon(split)
    except _Done:
        return


class _Done(Exception):
    """All nodes finished before the fault's round came."""


def halves(nodes: int, seed: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    order = np.random.default_rng([seed, KILL_SALT, 2]).permutation(nodes).tolist()
    a = tuple(sorted(order[: nodes // 2]))
    return a, tuple(sorted(order[nodes // 2 :]))


async def partition(spec: FaultSpec, killer: Killer, nets: list[Any], seed: int, say: Any) -> None:
    """Cut every link between two halves for `partition_s`, then let them reconnect.

    Cutting = banning the other half in each host's peer book (no dial, no stream, no
    gossip accepted), blacklisting it in pubsub, and closing the connections."""
    from libp2p.peer.id import ID

    a, b = halves(len(nets), seed)
    killer.log.partition = (a, b)
    start = time.perf_counter()
    say(f"  fault: partition {list(a)} | {list(b)} for {spec.partition_s:.0f} s")
    pairs = [(i, j) for i in a for j in b] + [(j, i) for i in a for j in b]
    for i, j in pairs:
        net, other = nets[i], nets[j].peer_id
        net.peers._state(other).banned_until = net.peers.clock() + spec.partition_s
        net.pubsub.add_to_blacklist(ID.from_base58(other))
    for i, j in pairs:
        await nets[i].disconnect(nets[j].peer_id)
    await trio.sleep(spec.partition_s)
    for i, j in pairs:
        net, other = nets[i], nets[j].peer_id
        net.peers._state(other).banned_until = 0.0
        net.pubsub.remove_from_blacklist(ID.from_base58(other))
    for i, j in pairs:
        if i in killer.log.killed or j in killer.log.killed:
            continue
        try:
            await nets[i].connect(nets[j].listen_addrs[0])
        except Exception as exc:
            log.debug("re-dial %d -> %d after the partition: %r", i, j, exc)
    killer.log.partition_window = (start, time.perf_counter())
    say("  fault: partition healed")
