"""Aggregation rules: filter, clip and combine model deltas, bit for bit on every machine.

Every committee member recomputes the aggregate and votes on its content hash, so
each rule is a pure function whose output bytes depend only on the *set* of inputs:

- contributions are sorted by peer address first, so arrival order cannot matter;
- sums run in float64 in a fixed order, with elementwise numpy ufuncs only
  (`add`, `multiply`, `subtract` with `out=`), which round per IEEE-754 on every CPU;
  BLAS (saxpy/gemv/gemm) is never used for a value that reaches the output, because
  its FMA/non-FMA code paths differ in the last bit between CPUs;
- reductions over a vector (norms, dot products) use `det_sum`: 4096 lanes summed
  row by row, then the lanes folded in halves -- one order, written down;
- Krum's distance matrix is *screened* with a float64 Gram matrix (BLAS, fast) and a
  proven error bound; any decision the bound cannot settle is recomputed exactly;
- the float64 result is rounded to float32 (round-to-nearest-even) and -0.0 is
  canonicalised to +0.0 (sorting may place either zero in the middle).

Per-coordinate passes (FedAvg, clipping, median, trimmed mean) split the coordinates
into disjoint contiguous ranges and run them on a small module-level thread pool
(numpy ufuncs release the GIL). Each output element is computed by the same
operations whichever thread computes it, so the bytes do not depend on the thread
count. `det_sum` reductions stay single-threaded in their one written-down order.

The full definitions, constants and the default pipeline's rationale are in
`protocol/spec/aggregation.md`; `protocol/vectors/aggregation.json` pins outputs.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import os
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from p2pfl.errors import AggregationError, ConfigError

# Elements per block of every blocked loop. 32 Ki float64 = 256 KiB per buffer: the
# accumulator and the scratch buffer stay in L2 (measured fastest of 8K..128K here).
# Changing it does not change any output bit (blocking never reorders a sum).
BLOCK = 32768

# Most threads a per-coordinate pass uses (further capped by the CPUs this process may
# run on). One thread is bound by its own L2 bandwidth (FedAvg's widen/multiply/add
# passes), so more cores help until the shared memory bus is the limit, a few cores on
# a laptop; and a committee member should leave cores to everything else.
MAX_THREADS = 4

# Fewest coordinates per thread before a pass is split. A pool hand-off costs tens of
# microseconds; FedAvg spends ~0.5 ms per input vector on 512 Ki coordinates, so only
# large models split, and small vectors (every test vector) stay on the caller.
PARALLEL_MIN_PER_THREAD = 1 << 19

# Ranges per thread in a split pass, handed out in turn: on a loaded machine a thread
# that loses its core takes fewer ranges instead of holding up the pass. 8 keeps each
# range >= 64 Ki coordinates (many blocks) at the smallest split size.
SHARES_PER_THREAD = 8

# Lanes of `det_sum`. Part of the protocol: a different lane count gives different
# last bits. 4096 keeps the per-lane running sums short (P/4096 terms) and the
# row-by-row numpy calls few (one per 32 KiB row).
LANES = 4096

# Reference for the validation filter's cosine test, when `reference="trimmed_mean"`.
REFERENCE_TRIM_FRACTION = 0.2

# Most passes of the cosine test. Each pass recomputes the reference over the survivors
# of the previous one, so once a pass has removed sign-flipped updates (which pull a
# median towards zero along their directions) the next reference is cleaner and can
# expose the rest. Measured on non-IID Fashion-MNIST with 30% sign flippers (sim/
# ROBUSTNESS.md): the second pass rejects 60% instead of 45% of them; a clean run is
# unchanged. More passes than 3 changed nothing there; the bound keeps the cost fixed.
COSINE_PASSES = 3

# Safety factor on the proven bound |screened D - exact D| <= ~5 * gamma_(P+3) * (n_i + n_j)
# (see spec "Krum"): 8 leaves room for the bound's own rounding.
KRUM_SCREEN_SAFETY = 8.0

# Unit roundoff of IEEE binary64 (round-to-nearest).
_U64 = 2.0**-53

PEER_BYTES = 20  # an Ethereum address

RULE_NAMES = ("fedavg", "median", "trimmed_mean", "krum", "multikrum")
REFERENCE_NAMES = ("median", "trimmed_mean")

# Rejection reasons (stable strings: they go into proposals and drive reputation).
REASON_WRONG_SIZE = "wrong-size"
REASON_NON_FINITE = "non-finite"
REASON_BAD_SAMPLES = "bad-n-samples"
REASON_ZERO = "zero-update"
REASON_DUPLICATE = "duplicate"
REASON_NORM = "norm-too-large"
REASON_COSINE = "low-cosine"
REASON_KRUM = "krum-not-selected"
REASON_BAD_TENSORS = "bad-tensors"  # the delta blob does not decode (set by the caller)
REASON_PROBATION = "probation"  # passed the filter, but its author is on probation
# An author with strike points below probation counts for 1 / 4**points of its weight: a
# second chance, but a small one (measured: label flip -2.1 -> -1.7 points vs leaving the
# weight alone, clean runs unchanged; sim/ROBUSTNESS.md). A power of two, so the scaled
# weight is exact.
STRUCK_WEIGHT_DIVISOR = 4

# Strikes (see ProbationSpec). A *sure* offence is one no honest node commits: a free ride
# or a malformed update. A *statistical* one is a judgement against the crowd, which an
# honest peer with unusual data can fail now and then. Duplicates are neither: the filter
# cannot tell an author from its copier, and krum-not-selected rejects honest updates by
# design.
SURE_OFFENCES = frozenset(
    {REASON_WRONG_SIZE, REASON_NON_FINITE, REASON_BAD_SAMPLES, REASON_ZERO, REASON_BAD_TENSORS}
)
STATISTICAL_OFFENCES = frozenset({REASON_NORM, REASON_COSINE})
STRIKE_REASONS = SURE_OFFENCES | STATISTICAL_OFFENCES


class NothingToAggregate(AggregationError):
    """Every contribution was rejected (or too few remain for the rule).

    `rejected` carries the per-peer reasons so the round can still record them.
    """

    def __init__(self, message: str, rejected: tuple[tuple[bytes, str], ...]) -> None:
        self.rejected = rejected
        super().__init__(message)


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True, eq=False)  # arrays make == ambiguous
class Contribution:
    """One participant's update: who sent it, how many samples it claims, the delta."""

    peer: bytes
    n_samples: int
    delta: np.ndarray

    def __post_init__(self) -> None:
        if not isinstance(self.peer, bytes) or len(self.peer) != PEER_BYTES:
            raise AggregationError(
                f"peer must be a {PEER_BYTES}-byte address, got {self.peer!r:.60}"
            )
        if isinstance(self.n_samples, bool) or not isinstance(self.n_samples, int):
            raise AggregationError(f"n_samples must be an int, got {type(self.n_samples).__name__}")
        d = self.delta
        if not isinstance(d, np.ndarray) or d.ndim != 1 or d.dtype != np.float32:
            raise AggregationError(
                "delta must be a 1-D float32 numpy array (flatten the tensors first), "
                f"got {getattr(d, 'dtype', type(d).__name__)} with shape {getattr(d, 'shape', '?')}"
            )


# ----------------------------------------------------------------------- rule specs


def _num(x: float) -> str:
    """Shortest round-trip text of a float, without a trailing '.0' (3.0 -> '3')."""
    s = repr(float(x))
    return s.removesuffix(".0")


def _real(d: Mapping[str, Any], key: str, where: str) -> float:
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ConfigError(f"{where}.{key} must be a finite number, got {v!r}")
    return float(v)


def _int(d: Mapping[str, Any], key: str, where: str) -> int:
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, int):
        raise ConfigError(f"{where}.{key} must be an integer, got {v!r}")
    return v


def _check_keys(d: Any, allowed: set[str], where: str) -> None:
    if not isinstance(d, Mapping):
        raise ConfigError(f"{where} must be a mapping, got {type(d).__name__}")
    unknown = sorted(set(d) - allowed)
    if unknown:
        raise ConfigError(
            f"{where}: unknown or inapplicable key(s) {unknown}; allowed: {sorted(allowed)}"
        )


@dataclass(frozen=True)
class FilterSpec:
    """Validation filter: reject updates far from the crowd before aggregating.

    norm_factor: reject norm > norm_factor x median norm.
    min_cosine:  reject cosine(delta, reference) < min_cosine (None: no cosine test).
    reference:   robust reference direction, "median" or "trimmed_mean".
    Zero deltas are always rejected by the filter (free riding), and of equal deltas
    only one stays (see validation_filter).
    """

    norm_factor: float = 3.0
    min_cosine: float | None = 0.0
    reference: str = "median"

    def __post_init__(self) -> None:
        if not (
            isinstance(self.norm_factor, float)
            and math.isfinite(self.norm_factor)
            and self.norm_factor >= 1.0
        ):
            raise ConfigError(f"filter.norm_factor must be a float >= 1, got {self.norm_factor!r}")
        if self.min_cosine is not None and not (
            isinstance(self.min_cosine, float) and -1.0 <= self.min_cosine <= 1.0
        ):
            raise ConfigError(
                f"filter.min_cosine must be a float in [-1, 1] or null, got {self.min_cosine!r}"
            )
        if self.reference not in REFERENCE_NAMES:
            raise ConfigError(
                f"filter.reference must be one of {REFERENCE_NAMES}, got {self.reference!r}"
            )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FilterSpec:
        """Strict parse: unknown keys and bad values raise ConfigError."""
        _check_keys(d, {"norm_factor", "min_cosine", "reference"}, "filter")
        kw: dict[str, Any] = {}
        if "norm_factor" in d:
            kw["norm_factor"] = _real(d, "norm_factor", "filter")
        if "min_cosine" in d:
            kw["min_cosine"] = None if d["min_cosine"] is None else _real(d, "min_cosine", "filter")
        if "reference" in d:
            kw["reference"] = d["reference"]
        return cls(**kw)

    def to_dict(self) -> dict[str, Any]:
        return {
            "norm_factor": self.norm_factor,
            "min_cosine": self.min_cosine,
            "reference": self.reference,
        }

    @property
    def name(self) -> str:
        cos = "off" if self.min_cosine is None else _num(self.min_cosine)
        return f"filter({_num(self.norm_factor)},{cos},{self.reference})"


@dataclass(frozen=True)
class ProbationSpec:
    """Leave out updates of authors whose recent updates failed the checks.

    window:  how many of the previous rounds count (their committed proposals).
    strikes: points within the window that put an author on probation. A round where the
             author's update failed a statistical check (low-cosine, norm-too-large) is 1
             point; a sure offence (zero-update, malformed) is `strikes` points at once.
    An author on probation still sends updates and they still go through the filter (so
    its record clears once the failures leave the window); those that pass are rejected
    with reason "probation" instead of being aggregated. An author with fewer points
    counts for 1 / STRUCK_WEIGHT_DIVISOR**points of its sample weight. Why: a sign-flipped
    update fails the cosine test in most rounds but not all (non-IID honest peers disagree
    too), and the rounds it slips through cost most of the accuracy; history tells a
    persistent attacker from an honest peer's occasional miss (spec "Probation").
    """

    window: int = 10
    strikes: int = 2

    def __post_init__(self) -> None:
        for key in ("window", "strikes"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"probation.{key} must be an integer >= 1, got {v!r}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ProbationSpec:
        """Strict parse: unknown keys and bad values raise ConfigError."""
        _check_keys(d, {"window", "strikes"}, "probation")
        return cls(**{k: _int(d, k, "probation") for k in ("window", "strikes") if k in d})

    def to_dict(self) -> dict[str, Any]:
        return {"window": self.window, "strikes": self.strikes}

    @property
    def name(self) -> str:
        return f"probation({self.window},{self.strikes})"

    def points(self, reason: str) -> int:
        """Strike points of one rejection reason."""
        if reason in SURE_OFFENCES:
            return self.strikes
        return 1 if reason in STATISTICAL_OFFENCES else 0

    def record(self, round_: int, history: Mapping[int, Mapping[bytes, int]]) -> dict[bytes, int]:
        """Each author's points over the window before `round_`, from `history`: round ->
        {author: points} of the committed rounds (a round missing from it counts nothing).
        Authors with no points are left out. This is `aggregate`'s `record` argument."""
        total: dict[bytes, int] = {}
        for r in self.rounds(round_):
            for author, pts in history.get(r, {}).items():
                total[author] = total.get(author, 0) + pts
        return {a: pts for a, pts in sorted(total.items()) if pts}

    def rounds(self, round_: int) -> range:
        """The committed rounds whose strikes count for `round_`: its window."""
        return range(max(1, round_ - self.window), round_)

    def on_probation(self, record: Mapping[bytes, int]) -> frozenset[bytes]:
        """The authors of `record` (see `record`) with enough points for probation."""
        return frozenset(a for a, pts in record.items() if pts >= self.strikes)


def struck_authors(rejected: Sequence[tuple[bytes, str]]) -> list[bytes]:
    """The authors of a round's rejections that are strikes (the reward tree's REJECTED
    leaves): the update failed a check. Duplicates, probation and the leader's own
    rejections (equivocation, unavailable) are not."""
    return [author for author, why in rejected if why in STRIKE_REASONS]


def strike_points(rejected: Sequence[tuple[bytes, str]], spec: ProbationSpec) -> dict[bytes, int]:
    """{author: points} of one round's rejections (authors with no points left out)."""
    points = {author: spec.points(why) for author, why in rejected}
    return {a: p for a, p in points.items() if p}


@dataclass(frozen=True)
class RuleSpec:
    """The aggregation pipeline as data: filter -> clip -> rule.

    clip_norm:     None, a positive float (absolute L2 bound), or "median" (clip every
                   accepted delta to the median norm of the accepted deltas).
    rule:          one of RULE_NAMES.
    samples_cap:   fedavg/multikrum only: weight_i = min(n_i, samples_cap x median n);
                   None means raw n_samples (classic FedAvg).
    trim_fraction: trimmed_mean only: drop floor(beta * n) values at each end.
    byzantine_f:   krum/multikrum only: tolerated number of Byzantine inputs.
    multikrum_m:   multikrum only: how many to select (None: n - f).
    probation:     None, or which authors to leave out for their record (ProbationSpec).
    """

    filter: FilterSpec | None = None
    clip_norm: float | str | None = None
    rule: str = "fedavg"
    samples_cap: float | None = None
    trim_fraction: float | None = None
    byzantine_f: int | None = None
    multikrum_m: int | None = None
    probation: ProbationSpec | None = None

    def __post_init__(self) -> None:
        if self.filter is not None and not isinstance(self.filter, FilterSpec):
            raise ConfigError("filter must be a FilterSpec or None")
        if self.probation is not None and not isinstance(self.probation, ProbationSpec):
            raise ConfigError("probation must be a ProbationSpec or None")
        c = self.clip_norm
        if (
            c is not None
            and c != "median"
            and not (isinstance(c, float) and math.isfinite(c) and c > 0)
        ):
            raise ConfigError(f'clip_norm must be null, "median" or a positive float, got {c!r}')
        if self.rule not in RULE_NAMES:
            raise ConfigError(f"rule must be one of {RULE_NAMES}, got {self.rule!r}")
        weighted = self.rule in ("fedavg", "multikrum")
        if self.samples_cap is not None:
            if not weighted:
                raise ConfigError(f"samples_cap applies to fedavg/multikrum, not {self.rule}")
            if not (
                isinstance(self.samples_cap, float)
                and math.isfinite(self.samples_cap)
                and self.samples_cap >= 1
            ):
                raise ConfigError(f"samples_cap must be a float >= 1, got {self.samples_cap!r}")
        if self.rule == "trimmed_mean":
            b = self.trim_fraction
            if not (isinstance(b, float) and 0.0 <= b < 0.5):
                raise ConfigError(f"trim_fraction must be a float in [0, 0.5), got {b!r}")
        elif self.trim_fraction is not None:
            raise ConfigError(f"trim_fraction applies to trimmed_mean, not {self.rule}")
        if self.rule in ("krum", "multikrum"):
            f = self.byzantine_f
            if isinstance(f, bool) or not isinstance(f, int) or f < 0:
                raise ConfigError(f"{self.rule} needs byzantine_f, an integer >= 0, got {f!r}")
        elif self.byzantine_f is not None:
            raise ConfigError(f"byzantine_f applies to krum/multikrum, not {self.rule}")
        if self.rule == "multikrum":
            m = self.multikrum_m
            if m is not None and (isinstance(m, bool) or not isinstance(m, int) or m < 1):
                raise ConfigError(f"multikrum_m must be an integer >= 1 or null, got {m!r}")
        elif self.multikrum_m is not None:
            raise ConfigError(f"multikrum_m applies to multikrum, not {self.rule}")

    @classmethod
    def default(cls) -> RuleSpec:
        """Robust default: filter(3, 0, median) + clip(median) + FedAvg, n_samples capped at
        2x, probation(10, 2).

        Why (spec "Default pipeline"): the norm bound and clipping neutralise scaling
        and noise, the cosine test rejects sign flips, zero/duplicate checks catch free
        riders, the cap bounds inflated n_samples; averaging keeps honest non-IID
        information that median/Krum discard; probation keeps out the attackers' updates
        in the rounds where they slip through the filter.
        """
        return cls(
            filter=FilterSpec(norm_factor=3.0, min_cosine=0.0, reference="median"),
            clip_norm="median",
            rule="fedavg",
            samples_cap=2.0,
            probation=ProbationSpec(window=10, strikes=2),
        )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RuleSpec:
        """Strict parse of a manifest's `aggregation` entry (ConfigError on any problem)."""
        allowed = {
            "filter",
            "clip_norm",
            "rule",
            "samples_cap",
            "trim_fraction",
            "byzantine_f",
            "multikrum_m",
            "probation",
        }
        _check_keys(d, allowed, "aggregation")
        kw: dict[str, Any] = {}
        if d.get("filter") is not None:
            kw["filter"] = FilterSpec.from_dict(d["filter"])
        if d.get("probation") is not None:
            kw["probation"] = ProbationSpec.from_dict(d["probation"])
        if "clip_norm" in d and d["clip_norm"] is not None:
            kw["clip_norm"] = (
                "median" if d["clip_norm"] == "median" else _real(d, "clip_norm", "aggregation")
            )
        if "rule" in d:
            kw["rule"] = d["rule"]
        for key in ("samples_cap", "trim_fraction"):
            if d.get(key) is not None:
                kw[key] = _real(d, key, "aggregation")
        for key in ("byzantine_f", "multikrum_m"):
            if d.get(key) is not None:
                kw[key] = _int(d, key, "aggregation")
        if kw.get("rule") == "trimmed_mean" and "trim_fraction" not in kw:
            kw["trim_fraction"] = 0.2  # the customary beta: tolerates 20% outliers per side
        return cls(**kw)

    def to_dict(self) -> dict[str, Any]:
        """Canonical dict: the fields that apply to this rule, nothing else."""
        d: dict[str, Any] = {
            "filter": None if self.filter is None else self.filter.to_dict(),
            "clip_norm": self.clip_norm,
            "rule": self.rule,
        }
        if self.rule in ("fedavg", "multikrum"):
            d["samples_cap"] = self.samples_cap
        if self.rule == "trimmed_mean":
            d["trim_fraction"] = self.trim_fraction
        if self.rule in ("krum", "multikrum"):
            d["byzantine_f"] = self.byzantine_f
        if self.rule == "multikrum":
            d["multikrum_m"] = self.multikrum_m
        if self.probation is not None:
            d["probation"] = self.probation.to_dict()
        return d

    @property
    def name(self) -> str:
        """Canonical short name for proposals.

        E.g. 'filter(3,0,median)+clip(median)+fedavg(cap=2)'.
        """
        parts = []
        if self.filter is not None:
            parts.append(self.filter.name)
        if isinstance(self.clip_norm, str):
            parts.append(f"clip({self.clip_norm})")
        elif self.clip_norm is not None:
            parts.append(f"clip({_num(self.clip_norm)})")
        cap = "" if self.samples_cap is None else f"cap={_num(self.samples_cap)}"
        if self.rule == "fedavg":
            parts.append(f"fedavg({cap})" if cap else "fedavg")
        elif self.rule == "median":
            parts.append("median")
        elif self.rule == "trimmed_mean":
            parts.append(f"trimmed_mean({_num(self.trim_fraction or 0.0)})")
        elif self.rule == "krum":
            parts.append(f"krum(f={self.byzantine_f})")
        else:
            args = [f"f={self.byzantine_f}"]
            if self.multikrum_m is not None:
                args.append(f"m={self.multikrum_m}")
            if cap:
                args.append(cap)
            parts.append(f"multikrum({','.join(args)})")
        if self.probation is not None:
            parts.append(self.probation.name)
        return "+".join(parts)


# ----------------------------------------------------------- per-coordinate threads

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _forget_pool() -> None:
    """After fork(): the inherited pool has no threads and the lock may be held."""
    global _pool, _pool_lock
    _pool = None
    _pool_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _get_pool() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            # The calling thread works too, so MAX_THREADS - 1 workers (started lazily).
            _pool = ThreadPoolExecutor(
                max_workers=MAX_THREADS - 1, thread_name_prefix="p2pfl-aggregate"
            )
        return _pool


def _thread_count(p: int, threads: int | None) -> int:
    """Threads for a pass over p coordinates: `threads` if given, else by size and CPUs."""
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise AggregationError(f"threads must be an integer >= 1 or None, got {threads!r}")
        return max(1, min(threads, -(-p // BLOCK)))
    return max(1, min(MAX_THREADS, _usable_cpus(), p // PARALLEL_MIN_PER_THREAD))


def _split(p: int, k: int) -> list[tuple[int, int]]:
    """k disjoint contiguous ranges covering [0, p), boundaries on multiples of BLOCK."""
    blocks = -(-p // BLOCK)
    cuts = [min(p, (blocks * i // k) * BLOCK) for i in range(k + 1)]
    return [(a, b) for a, b in itertools.pairwise(cuts) if a < b]


def _per_range(p: int, kernel: Callable[[int, int], None], threads: int | None) -> None:
    """Run `kernel(lo, hi)` over disjoint ranges covering [0, p), in parallel if worth it.

    `kernel` must compute each coordinate independently of the others (no reduction
    across coordinates), so the result cannot depend on the split. The coordinates are
    cut into SHARES_PER_THREAD ranges per thread that the calling thread and k - 1 pool
    workers take in turn, so a thread slowed by other processes takes fewer of them.
    """
    k = _thread_count(p, threads)
    if k == 1:
        kernel(0, p)
        return
    ranges = iter(_split(p, k * SHARES_PER_THREAD))
    lock = threading.Lock()

    def work() -> None:
        while True:
            with lock:
                r = next(ranges, None)
            if r is None:
                return
            kernel(*r)

    pool = _get_pool()
    futures: list[Future[None]] = [pool.submit(work) for _ in range(k - 1)]
    try:
        work()
    finally:
        for f in futures:  # wait for all (they write into the caller's output) ...
            f.exception()
    for f in futures:  # ... then re-raise the first failure, if any
        f.result()


# ------------------------------------------------------------- deterministic kernels


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


def _median_of(values: Sequence[float]) -> float:
    """Median of floats: middle value, or the float64 mean of the two middle values."""
    s = sorted(values)
    k = len(s)
    if k == 0:
        raise AggregationError("median of no values")
    return s[k // 2] if k % 2 else (s[k // 2 - 1] + s[k // 2]) / 2.0


def _finish(acc64: np.ndarray, out32: np.ndarray) -> None:
    """Round float64 to float32 (nearest-even) and turn -0.0 into +0.0."""
    np.copyto(out32, acc64, casting="same_kind")
    np.add(out32, np.float32(0.0), out=out32)  # IEEE: -0 + +0 = +0, x + 0 = x otherwise


def _check_vectors(vectors: Sequence[np.ndarray]) -> int:
    if len(vectors) == 0:
        raise AggregationError("no vectors to aggregate")
    p = vectors[0].shape[0]
    for v in vectors:
        if v.dtype != np.float32 or v.ndim != 1 or v.shape[0] != p:
            raise AggregationError(
                f"vectors must be 1-D float32 of one length ({p}), got {v.dtype} {v.shape}"
            )
    return p


# --------------------------------------------------------------------------- rules


def fedavg(
    vectors: Sequence[np.ndarray], weights: Sequence[float], *, threads: int | None = None
) -> np.ndarray:
    """Weighted mean: sum_i (w_i / W) * x_i in float64, i in the given order, then float32.

    W = sum of the weights left to right (float64). Cache-blocked and in place:
    per block, acc = float64(x_0) * c_0; acc += float64(x_i) * c_i for each i in order.
    Blocks run on up to `threads` threads (None: by size and CPU count); the output
    bytes do not depend on it.
    """
    p = _check_vectors(vectors)
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

    _per_range(p, kernel, threads)
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


def coordinate_median(
    vectors: Sequence[np.ndarray], *, threads: int | None = None
) -> np.ndarray:
    """Per coordinate: the middle value (n odd) or the float64 mean of the two middle ones."""
    p = _check_vectors(vectors)
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

    _per_range(p, kernel, threads)
    return out


def trim_count(n: int, beta: float) -> int:
    """floor(beta * n) computed exactly on the binary64 value of beta."""
    return math.floor(Fraction(beta) * n)


def trimmed_mean(
    vectors: Sequence[np.ndarray], beta: float, *, threads: int | None = None
) -> np.ndarray:
    """Per coordinate: sort, drop t = floor(beta*n) at each end, float64 mean of the rest.

    The kept values are summed in ascending order (sequential float64), then divided
    by n - 2t.
    """
    p = _check_vectors(vectors)
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

    _per_range(p, kernel, threads)
    return out


def clip_norm(
    vectors: Sequence[np.ndarray],
    max_norm: float,
    norms: Sequence[float] | None = None,
    *,
    threads: int | None = None,
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
        out.append(_scaled(v, np.float64(max_norm / nv), threads))
    return out


def _scaled(v: np.ndarray, s: np.float64, threads: int | None) -> np.ndarray:
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

    _per_range(v.shape[0], kernel, threads)
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


def _exact_row(vectors: Sequence[np.ndarray], i: int) -> np.ndarray:
    return np.array(
        [0.0 if j == i else squared_distance(vectors[i], vectors[j]) for j in range(len(vectors))]
    )


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
    result equals `screen=False` (all exact, O(n^2 P)) on every machine.
    """
    _check_vectors(vectors)
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

    while True:
        s_lo = np.empty(n)
        s_hi = np.empty(n)
        row_exact = [bool(exact[i].all()) for i in range(n)]
        need: set[int] = set()
        for i in range(n):
            others = [j for j in range(n) if j != i]
            if row_exact[i]:
                near = sorted(others, key=lambda j: (lo[i, j], j))[:k]
                s = 0.0
                for j in near:  # ascending (D, j), left to right: the spec's order
                    s += float(lo[i, j])
                s_lo[i] = s_hi[i] = s
                continue
            mid = (lo[i] + hi[i]) / 2.0
            order = sorted(others, key=lambda j: (mid[j], j))
            near, far = order[:k], order[k:]
            if far and max(hi[i, near]) >= min(lo[i, far]):
                need.add(i)  # neighbour set not settled by the bound
                continue
            s_lo[i] = float(np.sum(lo[i, near])) * (1.0 - widen)
            s_hi[i] = float(np.sum(hi[i, near])) * (1.0 + widen)
        if not need:
            mid_s = (s_lo + s_hi) / 2.0
            ranked = sorted(range(n), key=lambda i: (mid_s[i], i))
            chosen, rest = ranked[:m], ranked[m:]
            for a in chosen:
                for b in rest:
                    settled = s_hi[a] < s_lo[b] or (
                        row_exact[a] and row_exact[b] and (s_lo[a], a) < (s_lo[b], b)
                    )
                    if not settled:
                        need.update(x for x in (a, b) if not row_exact[x])
            if not need:
                return tuple(sorted(chosen))
        for i in sorted(need):
            row = _exact_row(vectors, i)
            lo[i, :] = hi[i, :] = row
            lo[:, i] = hi[:, i] = row
            exact[i, :] = True
            exact[:, i] = True


# ------------------------------------------------------------------ the pipeline


@dataclass(frozen=True, eq=False)
class AggregateResult:
    """Output of `aggregate`: the float32 delta and who was in or out, and why.

    weights[i] is accepted[i]'s normalised weight in the final combination (uniform
    1/k for median and trimmed mean, which have no per-peer weights).
    """

    delta: np.ndarray
    accepted: tuple[bytes, ...]
    rejected: tuple[tuple[bytes, str], ...]
    weights: tuple[float, ...]
    rule: str

    @property
    def digest(self) -> str:
        """sha256 hex of the little-endian float32 bytes of `delta`."""
        return hashlib.sha256(self.delta.astype("<f4", copy=False).tobytes()).hexdigest()


@dataclass(frozen=True)
class FilterResult:
    """Indices (into the peer-sorted contributions) kept and rejected with reasons."""

    accepted: tuple[int, ...]
    rejected: tuple[tuple[int, str], ...]
    norms: tuple[float, ...]  # norm of every contribution (nan where not computed)


def _segment_bounds(segments: Sequence[int] | None, size: int) -> list[tuple[int, int]]:
    """[(start, end)] of each tensor in the flat vector; one segment when not given."""
    if not segments:
        return [(0, size)]
    if any(isinstance(n, bool) or not isinstance(n, int) or n <= 0 for n in segments):
        raise AggregationError(f"segments must be positive tensor sizes, got {list(segments)!r}")
    if sum(segments) != size:
        raise AggregationError(f"segments sum to {sum(segments)}, the deltas have {size} values")
    bounds, start = [], 0
    for n in segments:
        bounds.append((start, start + n))
        start += n
    return bounds


def _points_away(
    x: np.ndarray, ref: np.ndarray, bounds: Sequence[tuple[int, int]], ref_norms: Sequence[float],
    min_cosine: float,
) -> bool:
    """True if the tensors holding more than half of the values have cosine < min_cosine.

    A tensor where the delta or the reference is zero gives no direction and does not
    count against the delta.
    """
    away = 0
    for (a, b), rn in zip(bounds, ref_norms):
        if rn == 0.0:
            continue
        xs = x[a:b]
        xn = norm(xs)
        if xn > 0.0 and dot(xs, ref[a:b]) / (xn * rn) < min_cosine:
            away += b - a
    return 2 * away > x.shape[0]


def validation_filter(
    contributions: Sequence[Contribution],
    spec: FilterSpec | None,
    expected_size: int | None = None,
    segments: Sequence[int] | None = None,
    silent: Collection[int] = frozenset(),
) -> FilterResult:
    """Sanity checks (always) then the spec's robust filter, in the spec's fixed order.

    Reason per rejected contribution = the first failed check:
    wrong-size, non-finite, bad-n-samples | zero-update, duplicate (all but one of a
    group of equal deltas), norm-too-large (> norm_factor x median norm of the
    survivors so far), low-cosine (against the median / trimmed mean of the survivors
    of the norm test, recomputed over the survivors for up to COSINE_PASSES passes).

    `silent` (indices of contributions whose authors are on probation) are judged like
    the others but do not shape the judgement: the median norm and the cosine reference
    are taken over the other survivors (over all, if only silent ones survive), so a
    group of attackers on probation cannot move the bar for honest updates.

    `segments` (the tensor sizes of the flat vector, in order) makes the cosine test
    per tensor: a delta is rejected when the tensors holding more than half of its
    values each have cosine < min_cosine with the reference's same tensor. Without it
    the whole vector is one tensor. Why per tensor: with non-IID data honest peers
    disagree mostly in the small class-specific head, whose large per-value steps can
    dominate a whole-vector cosine, while the large feature tensors agree; a sign-flipped
    delta points away in the feature tensors too (sim/ROBUSTNESS.md: 63-70% of flipped
    deltas rejected instead of 60%, clean runs unchanged).
    """
    n = len(contributions)
    norms = [math.nan] * n
    rejected: dict[int, str] = {}
    alive: list[int] = []
    for i, c in enumerate(contributions):
        if expected_size is not None and c.delta.shape[0] != expected_size:
            rejected[i] = REASON_WRONG_SIZE
        elif not np.isfinite(c.delta).all():
            rejected[i] = REASON_NON_FINITE
        elif c.n_samples <= 0:
            rejected[i] = REASON_BAD_SAMPLES
        else:
            alive.append(i)
    if spec is not None:
        survivors = []
        for i in alive:
            norms[i] = norm(contributions[i].delta)
            if norms[i] == 0.0:
                rejected[i] = REASON_ZERO
            else:
                survivors.append(i)
        # Duplicates: equal values (so -0.0 == +0.0); only equal norms can be equal.
        dup: set[int] = set()
        by_norm: dict[float, list[int]] = {}
        for i in survivors:
            by_norm.setdefault(norms[i], []).append(i)
        for group in by_norm.values():
            for x in range(len(group)):
                for y in range(x + 1, len(group)):
                    if np.array_equal(contributions[group[x]].delta, contributions[group[y]].delta):
                        dup.update((group[x], group[y]))
        # One copy of each group of equal deltas stays: the content is honest work or a
        # copy of it, and dropping every copy (the filter cannot tell author from copier)
        # loses the author's data. Which one stays is decided by a hash of the peer and
        # the content, which nobody can aim at before the content exists, so a copier
        # wins the credit by chance (1 in group size), never by choosing its address.
        for group in _equal_groups(contributions, survivors, dup):
            keep = min(group, key=lambda i: _tie_break(contributions[i]))
            for i in group:
                if i != keep:
                    rejected[i] = REASON_DUPLICATE
        alive = [i for i in survivors if i not in rejected]

        def shaping(alive: list[int]) -> list[int]:
            """The survivors that set the bars: all but the silent ones (all if only they are left)."""
            return [i for i in alive if i not in silent] or alive

        if alive:
            bound = spec.norm_factor * _median_of([norms[i] for i in shaping(alive)])
            kept = []
            for i in alive:
                if norms[i] > bound:
                    rejected[i] = REASON_NORM
                else:
                    kept.append(i)
            alive = kept
        for _ in range(COSINE_PASSES if spec.min_cosine is not None else 0):
            if not alive:
                break
            vs = [contributions[i].delta for i in shaping(alive)]
            ref = (
                coordinate_median(vs)
                if spec.reference == "median"
                else trimmed_mean(vs, REFERENCE_TRIM_FRACTION)
            )
            bounds = _segment_bounds(segments, ref.shape[0])
            ref_norms = [norm(ref[a:b]) for a, b in bounds]
            if not any(ref_norms):  # a zero reference gives no direction: skip the test
                break
            kept = []
            for i in alive:
                if _points_away(contributions[i].delta, ref, bounds, ref_norms, spec.min_cosine):
                    rejected[i] = REASON_COSINE
                else:
                    kept.append(i)
            if len(kept) == len(alive):  # nothing left to expose
                break
            alive = kept
    return FilterResult(
        accepted=tuple(alive),
        rejected=tuple(sorted(rejected.items())),
        norms=tuple(norms),
    )


def _equal_groups(
    contributions: Sequence[Contribution], survivors: Sequence[int], dup: set[int]
) -> list[list[int]]:
    """The duplicated survivors grouped by equal value, each group in index order."""
    groups: list[list[int]] = []
    for i in survivors:
        if i not in dup:
            continue
        for g in groups:
            if np.array_equal(contributions[g[0]].delta, contributions[i].delta):
                g.append(i)
                break
        else:
            groups.append([i])
    return groups


def _tie_break(c: Contribution) -> bytes:
    """sha256(peer || float32 bytes of the delta), +0.0 for -0.0: equal deltas hash alike."""
    h = hashlib.sha256(c.peer)
    h.update(np.add(c.delta, np.float32(0.0)).astype("<f4", copy=False).tobytes())
    return h.digest()


def _sample_weights(samples: Sequence[int], cap: float | None) -> list[float]:
    if cap is None:
        return [float(s) for s in samples]
    limit = cap * _median_of([float(s) for s in samples])
    return [min(float(s), limit) for s in samples]


def aggregate(
    spec: RuleSpec,
    contributions: Sequence[Contribution],
    *,
    expected_size: int | None = None,
    segments: Sequence[int] | None = None,
    record: Mapping[bytes, int] | None = None,
) -> AggregateResult:
    """Run the pipeline (sort by peer -> filter -> probation -> clip -> rule) over one
    round's updates.

    The output bytes depend only on the set of contributions, never on their order.
    Malformed peer input (non-finite values, n_samples <= 0, wrong size when
    `expected_size` is given) is rejected with a reason, not raised. `segments`: the
    tensor sizes of the flat vectors, for the filter's per-tensor cosine test.
    `record`: each author's strike points over the probation window (from the committed
    rounds; `spec.probation.record`), used only when `spec.probation` is set: authors with
    enough points are on probation -- their contributions are judged by the filter without
    shaping it and, if they pass, rejected with REASON_PROBATION -- and the others with
    points count for less in fedavg / multikrum weights (STRUCK_WEIGHT_DIVISOR). Raises
    AggregationError for duplicate peers or unequal lengths without
    `expected_size`, and NothingToAggregate when too few contributions survive.
    """
    cs = sorted(contributions, key=lambda c: c.peer)
    for a, b in itertools.pairwise(cs):
        if a.peer == b.peer:
            raise AggregationError(
                f"two contributions from peer 0x{a.peer.hex()}; keep one per peer per round"
            )
    if expected_size is None and len({c.delta.shape[0] for c in cs}) > 1:
        raise AggregationError(
            f"deltas of different lengths {sorted({c.delta.shape[0] for c in cs})}; "
            "pass expected_size to reject the wrong ones"
        )
    record = dict(record or {}) if spec.probation is not None else {}
    probation = spec.probation.on_probation(record) if spec.probation is not None else frozenset()
    silent = frozenset(i for i, c in enumerate(cs) if c.peer in probation)
    fr = validation_filter(cs, spec.filter, expected_size, segments, silent)
    rejected = [(cs[i].peer, r) for i, r in fr.rejected]
    idx = [i for i in fr.accepted if cs[i].peer not in probation]
    rejected += [(cs[i].peer, REASON_PROBATION) for i in fr.accepted if cs[i].peer in probation]

    def nothing(why: str) -> NothingToAggregate:
        return NothingToAggregate(
            f"{spec.name}: {why} ({len(cs)} contributions, {len(rejected)} rejected)",
            tuple(sorted(rejected)),
        )

    if not idx:
        raise nothing("no contribution survived the filter")
    vectors = [cs[i].delta for i in idx]
    samples = [cs[i].n_samples for i in idx]
    divisors = [float(STRUCK_WEIGHT_DIVISOR ** record.get(cs[i].peer, 0)) for i in idx]
    if spec.clip_norm is not None:
        norms = [fr.norms[i] if not math.isnan(fr.norms[i]) else norm(cs[i].delta) for i in idx]
        bound = _median_of(norms) if spec.clip_norm == "median" else float(spec.clip_norm)
        vectors = clip_norm(vectors, bound, norms)

    n = len(vectors)
    if spec.rule == "fedavg":
        w = [x / d for x, d in zip(_sample_weights(samples, spec.samples_cap), divisors)]
        delta = fedavg(vectors, w)
        used = list(range(n))
        total = sum(w)
        weights = [x / total for x in w]
    elif spec.rule in ("median", "trimmed_mean"):
        if spec.rule == "median":
            delta = coordinate_median(vectors)
        else:
            assert spec.trim_fraction is not None
            if n - 2 * trim_count(n, spec.trim_fraction) < 1:
                raise nothing(f"trimmed mean keeps nothing of {n}")
            delta = trimmed_mean(vectors, spec.trim_fraction)
        used = list(range(n))
        weights = [1.0 / n] * n
    else:
        f = spec.byzantine_f
        assert f is not None
        if n < 2 * f + 3:
            raise nothing(
                f"{spec.rule} with f={f} needs {2 * f + 3} contributions, {n} survived the filter"
            )
        m = (
            1
            if spec.rule == "krum"
            else (spec.multikrum_m if spec.multikrum_m is not None else n - f)
        )
        if m > n:
            raise nothing(f"multikrum_m={m} but only {n} contributions survived the filter")
        used = list(krum_select(vectors, f, m))
        for j in range(n):
            if j not in used:
                rejected.append((cs[idx[j]].peer, REASON_KRUM))
        cap = spec.samples_cap if spec.rule == "multikrum" else None
        if spec.rule == "multikrum":
            w = [x / divisors[j] for x, j in zip(_sample_weights([samples[j] for j in used], cap), used)]
        else:
            w = [1.0]
        delta = fedavg([vectors[j] for j in used], w)
        total = sum(w)
        weights = [x / total for x in w]
    return AggregateResult(
        delta=delta,
        accepted=tuple(cs[idx[j]].peer for j in used),
        rejected=tuple(sorted(rejected)),
        weights=tuple(weights),
        rule=spec.name,
    )
