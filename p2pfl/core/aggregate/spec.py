"""The pipeline's vocabulary and configuration: contributions, rejection reasons, specs.

`RuleSpec` is the manifest's `aggregation` table as data: filter -> clip -> rule, plus
probation. The rule part is a registered rule's name and that rule's own options object
(`registry.RuleOptions`), so a key that does not apply to the chosen rule is an error
and adding a rule touches nothing here. `FilterSpec` and `ProbationSpec` configure the
validation filter and the strike record. All parsing is strict: unknown keys and bad
values raise ConfigError saying what was wrong.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from p2pfl.core.aggregate.kernels import median_of
from p2pfl.core.aggregate.registry import Rule, RuleOptions, option_keys, rule_named
from p2pfl.errors import AggregationError, ConfigError

PEER_BYTES = 20  # an Ethereum address

# Robust references the validation filter can take for its cosine test (filter.py).
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


# -------------------------------------------------------------------------- parsing


def format_number(x: float) -> str:
    """Shortest round-trip text of a float, without a trailing '.0' (3.0 -> '3')."""
    s = repr(float(x))
    return s.removesuffix(".0")


def real_option(d: Mapping[str, Any], key: str, where: str) -> float:
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ConfigError(f"{where}.{key} must be a finite number, got {v!r}")
    return float(v)


def int_option(d: Mapping[str, Any], key: str, where: str) -> int:
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, int):
        raise ConfigError(f"{where}.{key} must be an integer, got {v!r}")
    return v


def check_keys(d: Any, allowed: set[str], where: str) -> None:
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
        check_keys(d, {"norm_factor", "min_cosine", "reference"}, "filter")
        kw: dict[str, Any] = {}
        if "norm_factor" in d:
            kw["norm_factor"] = real_option(d, "norm_factor", "filter")
        if "min_cosine" in d:
            kw["min_cosine"] = (
                None if d["min_cosine"] is None else real_option(d, "min_cosine", "filter")
            )
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
        cos = "off" if self.min_cosine is None else format_number(self.min_cosine)
        return f"filter({format_number(self.norm_factor)},{cos},{self.reference})"


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
        check_keys(d, {"window", "strikes"}, "probation")
        return cls(**{k: int_option(d, k, "probation") for k in ("window", "strikes") if k in d})

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


# The keys of the `aggregation` table that belong to the pipeline, not to a rule.
PIPELINE_KEYS = frozenset({"filter", "clip_norm", "rule", "probation"})


@dataclass(frozen=True)
class RuleSpec:
    """The aggregation pipeline as data: filter -> probation -> clip -> rule.

    clip_norm: None, a positive float (absolute L2 bound), or "median" (clip every
               accepted delta to the median norm of the accepted deltas).
    rule:      the name of a registered rule (registry.RULES).
    options:   that rule's options object (its `options_type`); None takes the rule's
               defaults (an error for a rule with a required option, like krum's f).
    probation: None, or which authors to leave out for their record (ProbationSpec).
    """

    filter: FilterSpec | None = None
    clip_norm: float | str | None = None
    rule: str = "fedavg"
    options: RuleOptions | None = None
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
        impl = rule_named(self.rule)
        if self.options is None:
            object.__setattr__(self, "options", impl.parse_options({}))
        elif type(self.options) is not impl.options_type:
            raise ConfigError(
                f"rule {self.rule!r} takes {impl.options_type.__name__}, "
                f"got {type(self.options).__name__}"
            )

    def clip_bound(self, norms: Sequence[float]) -> float:
        """The L2 bound that clipping applies, given the accepted deltas' norms."""
        assert self.clip_norm is not None
        return median_of(norms) if self.clip_norm == "median" else float(self.clip_norm)

    @property
    def rule_impl(self) -> Rule:
        """The registered rule this spec names."""
        return rule_named(self.rule)

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
        return cls.from_dict(
            {
                "filter": {"norm_factor": 3.0, "min_cosine": 0.0, "reference": "median"},
                "clip_norm": "median",
                "rule": "fedavg",
                "samples_cap": 2.0,
                "probation": {"window": 10, "strikes": 2},
            }
        )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RuleSpec:
        """Strict parse of a manifest's `aggregation` entry (ConfigError on any problem).

        Keys other than the pipeline's go to the rule's options. A key of another rule is
        an error unless it is null (null means 'not set', as for the rule's own keys).
        """
        known = PIPELINE_KEYS | option_keys()
        check_keys(d, set(known), "aggregation")
        kw: dict[str, Any] = {}
        if d.get("filter") is not None:
            kw["filter"] = FilterSpec.from_dict(d["filter"])
        if d.get("probation") is not None:
            kw["probation"] = ProbationSpec.from_dict(d["probation"])
        if "clip_norm" in d and d["clip_norm"] is not None:
            kw["clip_norm"] = (
                "median"
                if d["clip_norm"] == "median"
                else real_option(d, "clip_norm", "aggregation")
            )
        rule = d.get("rule", "fedavg")
        impl = rule_named(rule)
        own = impl.options_type.keys()
        foreign = sorted(k for k in d if k not in PIPELINE_KEYS | own and d[k] is not None)
        if foreign:
            raise ConfigError(
                f"aggregation: key(s) {foreign} do not apply to rule {rule!r}; "
                f"its options: {sorted(own)}"
            )
        options = impl.parse_options({k: d[k] for k in own if k in d})
        return cls(rule=rule, options=options, **kw)

    def to_dict(self) -> dict[str, Any]:
        """Canonical dict: the pipeline's keys and the rule's own options, nothing else."""
        assert self.options is not None  # set by __post_init__
        d: dict[str, Any] = {
            "filter": None if self.filter is None else self.filter.to_dict(),
            "clip_norm": self.clip_norm,
            "rule": self.rule,
            **self.options.to_dict(),
        }
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
            parts.append(f"clip({format_number(self.clip_norm)})")
        parts.append(self.rule_impl.label(self.options))
        if self.probation is not None:
            parts.append(self.probation.name)
        return "+".join(parts)
