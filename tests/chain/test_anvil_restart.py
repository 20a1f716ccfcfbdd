"""An anvil restarted with its state file (an RPC outage): same port, same chain id, and
blocks, receipts, logs, balances, contract storage and nonces all survive -- on SIGTERM
(`Anvil.restart`), and on SIGKILL up to the last periodic dump (`state_interval_s`)."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import pytest

from p2pfl.chain.devnet import DevNet
from p2pfl.chain.providers import Anvil
from p2pfl.errors import ChainError

from .conftest import GENESIS, REWARD, TASK, K, commit


def _chain_view(net: DevNet) -> dict[str, Any]:
    w3 = net.w3
    head = w3.eth.block_number
    latest = w3.eth.get_block("latest")
    return {
        "block": head,
        "hash": bytes(latest["hash"]),
        "balances": [w3.eth.get_balance(c.account.address) for c in net.clients],
        "nonces": [w3.eth.get_transaction_count(c.account.address) for c in net.clients],
        "task": net.admin.task_info(TASK),  # contract storage
        "commits": [(e.round, e.block_number, e.tx_hash) for e in net.admin.commits(0, head, TASK)],
    }


def _two_rounds(anvil: Anvil) -> tuple[DevNet, bytes]:
    net = DevNet.create(anvil.web3(), 8)
    net.clients[0].create_task(TASK, GENESIS, K, 0, REWARD, 10 * REWARD, 0)
    r1 = commit(net, 1, GENESIS)
    r2 = commit(net, 2, r1.result)
    return net, r2.result


def test_restart_keeps_the_chain_the_port_and_the_chain_id(tmp_path) -> None:
    anvil = Anvil(state_path=tmp_path / "state.json")
    with anvil:
        net, last = _two_rounds(anvil)
        before = _chain_view(net)
        port, first_pid = anvil.port, anvil.pid
        anvil.restart()
        assert anvil.port == port and anvil.pid != first_pid
        assert anvil.pids == [first_pid, anvil.pid]
        assert net.w3.eth.chain_id == anvil.chain_id
        assert _chain_view(net) == before  # the same Web3 object: same URL, a new process
        r3 = commit(net, 3, last)  # and the chain goes on from where it was
        assert r3.tx.block_number == before["block"] + 1
        assert net.admin.task_info(TASK).last_round == 3
        # One more restart with the third round in it.
        anvil.restart()
        assert [c[0] for c in _chain_view(net)["commits"]] == [1, 2, 3]


def test_sigkill_loses_the_chain_unless_it_was_dumped_periodically(tmp_path) -> None:
    # Without a periodic dump, a SIGKILL leaves no state file: the chain restarts empty.
    bare = Anvil(state_path=tmp_path / "bare.json")
    with bare:
        net, _ = _two_rounds(bare)
        assert bare.process is not None
        os.kill(bare.process.pid, signal.SIGKILL)
        bare.process.wait()
        bare.process = None
        bare.start()
        assert net.w3.eth.block_number == 0
    # With a dump every second, it restarts at its last dump.
    dumped = Anvil(state_path=tmp_path / "dumped.json", state_interval_s=1)
    with dumped:
        net, _ = _two_rounds(dumped)
        before = _chain_view(net)
        time.sleep(2.5)  # at least one periodic dump after the last transaction
        assert dumped.process is not None
        os.kill(dumped.process.pid, signal.SIGKILL)
        dumped.process.wait()
        dumped.process = None
        dumped.start()
        assert _chain_view(net) == before


def test_restart_without_a_state_file_is_refused() -> None:
    with pytest.raises(ChainError, match="state_path"):
        Anvil().restart()
    with pytest.raises(ChainError, match="state_path"):
        Anvil(state_interval_s=1)
