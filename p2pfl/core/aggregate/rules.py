"""The built-in aggregation rules: FedAvg, coordinate median, trimmed mean, Krum, Multi-Krum.

Each is a `registry.Rule` with its own frozen options (the manifest keys that apply to
it) and a `combine` built from the deterministic kernels; each is registered once at
the bottom. Definitions and constants: `protocol/spec/aggregation.md`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from p2pfl.core.aggregate.kernels import (
    Parallel,
    coordinate_median,
    fedavg,
    krum_select,
    trim_count,
    trimmed_mean,
)
from p2pfl.core.aggregate.registry import (
    Combined,
    Rule,
    RuleOptions,
    Weighting,
    normalised,
    register,
)
from p2pfl.core.aggregate.spec import REASON_KRUM, format_number, int_option, real_option
from p2pfl.errors import ConfigError

# The customary trimmed-mean beta: tolerates 20% outliers on each side.
DEFAULT_TRIM_FRACTION = 0.2

_WHERE = "aggregation"


def _check_samples_cap(cap: object) -> None:
    if cap is not None and not (isinstance(cap, float) and math.isfinite(cap) and cap >= 1):
        raise ConfigError(f"samples_cap must be a float >= 1, got {cap!r}")


def _check_byzantine_f(rule: str, f: object) -> None:
    if isinstance(f, bool) or not isinstance(f, int) or f < 0:
        raise ConfigError(f"{rule} needs byzantine_f, an integer >= 0, got {f!r}")


def _optional_real(d: Mapping[str, Any], key: str) -> float | None:
    return None if d.get(key) is None else real_option(d, key, _WHERE)


def _optional_int(d: Mapping[str, Any], key: str) -> int | None:
    return None if d.get(key) is None else int_option(d, key, _WHERE)


# ---------------------------------------------------------------------------- FedAvg


@dataclass(frozen=True)
class FedAvgOptions(RuleOptions):
    """samples_cap: weight_i = min(n_i, samples_cap x median n); None: raw n_samples."""

    samples_cap: float | None = None

    def __post_init__(self) -> None:
        _check_samples_cap(self.samples_cap)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FedAvgOptions:
        return cls(samples_cap=_optional_real(d, "samples_cap"))


class FedAvg(Rule):
    """Sample-weighted mean (weights capped, divided for struck authors)."""

    name = "fedavg"
    options_type = FedAvgOptions

    def label(self, options: FedAvgOptions) -> str:
        if options.samples_cap is None:
            return "fedavg"
        return f"fedavg(cap={format_number(options.samples_cap)})"

    def combine(
        self,
        vectors: Sequence[np.ndarray],
        weighting: Weighting,
        options: FedAvgOptions,
        parallel: Parallel,
    ) -> Combined:
        w = weighting.weights(options.samples_cap)
        delta = fedavg(vectors, w, parallel=parallel)
        return Combined(delta, tuple(range(len(vectors))), normalised(w))


# --------------------------------------------------------------------------- median


@dataclass(frozen=True)
class MedianOptions(RuleOptions):
    """The coordinate median takes no options."""


class Median(Rule):
    """Per-coordinate median; every survivor counts 1/n."""

    name = "median"
    options_type = MedianOptions

    def combine(
        self,
        vectors: Sequence[np.ndarray],
        weighting: Weighting,
        options: MedianOptions,
        parallel: Parallel,
    ) -> Combined:
        n = len(vectors)
        delta = coordinate_median(vectors, parallel=parallel)
        return Combined(delta, tuple(range(n)), (1.0 / n,) * n)


# ---------------------------------------------------------------------- trimmed mean


@dataclass(frozen=True)
class TrimmedMeanOptions(RuleOptions):
    """trim_fraction: drop floor(beta * n) values at each end of every coordinate."""

    trim_fraction: float = DEFAULT_TRIM_FRACTION

    def __post_init__(self) -> None:
        b = self.trim_fraction
        if not (isinstance(b, float) and 0.0 <= b < 0.5):
            raise ConfigError(f"trim_fraction must be a float in [0, 0.5), got {b!r}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrimmedMeanOptions:
        beta = _optional_real(d, "trim_fraction")
        return cls(trim_fraction=DEFAULT_TRIM_FRACTION if beta is None else beta)


class TrimmedMean(Rule):
    """Per-coordinate trimmed mean; every survivor counts 1/n."""

    name = "trimmed_mean"
    options_type = TrimmedMeanOptions

    def label(self, options: TrimmedMeanOptions) -> str:
        return f"trimmed_mean({format_number(options.trim_fraction)})"

    def too_few(self, n: int, options: TrimmedMeanOptions) -> str | None:
        if n - 2 * trim_count(n, options.trim_fraction) < 1:
            return f"trimmed mean keeps nothing of {n}"
        return None

    def combine(
        self,
        vectors: Sequence[np.ndarray],
        weighting: Weighting,
        options: TrimmedMeanOptions,
        parallel: Parallel,
    ) -> Combined:
        n = len(vectors)
        delta = trimmed_mean(vectors, options.trim_fraction, parallel=parallel)
        return Combined(delta, tuple(range(n)), (1.0 / n,) * n)


# ------------------------------------------------------------------------------ Krum


@dataclass(frozen=True)
class KrumOptions(RuleOptions):
    """byzantine_f: the tolerated number of Byzantine inputs (required)."""

    byzantine_f: int

    def __post_init__(self) -> None:
        _check_byzantine_f("krum", self.byzantine_f)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> KrumOptions:
        f = _optional_int(d, "byzantine_f")
        _check_byzantine_f("krum", f)
        return cls(byzantine_f=f)  # type: ignore[arg-type]


def _krum_too_few(rule: str, n: int, f: int) -> str | None:
    if n < 2 * f + 3:
        return f"{rule} with f={f} needs {2 * f + 3} contributions, {n} survived the filter"
    return None


def _left_out(n: int, used: Sequence[int]) -> tuple[tuple[int, str], ...]:
    chosen = set(used)
    return tuple((j, REASON_KRUM) for j in range(n) if j not in chosen)


class Krum(Rule):
    """The one input with the lowest Krum score, as it is."""

    name = "krum"
    options_type = KrumOptions

    def label(self, options: KrumOptions) -> str:
        return f"krum(f={options.byzantine_f})"

    def too_few(self, n: int, options: KrumOptions) -> str | None:
        return _krum_too_few(self.name, n, options.byzantine_f)

    def combine(
        self,
        vectors: Sequence[np.ndarray],
        weighting: Weighting,
        options: KrumOptions,
        parallel: Parallel,
    ) -> Combined:
        used = krum_select(vectors, options.byzantine_f, 1)
        w = [1.0]
        delta = fedavg([vectors[j] for j in used], w, parallel=parallel)
        return Combined(delta, used, normalised(w), _left_out(len(vectors), used))


@dataclass(frozen=True, kw_only=True)
class MultiKrumOptions(RuleOptions):
    """samples_cap as FedAvg's; byzantine_f as Krum's (required); multikrum_m: how many
    inputs to select (None: n - f)."""

    samples_cap: float | None = None
    byzantine_f: int
    multikrum_m: int | None = None

    def __post_init__(self) -> None:
        _check_samples_cap(self.samples_cap)
        _check_byzantine_f("multikrum", self.byzantine_f)
        m = self.multikrum_m
        if m is not None and (isinstance(m, bool) or not isinstance(m, int) or m < 1):
            raise ConfigError(f"multikrum_m must be an integer >= 1 or null, got {m!r}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MultiKrumOptions:
        f = _optional_int(d, "byzantine_f")
        _check_byzantine_f("multikrum", f)
        return cls(
            samples_cap=_optional_real(d, "samples_cap"),
            byzantine_f=f,  # type: ignore[arg-type]
            multikrum_m=_optional_int(d, "multikrum_m"),
        )


class MultiKrum(Rule):
    """The m inputs with the lowest Krum scores, sample-weighted as FedAvg weights them."""

    name = "multikrum"
    options_type = MultiKrumOptions

    def label(self, options: MultiKrumOptions) -> str:
        args = [f"f={options.byzantine_f}"]
        if options.multikrum_m is not None:
            args.append(f"m={options.multikrum_m}")
        if options.samples_cap is not None:
            args.append(f"cap={format_number(options.samples_cap)}")
        return f"multikrum({','.join(args)})"

    def _m(self, n: int, options: MultiKrumOptions) -> int:
        return n - options.byzantine_f if options.multikrum_m is None else options.multikrum_m

    def too_few(self, n: int, options: MultiKrumOptions) -> str | None:
        why = _krum_too_few(self.name, n, options.byzantine_f)
        m = self._m(n, options)
        if why is None and m > n:
            why = f"multikrum_m={m} but only {n} contributions survived the filter"
        return why

    def combine(
        self,
        vectors: Sequence[np.ndarray],
        weighting: Weighting,
        options: MultiKrumOptions,
        parallel: Parallel,
    ) -> Combined:
        used = krum_select(vectors, options.byzantine_f, self._m(len(vectors), options))
        w = weighting.weights(options.samples_cap, used)
        delta = fedavg([vectors[j] for j in used], w, parallel=parallel)
        return Combined(delta, used, normalised(w), _left_out(len(vectors), used))


for _rule in (FedAvg(), Median(), TrimmedMean(), Krum(), MultiKrum()):
    register(_rule)
