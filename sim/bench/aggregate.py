"""Aggregation throughput: deterministic FedAvg vs memcpy, Multi-Krum and the default pipeline.

Figures (headline last):
  fedavg-10x10M         GB/s of input read by `p2pfl.core.aggregate.fedavg`
  memcpy                GB/s of np.copyto over the same bytes, same run (the ceiling)
  python-loop-10x10M    GB/s of Flower's `acc = acc + d * w` (float32) for comparison
  multikrum-50x1M       seconds for Multi-Krum selection + average, 50 deltas x 1M params
  default-50x1M         seconds for the default pipeline on the same 50 deltas
  default-10x10M        seconds for the default pipeline on 10 deltas x 10M params
  fedavg-vs-memcpy      ratio (target >= 0.5)
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from p2pfl.core.aggregate import Contribution, RuleSpec, aggregate, fedavg
from sim.bench import figure

REPEATS = 3  # best of 3: the machine is shared, the minimum is the least disturbed run


def _best(fn: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(REPEATS):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def _deltas(n: int, p: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    common = rng.standard_normal(p, dtype=np.float32)
    out = []
    for _ in range(n):
        d = rng.standard_normal(p, dtype=np.float32)
        d *= np.float32(0.5)
        d += common
        out.append(d)
    return out


def run() -> None:
    # (1) FedAvg 10 x 10M vs memcpy of the same bytes
    vs = _deltas(10, 10_000_000, seed=1)
    weights = [float(100 + i) for i in range(len(vs))]
    total_bytes = sum(v.nbytes for v in vs)
    dst = np.empty_like(vs[0])

    def memcpy() -> None:
        for v in vs:
            np.copyto(dst, v)

    def python_loop() -> None:
        acc = np.zeros_like(vs[0])
        tot = sum(weights)
        for d, w in zip(vs, weights):
            acc = acc + d * (w / tot)

    t_fedavg = _best(lambda: fedavg(vs, weights))
    t_memcpy = _best(memcpy)
    t_loop = _best(python_loop)
    figure("fedavg-10x10M", total_bytes / t_fedavg / 1e9, "GB/s")
    figure("memcpy", total_bytes / t_memcpy / 1e9, "GB/s")
    figure("python-loop-10x10M", total_bytes / t_loop / 1e9, "GB/s")

    cs10 = [Contribution(bytes([i + 1]) * 20, 100, v) for i, v in enumerate(vs)]
    t_default10 = _best(lambda: aggregate(RuleSpec.default(), cs10))
    del cs10, vs, dst

    # (2) Multi-Krum and the default pipeline over 50 x 1M
    cs = [Contribution(bytes([i + 1]) * 20, 100, v) for i, v in enumerate(_deltas(50, 1_000_000, seed=2))]
    mk = RuleSpec(rule="multikrum", byzantine_f=10)
    t_mk = _best(lambda: aggregate(mk, cs))
    t_default = _best(lambda: aggregate(RuleSpec.default(), cs))
    figure("multikrum-50x1M", t_mk, "s")
    figure("default-50x1M", t_default, "s")
    figure("default-10x10M", t_default10, "s")
    figure("fedavg-vs-memcpy", t_memcpy / t_fedavg, "ratio")
