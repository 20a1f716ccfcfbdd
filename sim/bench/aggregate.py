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
    """n updates sharing a common direction, with personal noise."""
    rng = np.random.default_rng(seed)
    common = rng.standard_normal(p, dtype=np.float32)
    out = []
    for _ in range(n):
        d = rng.standard_normal(p, dtype=np.float32)
        d *= np.float32(0.5)
        d += common
        out.append(d)
    return out


def _contributions(vs: list[np.ndarray]) -> list[Contribution]:
    return [Contribution(bytes([i + 1]) * 20, 100, v) for i, v in enumerate(vs)]


def _fedavg_figures() -> tuple[float, float, float, float]:
    """(fedavg s, memcpy s, python loop s, default pipeline s) over 10 x 10M."""
    vs = _deltas(10, 10_000_000, seed=1)
    weights = [float(100 + i) for i in range(len(vs))]
    dst = np.empty_like(vs[0])

    def memcpy() -> None:
        for v in vs:
            np.copyto(dst, v)

    def python_loop() -> None:  # Flower's style: float32, a new array per step
        acc = np.zeros_like(vs[0])
        tot = sum(weights)
        for d, w in zip(vs, weights):
            acc = acc + d * (w / tot)

    t_fedavg = _best(lambda: fedavg(vs, weights))
    t_memcpy = _best(memcpy)
    t_loop = _best(python_loop)
    cs = _contributions(vs)
    t_default = _best(lambda: aggregate(RuleSpec.default(), cs))
    return t_fedavg, t_memcpy, t_loop, t_default


def run() -> None:
    total_bytes = 10 * 10_000_000 * 4
    t_fedavg, t_memcpy, t_loop, t_default10 = _fedavg_figures()
    figure("fedavg-10x10M", total_bytes / t_fedavg / 1e9, "GB/s")
    figure("memcpy", total_bytes / t_memcpy / 1e9, "GB/s")
    figure("python-loop-10x10M", total_bytes / t_loop / 1e9, "GB/s")

    cs = _contributions(_deltas(50, 1_000_000, seed=2))
    mk = RuleSpec(rule="multikrum", byzantine_f=10)
    figure("multikrum-50x1M", _best(lambda: aggregate(mk, cs)), "s")
    figure("default-50x1M", _best(lambda: aggregate(RuleSpec.default(), cs)), "s")
    figure("default-10x10M", t_default10, "s")
    figure("fedavg-vs-memcpy", t_memcpy / t_fedavg, "ratio")
