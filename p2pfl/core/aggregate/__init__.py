"""Aggregation: filter, clip and combine model deltas, bit for bit on every machine.

    spec.py      contributions, rejection reasons, FilterSpec / ProbationSpec / RuleSpec
    kernels.py   deterministic numeric kernels (fedavg, median, trimmed mean, norms,
                 Krum selection) and the injected `Parallel` map (default: serial)
    filter.py    validation_filter: sanity checks, norm bound, duplicates, cosine test
    registry.py  the `Rule` interface and the RULES registry
    rules.py     the built-in rules, one class each, registered by name
    pipeline.py  aggregate(): sort -> filter -> probation -> clip -> rule

Core stays pure: no threads here. A caller that wants the per-coordinate passes on
several cores passes `parallel=p2pfl.parallel.threaded`; the bytes do not change.
The definitions, constants and the default pipeline's rationale are in
`protocol/spec/aggregation.md`; `protocol/vectors/aggregation.json` pins outputs.
"""

from p2pfl.core.aggregate import rules as _builtin_rules  # registers the built-in rules
from p2pfl.core.aggregate.filter import (
    COSINE_PASSES,
    REFERENCE_TRIM_FRACTION,
    REFERENCES,
    FilterResult,
    validation_filter,
)
from p2pfl.core.aggregate.kernels import (
    BLOCK,
    KRUM_SCREEN_SAFETY,
    LANES,
    Parallel,
    check_vectors,
    clip_norm,
    coordinate_median,
    dot,
    fedavg,
    krum_select,
    median_of,
    norm,
    serial,
    squared_distance,
    squared_norm,
    trim_count,
    trimmed_mean,
)
from p2pfl.core.aggregate.pipeline import AggregateResult, aggregate
from p2pfl.core.aggregate.registry import (
    RULES,
    Combined,
    Rule,
    RuleOptions,
    Weighting,
    normalised,
    option_keys,
    register,
    rule_named,
)
from p2pfl.core.aggregate.rules import (
    DEFAULT_TRIM_FRACTION,
    FedAvgOptions,
    KrumOptions,
    MedianOptions,
    MultiKrumOptions,
    TrimmedMeanOptions,
)
from p2pfl.core.aggregate.spec import (
    PEER_BYTES,
    PIPELINE_KEYS,
    REASON_BAD_SAMPLES,
    REASON_BAD_TENSORS,
    REASON_COSINE,
    REASON_DUPLICATE,
    REASON_KRUM,
    REASON_NON_FINITE,
    REASON_NORM,
    REASON_PROBATION,
    REASON_WRONG_SIZE,
    REASON_ZERO,
    REFERENCE_NAMES,
    STATISTICAL_OFFENCES,
    STRIKE_REASONS,
    STRUCK_WEIGHT_DIVISOR,
    SURE_OFFENCES,
    Contribution,
    FilterSpec,
    NothingToAggregate,
    ProbationSpec,
    RuleSpec,
    strike_points,
    struck_authors,
)

del _builtin_rules

__all__ = [
    "BLOCK",
    "COSINE_PASSES",
    "DEFAULT_TRIM_FRACTION",
    "KRUM_SCREEN_SAFETY",
    "LANES",
    "PEER_BYTES",
    "PIPELINE_KEYS",
    "REASON_BAD_SAMPLES",
    "REASON_BAD_TENSORS",
    "REASON_COSINE",
    "REASON_DUPLICATE",
    "REASON_KRUM",
    "REASON_NON_FINITE",
    "REASON_NORM",
    "REASON_PROBATION",
    "REASON_WRONG_SIZE",
    "REASON_ZERO",
    "REFERENCES",
    "REFERENCE_NAMES",
    "REFERENCE_TRIM_FRACTION",
    "RULES",
    "STATISTICAL_OFFENCES",
    "STRIKE_REASONS",
    "STRUCK_WEIGHT_DIVISOR",
    "SURE_OFFENCES",
    "AggregateResult",
    "Combined",
    "Contribution",
    "FedAvgOptions",
    "FilterResult",
    "FilterSpec",
    "KrumOptions",
    "MedianOptions",
    "MultiKrumOptions",
    "NothingToAggregate",
    "Parallel",
    "ProbationSpec",
    "Rule",
    "RuleOptions",
    "RuleSpec",
    "TrimmedMeanOptions",
    "Weighting",
    "aggregate",
    "check_vectors",
    "clip_norm",
    "coordinate_median",
    "dot",
    "fedavg",
    "krum_select",
    "median_of",
    "norm",
    "normalised",
    "option_keys",
    "register",
    "rule_named",
    "serial",
    "squared_distance",
    "squared_norm",
    "strike_points",
    "struck_authors",
    "trim_count",
    "trimmed_mean",
    "validation_filter",
]
