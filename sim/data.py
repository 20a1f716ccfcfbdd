"""A scenario's data: the seeded train/test sets and one partition per node, cut the same way
by the in-process simulation, the node processes and the robustness campaign."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from p2pfl.errors import ConfigError
from sim.scenario import Scenario


def load_data(scenario: Scenario) -> tuple[Any, Any, list[Any]]:
    """(train, test, partitions) for the scenario, seeded."""
    from p2pfl.train.data import load_digits, load_fashion_mnist, split_dataset
    from p2pfl.train.partition import partition_dirichlet, partition_iid

    d = scenario.data
    if d.dataset == "fashion-mnist":
        train, test = load_fashion_mnist("train"), load_fashion_mnist("test")
    elif d.dataset == "digits":
        train, test = split_dataset(load_digits(), 0.25, scenario.seed)
    else:
        raise ConfigError(f"unknown dataset {d.dataset!r}: use 'fashion-mnist' or 'digits'")
    if d.test_samples:
        test = test.subset(np.arange(min(d.test_samples, len(test))))
    if d.partition == "iid":
        parts = partition_iid(train.y, scenario.nodes, scenario.seed)
    elif d.partition == "dirichlet":
        parts = partition_dirichlet(train.y, scenario.nodes, d.alpha, scenario.seed)
    else:
        raise ConfigError(f"unknown partition {d.partition!r}: use 'iid' or 'dirichlet'")
    if d.samples_per_node:
        parts = [p[: d.samples_per_node] for p in parts]
    datasets = [train.subset(p) for p in parts]
    if scenario.attacks:  # label flipping poisons the attackers' local data
        from sim.attacks import make_plan, poison_datasets

        datasets = poison_datasets(
            make_plan(scenario.attacks, scenario.nodes, scenario.seed), datasets
        )
    return train, test, datasets


# A node process's partition on disk (`save_partition`), in its data dir: plain .npy so
# that the child memory-maps it instead of decoding the whole dataset (issue #13).
PARTITION_X_FILE = "partition-x.npy"
PARTITION_Y_FILE = "partition-y.npy"


def save_partition(data: Any, folder: str | Path) -> None:
    """Write one node's Dataset (x float32, y int64, as `load_data` cut it) into `folder`."""
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    np.save(root / PARTITION_X_FILE, np.ascontiguousarray(data.x), allow_pickle=False)
    np.save(root / PARTITION_Y_FILE, np.ascontiguousarray(data.y), allow_pickle=False)


def load_partition(folder: str | Path) -> Any:
    """The Dataset `save_partition` wrote, its images memory-mapped read-only: a node
    process holds its own partition only, and only the pages it reads."""
    from p2pfl.train.data import Dataset

    root = Path(folder)
    x = np.load(root / PARTITION_X_FILE, mmap_mode="r", allow_pickle=False)
    y = np.load(root / PARTITION_Y_FILE, allow_pickle=False)
    return Dataset(x, y)


def train_dict(scenario: Scenario) -> dict[str, Any]:
    """The manifest's `train` table for the scenario (and the reference's `TrainConfig`)."""
    from p2pfl.train.config import DATASET_INPUT_NORMS

    t = scenario.train
    out: dict[str, Any] = {
        "epochs": t.epochs,
        "batch_size": t.batch_size,
        "lr": t.lr,
        "optimizer": t.optimizer,
        "momentum": t.momentum,
        "weight_decay": t.weight_decay,
    }
    if t.dp_max_grad_norm > 0:
        for name in (
            "dp_max_grad_norm",
            "dp_noise_multiplier",
            "dp_target_epsilon",
            "dp_rounds",
            "dp_delta",
            "dp_max_epsilon",
        ):
            out[name] = getattr(t, name)
    if t.delta_float16:
        out["delta_float16"] = True
    if scenario.data.standardise:
        norm = DATASET_INPUT_NORMS.get(scenario.data.dataset)
        if norm is None:
            raise ConfigError(f"no input standardisation is known for {scenario.data.dataset!r}")
        out["input_mean"], out["input_std"] = list(norm.mean), list(norm.std)
    return out


def input_norm(scenario: Scenario) -> Any:
    """The scenario's `InputNorm` (None: pixels stay in [0, 1]), for its evaluators."""
    from p2pfl.train.config import TrainConfig

    return TrainConfig.from_dict(train_dict(scenario)).input_norm
