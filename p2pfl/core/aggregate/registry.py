"""The one interface of an aggregation rule, and the registry that names them.

A rule is a `Rule` subclass with a `name` (its manifest value of `rule`), a frozen
options dataclass (`RuleOptions`: the manifest keys that apply to it, parsed strictly)
and `combine`, which turns the filter's survivors into one delta with deterministic
kernels. The pipeline (`pipeline.aggregate`) never looks at a rule's name.

Adding a rule: one module with its options dataclass, its `Rule` subclass and a
`register(...)` call at the bottom (as `rules.py` does for the built-in ones), imported
once by the package's `__init__`; then its cases in `protocol/vectors/make_aggregation.py`
(a rule every member must reproduce needs test vectors) and a section in
`protocol/spec/aggregation.md`.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from p2pfl.core.aggregate.kernels import Parallel, median_of
from p2pfl.errors import ConfigError


@dataclass(frozen=True)
class RuleOptions:
    """Base of every rule's options: a frozen dataclass whose fields are manifest keys.

    Subclasses validate in `__post_init__` (ConfigError) and parse in `from_dict`.
    """

    @classmethod
    def keys(cls) -> frozenset[str]:
        """The manifest keys of this rule: its field names."""
        return frozenset(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RuleOptions:
        """Strict parse of this rule's keys (the caller has already refused other keys);
        a key given as null means 'not set'."""
        if any(v is not None for v in d.values()):
            raise ConfigError(f"{cls.__name__} takes no options, got {sorted(d)}")
        return cls()

    def to_dict(self) -> dict[str, Any]:
        """The manifest keys, in field order (null for an unset optional one)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


@dataclass(frozen=True)
class Weighting:
    """What a weighted rule needs besides the vectors: per vector, the author's claimed
    sample count and its probation divisor (STRUCK_WEIGHT_DIVISOR ** strike points)."""

    n_samples: tuple[int, ...]
    divisors: tuple[float, ...]

    def weights(self, cap: float | None, used: Sequence[int] | None = None) -> list[float]:
        """Sample weights of `used` (all by default), each capped at cap x the median
        of their claims (no cap: the raw claims), divided by its author's divisor."""
        idx = range(len(self.n_samples)) if used is None else used
        claims = [float(self.n_samples[j]) for j in idx]
        if cap is not None:
            limit = cap * median_of(claims)
            claims = [min(c, limit) for c in claims]
        return [c / self.divisors[j] for c, j in zip(claims, idx)]


@dataclass(frozen=True, eq=False)  # arrays make == ambiguous
class Combined:
    """A rule's output: the float32 delta, which inputs it used (ascending indices) with
    their normalised weights, and the inputs it left out with the reason why."""

    delta: np.ndarray
    used: tuple[int, ...]
    weights: tuple[float, ...]
    left_out: tuple[tuple[int, str], ...] = ()


def normalised(weights: Sequence[float]) -> tuple[float, ...]:
    """w_i / sum(w), the sum taken left to right."""
    total = sum(weights)
    return tuple(w / total for w in weights)


class Rule(ABC):
    """One aggregation rule. Instances are stateless; options come with each call."""

    name: ClassVar[str]
    options_type: ClassVar[type[RuleOptions]]

    def parse_options(self, d: Mapping[str, Any]) -> RuleOptions:
        """This rule's options from the manifest keys that apply to it."""
        return self.options_type.from_dict(d)

    def label(self, options: Any) -> str:
        """Canonical short text for proposals, e.g. 'krum(f=2)'."""
        return self.name

    def too_few(self, n: int, options: Any) -> str | None:
        """Why n survivors are too few for this rule, or None if they are enough."""
        return None

    @abstractmethod
    def combine(
        self,
        vectors: Sequence[np.ndarray],
        weighting: Weighting,
        options: Any,
        parallel: Parallel,
    ) -> Combined:
        """The aggregate of the filter's survivors (1-D float32, peer order), bit for bit
        the same on every machine and for every `parallel`."""


RULES: dict[str, Rule] = {}


def register(rule: Rule) -> Rule:
    """Add `rule` under its name; a name can be registered once."""
    if not isinstance(rule, Rule):
        raise TypeError(f"register() takes a Rule instance, got {type(rule).__name__}")
    if rule.name in RULES:
        raise ValueError(f"an aggregation rule named {rule.name!r} is already registered")
    RULES[rule.name] = rule
    return rule


def rule_named(name: object) -> Rule:
    """The registered rule called `name`, or ConfigError listing the known ones."""
    rule = RULES.get(name) if isinstance(name, str) else None
    if rule is None:
        raise ConfigError(f"unknown aggregation rule {name!r}; rule must be one of {tuple(RULES)}")
    return rule


def option_keys() -> frozenset[str]:
    """Every manifest key some registered rule takes."""
    return frozenset().union(*(r.options_type.keys() for r in RULES.values()))
