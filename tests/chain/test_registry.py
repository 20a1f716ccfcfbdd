"""NodeRegistry: registration, tiers, top-up, exit/unbonding, checkpoints, access control."""

from __future__ import annotations

import pytest

from p2pfl.chain.client import ChainClient
from p2pfl.chain.devnet import ETHER, DevNet
from p2pfl.chain.providers import embedded_web3, fund, mine_blocks
from p2pfl.errors import ChainError

from .conftest import assert_reverts


def _newcomer(net: DevNet, key: bytes = b"\x31" * 32) -> ChainClient:
    c = ChainClient(net.w3, net.deployment, key)
    fund(net.w3, c.account.address, 100 * ETHER)
    return c


def test_register_binds_keys_and_tier(net: DevNet) -> None:
    c = _newcomer(net)
    peer = b"\x00\x25" + bytes(range(37))
    tx = c.register(peer, b"\x42" * 32, 6 * ETHER)
    assert tx.event("Registered")["tier"] == 2  # compute tier: >= 5 ETH
    info = c.node_info()
    assert (info.peer_id, info.enc_key, info.stake, info.active, info.reputation) == (
        peer,
        b"\x42" * 32,
        6 * ETHER,
        True,
        1000,
    )
    assert c.address in c.registered_nodes()
    c.update_keys(b"\x01\x02", b"\x43" * 32)
    assert c.node_info().peer_id == b"\x01\x02"


def test_register_reverts(net: DevNet) -> None:
    c = _newcomer(net)
    assert_reverts(
        lambda: c.register(b"p", bytes(32), ETHER - 1),
        f"StakeTooLow(sent={ETHER - 1}, minimum={ETHER})",
    )
    assert_reverts(lambda: c.register(b"", bytes(32), ETHER), "BadPeerId")
    assert_reverts(lambda: c.register(b"x" * 129, bytes(32), ETHER), "BadPeerId")
    member = net.clients[0]
    assert_reverts(lambda: member.register(b"p", bytes(32), ETHER), "AlreadyActive")
    assert_reverts(lambda: c.update_keys(b"p", bytes(32)), "NotActive")


def test_top_up_tiers_and_reverts(net: DevNet) -> None:
    c = net.clients[0]
    tx = c.top_up(18 * ETHER)
    assert tx.event("ToppedUp")["stake"] == 20 * ETHER and tx.event("ToppedUp")["tier"] == 3
    assert_reverts(lambda: c.top_up(0), "ZeroAmount")
    assert_reverts(lambda: _newcomer(net).top_up(ETHER), "NotActive")


def test_exit_unbonding_withdraw_and_reregister(net: DevNet) -> None:
    c = net.clients[1]
    stake = c.node_info().stake
    tx = c.exit()
    release = tx.event("ExitStarted")["releaseBlock"]
    info = c.node_info()
    assert (info.active, info.stake, info.unbonding, info.release_block) == (
        False,
        0,
        stake,
        release,
    )
    assert_reverts(c.exit, "NotActive")
    assert_reverts(c.withdraw, f"NotYetReleased(releaseBlock={release})")
    assert_reverts(
        lambda: c.register(b"p", bytes(32), ETHER), f"UnbondingPending(releaseBlock={release})"
    )
    mine_blocks(net.w3, 5)
    before = c.balance()
    w = c.withdraw()
    price = net.w3.eth.get_transaction(w.tx_hash)["gasPrice"]
    assert c.balance() == before + stake - w.gas_used * price
    assert_reverts(c.withdraw, "NothingToWithdraw")
    c.register(b"again", bytes(32), ETHER)
    assert c.node_info().reputation == 1000 and c.registered_nodes().count(c.address) == 1


def test_stake_checkpoints_by_block(net: DevNet) -> None:
    c = net.clients[2]
    r0 = c.top_up(ETHER)  # 3 ETH
    total0 = c.total_stake_at(r0.block_number)
    mine_blocks(net.w3, 2)
    r1 = c.top_up(ETHER)  # 4 ETH
    r2 = c.exit()  # 0
    at = c.stake_at
    assert at(c.address, r0.block_number - 1) == 2 * ETHER
    assert at(c.address, r0.block_number) == 3 * ETHER
    assert at(c.address, r0.block_number + 2) == 3 * ETHER  # between checkpoints
    assert at(c.address, r1.block_number) == 4 * ETHER
    assert at(c.address, r2.block_number) == 0
    assert at(c.address, 0) == 0  # before registration
    assert c.total_stake_at(r1.block_number) == total0 + ETHER
    assert c.total_stake_at(r2.block_number) == total0 - 3 * ETHER
    total, stakes = c.stakes_at(r1.block_number)
    assert total == sum(stakes.values()) and stakes[c.address] == 4 * ETHER


def test_only_deployer_binds_and_only_ledger_slashes(net: DevNet) -> None:
    c = net.clients[0]
    assert_reverts(
        lambda: c._tx("bind", c.registry.functions.bindLedger(c.account.address)), "NotDeployer"
    )
    admin = net.admin
    assert_reverts(
        lambda: admin._tx("bind", admin.registry.functions.bindLedger(admin.account.address)),
        "LedgerAlreadyBound",
    )
    target = net.clients[1].account.address
    assert_reverts(
        lambda: c._tx("slash", c.registry.functions.slash(target, 5000, target, 0)), "NotLedger"
    )
    assert_reverts(lambda: c._tx("penalize", c.registry.functions.penalize(target, 1)), "NotLedger")


def test_mined_revert_and_out_of_gas_are_reported(net: DevNet) -> None:
    """With an explicit gas limit the estimate is skipped: the receipt path must still explain."""
    c = net.clients[0]
    err = assert_reverts(
        lambda: c._tx("topUp", c.registry.functions.topUp(), 0, gas=100_000), "ZeroAmount"
    )
    assert "in block" in str(err)
    with pytest.raises(ChainError, match="ran out of gas"):
        c._tx("topUp", c.registry.functions.topUp(), ETHER, gas=30_000)
    assert c.top_up(ETHER).event("ToppedUp")  # nonces still in order afterwards


def test_transport_errors_are_retried_then_reported(net: DevNet) -> None:
    import requests

    sender = net.admin._sender
    calls = {"n": 0}

    def flaky() -> int:
        calls["n"] += 1
        if calls["n"] < 3:
            raise requests.exceptions.ConnectionError("connection refused")
        return 42

    assert sender.retry("test", flaky) == 42 and calls["n"] == 3

    def dead() -> int:
        raise requests.exceptions.ConnectionError("connection refused")

    old = sender.backoff_s
    sender.backoff_s = 0.001
    try:
        with pytest.raises(ChainError, match="unreachable"):
            sender.retry("test", dead)
    finally:
        sender.backoff_s = old


def test_snapshot_stakes_of_two_devnets_with_the_same_ids_do_not_mix() -> None:
    # Two fresh embedded chains in one process: same chain id, same contract addresses,
    # same block numbers, different stakes. The process-wide snapshot cache must not hand
    # the second chain the first one's stakes (it once did, keyed by block number).
    task, genesis = bytes.fromhex("5a" * 32), bytes.fromhex("22" * 32)
    answers = []
    for stake in (2 * ETHER, 3 * ETHER):
        chain = DevNet.create(embedded_web3(), 3, stakes=[stake] * 3)
        chain.clients[0].create_task(task, genesis, 3, 0, ETHER // 10, ETHER, redraw_delay_s=60)
        answers.append(chain.clients[1].committee_stakes(task))
    (block_a, stakes_a), (block_b, stakes_b) = answers
    assert block_a == block_b and set(stakes_a) == set(stakes_b)
    assert set(stakes_a.values()) == {2 * ETHER} and set(stakes_b.values()) == {3 * ETHER}
