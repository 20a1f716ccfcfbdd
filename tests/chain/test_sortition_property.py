"""The contract's sortition, seed, ticket and statement digest equal p2pfl.core's, bit for bit."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2pfl.chain.client import ChainClient
from p2pfl.chain.devnet import DevNet
from p2pfl.chain.providers import embedded_web3
from p2pfl.core.signing import statement_digest
from p2pfl.core.sortition import UINT256_MAX, is_eligible, round_seed, ticket

uint256 = st.integers(min_value=0, max_value=UINT256_MAX)
# Stakes up to 2^160 (what the registry can hold); totals near stakes exercise the p=1 cap.
stake = st.integers(min_value=0, max_value=2**160 - 1)
k = st.integers(min_value=0, max_value=2**16 - 1)


@pytest.fixture(scope="module")
def chain() -> ChainClient:
    return DevNet.create(embedded_web3(), 0).admin


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(t=uint256, s=stake, total=stake, k=k)
def test_is_eligible_matches(chain: ChainClient, t: int, s: int, total: int, k: int) -> None:
    assert chain.ledger.functions.isEligible(t, s, total, k).call() == is_eligible(t, s, total, k)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    task=st.binary(min_size=32, max_size=32),
    rnd=st.integers(0, 2**64 - 1),
    base=st.binary(min_size=32, max_size=32),
    attempt=st.integers(0, 2**32 - 1),
    node=st.binary(min_size=20, max_size=20),
    frac=st.integers(0, 2**32),
)
def test_seed_ticket_and_threshold_match(
    chain: ChainClient, task: bytes, rnd: int, base: bytes, attempt: int, node: bytes, frac: int
) -> None:
    seed = round_seed(task, rnd, base, attempt)
    assert bytes(chain.ledger.functions.roundSeed(task, rnd, base, attempt).call()) == seed
    t = ticket(seed, node)
    assert chain.ledger.functions.ticketOf(seed, chain.w3.to_checksum_address(node)).call() == t
    # thresholds around the ticket itself: the boundary cases
    total = 10**21
    s = frac * total // 2**32 // 7 + 1
    assert chain.ledger.functions.isEligible(t, s, total, 7).call() == is_eligible(t, s, total, 7)


@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    kind=st.integers(0, 255),
    task=st.binary(min_size=32, max_size=32),
    rnd=st.integers(0, 2**64 - 1),
    attempt=st.integers(0, 2**32 - 1),
    view=st.integers(0, 2**32 - 1),
    body=st.binary(min_size=32, max_size=32),
)
def test_statement_digest_matches(
    chain: ChainClient, kind: int, task: bytes, rnd: int, attempt: int, view: int, body: bytes
) -> None:
    onchain = bytes(
        chain.ledger.functions.statementDigest(kind, task, rnd, attempt, view, body).call()
    )
    assert onchain == statement_digest(chain.domain(), kind, task, rnd, attempt, view, body)


def test_contract_reproduces_sortition_vectors(chain: ChainClient) -> None:
    """The RoundLedger's seed, tickets and eligibility give the committees of protocol/vectors."""
    import json
    from pathlib import Path

    doc = json.loads((Path(__file__).parents[2] / "protocol/vectors/sortition.json").read_text())
    for case in doc["cases"]:
        stakes = {bytes.fromhex(a): int(s) for a, s in case["stakes"].items()}
        total = sum(stakes.values())
        seed = bytes(
            chain.ledger.functions.roundSeed(
                bytes.fromhex(case["task"]),
                case["round"],
                bytes.fromhex(case["base"]),
                case["attempt"],
            ).call()
        )
        assert seed.hex() == case["seed"]
        drawn = []
        for address, stake in stakes.items():
            t = chain.ledger.functions.ticketOf(seed, chain.w3.to_checksum_address(address)).call()
            assert t == int(case["tickets"][address.hex()], 16)
            if chain.ledger.functions.isEligible(t, stake, total, case["k"]).call():
                drawn.append((t, address))
        assert [a.hex() for _, a in sorted(drawn)] == case["committee"], case["name"]
