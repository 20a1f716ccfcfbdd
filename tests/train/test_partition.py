"""Partitions: disjoint, covering, sorted, seeded; Dirichlet skew follows alpha."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pfl.errors import ConfigError
from p2pfl.train.partition import label_histogram, partition_dirichlet, partition_iid


def assert_partition(parts: list[np.ndarray], n: int, n_parts: int) -> None:
    assert len(parts) == n_parts
    for p in parts:
        assert p.dtype == np.int64 and np.all(np.diff(p) > 0)  # sorted, no repeats
    allidx = np.concatenate(parts)
    assert len(allidx) == n  # disjoint and covering together
    np.testing.assert_array_equal(np.sort(allidx), np.arange(n))


labels = st.lists(st.integers(0, 9), min_size=1, max_size=400).map(lambda v: np.array(v, np.int64))


@settings(max_examples=60, deadline=None)
@given(y=labels, n_parts=st.integers(1, 12), seed=st.integers(0, 2**64 - 1))
def test_iid_properties(y: np.ndarray, n_parts: int, seed: int) -> None:
    if len(y) < n_parts:
        with pytest.raises(ConfigError):
            partition_iid(y, n_parts, seed)
        return
    parts = partition_iid(y, n_parts, seed)
    assert_partition(parts, len(y), n_parts)
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)
    again = partition_iid(y, n_parts, seed)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))


@settings(max_examples=60, deadline=None)
@given(
    y=st.lists(st.integers(0, 5), min_size=40, max_size=400).map(lambda v: np.array(v, np.int64)),
    n_parts=st.integers(1, 8),
    alpha=st.sampled_from([0.1, 0.5, 1.0, 100.0]),
    seed=st.integers(0, 2**32),
)
def test_dirichlet_properties(y: np.ndarray, n_parts: int, alpha: float, seed: int) -> None:
    min_size = 2
    parts = partition_dirichlet(y, n_parts, alpha, seed, min_size=min_size)
    assert_partition(parts, len(y), n_parts)
    assert min(len(p) for p in parts) >= min_size
    again = partition_dirichlet(y, n_parts, alpha, seed, min_size=min_size)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))


def test_seed_changes_the_split() -> None:
    y = np.repeat(np.arange(10), 50)
    assert not np.array_equal(partition_iid(y, 5, 1)[0], partition_iid(y, 5, 2)[0])
    a, b = partition_dirichlet(y, 5, 0.5, 1), partition_dirichlet(y, 5, 0.5, 2)
    assert not np.array_equal(a[0], b[0])


def test_iid_pinned_output() -> None:
    # Pins the algorithm (PCG64 permutation + array_split) so a change is noticed.
    parts = partition_iid(np.zeros(10, np.int64), 3, seed=42)
    expected = np.array_split(np.random.default_rng(42).permutation(10), 3)
    assert [p.tolist() for p in parts] == [sorted(e.tolist()) for e in expected]


def test_dirichlet_skew_grows_as_alpha_shrinks() -> None:
    y = np.repeat(np.arange(10), 600)

    def mean_classes_for_90pct(alpha: float) -> float:
        hist = label_histogram(y, partition_dirichlet(y, 10, alpha, seed=7), 10)
        # Number of classes needed to cover 90% of each client's data, averaged.
        frac = np.sort(hist, axis=1)[:, ::-1].cumsum(axis=1) / hist.sum(axis=1, keepdims=True)
        return float(np.mean((frac < 0.9).sum(axis=1) + 1))

    skewed, mild, flat = (mean_classes_for_90pct(a) for a in (0.1, 1.0, 1000.0))
    assert skewed < mild < flat
    assert skewed <= 3.0 and flat >= 8.0


def test_dirichlet_errors() -> None:
    y = np.repeat(np.arange(3), 10)
    with pytest.raises(ConfigError, match="alpha"):
        partition_dirichlet(y, 3, 0.0, 0)
    with pytest.raises(ConfigError, match="exceeds"):
        partition_dirichlet(y, 3, 1.0, 0, min_size=11)
    with pytest.raises(ConfigError, match="non-empty"):
        partition_iid(y, 31, 0)
    with pytest.raises(ConfigError, match="one-dimensional"):
        partition_iid(np.zeros((3, 3)), 2, 0)
    # An impossible min_size for a very skewed draw is reported, not looped on forever.
    with pytest.raises(ConfigError, match="raise alpha or lower min_size"):
        partition_dirichlet(np.repeat(np.arange(2), 15), 3, 1e-3, 0, min_size=10)
