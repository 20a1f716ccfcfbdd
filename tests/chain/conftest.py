"""Shared chain fixtures: one embedded devnet per module, rolled back after every test."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from p2pfl.chain.client import TxResult
from p2pfl.chain.devnet import ETHER, DevNet
from p2pfl.chain.providers import embedded_web3, increase_time
from p2pfl.core.merkle import RewardTree, round_reward_leaves
from p2pfl.errors import ChainError

N_NODES = 12
TASK = bytes.fromhex("7a" * 32)
GENESIS = bytes.fromhex("11" * 32)
K = 6  # nominal committee; quorum ceil(2*6/3) = 4
REWARD = ETHER // 10
ESCROW = 10 * ETHER


@pytest.fixture(scope="module")
def module_net() -> DevNet:
    net = DevNet.create(embedded_web3(), N_NODES, unbonding_blocks=5)
    net.clients[0].create_task(TASK, GENESIS, K, 0, REWARD, ESCROW, redraw_delay_s=60)
    return net


@pytest.fixture
def net(module_net: DevNet) -> Iterator[DevNet]:
    tester = module_net.w3.provider.ethereum_tester  # type: ignore[attr-defined]
    snap = tester.take_snapshot()
    yield module_net
    tester.revert_to_snapshot(snap)
    for c in [module_net.admin, *module_net.clients]:
        c._sender._nonce = None  # the chain forgot our transactions


@dataclass
class Committed:
    round: int
    attempt: int
    base: bytes
    result: bytes
    committee: list[bytes]
    tree: RewardTree
    tx: TxResult


def first_draw(
    net: DevNet, task: bytes, rnd: int, base: bytes, need: int, k: int = K
) -> tuple[int, list[bytes]]:
    """Lowest attempt whose committee has at least `need` members (redraw delay permitting)."""
    for attempt in range(100):
        committee = net.committee(task, rnd, base, attempt, k)
        if len(committee) >= need:
            return attempt, committee
    raise AssertionError("no large enough committee in 100 attempts")


def commit(
    net: DevNet,
    rnd: int,
    base: bytes,
    task: bytes = TASK,
    n_signers: int | None = None,
    rejected: tuple[bytes, ...] = (),
    k: int = K,
) -> Committed:
    """Commit round `rnd` with committee votes signed by p2pfl.core.signing (via DevNet.votes)."""
    info = net.admin.task_info(task)
    need = n_signers or info.quorum
    attempt, committee = first_draw(net, task, rnd, base, need, k)
    if attempt:
        increase_time(net.w3, attempt * info.redraw_delay_s + 1)
    result = rnd.to_bytes(32, "big")
    contributors = {c.address: 10 + i for i, c in enumerate(net.clients[:4])}
    tree = RewardTree.build(
        round_reward_leaves(info.reward_per_round, contributors, committee, rejected)
    )
    sigs = net.votes(committee[:need], task, rnd, attempt, 0, base, result, tree.root)
    tx = net.clients[-1].commit_round(
        task, rnd, attempt, 0, base, result, tree.root, pairs(committee[:need], sigs)
    )
    return Committed(rnd, attempt, base, result, committee, tree, tx)


def pairs(signers: list[bytes], signatures: list[bytes]) -> list[tuple[bytes, bytes]]:
    """(signer, signature) votes for `commit_round` from `DevNet.votes(signers, ...)`."""
    return list(zip(signers, signatures, strict=True))


def assert_reverts(fn, reason_prefix: str) -> ChainError:
    with pytest.raises(ChainError) as info:
        fn()
    assert info.value.revert_reason is not None, str(info.value)
    assert info.value.revert_reason.startswith(reason_prefix), info.value.revert_reason
    return info.value
