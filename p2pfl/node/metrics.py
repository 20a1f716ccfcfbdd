"""A node's Prometheus metrics, read from the counters it already keeps.

`NodeCollector` is a custom `prometheus_client` collector: at scrape time it reads the
round machine, the node's counters, the network layer's `metrics()` and the commit
follower's cursor. Nothing is counted twice: no metric keeps its own bookkeeping. Each
node gets its own `CollectorRegistry` (`node_registry`), since several nodes share a
process in the simulator.

The HTTP server that exposes a registry runs in a thread (prometheus_client's), while the
node's state belongs to its trio loop: a scrape therefore takes its snapshot *on the
loop* (`trio.from_thread.run_sync`), so it never reads a dict the loop is changing. A
scrape of a node whose loop has ended yields no node metrics instead of raising.

The node's stake and reputation come from the chain, once per round (`ChainFacts.follow`,
started with the node), never per scrape: a scrape must not cost an RPC call.

ε (differential privacy spent by the node's published updates, `p2pfl.train.privacy`) is
exported only when the task trains with DP-SGD: for a task without DP a gauge at 0 would
claim "no privacy spent" rather than "no guarantee".
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from p2pfl.chain.trio_client import run_chain
from p2pfl.core.round import Phase
from p2pfl.errors import ChainError

if TYPE_CHECKING:
    from p2pfl.node.node import Node

log = logging.getLogger(__name__)

PREFIX = "p2pfl_"
# Payload bytes by protocol, from the network layer's counters (p2pfl.net.host.NodeNet.metrics):
# (protocol label, bytes sent counter, bytes received counter).
BYTES_BY_PROTOCOL = (
    ("gossip", "bytes-published", "bytes-admitted"),
    ("blocks", "bytes-served", "bytes-fetched"),
)
# The node's fetch retry counters (p2pfl.node.models), by what was being fetched.
FETCH_RETRIES = (("delta", "fetch-retries"), ("model", "model-fetch-retries"))
# Reason prefixes of the network layer's offences that are gossip messages refused
# (p2pfl.net.gossip: `{via}-{reason}` with via "gossip" or "sync").
GOSSIP_REJECT_PREFIXES = ("gossip-", "sync-")
# How often `ChainFacts.follow` looks for a new round (it reads the chain only then).
CHAIN_FACTS_POLL_S = 1.0


@dataclass
class ChainFacts:
    """This node's registry entry as of the start of its current round."""

    round: int = 0
    stake_wei: int | None = None
    reputation: int | None = None

    async def follow(self, node: Node, poll_s: float = CHAIN_FACTS_POLL_S) -> None:
        """Read the node's registry entry once per round, until cancelled. A chain error
        keeps the last values (they are a round old at worst) and is retried next poll."""
        while True:
            round_ = node.machine.round
            if round_ != self.round:
                try:
                    info = await run_chain(node.chain, node.chain.node_info, None)
                except ChainError as exc:
                    log.info("metrics: node info not read (%s); retrying", exc)
                else:
                    self.round, self.stake_wei, self.reputation = (
                        round_,
                        info.stake,
                        info.reputation,
                    )
            await trio.sleep(poll_s)


@dataclass(frozen=True)
class Snapshot:
    """Everything one scrape reports, copied on the node's loop."""

    round: int
    phase: str
    attempt: int
    view: int
    member: bool
    live_nodes: int
    last_committed_round: int
    rounds_committed: int
    chain_head_block: int | None
    chain_committed_round: int | None
    round_stake_wei: int | None
    dp: tuple[float, float, bool] | None  # (epsilon spent, budget, exhausted); None: no DP
    facts: ChainFacts
    node_counters: Mapping[str, int]
    machine_counters: Mapping[str, int]
    net: Mapping[str, Any]


def snapshot(node: Node, facts: ChainFacts) -> Snapshot:
    """Copy what the metrics read (call on the node's trio loop)."""
    machine = node.machine
    committed = [r for r, entry in node.rounds.items() if entry.result]
    follower = node.follower
    return Snapshot(
        round=machine.round,
        phase=machine.phase.value,
        attempt=machine.attempt,
        view=machine.view,
        member=machine.is_member,
        live_nodes=len(node.live_nodes()),
        last_committed_round=max(committed, default=0),
        rounds_committed=len(committed),
        chain_head_block=follower.last_block if follower is not None else None,
        chain_committed_round=(
            follower.last_round.get(node.task, 0) if follower is not None else None
        ),
        round_stake_wei=node.committed.round_stakes.get(machine.round, {}).get(node.address),
        dp=(
            (node.privacy.epsilon(), node.privacy.budget, node.privacy.exhausted)
            if node.privacy is not None
            else None
        ),
        facts=ChainFacts(facts.round, facts.stake_wei, facts.reputation),
        node_counters=dict(node.counters),
        machine_counters=dict(machine.counters),
        net=dict(node.net.metrics()),
    )


class NodeCollector(Collector):
    """Prometheus metrics of one node (see the README's table)."""

    def __init__(
        self, node: Node, facts: ChainFacts, trio_token: trio.lowlevel.TrioToken | None = None
    ) -> None:
        self.node = node
        self.facts = facts
        self.trio_token = trio_token

    def collect(self) -> Iterator[Metric]:
        try:
            if self.trio_token is None:
                snap = snapshot(self.node, self.facts)
            else:
                snap = trio.from_thread.run_sync(
                    snapshot, self.node, self.facts, trio_token=self.trio_token
                )
        except trio.RunFinishedError:
            return  # the node has stopped: nothing to report
        yield from metrics_of(snap)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, doc, value=value)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(PREFIX + name, doc, value=value)


def _labelled_counter(
    name: str, doc: str, label: str, values: Mapping[str, float]
) -> CounterMetricFamily:
    family = CounterMetricFamily(PREFIX + name, doc, labels=[label])
    for key, value in sorted(values.items()):
        family.add_metric([key], value)
    return family


def _prefixed(counters: Mapping[str, Any], prefix: str) -> dict[str, int]:
    return {k[len(prefix) :]: int(v) for k, v in counters.items() if k.startswith(prefix)}


def metrics_of(snap: Snapshot) -> Iterator[Metric]:
    """The metric families of one snapshot (names in Prometheus conventions)."""
    net = snap.net
    yield _gauge("round", "Round the node is in.", snap.round)
    phase = GaugeMetricFamily(
        PREFIX + "phase",
        "1 for the round machine's current phase, 0 for the others.",
        labels=["phase"],
    )
    for p in Phase:
        phase.add_metric([p.value], 1.0 if p.value == snap.phase else 0.0)
    yield phase
    yield _gauge("attempt", "Committee draw attempt of the current round.", snap.attempt)
    yield _gauge("view", "Leader view of the current attempt.", snap.view)
    yield _gauge("committee_member", "1 if the node is on the current committee.", snap.member)
    yield _gauge(
        "live_nodes",
        "Registered nodes the round machine counts live (heartbeats).",
        snap.live_nodes,
    )
    yield _gauge(
        "last_committed_round",
        "Latest round whose commit the node has seen and whose model it holds.",
        snap.last_committed_round,
    )
    yield _counter(
        "rounds_committed_total",
        "Rounds the node saw committed (model held).",
        snap.rounds_committed,
    )
    yield _counter(
        "commit_transactions_total",
        "commitRound transactions this node sent that landed.",
        snap.node_counters.get("commits-landed", 0),
    )
    if snap.chain_head_block is not None and snap.chain_committed_round is not None:
        yield _gauge(
            "chain_head_block",
            "Chain head at the commit follower's latest successful poll.",
            snap.chain_head_block,
        )
        yield _gauge(
            "chain_committed_round",
            "Latest round of the task committed on-chain, as the follower saw it.",
            snap.chain_committed_round,
        )
        yield _gauge(
            "chain_lag_rounds",
            "Rounds committed on-chain that the node has not caught up with yet.",
            max(0, snap.chain_committed_round - snap.last_committed_round),
        )
    stake = snap.facts.stake_wei if snap.facts.stake_wei is not None else snap.round_stake_wei
    if stake is not None:
        yield _gauge("stake_wei", "The node's stake in the registry (wei), per round.", stake)
    if snap.facts.reputation is not None:
        yield _gauge(
            "reputation", "The node's reputation in the registry, per round.", snap.facts.reputation
        )
    if snap.dp is not None:
        spent, budget, exhausted = snap.dp
        yield _gauge(
            "dp_epsilon",
            "Differential privacy spent by this node's published updates (epsilon at the task's"
            " delta, RDP accountant).",
            spent,
        )
        yield _gauge("dp_epsilon_budget", "The task's epsilon budget (+Inf: none).", budget)
        yield _gauge(
            "dp_budget_exhausted", "1 once the node stopped training for its budget.", exhausted
        )
    yield _gauge("peers_connected", "libp2p peers connected.", int(net.get("peers-connected", 0)))
    sent = CounterMetricFamily(
        PREFIX + "sent_bytes_total", "Payload bytes sent, by protocol.", labels=["protocol"]
    )
    received = CounterMetricFamily(
        PREFIX + "received_bytes_total", "Payload bytes received, by protocol.", labels=["protocol"]
    )
    for protocol, sent_key, received_key in BYTES_BY_PROTOCOL:
        sent.add_metric([protocol], int(net.get(sent_key, 0)))
        received.add_metric([protocol], int(net.get(received_key, 0)))
    yield sent
    yield received
    yield _labelled_counter(
        "gossip_messages_accepted_total",
        "Gossip messages admitted, by how they arrived (gossip, sync).",
        "via",
        _prefixed(net, "admitted-"),
    )
    yield _labelled_counter(
        "gossip_messages_ignored_total",
        "Gossip messages ignored without penalty (stale, duplicate, ...), by reason.",
        "reason",
        _prefixed(net, "ignored-"),
    )
    offences: Mapping[str, int] = net.get("rejections_by_reason", {})
    yield _labelled_counter(
        "gossip_messages_rejected_total",
        "Gossip messages rejected (the sender penalised), by reason.",
        "reason",
        {r: n for r, n in offences.items() if r.startswith(GOSSIP_REJECT_PREFIXES)},
    )
    yield _labelled_counter(
        "peer_offences_total", "Every penalised input from a peer, by reason.", "reason", offences
    )
    yield _labelled_counter(
        "round_messages_rejected_total",
        "Messages the round machine refused (stateful checks), by reason.",
        "reason",
        _prefixed(snap.machine_counters, "rejected:"),
    )
    yield _labelled_counter(
        "fetch_retries_total",
        "Fetches retried, by what was fetched.",
        "kind",
        {kind: snap.node_counters.get(key, 0) for kind, key in FETCH_RETRIES},
    )
    yield _counter(
        "fetch_failures_total", "Delta fetches given up.", snap.node_counters.get("fetch-failed", 0)
    )
    yield _counter(
        "blocks_served_total", "Blocks served to peers.", int(net.get("blocks-served", 0))
    )
    yield _counter(
        "blocks_fetched_total", "Blocks fetched from peers.", int(net.get("blocks-fetched", 0))
    )
    yield _counter(
        "peers_banned_total", "Peers banned for misbehaviour.", int(net.get("peers-banned", 0))
    )
    yield _labelled_counter(
        "node_events_total",
        "Every other counter of the node and its round machine, by name.",
        "name",
        {
            **{f"node:{k}": v for k, v in snap.node_counters.items()},
            **{
                f"round:{k}": v
                for k, v in snap.machine_counters.items()
                if not k.startswith("rejected:")
            },
        },
    )


def node_registry(
    node: Node, facts: ChainFacts, trio_token: trio.lowlevel.TrioToken | None = None
) -> CollectorRegistry:
    """A registry of its own for `node` (several nodes may share a process)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(node, facts, trio_token))
    return registry
