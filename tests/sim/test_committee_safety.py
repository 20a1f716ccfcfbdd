"""The committee failure probabilities (sim.committee_safety) against the real sortition."""

from __future__ import annotations

import math

from sim.committee_safety import failure_probabilities, monte_carlo, smallest_safe_committee


def test_the_formula_matches_real_sortition_draws() -> None:
    exact = failure_probabilities(100, 0.3, 7)
    mc = monte_carlo(100, 0.3, 7, draws=3000, seed=1)
    for a, b in ((mc.safety, exact.safety), (mc.liveness, exact.liveness)):
        assert abs(a - b) <= 5 * math.sqrt(b * (1 - b) / 3000) + 1e-3, (mc, exact)
    assert exact.quorum == 5 and 0.02 < exact.safety < 0.2  # measurable at 30% Byzantine


def test_larger_committees_are_safer_and_the_threshold_is_the_first_below_target() -> None:
    k = smallest_safe_committee(1000, 0.2, 1e-6)
    assert failure_probabilities(1000, 0.2, k).safety < 1e-6
    assert failure_probabilities(1000, 0.2, k - 1).safety >= 1e-6
    assert failure_probabilities(1000, 0.2, 7).safety > 1e-2  # the quickstart's k is not
