"""The same commit on a real anvil process (started here, stopped by PID), and revert
reasons normalised identically across eth-tester and anvil."""

from __future__ import annotations

import os

import pytest

from p2pfl.chain.devnet import DevNet
from p2pfl.chain.providers import Anvil, embedded_web3
from p2pfl.errors import ChainError

from .conftest import GENESIS, REWARD, TASK, K, commit


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); check /proc state
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def _scenario(net: DevNet) -> tuple[str, str, int]:
    net.clients[0].create_task(TASK, GENESIS, K, 0, REWARD, 10 * REWARD, 0)
    r1 = commit(net, 1, GENESIS)
    leaf = r1.tree.leaves[0]
    net.admin.claim(TASK, 1, leaf, r1.tree.proof(0))
    with pytest.raises(ChainError) as wrong_round:
        commit(net, 3, r1.result)
    with pytest.raises(ChainError) as double_claim:
        net.admin.claim(TASK, 1, leaf, r1.tree.proof(0))
    return wrong_round.value.revert_reason, double_claim.value.revert_reason, r1.tx.gas_used


def test_commit_on_anvil_and_eth_tester_agree() -> None:
    anvil = Anvil()
    with anvil:
        pid = anvil.pid
        assert pid is not None and _pid_alive(pid)
        on_anvil = _scenario(DevNet.create(anvil.web3(), 8))
    assert not _pid_alive(pid)
    on_tester = _scenario(DevNet.create(embedded_web3(), 8))
    assert on_anvil[0] == on_tester[0] == "WrongRound(expected=2, got=3)"
    assert on_anvil[1] == on_tester[1] and on_anvil[1].startswith("AlreadyClaimed(index=0)")
    # Same bytecode, same fork rules (prague): same gas, the chain id aside.
    assert abs(on_anvil[2] - on_tester[2]) < 2_000


def test_anvil_start_failure_is_a_chain_error(tmp_path) -> None:
    with pytest.raises(ChainError, match="anvil not found"):
        Anvil(binary=tmp_path / "missing").start()
