"""Local trainer, strict config, seeds, evaluation and the centralised FedAvg reference."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from p2pfl.errors import AggregationError, ConfigError
from p2pfl.train.data import Dataset, load_digits, split_dataset
from p2pfl.train.models import build_model, init_weights, model_to_numpy
from p2pfl.train.partition import partition_iid
from p2pfl.train.reference import fedavg_delta, reference_fedavg
from p2pfl.train.trainer import (
    TrainConfig,
    apply_delta,
    client_seed,
    evaluate,
    torch_threads,
    train_local,
    weights_equal,
)

MLP_DIGITS = {"input_shape": [1, 8, 8], "hidden": [64]}
CNN_DIGITS = {"input_shape": [1, 8, 8]}


@pytest.fixture(scope="module")
def digits() -> tuple[Dataset, Dataset]:
    return split_dataset(load_digits(), 0.25, seed=0)


def test_config_from_dict_strict() -> None:
    cfg = TrainConfig.from_dict({"epochs": 2, "lr": 0.1, "optimizer": "adam"})
    assert (cfg.epochs, cfg.lr, cfg.optimizer) == (2, 0.1, "adam")
    assert cfg.batch_size == TrainConfig().batch_size
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match=r"unknown keys \['learning_rate'\]"):
        TrainConfig.from_dict({"learning_rate": 0.1})
    with pytest.raises(ConfigError, match="must be a table"):
        TrainConfig.from_dict([("epochs", 1)])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"epochs": 0}, "epochs must be >= 1"),
        ({"epochs": 1.5}, "epochs must be an integer"),
        ({"epochs": True}, "epochs must be an integer"),
        ({"batch_size": 0}, "batch_size"),
        ({"lr": 0}, "lr must be > 0"),
        ({"lr": float("nan")}, "finite"),
        ({"lr": "0.1"}, "finite number"),
        ({"optimizer": "rmsprop"}, "optimizer must be one of"),
        ({"momentum": 1.0}, "momentum"),
        ({"weight_decay": -1e-4}, "weight_decay"),
        ({"seed": -1}, "seed"),
        ({"seed": 2**64}, "seed"),
    ],
)
def test_config_rejects_bad_values(raw: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TrainConfig.from_dict(raw)


def test_client_seed_formula_and_pinned_value() -> None:
    digest = hashlib.sha256(
        b"p2pfl/train/client-seed/v1"
        + (5).to_bytes(8, "big")
        + (3).to_bytes(8, "big")
        + (2).to_bytes(8, "big")
    ).digest()
    assert client_seed(5, 3, 2) == int.from_bytes(digest[:8], "big") >> 1
    assert client_seed(0, 1, 0) == 0x79F6BA26D9B1015D  # pinned: a change here breaks comparability
    seeds = {client_seed(0, r, i) for r in range(1, 5) for i in range(10)}
    assert len(seeds) == 40 and all(0 <= s < 2**63 for s in seeds)
    assert client_seed(0, 1, bytes(20)) != client_seed(0, 1, 0)
    with pytest.raises(ConfigError):
        client_seed(0, 1, -1)


@pytest.mark.parametrize("name, kwargs", [("mlp", MLP_DIGITS), ("cnn", CNN_DIGITS)])
def test_training_is_deterministic(
    digits: tuple[Dataset, Dataset], name: str, kwargs: dict
) -> None:
    train, _ = digits
    part = train.subset(np.arange(300))
    base = init_weights(name, kwargs, seed=1)
    cfg = TrainConfig(epochs=2, batch_size=32, lr=0.05, seed=9)
    torch.manual_seed(0)
    a = train_local(name, base, part, cfg, seed=11, model_kwargs=kwargs, num_threads=1)
    torch.manual_seed(12345)  # the caller's global RNG state must not matter
    b = train_local(name, base, part, cfg, seed=11, model_kwargs=kwargs, num_threads=1)
    c = train_local(name, base, part, cfg, seed=12, model_kwargs=kwargs, num_threads=1)
    assert weights_equal(a.delta, b.delta) and a.train_loss == b.train_loss
    assert not weights_equal(a.delta, c.delta)
    assert a.n_samples == 300 and a.seconds > 0
    assert list(a.delta) == sorted(base) and all(d.dtype == np.float32 for d in a.delta.values())
    assert any(np.abs(d).max() > 0 for d in a.delta.values())
    # Default seed is the config's.
    d = train_local(name, base, part, cfg, model_kwargs=kwargs, num_threads=1)
    e = train_local(name, base, part, cfg, seed=9, model_kwargs=kwargs, num_threads=1)
    assert weights_equal(d.delta, e.delta)


def test_delta_is_trained_minus_base_in_float32(digits: tuple[Dataset, Dataset]) -> None:
    train, _ = digits
    base = init_weights("mlp", MLP_DIGITS, seed=2)
    model = build_model("mlp", **MLP_DIGITS)
    part = train.subset(np.arange(64))
    res = train_local(model, base, part, TrainConfig(), seed=1, num_threads=1)
    trained = model_to_numpy(model)  # a module passed in is trained in place
    for k in base:
        np.testing.assert_array_equal(res.delta[k], (trained[k] - base[k]).astype(np.float32))


def test_num_threads_is_restored() -> None:
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(ConfigError):
        with torch_threads(0):
            pass


@pytest.mark.parametrize("optimizer, lr", [("sgd", 0.05), ("adam", 0.003)])
def test_training_on_digits_beats_chance(
    digits: tuple[Dataset, Dataset], optimizer: str, lr: float
) -> None:
    train, test = digits
    base = init_weights("mlp", MLP_DIGITS, seed=0)
    _, acc0 = evaluate("mlp", base, test, model_kwargs=MLP_DIGITS)
    cfg = TrainConfig(epochs=5, batch_size=32, lr=lr, optimizer=optimizer)
    res = train_local("mlp", base, train, cfg, seed=3, model_kwargs=MLP_DIGITS, num_threads=1)
    loss, acc = evaluate("mlp", apply_delta(base, res.delta), test, model_kwargs=MLP_DIGITS)
    assert acc0 < 0.3 and acc > 0.85, (acc0, acc)
    assert loss < 1.0 and res.train_loss < 1.0


def test_evaluate_and_errors(digits: tuple[Dataset, Dataset]) -> None:
    _, test = digits
    base = init_weights("mlp", MLP_DIGITS, seed=0)
    loss, acc = evaluate("mlp", base, test, model_kwargs=MLP_DIGITS, batch_size=7)
    loss2, acc2 = evaluate("mlp", base, test, model_kwargs=MLP_DIGITS)
    assert acc == acc2 and abs(loss - loss2) < 1e-5 and 0.0 <= acc <= 1.0
    empty = test.subset(np.arange(0))
    with pytest.raises(ConfigError, match="empty"):
        train_local("mlp", base, empty, TrainConfig(), model_kwargs=MLP_DIGITS)
    with pytest.raises(ConfigError, match="only when the model is given by name"):
        evaluate(build_model("mlp", **MLP_DIGITS), base, test, model_kwargs=MLP_DIGITS)
    with pytest.raises(ConfigError, match="do not fit"):
        evaluate("cnn", base, test, model_kwargs=CNN_DIGITS)


def test_fedavg_delta_is_sample_weighted() -> None:
    d1 = {"w": np.array([1.0, 0.0], np.float32)}
    d2 = {"w": np.array([4.0, 3.0], np.float32)}
    out = fedavg_delta([d1, d2], [1, 2])
    np.testing.assert_array_equal(out["w"], np.array([3.0, 2.0], np.float32))
    assert out["w"].dtype == np.float32
    with pytest.raises(AggregationError):
        fedavg_delta([d1], [1, 2])
    with pytest.raises(AggregationError):
        fedavg_delta([d1, d2], [0, 0])
    with pytest.raises(AggregationError, match="shapes"):
        fedavg_delta([d1, {"w": np.zeros(3, np.float32)}], [1, 1])


def test_reference_fedavg_on_digits(digits: tuple[Dataset, Dataset]) -> None:
    train, test = digits
    parts = [train.subset(p) for p in partition_iid(train.y, 4, seed=0)]
    init = init_weights("mlp", MLP_DIGITS, seed=0)
    cfg = TrainConfig(epochs=2, batch_size=32, lr=0.05, seed=5)
    hist = reference_fedavg("mlp", MLP_DIGITS, init, parts, test, 4, cfg, num_threads=1)
    assert [m.round for m in hist] == [0, 1, 2, 3, 4]
    assert hist[0].compute_s == 0.0 and all(m.compute_s > 0 for m in hist[1:])
    assert hist[0].accuracy < 0.3 and hist[-1].accuracy > 0.85
    assert hist[-1].loss < hist[0].loss
    # Reproducible: round 1 equals the hand-made average of the clients' deltas
    # trained with client_seed(task_seed, 1, i).
    res = [
        train_local(
            "mlp", init, p, cfg, client_seed(5, 1, i), model_kwargs=MLP_DIGITS, num_threads=1
        )
        for i, p in enumerate(parts)
    ]
    w1 = apply_delta(init, fedavg_delta([r.delta for r in res], [r.n_samples for r in res]))
    assert evaluate("mlp", w1, test, model_kwargs=MLP_DIGITS) == (hist[1].loss, hist[1].accuracy)


FASHION_NORM = {"input_mean": [0.2860], "input_std": [0.3530]}


def test_input_standardisation_config() -> None:
    assert TrainConfig().input_norm is None
    assert "input_mean" not in TrainConfig().to_dict()  # old manifests keep their bytes
    cfg = TrainConfig.from_dict(FASHION_NORM)
    assert cfg.input_norm is not None and cfg.input_norm.mean == (0.2860,)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    for raw, message in [
        ({"input_mean": [0.5]}, "both or neither"),
        ({"input_mean": [0.5], "input_std": [0.0]}, "std must be > 0"),
        ({"input_mean": [0.5, 0.5], "input_std": [0.2]}, "one mean and one std"),
        ({"input_mean": 0.5, "input_std": 0.2}, "must be a list"),
    ]:
        with pytest.raises(ConfigError, match=message):
            TrainConfig.from_dict(raw)


def test_standardisation_is_applied_by_trainer_evaluator_and_reference(digits) -> None:
    """The norm changes what the trainer and evaluator see, and the reference's round-0
    accuracy equals `evaluate` with the same norm (they agree on the inputs)."""
    train, test = digits
    base = init_weights("mlp", MLP_DIGITS, seed=0)
    plain = TrainConfig(seed=1)
    normed = TrainConfig.from_dict({**FASHION_NORM, "seed": 1})
    a = train_local("mlp", base, train, plain, model_kwargs=MLP_DIGITS, num_threads=1)
    b = train_local("mlp", base, train, normed, model_kwargs=MLP_DIGITS, num_threads=1)
    assert not weights_equal(a.delta, b.delta)
    shifted = Dataset(((train.x - 0.2860) / 0.3530).astype(np.float32), train.y)
    c = train_local("mlp", base, shifted, plain, model_kwargs=MLP_DIGITS, num_threads=1)
    assert all(np.allclose(b.delta[k], c.delta[k], atol=1e-5) for k in b.delta)
    kw = {"model_kwargs": MLP_DIGITS, "num_threads": 1}
    with_norm = evaluate("mlp", base, test, input_norm=normed.input_norm, **kw)
    assert with_norm != evaluate("mlp", base, test, **kw)
    history = reference_fedavg("mlp", MLP_DIGITS, base, [train], test, 1, normed, num_threads=1)
    assert (history[0].loss, history[0].accuracy) == with_norm


@pytest.mark.parametrize("momentum, weight_decay", [(0.9, 0.0), (0.0, 0.0), (0.9, 1e-3)])
def test_own_sgd_matches_torch_sgd_bit_for_bit(
    digits: tuple[Dataset, Dataset], momentum: float, weight_decay: float
) -> None:
    from p2pfl.train.trainer import SGD

    train, _ = digits
    x, y = torch.tensor(train.x[:96]), torch.tensor(train.y[:96])
    nets = []
    for make in (
        lambda p: SGD(p, 0.05, momentum, weight_decay),
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=momentum, weight_decay=weight_decay),
    ):
        torch.manual_seed(3)
        net = build_model("cnn", **CNN_DIGITS)
        opt = make(net.parameters())
        for start in range(0, 96, 32):
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(
                net(x[start : start + 32]), y[start : start + 32]
            ).backward()
            opt.step()
        nets.append(model_to_numpy(net))
    assert weights_equal(nets[0], nets[1])
