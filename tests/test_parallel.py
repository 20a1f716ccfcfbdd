"""`p2pfl.parallel`: the thread-pool map the aggregation kernels take. Whatever it does,
the aggregate stays bitwise identical to the serial (in-thread) map."""

from __future__ import annotations

import itertools
import os
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pfl import parallel as P
from p2pfl.core import aggregate as A
from p2pfl.core.aggregate import Contribution, RuleSpec
from p2pfl.errors import AggregationError

# Above the auto threshold for two threads, and not a multiple of BLOCK.
BIG_P = 2 * P.PARALLEL_MIN_PER_THREAD + 12_345


def rand_vectors(seed: int, n: int, p: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    base = rng.standard_normal(p, dtype=np.float32)
    return [(base + rng.standard_normal(p, dtype=np.float32)).astype(np.float32) for _ in range(n)]


@pytest.fixture(scope="module")
def big_vectors() -> list[np.ndarray]:
    vs = rand_vectors(11, 6, BIG_P)
    vs[1][::97] = -0.0  # signed zeros and ties: the median's canonicalisation path
    vs[2][::97] = 0.0
    vs[3][5::89] = vs[4][5::89]
    return vs


MAPS = [P.ThreadPoolMap(2), P.ThreadPoolMap(3), P.threaded]


@pytest.mark.parametrize("pmap", MAPS, ids=repr)
def test_threaded_passes_are_byte_identical_to_serial(
    big_vectors: list[np.ndarray], pmap: P.ThreadPoolMap
) -> None:
    vs = big_vectors
    w = [float(7 * i + 3) for i in range(len(vs))]
    assert A.fedavg(vs, w, parallel=pmap).tobytes() == A.fedavg(vs, w).tobytes()
    assert A.coordinate_median(vs, parallel=pmap).tobytes() == A.coordinate_median(vs).tobytes()
    assert A.trimmed_mean(vs, 0.2, parallel=pmap).tobytes() == A.trimmed_mean(vs, 0.2).tobytes()
    norms = [A.norm(v) for v in vs]
    bound = sorted(norms)[2]
    clipped = A.clip_norm(vs, bound, norms, parallel=pmap)
    for a, b in zip(clipped, A.clip_norm(vs, bound, norms)):
        assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize(
    "spec",
    [
        RuleSpec.default(),
        RuleSpec.from_dict({"rule": "median", "clip_norm": 900.0}),
        RuleSpec.from_dict({"rule": "trimmed_mean", "filter": {"reference": "trimmed_mean"}}),
        RuleSpec.from_dict({"rule": "multikrum", "byzantine_f": 1, "samples_cap": 1.5}),
    ],
    ids=lambda s: s.name,
)
def test_aggregate_is_bitwise_identical_with_serial_and_pool_maps(
    big_vectors: list[np.ndarray], spec: RuleSpec
) -> None:
    vs = [*big_vectors, (np.float32(-3.0) * big_vectors[0]).astype(np.float32)]  # one outlier
    cs = [Contribution(bytes([i + 1]) * 20, 50 + 40 * i, v) for i, v in enumerate(vs)]
    serial = A.aggregate(spec, cs)
    for pmap in (P.ThreadPoolMap(3), P.threaded):
        pooled = A.aggregate(spec, cs, parallel=pmap)
        assert pooled.digest == serial.digest
        assert (pooled.accepted, pooled.rejected, pooled.weights) == (
            serial.accepted,
            serial.rejected,
            serial.weights,
        )


def test_auto_thread_count_splits_only_big_vectors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(P, "usable_cpus", lambda: 8)
    assert P.thread_count(P.PARALLEL_MIN_PER_THREAD - 1, None) == 1
    assert P.thread_count(BIG_P, None) == 2
    assert P.thread_count(100 * P.PARALLEL_MIN_PER_THREAD, None) == P.MAX_THREADS
    monkeypatch.setattr(P, "usable_cpus", lambda: 1)
    assert P.thread_count(100 * P.PARALLEL_MIN_PER_THREAD, None) == 1
    assert P.thread_count(10, 4) == 1  # one block cannot be split
    for bad in (0, -1, 1.5, True):
        with pytest.raises(AggregationError):
            P.thread_count(BIG_P, bad)  # type: ignore[arg-type]
        with pytest.raises(AggregationError):
            P.ThreadPoolMap(bad)  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 50 * A.BLOCK), st.integers(1, 9))
def test_split_ranges_cover_exactly_once(p: int, k: int) -> None:
    ranges = P.split(p, k)
    assert ranges[0][0] == 0 and ranges[-1][1] == p
    assert all(a < b for a, b in ranges)
    assert all(x[1] == y[0] for x, y in itertools.pairwise(ranges))
    assert all(a % A.BLOCK == 0 for a, _ in ranges)
    assert len(ranges) == min(k, -(-p // A.BLOCK))


def test_map_runs_on_pool_threads_and_reraises() -> None:
    seen: list[tuple[int, int, int]] = []
    P.ThreadPoolMap(3)(BIG_P, lambda a, b: seen.append((a, b, threading.get_ident())))
    assert sorted((a, b) for a, b, _ in seen) == P.split(BIG_P, 3 * P.SHARES_PER_THREAD)
    assert threading.get_ident() in {t for _, _, t in seen}  # the caller takes ranges too

    # Two threads really work at once: each one's first range waits for the other's.
    meet = threading.Barrier(2, timeout=30)
    met: set[int] = set()

    def rendezvous(a: int, b: int) -> None:
        if threading.get_ident() not in met:
            met.add(threading.get_ident())
            meet.wait()

    P.ThreadPoolMap(2)(BIG_P, rendezvous)
    assert len(met) == 2

    def boom(a: int, b: int) -> None:
        if a > 0:
            raise ValueError("range failed")

    with pytest.raises(ValueError, match="range failed"):
        P.ThreadPoolMap(2)(BIG_P, boom)


def test_pool_is_recreated_after_fork() -> None:
    pool = P.get_pool()
    assert P.get_pool() is pool
    P.forget_pool()  # what the after-fork hook does in a child
    assert P.get_pool() is not pool
    pool.shutdown()


def _fedavg_in_child(vs: list[np.ndarray], want: bytes) -> None:
    got = A.fedavg(vs, [1.0] * len(vs), parallel=P.ThreadPoolMap(2)).tobytes()
    os._exit(0 if got == want else 3)


def test_threaded_fedavg_works_in_a_forked_child(big_vectors: list[np.ndarray]) -> None:
    import multiprocessing

    vs = big_vectors[:3]
    # The parent's pool is running.
    want = A.fedavg(vs, [1.0] * 3, parallel=P.ThreadPoolMap(2)).tobytes()
    child = multiprocessing.get_context("fork").Process(target=_fedavg_in_child, args=(vs, want))
    child.start()
    child.join(timeout=60)
    if child.is_alive():
        child.kill()
        pytest.fail("fedavg hung in a forked child (inherited thread pool)")
    assert child.exitcode == 0
