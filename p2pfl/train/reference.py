"""Centralised FedAvg with no network: the curve the simulation compares itself against.

Same model, initial weights, partitions and per-client seeds (`client_seed`) as the
networked nodes; every client takes part in every round and the server averages the
deltas weighted by sample count, with the committee's FedAvg kernel. Any gap between
this curve and a networked run is then due to the protocol (stragglers, filtering,
attacks), not to the training recipe.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from p2pfl.core.aggregate import Parallel, fedavg, serial
from p2pfl.errors import AggregationError
from p2pfl.parallel import threaded
from p2pfl.train.data import Dataset
from p2pfl.train.trainer import TrainConfig, apply_delta, client_seed, evaluate, train_local


@dataclass(frozen=True)
class RoundMetrics:
    """Test metrics of the global model after `round` (round 0 = the initial weights)."""

    round: int
    loss: float
    accuracy: float
    compute_s: float  # training seconds of all clients in this round, summed


def fedavg_delta(
    deltas: Sequence[Mapping[str, np.ndarray]],
    n_samples: Sequence[int],
    *,
    parallel: Parallel = serial,
) -> dict[str, np.ndarray]:
    """Sample-weighted mean of deltas, tensor by tensor, with the committee's own kernel
    (`p2pfl.core.aggregate.fedavg`): float32(sum_i (n_i / N) * float64(d_i)), summed in
    the given client order, so the result is reproducible to the bit.
    """
    if not deltas or len(deltas) != len(n_samples):
        raise AggregationError(
            f"need one sample count per delta, got {len(deltas)} and {len(n_samples)}"
        )
    if sum(n_samples) <= 0 or min(n_samples) < 0:
        raise AggregationError(
            f"sample counts must be >= 0 with a positive sum, got {list(n_samples)}"
        )
    weights = [float(n) for n in n_samples]
    out: dict[str, np.ndarray] = {}
    for name in sorted(deltas[0]):
        shape = deltas[0][name].shape
        for delta in deltas:
            if delta[name].shape != shape:
                raise AggregationError(
                    f"delta {name!r} shapes differ: {delta[name].shape} vs {shape}"
                )
        flat = [np.ascontiguousarray(delta[name], dtype=np.float32).reshape(-1) for delta in deltas]
        out[name] = fedavg(flat, weights, parallel=parallel).reshape(shape)
    return out


def reference_fedavg(
    model_name: str,
    model_kwargs: Mapping[str, Any] | None,
    init_weights: Mapping[str, np.ndarray],
    partitions: Sequence[Dataset],
    test: Dataset,
    rounds: int,
    cfg: TrainConfig,
    seed: int | None = None,
    *,
    num_threads: int | None = None,
) -> list[RoundMetrics]:
    """Run `rounds` of FedAvg over all `partitions` and evaluate on `test` after each.

    Client i in round r (1-based) trains with `client_seed(seed, r, i)`; `seed` defaults
    to `cfg.seed`, the task seed. Inputs are standardised by `cfg.input_norm` in training
    and evaluation alike, as on the nodes. Returns rounds 0..`rounds` (round 0: `init_weights`).
    """
    task_seed = cfg.seed if seed is None else seed
    weights = {k: np.asarray(v, dtype=np.float32) for k, v in init_weights.items()}
    loss, acc = evaluate(
        model_name,
        weights,
        test,
        model_kwargs=model_kwargs,
        num_threads=num_threads,
        input_norm=cfg.input_norm,
    )
    history = [RoundMetrics(0, loss, acc, 0.0)]
    for r in range(1, rounds + 1):
        started = time.perf_counter()
        results = [
            train_local(
                model_name,
                weights,
                part,
                cfg,
                client_seed(task_seed, r, i),
                model_kwargs=model_kwargs,
                num_threads=num_threads,
            )
            for i, part in enumerate(partitions)
        ]
        compute_s = time.perf_counter() - started
        average = fedavg_delta(
            [res.delta for res in results], [res.n_samples for res in results], parallel=threaded
        )
        weights = apply_delta(weights, average)
        loss, acc = evaluate(
            model_name,
            weights,
            test,
            model_kwargs=model_kwargs,
            num_threads=num_threads,
            input_norm=cfg.input_norm,
        )
        history.append(RoundMetrics(r, loss, acc, compute_s))
    return history
