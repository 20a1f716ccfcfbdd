"""The training model: how long each laptop trains, and the deltas it produces.

Compute time: each laptop has a speed drawn once from a lognormal whose 5th-95th
percentile ratio is `spread` (laptops differ ~10x), times a small per-round jitter.
Deltas: synthetic float32 vectors of `params` coordinates, N(mean, std^2) i.i.d. per
node and round (known statistics), encoded with the real tensor codec and named by their
real CID, so the aggregation pipeline (filter, rule, reward tree) runs on them for real;
their wire size on the links is the scenario's `model_bytes`. Poisoners transform their
honest delta with sim.attacks' behaviours (sign flip, scaling, noise, ...)."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from p2pfl.core import aggregate as agg
from p2pfl.core.cid import blob_cid
from p2pfl.core.tensors import encode_tensors, flatten
from sim.des.scenario import TrainSection

Delta = dict[str, np.ndarray]
# The 5th-95th percentile range of a normal: +-1.645 sigma.
_Z95 = 1.6448536269514722
TRAIN_SALT = 0x7EA1


def genesis_model(params: int) -> Delta:
    return {"w": np.zeros(params, dtype=np.float32)}


class Training:
    def __init__(self, spec: TrainSection, n: int, seed: int) -> None:
        self.spec = spec
        self.seed = seed
        rng = np.random.default_rng([seed, TRAIN_SALT])
        sigma = math.log(spec.spread) / (2 * _Z95)
        self.speed = rng.lognormal(0.0, sigma, n)  # median 1: times the median training time

    def compute_s(self, node: int, round_: int) -> float:
        """Training plus the work around it (base model read, delta stored) for one round."""
        rng = np.random.default_rng([self.seed, TRAIN_SALT, round_, node])
        jitter = float(rng.lognormal(0.0, self.spec.jitter)) if self.spec.jitter else 1.0
        return float(self.spec.median_s * self.speed[node] * jitter + self.spec.overhead_s)

    def delta(
        self,
        node: int,
        round_: int,
        poison: Callable[[int, Delta], Delta] | None = None,
    ) -> Delta:
        rng = np.random.default_rng([self.seed, TRAIN_SALT, round_, node, 1])
        vector = rng.normal(self.spec.delta_mean, self.spec.delta_std, self.spec.params)
        delta = {"w": vector.astype(np.float32)}
        return poison(round_, delta) if poison is not None else delta


def encoded(delta: Delta) -> tuple[bytes, bytes, float]:
    """(canonical bytes, binary CID, norm) of a delta, as the node stores its own."""
    blob = encode_tensors(delta)
    vector, _ = flatten(delta)
    return blob, blob_cid(blob).to_bytes(), float(agg.norm(vector))
