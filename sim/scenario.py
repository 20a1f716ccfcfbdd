"""Scenario files: what a simulation runs (TOML, strict: unknown keys are errors)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from p2pfl.errors import ConfigError
from p2pfl.train.config import TrainConfig
from sim.strict import build, read_scenario_toml


@dataclass(frozen=True)
class ModelSection:
    name: str = "cnn"  # registry name in p2pfl.train
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DataSection:
    dataset: str = "fashion-mnist"  # or "digits" for tiny runs
    partition: str = "iid"  # "iid" | "dirichlet"
    alpha: float = 0.5  # Dirichlet concentration (non-IID), smaller = more skewed
    samples_per_node: int = 0  # 0 = split the whole training set
    test_samples: int = 0  # 0 = the whole test set
    # Standardise inputs with the dataset's training-set mean/std (recorded in the task's
    # manifest, applied by every node and the reference); off keeps the [0, 1] pixels.
    standardise: bool = False


# The trainer's own defaults: a scenario that leaves a key out trains as a node would.
_TRAIN_DEFAULTS = TrainConfig()


@dataclass(frozen=True)
class TrainSection:
    """`TrainConfig`'s keys but `seed` (a scenario has one seed, `Scenario.seed`)."""

    epochs: int = _TRAIN_DEFAULTS.epochs
    batch_size: int = _TRAIN_DEFAULTS.batch_size
    lr: float = _TRAIN_DEFAULTS.lr
    optimizer: str = _TRAIN_DEFAULTS.optimizer
    momentum: float = _TRAIN_DEFAULTS.momentum
    weight_decay: float = _TRAIN_DEFAULTS.weight_decay
    # Differential privacy (DP-SGD; TrainConfig's dp_* keys): off unless dp_max_grad_norm > 0.
    dp_max_grad_norm: float = _TRAIN_DEFAULTS.dp_max_grad_norm
    dp_noise_multiplier: float = _TRAIN_DEFAULTS.dp_noise_multiplier
    dp_target_epsilon: float = _TRAIN_DEFAULTS.dp_target_epsilon
    dp_rounds: int = _TRAIN_DEFAULTS.dp_rounds
    dp_delta: float = _TRAIN_DEFAULTS.dp_delta
    dp_max_epsilon: float = _TRAIN_DEFAULTS.dp_max_epsilon
    # Deltas rounded to float16 with error feedback, sent to members in half the bytes.
    delta_float16: bool = _TRAIN_DEFAULTS.delta_float16


@dataclass(frozen=True)
class CommitteeSection:
    size: int = 7  # nominal committee size k
    quorum_fraction: float = 0.8  # of expected participants before the collect deadline
    collect_deadline_s: float = 60.0
    view_timeout_s: float = 20.0
    # After the collect quorum, wait this long for the other expected updates (manifest
    # `straggler_grace_s`; RoundConfig says why 5 s).
    straggler_grace_s: float = 5.0
    # Count only nodes heard within the live window in the collect quorum (RoundConfig
    # `live_quorum`, a node-local switch; in-process runs only). Off: as before heartbeats.
    live_quorum: bool = True


@dataclass(frozen=True)
class NetworkSection:
    """Links between node processes (`--processes` only, as root; see `sim.netns`)."""

    # Each node process in its own network namespace on a private bridge (veth pairs).
    namespaces: bool = False
    # tbf rate of each node's link, both directions (Mbit/s); 0 = not shaped.
    rate_mbit: float = 0.0


@dataclass(frozen=True)
class Scenario:
    name: str = "scenario"
    seed: int = 1
    nodes: int = 10
    rounds: int = 10
    stake: int = 10**18  # wei per node
    aggregation: dict[str, Any] = field(default_factory=dict)  # RuleSpec.from_dict; empty = default
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    train: TrainSection = field(default_factory=TrainSection)
    committee: CommitteeSection = field(default_factory=CommitteeSection)
    network: NetworkSection = field(default_factory=NetworkSection)
    attacks: dict[str, Any] = field(default_factory=dict)
    faults: dict[str, Any] = field(default_factory=dict)
    # The task manifest's `privacy` table ({"sealed": false} publishes plain deltas);
    # checked strictly by the manifest. Empty: the manifest's defaults (sealed).
    privacy: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def round_timing(c: Any) -> dict[str, Any]:
    """The round machine's timing a committee section stands for (the manifest's and the
    DES's RoundConfig alike): its own values, the quorum as a percentage, the commit
    fallback (half a view, at most 5 s) and the re-draw timeout (collection plus 3 views)."""
    return {
        "collect_deadline_s": c.collect_deadline_s,
        "collect_quorum_percent": round(c.quorum_fraction * 100),
        "view_timeout_s": c.view_timeout_s,
        "straggler_grace_s": c.straggler_grace_s,
        "commit_fallback_delay_s": min(5.0, c.view_timeout_s / 2),
        "redraw_timeout_s": c.collect_deadline_s + 3 * c.view_timeout_s,
    }


def load_scenario(path: str | Path, overrides: dict[str, Any] | None = None) -> Scenario:
    """Parse a scenario file; `overrides` are dotted keys ("committee.size": 5)."""
    raw = read_scenario_toml(path, overrides)
    scenario = build(Scenario, raw, Path(path).name)
    if scenario.nodes < 2:
        raise ConfigError("a scenario needs at least 2 nodes")
    if scenario.rounds < 1:
        raise ConfigError("a scenario needs at least 1 round")
    if not 0 < scenario.committee.quorum_fraction <= 1:
        raise ConfigError("committee.quorum_fraction must be in (0, 1]")
    if scenario.network.rate_mbit < 0:
        raise ConfigError("network.rate_mbit must be >= 0 (0: links not shaped)")
    if scenario.network.rate_mbit and not scenario.network.namespaces:
        raise ConfigError("network.rate_mbit shapes namespaced links: set network.namespaces")
    from sim.attacks import make_plan
    from sim.faults import FaultSpec

    make_plan(
        scenario.attacks, scenario.nodes, scenario.seed
    )  # strict: fail before any host starts
    FaultSpec.from_dict(scenario.faults)
    from p2pfl.manifest import privacy_options

    privacy_options(scenario.privacy)  # the manifest's strict check, before any host starts
    return scenario
