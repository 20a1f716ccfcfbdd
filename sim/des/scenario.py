"""DES scenario files (TOML, strict keys like sim/scenario.py): what a discrete-event run
simulates -- the nodes, their links, the chain, training, faults and attackers."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from p2pfl.errors import ConfigError
from sim.strict import build, read_scenario_toml

HEARTBEAT_SCOPES = ("all", "members", "bytes", "none")


@dataclass(frozen=True)
class NetworkSection:
    # A laptop on home broadband or a campus link (issue #14: 10-100 Mbit/s); up and down.
    bandwidth_mbit: float = 20.0
    # One-way latency of a direct link, uniform in [min, max] per node pair (seeded).
    latency_min_s: float = 0.05
    latency_max_s: float = 0.2
    # Probability that a block transfer attempt is lost (retried after a timeout).
    loss: float = 0.0
    # Gossipsub mesh degree D (p2pfl.net.config.GOSSIP_DEGREE, go-libp2p's default).
    degree: int = 6
    # A node checks a message's signature before it forwards it (p2pfl.core.validation):
    # ~0.1 ms of secp256k1 recovery plus decoding and the event loop, per hop.
    validate_s: float = 0.002
    # Gossip arrivals are delivered in buckets this wide (one engine event per bucket,
    # not per receiver): far below the 50-200 ms link latencies.
    quantum_s: float = 0.005
    # A block fetch that got no answer is retried after this long.
    fetch_retry_s: float = 2.0
    # A fetch with no online holder keeps retrying this long (p2pfl.net.config.
    # BLOB_FETCH_TIMEOUT_S), unless the round no longer needs it (certified or advanced,
    # as p2pfl.node.workers stops), then answers DeltaAvailable(ok=False).
    fetch_give_up_s: float = 600.0


@dataclass(frozen=True)
class ChainSection:
    block_time_s: float = 2.0
    # Blocks between a transaction reaching the node's RPC and its inclusion.
    inclusion_blocks: int = 1
    # The node's commit follower polls this often (sim/run.py passes 0.2 s).
    follow_poll_s: float = 0.2
    # Round trip of one RPC call (transaction submit, task_info, stakes snapshot).
    rpc_s: float = 0.05


@dataclass(frozen=True)
class TrainSection:
    # Median local training time (one epoch) over the laptops, seconds.
    median_s: float = 1.0
    # Laptops differ: the ratio of the 95th to the 5th percentile of training time.
    spread: float = 10.0
    # Per-round jitter of one laptop's training time (lognormal sigma).
    jitter: float = 0.05
    # Time to read the base model and store the delta around training (hashing, disk).
    overhead_s: float = 0.5
    # The model's wire size (a delta and a model weigh this much on the links).
    model_bytes: int = 208_552  # the quickstart's SmallCNN: 52,138 float32 parameters
    # Length of the synthetic float32 delta the filter and the aggregate really run on.
    params: int = 1024
    # Honest deltas: N(mean, std^2) per coordinate, i.i.d. per node and round.
    delta_mean: float = 0.001
    delta_std: float = 0.01
    n_samples: int = 6000
    # A member's aggregate (p2pfl.core.round_result.compute_aggregate) takes
    # model MB x (aggregate_model_s_per_mb + updates x aggregate_s_per_mb): decoding,
    # filtering and averaging each delta, then adding, encoding and hashing the model.
    # `python -m sim.des.calibrate` measures both on this machine (the quickstart sets
    # them); the defaults are a coarse per-delta cost with nothing per model.
    aggregate_s_per_mb: float = 0.02
    aggregate_model_s_per_mb: float = 0.0


@dataclass(frozen=True)
class CommitteeSection:
    size: int = 7
    quorum_fraction: float = 0.8
    collect_deadline_s: float = 60.0
    view_timeout_s: float = 20.0
    straggler_grace_s: float = 5.0
    live_quorum: bool = True
    heartbeat_interval_s: float = 5.0  # p2pfl.node.heartbeat.HEARTBEAT_INTERVAL_S
    # Which machines heartbeats are delivered to: "all" (as the real node), "members"
    # (only to committee members collecting, which are the only machines whose decisions
    # read liveness; the others' bytes are still counted), "bytes" (sent and counted, read
    # by no machine: as `live_quorum = false`), "none" (not sent).
    heartbeats: str = "all"
    # Who receives the updates (the manifest's `[privacy] updates`): "all" (gossip) or
    # "committee" (sent to each attempt's members directly: RoundConfig.updates_to_committee).
    updates: str = "all"


@dataclass(frozen=True)
class FaultsSection:
    # Steady-state share of nodes offline through churn (leave and rejoin at random).
    churn_fraction: float = 0.0
    mean_offline_s: float = 120.0
    # Share of the nodes that sit out each round (offline from its start to its commit).
    offline_per_round: float = 0.0


@dataclass(frozen=True)
class DesScenario:
    name: str = "des"
    seed: int = 1
    nodes: int = 10
    rounds: int = 10
    stake: int = 10**18
    aggregation: dict[str, Any] = field(default_factory=dict)
    network: NetworkSection = field(default_factory=NetworkSection)
    chain: ChainSection = field(default_factory=ChainSection)
    train: TrainSection = field(default_factory=TrainSection)
    committee: CommitteeSection = field(default_factory=CommitteeSection)
    faults: FaultsSection = field(default_factory=FaultsSection)
    attacks: dict[str, Any] = field(default_factory=dict)  # sim.attacks.AttackSpec keys
    # The node's ticker resolution (p2pfl.node.node.DEFAULT_TICK_S = 0.25 s): a collecting
    # member ticks this often, and a machine whose clock is this old is ticked before an
    # event. Each tick of a collecting member costs O(nodes) (its live-window check): at
    # 1,000 nodes a coarser tick saves most of the simulator's time, at the price of
    # closing collection up to one tick later.
    tick_s: float = 0.25
    # Stop the run at this virtual time even if rounds remain (they count as failed).
    max_virtual_s: float = 36_000.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_des_scenario(path: str | Path, overrides: dict[str, Any] | None = None) -> DesScenario:
    """Parse a DES scenario file; `overrides` are dotted keys ("committee.size": 5)."""
    raw = read_scenario_toml(path, overrides)
    s = build(DesScenario, raw, Path(path).name, non_negative=(int, float))
    if s.nodes < 2:
        raise ConfigError("a scenario needs at least 2 nodes")
    if s.rounds < 1:
        raise ConfigError("a scenario needs at least 1 round")
    if not 0 < s.committee.quorum_fraction <= 1:
        raise ConfigError("committee.quorum_fraction must be in (0, 1]")
    if s.committee.heartbeats not in HEARTBEAT_SCOPES:
        raise ConfigError(f"committee.heartbeats must be one of {HEARTBEAT_SCOPES}")
    from p2pfl.manifest import UPDATES_TO

    if s.committee.updates not in UPDATES_TO:
        raise ConfigError(f"committee.updates must be one of {UPDATES_TO}")
    if not s.network.latency_min_s <= s.network.latency_max_s:
        raise ConfigError("network.latency_min_s must not exceed latency_max_s")
    if not 0 <= s.network.loss < 1 or not 0 <= s.faults.churn_fraction < 1:
        raise ConfigError("network.loss and faults.churn_fraction must be in [0, 1)")
    if not 0 <= s.faults.offline_per_round < 1:
        raise ConfigError("faults.offline_per_round must be in [0, 1)")
    if s.network.degree < 1 or s.train.params < 1 or s.train.spread < 1:
        raise ConfigError("network.degree and train.params must be >= 1, train.spread >= 1")
    from p2pfl.core.sortition import commit_quorum

    quorum = commit_quorum(s.committee.size)
    if quorum > s.nodes:
        raise ConfigError(
            f"committee.size {s.committee.size} needs {quorum} signatures per commit, more than"
            f" the {s.nodes} nodes: no round could ever commit (lower committee.size)"
        )
    from sim.attacks import make_plan

    make_plan(s.attacks, s.nodes, s.seed)  # strict: fail before anything runs
    return s
