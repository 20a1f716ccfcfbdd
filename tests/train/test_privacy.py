"""DP-SGD (Opacus) in the local trainer and the node's privacy ledger (p2pfl.train.privacy)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from p2pfl.errors import ConfigError
from p2pfl.train.config import TrainConfig
from p2pfl.train.data import Dataset
from p2pfl.train.models import build_model, model_to_numpy
from p2pfl.train.privacy import DPSteps, PrivacyLedger, epsilon, plan
from p2pfl.train.trainer import train_local

N = 400


@pytest.fixture(scope="module")
def data() -> Dataset:
    rng = np.random.default_rng(0)
    x = rng.random((N, 1, 28, 28)).astype(np.float32)
    return Dataset(x, rng.integers(0, 10, N).astype(np.int64))


@pytest.fixture(scope="module")
def base() -> dict[str, np.ndarray]:
    return model_to_numpy(build_model("mlp"))


def _norm(delta: dict[str, np.ndarray]) -> float:
    return math.sqrt(sum(float(np.sum(v.astype(np.float64) ** 2)) for v in delta.values()))


def test_dp_sgd_is_seeded_and_differs_from_plain_sgd(data, base) -> None:
    cfg = TrainConfig(dp_max_grad_norm=1.0, dp_noise_multiplier=1.0)
    a = train_local("mlp", base, data, cfg, seed=5)
    b = train_local("mlp", base, data, cfg, seed=5)
    assert all(np.array_equal(a.delta[k], b.delta[k]) for k in a.delta)  # bit for bit
    assert a.dp == DPSteps(1.0, 32 / N, math.ceil(N / 32))
    plain = train_local("mlp", base, data, TrainConfig(), seed=5)
    assert plain.dp is None
    assert not all(np.array_equal(a.delta[k], plain.delta[k]) for k in a.delta)
    c = train_local("mlp", base, data, cfg, seed=6)
    assert not all(np.array_equal(a.delta[k], c.delta[k]) for k in a.delta)


def test_per_sample_clipping_bounds_the_update(data, base) -> None:
    """Noise ~0 and no momentum: each step moves the weights by at most lr x C x (batch /
    expected batch); a Poisson batch is rarely over twice the expected size."""
    clip, lr = 0.01, 0.05
    cfg = TrainConfig(lr=lr, momentum=0.0, dp_max_grad_norm=clip, dp_noise_multiplier=1e-9)
    result = train_local("mlp", base, data, cfg, seed=1)
    assert 0 < _norm(result.delta) <= result.dp.steps * lr * clip * 2
    loose = train_local("mlp", base, data, TrainConfig(lr=lr, momentum=0.0), seed=1)
    assert _norm(loose.delta) > 5 * _norm(result.delta)  # unclipped SGD moves much further


def test_a_target_epsilon_sets_the_noise_for_its_rounds() -> None:
    cfg = TrainConfig(dp_max_grad_norm=1.0, dp_target_epsilon=4.0, dp_rounds=10)
    steps = plan(cfg, 6000)
    assert steps.sample_rate == 32 / 6000 and steps.steps == math.ceil(6000 / 32)
    spent = epsilon([steps] * 10, cfg.dp_delta)
    assert 3.9 <= spent <= 4.0  # reached, not passed
    assert epsilon([steps] * 20, cfg.dp_delta) > 4.0  # more rounds spend more
    assert cfg.dp_budget == 4.0 and math.isinf(TrainConfig().dp_budget)


@pytest.mark.parametrize(
    "kw, reason",
    [
        ({"dp_noise_multiplier": 1.0}, "need dp_max_grad_norm > 0"),
        ({"dp_max_grad_norm": 1.0}, "not both"),
        ({"dp_max_grad_norm": 1.0, "dp_noise_multiplier": 1.0, "dp_rounds": 3}, "not both"),
        ({"dp_max_grad_norm": 1.0, "dp_target_epsilon": 2.0}, "go together"),
        ({"dp_max_grad_norm": 1.0, "dp_noise_multiplier": 1.0, "dp_delta": 1.0}, "dp_delta"),
        ({"dp_max_grad_norm": 1.0, "dp_noise_multiplier": 1.0, "optimizer": "adam"}, "sgd"),
        ({"dp_max_grad_norm": -1.0}, "dp_max_grad_norm must be >= 0"),
    ],
)
def test_bad_privacy_settings_are_clear_errors(kw, reason) -> None:
    with pytest.raises(ConfigError, match=reason):
        TrainConfig(**kw)


def test_manifests_without_privacy_keep_their_bytes() -> None:
    assert not any(k.startswith("dp_") for k in TrainConfig().to_dict())
    on = TrainConfig(dp_max_grad_norm=1.0, dp_noise_multiplier=1.1)
    assert TrainConfig.from_dict(on.to_dict()) == on


def test_the_ledger_counts_published_rounds_once_and_survives_a_restart(tmp_path) -> None:
    path = tmp_path / "privacy.json"
    steps = DPSteps(1.1, 0.01, 100)
    ledger = PrivacyLedger(path, 1e-5, budget=3.0)
    assert ledger.epsilon() == 0.0
    first = ledger.spend(1, steps)
    assert ledger.spend(1, steps) == first  # the same round again (a restart): once
    assert ledger.epsilon_with(2, steps) > first
    second = ledger.spend(2, steps)
    again = PrivacyLedger(path, 1e-5, budget=3.0)
    assert again.epsilon() == second and not again.exhausted
    again.close()
    assert PrivacyLedger(path, 1e-5, budget=3.0).exhausted
    assert json.loads(path.read_text())["epsilon"] == pytest.approx(second)
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="unreadable"):
        PrivacyLedger(path, 1e-5, budget=3.0)
