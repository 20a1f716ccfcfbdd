"""`p2pfl chain deploy`, `register`, `rotate-key`, `claim`, `status` against a real anvil."""

from __future__ import annotations

import json

import pytest

from p2pfl.chain.devnet import ETHER, DevNet
from p2pfl.chain.providers import Anvil
from p2pfl.chain.rewards import read_reward_file, write_reward_file
from p2pfl.cli import main as cli_main
from p2pfl.cli.chain import claim_command, deploy_command, register_command, status_command
from p2pfl.cli.common import ether_to_wei
from p2pfl.core.identity import NodeIdentity
from p2pfl.errors import ChainError, ConfigError
from p2pfl.keystore import generate_identity, save_keystore

from .conftest import GENESIS, REWARD, TASK, K, commit

PASSWORD = "correct horse"


@pytest.fixture(scope="module")
def anvil():
    with Anvil() as node:
        yield node


def _keystore(tmp_path, key: bytes | None = None):
    ident = NodeIdentity(key) if key else generate_identity()
    path = save_keystore(
        ident, tmp_path / f"key-{ident.address.hex()[:8]}.json", PASSWORD, kdf="pbkdf2"
    )
    return ident, path


def test_ether_to_wei() -> None:
    assert ether_to_wei("1.5") == 1_500_000_000_000_000_000
    for bad in ("x", "-1", "0.0000000000000000001"):
        with pytest.raises(ConfigError):
            ether_to_wei(bad)


def test_deploy_register_status(anvil: Anvil, tmp_path) -> None:
    _, admin_ks = _keystore(tmp_path)
    dep_path = tmp_path / "deployment.json"
    dep = deploy_command(anvil.url, admin_ks, PASSWORD, dep_path, unbonding_blocks=3, fund_dev=True)
    assert json.loads(dep_path.read_text())["ledger"] == dep.ledger
    node, node_ks = _keystore(tmp_path)
    tx = register_command(anvil.url, dep_path, node_ks, PASSWORD, 2 * ETHER, fund_dev=True)
    assert tx.event("Registered")["tier"] == 1
    tx = register_command(anvil.url, dep_path, node_ks, PASSWORD, 4 * ETHER, fund_dev=True)
    assert tx.event("ToppedUp")["stake"] == 6 * ETHER
    st = status_command(anvil.url, dep_path, node.address)
    assert st["node"]["active"] and st["node"]["tier"] == "compute" and st["nodes"] == 1
    assert st["node"]["x25519_key"] == node.x25519_public_key.hex()
    with pytest.raises(ChainError, match="no task"):
        status_command(anvil.url, dep_path, task=b"\x01" * 32)
    # the argparse wiring (through the lead's CLI)
    rc = cli_main(
        [
            "status",
            "--rpc",
            anvil.url,
            "--deployment",
            str(dep_path),
            "--keystore",
            str(node_ks),
            "--json",
        ]
    )
    assert rc == 0


def test_claim_from_reward_file(anvil: Anvil, tmp_path) -> None:
    net = DevNet.create(anvil.web3(), 8, seed=7)
    net.deployment.save(tmp_path / "dep.json")
    net.clients[0].create_task(TASK, GENESIS, K, 0, REWARD, 10 * REWARD, 0)
    r = commit(net, 1, GENESIS)
    reward_file = write_reward_file(tmp_path / "round-1.json", TASK, 1, r.tree)
    assert read_reward_file(reward_file)[2][0][0] == r.tree.leaves[0]
    me = r.tree.leaves[0].account
    _, ks = _keystore(tmp_path, net.key_of(me))
    mine = [lf for lf in r.tree.leaves if lf.account == me and lf.amount > 0]
    txs = claim_command(anvil.url, tmp_path / "dep.json", ks, PASSWORD, [reward_file])
    assert sorted(tx.event("RewardClaimed")["amount"] for tx in txs) == sorted(
        lf.amount for lf in mine
    )
    assert (
        claim_command(anvil.url, tmp_path / "dep.json", ks, PASSWORD, [reward_file]) == []
    )  # nothing left


def test_task_create_standardise_flag_fills_the_train_table() -> None:
    from p2pfl.cli.node import with_standardisation
    from p2pfl.train.config import TrainConfig

    assert with_standardisation({"lr": 0.1}, "none") == {"lr": 0.1}
    train = with_standardisation({"lr": 0.1}, "fashion-mnist")
    assert train == {"lr": 0.1, "input_mean": [0.2860], "input_std": [0.3530]}
    assert TrainConfig.from_dict(train).input_norm is not None
    with pytest.raises(ConfigError, match="give only one"):
        with_standardisation(train, "digits")


def test_rotate_key_command(anvil: Anvil, tmp_path, monkeypatch, capsys) -> None:
    from p2pfl.keystore import load_keystore

    _, admin_ks = _keystore(tmp_path)
    dep_path = tmp_path / "deployment.json"
    deploy_command(anvil.url, admin_ks, PASSWORD, dep_path, fund_dev=True)
    node, node_ks = _keystore(tmp_path)
    register_command(anvil.url, dep_path, node_ks, PASSWORD, 3 * ETHER, fund_dev=True)
    new_ks = tmp_path / "new-key.json"
    monkeypatch.setenv("P2PFL_PASSWORD", PASSWORD)
    args = ["--rpc", anvil.url, "--deployment", str(dep_path), "--keystore", str(node_ks)]
    assert cli_main(["rotate-key", *args, "--new-keystore", str(new_ks)]) == 0
    assert "rotated:" in capsys.readouterr().out
    new = load_keystore(new_ks, PASSWORD)  # created, with the same password
    assert oct(new_ks.stat().st_mode & 0o777) == "0o600"
    after = status_command(anvil.url, dep_path, new.address)["node"]
    assert after["active"] and after["x25519_key"] == new.x25519_public_key.hex()
    assert not status_command(anvil.url, dep_path, node.address)["node"]["active"]
    # The retired key has nothing left to rotate: a clear error, not a revert dump.
    assert cli_main(["rotate-key", *args, "--new-keystore", str(tmp_path / "third.json")]) == 1
    assert "no active stake to rotate" in capsys.readouterr().err
    assert not (tmp_path / "third.json").exists()  # no key made for a refused rotation
