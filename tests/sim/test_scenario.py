"""Scenario files parse strictly, and their train table is the trainer's TrainConfig."""

from dataclasses import fields
from pathlib import Path

import pytest

from p2pfl.errors import ConfigError
from p2pfl.train.config import TrainConfig
from sim.scenario import TrainSection, load_scenario

SCENARIOS = sorted(Path("sim/scenarios").glob("*.toml"))


def test_train_section_is_train_config_without_seed():
    """One definition of the training defaults: the scenario takes the trainer's (its input
    standardisation is `data.standardise`, the dataset's own mean/std)."""
    per_scenario = {"seed", "input_mean", "input_std"}
    trainer = {f.name: f.default for f in fields(TrainConfig) if f.name not in per_scenario}
    assert {f.name: f.default for f in fields(TrainSection)} == trainer


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_every_scenario_file_parses_into_a_train_config(path):
    scenario = load_scenario(path)
    train = {f.name: getattr(scenario.train, f.name) for f in fields(TrainSection)}
    TrainConfig.from_dict({**train, "seed": scenario.seed})  # valid for the trainer too


def test_unknown_or_mistyped_train_keys_are_errors():
    with pytest.raises(ConfigError, match="unknown key"):
        load_scenario("sim/scenarios/tiny.toml", {"train.seed": 3})
    with pytest.raises(ConfigError, match="expected int"):
        load_scenario("sim/scenarios/tiny.toml", {"train.epochs": "2"})
    assert load_scenario("sim/scenarios/tiny.toml", {"train.lr": 1}).train.lr == 1.0


def test_flower_scenario_standardises_with_fashion_mnist_constants():
    from sim.data import input_norm, train_dict

    scenario = load_scenario("sim/scenarios/flower.toml")
    assert scenario.model.name == "lenet5"
    assert train_dict(scenario)["input_mean"] == [0.2860]
    assert input_norm(scenario).std == (0.3530,)
    assert input_norm(load_scenario("sim/scenarios/quickstart.toml")) is None
