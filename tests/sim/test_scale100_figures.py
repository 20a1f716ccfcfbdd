"""`sim.bench scale100`'s CPU figures from a run's summary (no run: the summary is given)."""

import pytest

from sim.bench.scale100 import _round_cpu


def test_round_cpu_counts_loops_and_training_over_committed_rounds():
    summary = {
        "rounds_committed": 4,
        "shards": [
            {"wall_s": 10.0, "user_cpu_s": 6.0, "system_cpu_s": 2.0, "train_user_cpu_s": 4.0},
            {"wall_s": 10.0, "user_cpu_s": 5.0, "system_cpu_s": 1.0, "train_user_cpu_s": 2.0},
            {"shard": 2},  # a shard without figures (it never noted its CPU twice) counts nothing
        ],
    }
    total, loops = _round_cpu(summary)
    assert total == pytest.approx((6 + 2 + 4 + 5 + 1 + 2) / 4)
    assert loops == pytest.approx((6 + 2 + 5 + 1) / 4)


def test_round_cpu_is_none_without_shards_or_commits():
    assert _round_cpu({"rounds_committed": 3, "shards": []}) is None
    shard = {"wall_s": 1.0, "user_cpu_s": 1.0, "system_cpu_s": 0.0}
    assert _round_cpu({"rounds_committed": 0, "shards": [shard]}) is None


def test_the_deployed_comparison_gives_ten_nodes_the_same_total_data():
    """`sim.bench scale100_des`: 10 nodes hold 10x the images of the scenario's 100 each and
    train 10x as long; the scenario loads with either set of keys."""
    from sim.bench.scale100_des import SCENARIO, overrides
    from sim.des.scenario import load_des_scenario

    large = load_des_scenario(SCENARIO, overrides(100, 20.0))
    small = load_des_scenario(SCENARIO, overrides(10, 20.0))
    assert (large.nodes, small.nodes) == (100, 10)
    assert large.nodes * large.train.n_samples == small.nodes * small.train.n_samples == 60_000
    assert small.train.median_s == pytest.approx(10 * large.train.median_s)
    assert small.network.bandwidth_mbit == large.network.bandwidth_mbit == 20.0
    assert small.committee.updates == "committee"


def test_the_linear_comparison_is_scale100_with_a_linear_model():
    """`sim.bench scale100_linear` changes the model only: 7,850 parameters (31 KB deltas)."""
    from dataclasses import replace

    from p2pfl.train.models import build_model
    from sim.bench.scale100 import SCENARIO as MLP_SCENARIO
    from sim.bench.scale100_linear import SCENARIO
    from sim.scenario import load_scenario

    mlp, linear = load_scenario(MLP_SCENARIO), load_scenario(SCENARIO)
    assert replace(linear, name=mlp.name, model=mlp.model) == mlp
    assert linear.model.name == mlp.model.name == "mlp"

    def parameters(section) -> int:
        model = build_model(section.name, **section.kwargs)
        return sum(p.numel() for p in model.parameters())

    assert parameters(linear.model) == 28 * 28 * 10 + 10
    assert parameters(mlp.model) == 28 * 28 * 128 + 128 + 128 * 10 + 10
