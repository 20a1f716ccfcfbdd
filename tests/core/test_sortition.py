"""Sortition: integer threshold, committee order, failure probability."""

from hypothesis import given, settings
from hypothesis import strategies as st

from p2pfl.core import sortition

TASK = b"\x07" * 32
BASE = b"\x09" * 32


def stakes_of(n, stake=100):
    return {bytes([i + 1]) * 20: stake for i in range(n)}


@given(
    ticket=st.integers(0, 2**256 - 1),
    stake=st.integers(1, 10**24),
    extra=st.integers(0, 10**26),
    k=st.integers(1, 64),
)
@settings(max_examples=300)
def test_integer_threshold_matches_exact_fraction_up_to_rounding(ticket, stake, extra, k):
    total = stake + extra
    got = sortition.is_eligible(ticket, stake, total, k)
    if k * stake >= total:
        assert got
        return
    exact = ticket * total < k * stake * 2**256
    if got != exact:
        # Disagreement only within one scale step of the boundary (floor of 2^256/total).
        scale = (2**256 - 1) // total
        assert abs(ticket - k * stake * scale) <= 2 * scale


def test_committee_is_sorted_by_ticket_and_deterministic():
    stakes = stakes_of(30)
    seed = sortition.round_seed(TASK, 3, BASE, 0)
    committee = sortition.committee_for(seed, stakes, 7)
    assert committee == sortition.committee_for(seed, dict(reversed(list(stakes.items()))), 7)
    tickets = [sortition.ticket(seed, a) for a in committee]
    assert tickets == sorted(tickets)
    assert sortition.leader_of(committee, 0) == committee[0]
    assert sortition.leader_of(committee, len(committee) + 1) == committee[1]


def test_committee_size_concentrates_around_k():
    stakes = stakes_of(50)
    sizes = [
        len(sortition.committee_for(sortition.round_seed(TASK, r, BASE, 0), stakes, 7))
        for r in range(400)
    ]
    mean = sum(sizes) / len(sizes)
    assert 6.3 < mean < 7.7
    assert abs(sortition.expected_committee_size(stakes, 7) - 7.0) < 1e-9


def test_zero_stake_never_eligible_and_whale_always():
    stakes = {b"\x01" * 20: 0, b"\x02" * 20: 1000, b"\x03" * 20: 1}
    for r in range(50):
        c = sortition.committee_for(sortition.round_seed(TASK, r, BASE, 0), stakes, 3)
        assert b"\x01" * 20 not in c
        assert b"\x02" * 20 in c


def test_attempt_changes_the_draw():
    stakes = stakes_of(40)
    a = sortition.committee_for(sortition.round_seed(TASK, 1, BASE, 0), stakes, 7)
    b = sortition.committee_for(sortition.round_seed(TASK, 1, BASE, 1), stakes, 7)
    assert a != b


def test_quorum_and_shortfall_probability():
    assert sortition.commit_quorum(7) == 5
    assert sortition.commit_quorum(7, task_quorum=6) == 6
    everyone = stakes_of(7)
    assert sortition.committee_shortfall_probability(everyone, 7, 5) == 0.0
    p = sortition.committee_shortfall_probability(stakes_of(100), 7, 5)
    assert 0.05 < p < 0.3


def test_vectors():
    """Seeds, tickets and committees every implementation (and the contract) must reproduce."""
    import json
    from pathlib import Path

    doc = json.loads((Path(__file__).parents[2] / "protocol/vectors/sortition.json").read_text())
    assert len(doc["cases"]) >= 5
    for case in doc["cases"]:
        stakes = {bytes.fromhex(a): int(s) for a, s in case["stakes"].items()}
        seed = sortition.round_seed(
            bytes.fromhex(case["task"]), case["round"], bytes.fromhex(case["base"]), case["attempt"]
        )
        assert seed.hex() == case["seed"], case["name"]
        for address, t in case["tickets"].items():
            assert sortition.ticket(seed, bytes.fromhex(address)) == int(t, 16)
        committee = sortition.committee_for(seed, stakes, case["k"])
        assert [a.hex() for a in committee] == case["committee"], case["name"]
