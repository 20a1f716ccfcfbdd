"""Seeded splits of a labelled dataset across clients (IID and Dirichlet non-IID).

Both functions return `n_parts` int64 index arrays, each sorted ascending, pairwise
disjoint and together covering every row exactly once. The randomness is numpy's PCG64
(`np.random.default_rng(seed)`), so the same (labels, parameters, seed) give the same
split on every machine with the same numpy major version. Normative text:
protocol/spec/training.md, "Partitions".
"""

from __future__ import annotations

import numpy as np

from p2pfl.errors import ConfigError

# Default floor on a Dirichlet part's size: a client with a handful of samples gives
# a noisy delta and an empty one none at all (the value FedML/FedLab use).
DIRICHLET_MIN_SIZE = 10
# Re-draws before giving up on `min_size`: with alpha >= 0.05 and parts of >= 100
# samples a draw almost always succeeds in a few attempts.
DIRICHLET_MAX_ATTEMPTS = 1000


def _check(y: np.ndarray, n_parts: int) -> np.ndarray:
    labels = np.asarray(y)
    if labels.ndim != 1:
        raise ConfigError(f"labels must be one-dimensional, got shape {list(labels.shape)}")
    if n_parts < 1:
        raise ConfigError(f"n_parts must be >= 1, got {n_parts}")
    if len(labels) < n_parts:
        raise ConfigError(f"cannot split {len(labels)} samples into {n_parts} non-empty parts")
    return labels


def partition_iid(y: np.ndarray, n_parts: int, seed: int) -> list[np.ndarray]:
    """Uniform random split: shuffle all indices, cut into `n_parts` near-equal runs.

    Part sizes differ by at most one (the first N mod n_parts parts get the extra row).
    """
    labels = _check(y, n_parts)
    perm = np.random.default_rng(seed).permutation(len(labels))
    return [np.sort(part).astype(np.int64) for part in np.array_split(perm, n_parts)]


def partition_dirichlet(
    y: np.ndarray,
    n_parts: int,
    alpha: float,
    seed: int,
    min_size: int = DIRICHLET_MIN_SIZE,
) -> list[np.ndarray]:
    """Label-skewed split: each class is spread over parts by proportions ~ Dir(alpha).

    Smaller `alpha` => more skew (alpha -> inf approaches IID). The draw is repeated with
    the same generator until every part has at least `min_size` samples (Hsu et al. 2019,
    the FedML/FedLab variant with the "full parts take no more" balancing rule).
    """
    labels = _check(y, n_parts)
    if not alpha > 0.0:
        raise ConfigError(f"Dirichlet alpha must be > 0, got {alpha}")
    if min_size < 0 or min_size * n_parts > len(labels):
        raise ConfigError(
            f"min_size={min_size} x {n_parts} parts exceeds the {len(labels)} samples"
        )
    rng = np.random.default_rng(seed)
    n = len(labels)
    classes = np.unique(labels)  # ascending
    for _ in range(DIRICHLET_MAX_ATTEMPTS):
        parts: list[list[np.ndarray]] = [[] for _ in range(n_parts)]
        sizes = np.zeros(n_parts, dtype=np.int64)
        degenerate = False
        for cls in classes:
            idx = np.flatnonzero(labels == cls)
            idx = idx[rng.permutation(len(idx))]
            props = rng.dirichlet(np.full(n_parts, float(alpha)))
            # A part that already holds its fair share N/n_parts takes no more.
            props = np.where(sizes < n / n_parts, props, 0.0)
            total = props.sum()
            if not (np.isfinite(total) and total > 0.0):
                # Tiny alpha can underflow every open part's share to 0: abandon the draw.
                degenerate = True
                break
            props = props / total
            cuts = (np.cumsum(props) * len(idx)).astype(np.int64)[:-1]
            for j, chunk in enumerate(np.split(idx, cuts)):
                parts[j].append(chunk)
                sizes[j] += len(chunk)
        if not degenerate and sizes.min() >= min_size:
            return [np.sort(np.concatenate(p)).astype(np.int64) for p in parts]
    raise ConfigError(
        f"no Dirichlet(alpha={alpha}) split of {n} samples into {n_parts} parts gave every part "
        f">= {min_size} samples in {DIRICHLET_MAX_ATTEMPTS} draws; raise alpha or lower min_size"
    )


def label_histogram(y: np.ndarray, parts: list[np.ndarray], n_classes: int) -> np.ndarray:
    """[n_parts, n_classes] counts of each label in each part (for reports and tests)."""
    labels = np.asarray(y)
    return np.stack([np.bincount(labels[p], minlength=n_classes) for p in parts])
