"""`aggregate`: one round's updates -> sort by peer -> filter -> probation -> clip -> rule.

Every committee member recomputes the aggregate and votes on its content hash, so the
output bytes depend only on the *set* of contributions: they are sorted by peer address
first, and every step is a deterministic kernel (kernels.py). The rule is whichever
registered rule the spec names (registry.py); this module never looks at its name.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from p2pfl.core.aggregate.filter import validation_filter
from p2pfl.core.aggregate.kernels import Parallel, clip_norm, norm, serial
from p2pfl.core.aggregate.registry import Weighting
from p2pfl.core.aggregate.spec import (
    REASON_PROBATION,
    STRUCK_WEIGHT_DIVISOR,
    Contribution,
    NothingToAggregate,
    RuleSpec,
)
from p2pfl.errors import AggregationError


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


def aggregate(
    spec: RuleSpec,
    contributions: Sequence[Contribution],
    *,
    expected_size: int | None = None,
    segments: Sequence[int] | None = None,
    record: Mapping[bytes, int] | None = None,
    parallel: Parallel = serial,
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
    points count for less in fedavg / multikrum weights (STRUCK_WEIGHT_DIVISOR).
    `parallel`: how per-coordinate passes are run (kernels.Parallel; serial by default,
    `p2pfl.parallel` for a thread pool); it never changes a bit of the result. Raises
    AggregationError for duplicate peers or unequal lengths without `expected_size`, and
    NothingToAggregate when too few contributions survive.
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
    fr = validation_filter(cs, spec.filter, expected_size, segments, silent, parallel=parallel)
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
    if spec.clip_norm is not None:
        norms = [fr.norms[i] if not math.isnan(fr.norms[i]) else norm(cs[i].delta) for i in idx]
        vectors = clip_norm(vectors, spec.clip_bound(norms), norms, parallel=parallel)

    rule = spec.rule_impl
    why = rule.too_few(len(vectors), spec.options)
    if why is not None:
        raise nothing(why)
    weighting = Weighting(
        n_samples=tuple(cs[i].n_samples for i in idx),
        divisors=tuple(float(STRUCK_WEIGHT_DIVISOR ** record.get(cs[i].peer, 0)) for i in idx),
    )
    out = rule.combine(vectors, weighting, spec.options, parallel)
    rejected += [(cs[idx[j]].peer, reason) for j, reason in out.left_out]
    return AggregateResult(
        delta=out.delta,
        accepted=tuple(cs[idx[j]].peer for j in out.used),
        rejected=tuple(sorted(rejected)),
        weights=out.weights,
        rule=spec.name,
    )
