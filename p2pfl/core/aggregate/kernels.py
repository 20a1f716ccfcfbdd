"""Deterministic numeric kernels: the same output bits on every machine and thread count.

- sums run in float64 in a fixed order, with elementwise numpy ufuncs only
  (`add`, `multiply`, `subtract` with `out=`), which round per IEEE-754 on every CPU;
  BLAS (saxpy/gemv/gemm) is never used for a value that reaches the output, because
  its FMA/non-FMA code paths differ in the last bit between CPUs;
- reductions over a vector (norms, dot products) use `det_sum`: LANES lanes summed
  row by row, then the lanes folded in halves -- one order, written down;
- Krum's distance matrix is *screened* with a float64 Gram matrix (BLAS, fast) and a
  proven error bound; any decision the bound cannot settle is recomputed exactly;
- the float64 result is rounded to float32 (round-to-nearest-even) and -0.0 is
  canonicalised to +0.0 (sorting may place either zero in the middle).

Per-coordinate passes (FedAvg, clipping, median, trimmed mean) are written as a
`kernel(lo, hi)` that computes coordinates [lo, hi) independently of the others, and
handed to a `Parallel` map that the caller injects: `serial` (the default) runs it
once over everything; `p2pfl.parallel` runs disjoint ranges on a thread pool. Each
output element is computed by the same operations whoever computes it, so the bytes
do not depend on the map. `det_sum` reductions stay in their one written-down order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from fractions import Fraction
from typing import Protocol

import numpy as np

from p2pfl.errors import AggregationError

# Elements per block of every blocked loop. 32 Ki float64 = 256 KiB per buffer: the
# accumulator and the scratch buffer stay in L2 (measured fastest of 8K..128K here).
# Changing it does not change any output bit (blocking never reorders a sum).
BLOCK = 32768

# Lanes of `det_sum`. Part of the protocol: a different lane count gives different
# last bits. 4096 keeps the per-lane running sums short (P/4096 terms) and the
# row-by-row numpy calls few (one per 32 KiB row).
LANES = 4096

# Safety factor on the proven bound |screened D - exact D| <= ~5 * gamma_(P+3) * (n_i + n_j)
# (see spec "Krum"): 8 leaves room for the bound's own rounding.
KRUM_SCREEN_SAFETY = 8.0

# Unit roundoff of IEEE binary64 (round-to-nearest).
_U64 = 2.0**-53


class Parallel(Protocol):
    """Runs `kernel(lo, hi)` over disjoint ranges that cover [0, size) exactly once.

    In any order and on any threads, and returns when all are done (re-raising a
    kernel's exception). Kernels compute each coordinate independently of the others,
    so the result cannot depend on how the map splits or schedules the ranges.
    """

    def __call__(self, size: int, kernel: Callable[[int, int], None], /) -> None: ...


def serial(size: int, kernel: Callable[[int, int], None]) -> None:
    """The default `Parallel`: one range, on the calling thread."""
    kernel(0, size)


# ------------------------------------------------------------------ det_sum reductions


def _lane_sum(acc: np.ndarray) -> float:
    """Fold LANES partial sums in halves: acc[:h] + acc[h:] until one value remains."""
    a = acc.copy()
    h = a.shape[0] // 2
    while h >= 1:
        np.add(a[:h], a[h : 2 * h], out=a[:h])
        h //= 2
    return float(a[0])


def _lane_reduce(n: int, fill: Callable[[int, int, np.ndarray], None]) -> float:
    """det_sum of the float64 terms t[0..n) that `fill(start, stop, out)` writes.

    Terms are laid out as rows of LANES (the last row padded with +0.0); lane j sums
    its column top to bottom, then `_lane_sum` folds the lanes.
    """
    acc = np.zeros(LANES, dtype=np.float64)
    rows_per_block = BLOCK // LANES
    buf = np.empty(BLOCK, dtype=np.float64)
    for start in range(0, n, BLOCK):
        stop = min(start + BLOCK, n)
        m = stop - start
        fill(start, stop, buf[:m])
        if m < BLOCK:
            buf[m : -(-m // LANES) * LANES] = 0.0
        rows = buf[: -(-m // LANES) * LANES].reshape(-1, LANES)
        for r in range(min(rows_per_block, rows.shape[0])):
            np.add(acc, rows[r], out=acc)
    return _lane_sum(acc)


def squared_norm(x: np.ndarray) -> float:
    """det_sum(float64(x)^2): each square is exact (24-bit mantissas), the sum in fixed order."""

    def fill(a: int, b: int, out: np.ndarray) -> None:
        np.copyto(out, x[a:b])
        np.multiply(out, out, out=out)

    return _lane_reduce(x.shape[0], fill)


def norm(x: np.ndarray) -> float:
    """L2 norm: IEEE sqrt of `squared_norm` (correctly rounded everywhere)."""
    return math.sqrt(squared_norm(x))


def dot(x: np.ndarray, y: np.ndarray) -> float:
    """det_sum(float64(x) * float64(y)) for float32 x, y: exact products, fixed-order sum."""
    tmp = np.empty(BLOCK, dtype=np.float64)

    def fill(a: int, b: int, out: np.ndarray) -> None:
        np.copyto(out, x[a:b])
        t = tmp[: b - a]
        np.copyto(t, y[a:b])
        np.multiply(out, t, out=out)

    return _lane_reduce(x.shape[0], fill)


def squared_distance(x: np.ndarray, y: np.ndarray) -> float:
    """det_sum((float64(x) - float64(y))^2), the exact Krum distance of the spec."""
    tmp = np.empty(BLOCK, dtype=np.float64)

    def fill(a: int, b: int, out: np.ndarray) -> None:
        np.copyto(out, x[a:b])
        t = tmp[: b - a]
        np.copyto(t, y[a:b])
        np.subtract(out, t, out=out)
        np.multiply(out, out, out=out)

    return _lane_reduce(x.shape[0], fill)


def median_of(values: Sequence[float]) -> float:
    """Median of floats: middle value, or the float64 mean of the two middle values."""
    s = sorted(values)
    k = len(s)
    if k == 0:
        raise AggregationError("median of no values")
    return s[k // 2] if k % 2 else (s[k // 2 - 1] + s[k // 2]) / 2.0


# ------------------------------------------------------------- per-coordinate passes


def _finish(acc64: np.ndarray, out32: np.ndarray) -> None:
    """Round float64 to float32 (nearest-even) and turn -0.0 into +0.0."""
    np.copyto(out32, acc64, casting="same_kind")
    np.add(out32, np.float32(0.0), out=out32)  # IEEE: -0 + +0 = +0, x + 0 = x otherwise


def check_vectors(vectors: Sequence[np.ndarray]) -> int:
    """Their common length; AggregationError unless they are 1-D float32 of one length."""
    if len(vectors) == 0:
        raise AggregationError("no vectors to aggregate")
    p = vectors[0].shape[0]
    for v in vectors:
        if v.dtype != np.float32 or v.ndim != 1 or v.shape[0] != p:
            raise AggregationError(
                f"vectors must be 1-D float32 of one length ({p}), got {v.dtype} {v.shape}"
            )
    return p


def fedavg(
    vectors: Sequence[np.ndarray], weights: Sequence[float], *, parallel: Parallel = serial
) -> np.ndarray:
    """Weighted mean: sum_i (w_i / W) * x_i in float64, i in the given order, then float32.

    W = sum of the weights left to right (float64). Cache-blocked and in place:
    per block, acc = float64(x_0) * c_0; acc += float64(x_i) * c_i for each i in order.
    `parallel` may split the coordinates; the output bytes do not depend on it.
    """
    p = check_vectors(vectors)
    if len(weights) != len(vectors):
        raise AggregationError(f"{len(vectors)} vectors but {len(weights)} weights")
    total = 0.0
    for w in weights:
        if not (math.isfinite(w) and w >= 0):
            raise AggregationError(f"weights must be finite and >= 0, got {w!r}")
        total += float(w)
    if total <= 0.0:
        raise AggregationError("weights sum to zero")
    coef = [np.float64(float(w) / total) for w in weights]
    out = np.empty(p, dtype=np.float32)
    first, rest = (vectors[0], coef[0]), list(zip(vectors[1:], coef[1:]))

    def kernel(lo: int, hi: int) -> None:
        acc = np.empty(BLOCK, dtype=np.float64)
        tmp = np.empty(BLOCK, dtype=np.float64)
        for a in range(lo, hi, BLOCK):
            b = min(a + BLOCK, hi)
            m = b - a
            ac, t = acc[:m], tmp[:m]
            # Widen with copyto (exact), then multiply in place: measured faster than
            # np.multiply(float32, float64) whose buffered cast goes 8 Ki at a time.
            np.copyto(ac, first[0][a:b])
            np.multiply(ac, first[1], out=ac)
            for v, c in rest:
                np.copyto(t, v[a:b])
                np.multiply(t, c, out=t)
                np.add(ac, t, out=ac)
            _finish(ac, out[a:b])

    parallel(p, kernel)
    return out


def _sorted_columns(vectors: Sequence[np.ndarray], a: int, b: int, buf: np.ndarray) -> np.ndarray:
    """Copy coordinates [a, b) of every vector into buf (n x m) and sort each column."""
    m = b - a
    blk = buf[:, :m]
    for i, v in enumerate(vectors):
        blk[i] = v[a:b]
    blk.sort(axis=0)
    return blk


def _sort_block(n: int) -> int:
    # Keep the n x block float32 sort buffer near 1 MiB whatever n is.
    return max(1024, (1 << 18) // max(n, 1))


def coordinate_median(vectors: Sequence[np.ndarray], *, parallel: Parallel = serial) -> np.ndarray:
    """Per coordinate: the middle value (n odd) or the float64 mean of the two middle ones."""
    p = check_vectors(vectors)
    n = len(vectors)
    out = np.empty(p, dtype=np.float32)
    step = _sort_block(n)

    def kernel(lo: int, hi: int) -> None:
        buf = np.empty((n, step), dtype=np.float32)
        acc = np.empty(step, dtype=np.float64)
        tmp = np.empty(step, dtype=np.float64)
        for a in range(lo, hi, step):
            b = min(a + step, hi)
            m = b - a
            s = _sorted_columns(vectors, a, b, buf)
            if n % 2:
                np.copyto(acc[:m], s[n // 2])
            else:
                np.copyto(acc[:m], s[n // 2 - 1])
                np.copyto(tmp[:m], s[n // 2])
                np.add(acc[:m], tmp[:m], out=acc[:m])
                # exact halving (no underflow from float32 sums)
                np.multiply(acc[:m], 0.5, out=acc[:m])
            _finish(acc[:m], out[a:b])

    parallel(p, kernel)
    return out


def trim_count(n: int, beta: float) -> int:
    """floor(beta * n) computed exactly on the binary64 value of beta."""
    return math.floor(Fraction(beta) * n)


def trimmed_mean(
    vectors: Sequence[np.ndarray], beta: float, *, parallel: Parallel = serial
) -> np.ndarray:
    """Per coordinate: sort, drop t = floor(beta*n) at each end, float64 mean of the rest.

    The kept values are summed in ascending order (sequential float64), then divided
    by n - 2t.
    """
    p = check_vectors(vectors)
    n = len(vectors)
    t = trim_count(n, beta)
    keep = n - 2 * t
    if keep < 1:
        raise AggregationError(f"trimmed mean with beta={beta} leaves nothing of {n} values")
    out = np.empty(p, dtype=np.float32)
    step = _sort_block(n)
    div = np.float64(keep)

    def kernel(lo: int, hi: int) -> None:
        buf = np.empty((n, step), dtype=np.float32)
        acc = np.empty(step, dtype=np.float64)
        tmp = np.empty(step, dtype=np.float64)
        for a in range(lo, hi, step):
            b = min(a + step, hi)
            m = b - a
            s = _sorted_columns(vectors, a, b, buf)
            ac, tm = acc[:m], tmp[:m]
            np.copyto(ac, s[t])
            for r in range(t + 1, n - t):
                np.copyto(tm, s[r])
                np.add(ac, tm, out=ac)
            np.divide(ac, div, out=ac)
            _finish(ac, out[a:b])

    parallel(p, kernel)
    return out


def clip_norm(
    vectors: Sequence[np.ndarray],
    max_norm: float,
    norms: Sequence[float] | None = None,
    *,
    parallel: Parallel = serial,
) -> list[np.ndarray]:
    """Scale every vector with norm > max_norm by s = max_norm / norm (float64), round to float32.

    Vectors within the bound are returned as they are (same object).
    """
    if not (math.isfinite(max_norm) and max_norm >= 0):
        raise AggregationError(f"max_norm must be finite and >= 0, got {max_norm!r}")
    if norms is None:
        norms = [norm(v) for v in vectors]
    out: list[np.ndarray] = []
    for v, nv in zip(vectors, norms):
        if nv <= max_norm:
            out.append(v)
            continue
        out.append(_scaled(v, np.float64(max_norm / nv), parallel))
    return out


def _scaled(v: np.ndarray, s: np.float64, parallel: Parallel) -> np.ndarray:
    """finish(float64(v) * s), elementwise."""
    c = np.empty_like(v)

    def kernel(lo: int, hi: int) -> None:
        tmp = np.empty(BLOCK, dtype=np.float64)
        for a in range(lo, hi, BLOCK):
            b = min(a + BLOCK, hi)
            t = tmp[: b - a]
            np.copyto(t, v[a:b])
            np.multiply(t, s, out=t)
            _finish(t, c[a:b])

    parallel(v.shape[0], kernel)
    return c


# ----------------------------------------------------------------------- Krum


def _gram_screen(vectors: Sequence[np.ndarray], sq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Approximate distance matrix via a float64 Gram (BLAS) and its error bound E.

    |D_approx - D_exact| <= E_ij = SAFETY * gamma_(P+3) * (n_i + n_j): products of
    float32 values are exact in float64, any summation order of P terms errs by at
    most gamma_(P-1) * sum|x_k y_k| <= gamma * (n_i + n_j) / 2, the norms and the
    exact distances by gamma * n and gamma * 2(n_i + n_j) (spec "Krum").
    """
    n = len(vectors)
    p = vectors[0].shape[0]
    g = np.zeros((n, n), dtype=np.float64)
    step = max(1024, (1 << 22) // max(n, 1))  # ~32 MiB of float64 per Gram block
    xb = np.empty((n, step), dtype=np.float64)
    for a in range(0, p, step):
        b = min(a + step, p)
        blk = xb[:, : b - a]
        for i, v in enumerate(vectors):
            blk[i] = v[a:b]
        g += blk @ blk.T
    d = sq[:, None] + sq[None, :] - 2.0 * g
    gamma = (p + 3) * _U64 / (1.0 - (p + 3) * _U64)
    e = KRUM_SCREEN_SAFETY * gamma * (sq[:, None] + sq[None, :])
    return d, e


def _exact_row(
    vectors: Sequence[np.ndarray], i: int, row: np.ndarray, known: np.ndarray
) -> np.ndarray:
    """Row i of the exact distance matrix; entries already exact (`known`) are kept."""
    out = row.copy()
    for j in range(len(vectors)):
        if not known[j]:
            out[j] = squared_distance(vectors[i], vectors[j])
    return out


def krum_select(
    vectors: Sequence[np.ndarray],
    f: int,
    m: int,
    *,
    screen: bool = True,
) -> tuple[int, ...]:
    """Indices (ascending) of the m vectors with the lowest Krum scores.

    score_i = sum of the k = n - f - 2 smallest exact squared distances D[i, j], j != i,
    taken in ascending (D, j) order and summed left to right in float64. Selection
    ranks by (score, index). Requires n >= 2f + 3 and 1 <= m <= n.

    With `screen=True` the ranking comes from a BLAS Gram matrix with a proven error
    bound; every comparison the bound cannot settle is redone with exact rows, so the
    result equals `screen=False` (all exact, O(n^2 P)) on every machine. The n x n
    bookkeeping is whole-matrix numpy (no Python loop over pairs).
    """
    check_vectors(vectors)
    n = len(vectors)
    if f < 0 or n < 2 * f + 3:
        raise AggregationError(
            f"krum with f={f} needs at least 2f+3 = {2 * f + 3} vectors, got {n}"
        )
    if not 1 <= m <= n:
        raise AggregationError(f"multikrum m={m} must be in [1, {n}]")
    k = n - f - 2
    sq = np.array([squared_norm(v) for v in vectors])
    if screen:
        d_approx, e = _gram_screen(vectors, sq)
        lo = np.maximum(d_approx - e, 0.0)
        hi = d_approx + e
        exact = np.eye(n, dtype=bool)
    else:
        lo = np.zeros((n, n))
        hi = np.zeros((n, n))
        exact = np.ones((n, n), dtype=bool)
        for i in range(n):
            for j in range(i + 1, n):
                lo[i, j] = lo[j, i] = hi[i, j] = hi[j, i] = squared_distance(vectors[i], vectors[j])
    np.fill_diagonal(lo, 0.0)
    np.fill_diagonal(hi, 0.0)
    # Score intervals: a sum of k terms in float64 is within k*u*sum of the exact sum.
    widen = 4.0 * (k + 1) * _U64
    index = np.arange(n)
    columns = np.broadcast_to(index, (n, n))

    while True:
        row_exact = np.asarray(exact.all(axis=1))
        # Each row's others in ascending (D, j) order (the midpoint of D's interval
        # where D is not exact yet); the diagonal sorts last.
        key = np.where(row_exact[:, None], lo, (lo + hi) / 2.0)
        np.fill_diagonal(key, np.inf)
        order = np.lexsort((columns, key), axis=1)
        near, far = order[:, :k], order[:, k : n - 1]
        lo_near = np.take_along_axis(lo, near, axis=1)
        hi_near = np.take_along_axis(hi, near, axis=1)
        lo_far = np.take_along_axis(lo, far, axis=1)
        # Not settled by the bound: some neighbour could be farther than a non-neighbour.
        unsettled = ~row_exact & (hi_near.max(axis=1) >= lo_far.min(axis=1))
        need = set(index[unsettled].tolist())
        if not need:
            # Exact rows: left to right in (D, j) order, the spec's order (accumulate
            # is sequential). Others: an interval around any-order sums.
            exact_score = np.add.accumulate(lo_near, axis=1)[:, -1]
            s_lo = np.where(row_exact, exact_score, lo_near.sum(axis=1) * (1.0 - widen))
            s_hi = np.where(row_exact, exact_score, hi_near.sum(axis=1) * (1.0 + widen))
            ranked = np.lexsort((index, (s_lo + s_hi) / 2.0))
            chosen, rest = ranked[:m], ranked[m:]
            # Each chosen a must rank before each rest b: by the intervals, or exactly
            # by (score, index) when both rows are exact.
            ca, rb = chosen[:, None], rest[None, :]
            before = (s_lo[ca] < s_lo[rb]) | ((s_lo[ca] == s_lo[rb]) & (ca < rb))
            settled = (s_hi[ca] < s_lo[rb]) | (row_exact[ca] & row_exact[rb] & before)
            need.update(chosen[~settled.all(axis=1) & ~row_exact[chosen]].tolist())
            need.update(rest[~settled.all(axis=0) & ~row_exact[rest]].tolist())
            if not need:
                return tuple(sorted(chosen.tolist()))
        for i in sorted(need):
            row = _exact_row(vectors, i, lo[i], exact[i])
            lo[i, :] = hi[i, :] = row
            lo[:, i] = hi[:, i] = row
            exact[i, :] = True
            exact[:, i] = True
