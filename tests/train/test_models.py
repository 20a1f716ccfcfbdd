"""Model registry, seeded init, weights <-> numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from p2pfl.errors import ConfigError
from p2pfl.train.models import (
    MLP,
    SmallCNN,
    build_model,
    init_weights,
    load_numpy,
    model_to_numpy,
    register_model,
    registered_models,
)
from p2pfl.train.trainer import weights_equal


def tiny_factory(width: int = 3) -> nn.Module:
    """Used through the "module:tests.train.test_models:tiny_factory" spec."""
    return nn.Sequential(nn.Flatten(), nn.Linear(4, width))


def test_builtin_models_and_shapes() -> None:
    assert {"mlp", "cnn"} <= set(registered_models())
    cnn = build_model("cnn")
    assert isinstance(cnn, SmallCNN)
    assert cnn(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    # Small on purpose: ~52k parameters so 10 clients train a round in seconds.
    assert sum(p.numel() for p in cnn.parameters()) < 60_000
    mlp = build_model("mlp", input_shape=[1, 8, 8], hidden=[32, 16], num_classes=10)
    assert isinstance(mlp, MLP)
    assert mlp(torch.zeros(5, 1, 8, 8)).shape == (5, 10)
    assert build_model("cnn", input_shape=(1, 8, 8))(torch.zeros(1, 1, 8, 8)).shape == (1, 10)


def test_registry_errors_and_plugins() -> None:
    with pytest.raises(ConfigError, match="unknown model 'resnet'"):
        build_model("resnet")
    with pytest.raises(ConfigError, match="rejected its parameters"):
        build_model("mlp", depth=3)
    with pytest.raises(ConfigError, match="already registered"):
        register_model("mlp", MLP)
    with pytest.raises(ConfigError, match="reserved"):
        register_model("module:x", MLP)
    register_model("test-tiny", tiny_factory, replace=True)
    assert build_model("test-tiny", width=2)[1].out_features == 2
    register_model("test-not-a-module", lambda: 42, replace=True)
    with pytest.raises(ConfigError, match="not a torch Module"):
        build_model("test-not-a-module")


def test_module_spec_imports_user_factory() -> None:
    model = build_model("module:tests.train.test_models:tiny_factory", width=5)
    assert model[1].out_features == 5
    linear = build_model("module:torch.nn:Linear", in_features=2, out_features=1)
    assert isinstance(linear, nn.Linear)
    for bad, message in (
        ("module:nocolon", "expected"),
        ("module:no_such_pkg_xyz:f", "cannot import"),
        ("module:torch.nn:NoSuchThing", "no attribute"),
        ("module:math:pi", "not callable"),
    ):
        with pytest.raises(ConfigError, match=message):
            build_model(bad)


def test_init_weights_seeded_and_isolated() -> None:
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    a = init_weights("cnn", {}, seed=7)
    after = torch.rand(3)
    assert torch.equal(before, after)  # the caller's global RNG is untouched
    b = init_weights("cnn", None, seed=7)
    c = init_weights("cnn", {}, seed=8)
    assert weights_equal(a, b) and not weights_equal(a, c)


def test_model_to_numpy_layout_and_roundtrip() -> None:
    weights = init_weights("mlp", {"input_shape": [1, 8, 8], "hidden": [16]}, seed=1)
    assert list(weights) == sorted(weights)
    for arr in weights.values():
        assert arr.dtype == np.float32 and arr.flags.c_contiguous
    model = build_model("mlp", input_shape=[1, 8, 8], hidden=[16])
    load_numpy(model, weights)
    assert weights_equal(model_to_numpy(model), weights)
    # Exported arrays are copies: editing them does not touch the model.
    out = model_to_numpy(model)
    out["net.1.bias"][:] = 99.0
    assert weights_equal(model_to_numpy(model), weights)


def test_load_numpy_rejects_mismatches() -> None:
    model = build_model("mlp", input_shape=[1, 8, 8], hidden=[16])
    weights = model_to_numpy(model)
    with pytest.raises(ConfigError, match="missing"):
        load_numpy(model, {k: v for k, v in weights.items() if k != "net.1.bias"})
    with pytest.raises(ConfigError, match="unexpected"):
        load_numpy(model, {**weights, "extra": np.zeros(1, np.float32)})
    with pytest.raises(ConfigError, match="shape"):
        load_numpy(model, {**weights, "net.1.bias": np.zeros(3, np.float32)})


def test_batchnorm_counters_are_refused() -> None:
    with pytest.raises(ConfigError, match="BatchNorm"):
        model_to_numpy(nn.Sequential(nn.BatchNorm1d(4)))


def test_lenet5_is_flowers_44426_parameter_net() -> None:
    """The architecture of Flower's Fashion-MNIST quickstart, parameter for parameter."""
    net = build_model("lenet5")
    assert sum(p.numel() for p in net.parameters()) == 44_426
    assert net(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(ConfigError, match="at least 16x16"):
        build_model("lenet5", input_shape=(1, 8, 8))
