"""`p2pfl chain deploy`, `p2pfl register`, `p2pfl rotate-key`, `p2pfl claim`, `p2pfl status`,
`p2pfl buy-access`.

Each command is a plain function (usable from Python and tests) plus an argparse
handler; `add_chain_commands(subparsers)` registers them on the `p2pfl` CLI.
Amounts on the command line are in ether (decimals allowed); functions take wei.
Reward files (`p2pfl claim FILE...`) are written by the node (`p2pfl.chain.rewards`).
"""

from __future__ import annotations

import argparse
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address
from web3 import Web3

from p2pfl.chain.client import (
    DEFAULT_COMPUTE_STAKE,
    DEFAULT_MIN_STAKE,
    DEFAULT_TRUSTED_STAKE,
    DEFAULT_UNBONDING_BLOCKS,
    ChainClient,
    Deployment,
    TxResult,
    deploy,
)
from p2pfl.chain.providers import fund, rpc_web3
from p2pfl.chain.rewards import hex32, read_reward_file
from p2pfl.cli.common import (
    DEFAULT_DEPLOYMENT,
    WEI_PER_ETHER,
    add_key_options,
    add_rpc_options,
    ether_to_wei,
    load_account,
    read_password,
)
from p2pfl.core.merkle import ROLE_REJECTED
from p2pfl.errors import ChainError, P2PFLError

# Credit given to the deployer by --fund-dev (anvil / test chains only).
DEV_FUNDING_WEI = 1_000 * 10**18
TIER_NAMES = {0: "none", 1: "basic", 2: "compute", 3: "trusted"}


# ---------------------------------------------------------------- helpers


# ---------------------------------------------------------------- commands


def deploy_command(
    rpc_url: str,
    keystore: str | Path,
    password: str,
    out: str | Path = DEFAULT_DEPLOYMENT,
    min_stake_wei: int = DEFAULT_MIN_STAKE,
    compute_stake_wei: int = DEFAULT_COMPUTE_STAKE,
    trusted_stake_wei: int = DEFAULT_TRUSTED_STAKE,
    unbonding_blocks: int = DEFAULT_UNBONDING_BLOCKS,
    fund_dev: bool = False,
) -> Deployment:
    """Deploy NodeRegistry + RoundLedger from the keystore's account; write `out`."""
    w3 = rpc_web3(rpc_url)
    account = load_account(keystore, password)
    if fund_dev:
        fund(w3, account.address, DEV_FUNDING_WEI)
    dep = deploy(w3, account, min_stake_wei, compute_stake_wei, trusted_stake_wei, unbonding_blocks)
    dep.save(out)
    return dep


def _client(rpc_url: str, deployment: str | Path, account: LocalAccount | None) -> ChainClient:
    dep = Deployment.load(deployment)
    w3 = rpc_web3(rpc_url)
    chain_id = w3.eth.chain_id
    if chain_id != dep.chain_id:
        raise ChainError(
            f"{rpc_url} is chain {chain_id} but {deployment} was deployed on chain {dep.chain_id}"
        )
    return ChainClient(w3, dep, account)


def register_command(
    rpc_url: str,
    deployment: str | Path,
    keystore: str | Path,
    password: str,
    stake_wei: int,
    fund_dev: bool = False,
) -> TxResult:
    """Register the keystore's node with `stake_wei`, or top up if it is already active."""
    from p2pfl.core.identity import peer_id_bytes_from_public
    from p2pfl.keystore import load_keystore

    identity = load_keystore(keystore, password)
    client = _client(rpc_url, deployment, Account.from_key(identity.private_key))
    if fund_dev:
        fund(client.w3, client.address, stake_wei + 10**18)
    if client.node_info().active:
        return client.top_up(stake_wei)
    peer_id = peer_id_bytes_from_public(identity.compressed_public_key)
    return client.register(peer_id, identity.x25519_public_key, stake_wei)


def rotate_key_command(
    rpc_url: str,
    deployment: str | Path,
    keystore: str | Path,
    password: str,
    new_keystore: str | Path,
) -> tuple[TxResult, bytes]:
    """Rotate the node of `keystore` to the key in `new_keystore` (created, with the same
    password, if the file does not exist). Returns the transaction and the new address.

    The old keystore is kept: it still claims the rewards its address earned. Restart the
    node with the new keystore (same data dir); it takes part from the next round drawn
    after the rotation's block."""
    from p2pfl.core.identity import peer_id_bytes_from_public
    from p2pfl.keystore import generate_identity, load_keystore, save_keystore

    old = load_keystore(keystore, password)
    client = _client(rpc_url, deployment, Account.from_key(old.private_key))
    if not client.node_info().active:
        raise P2PFLError(
            f"{old.checksum_address} has no active stake to rotate (register first, or it"
            " already rotated)"
        )
    if Path(new_keystore).exists():
        new = load_keystore(new_keystore, password)
    else:
        new = generate_identity()
        save_keystore(new, new_keystore, password)
    if new.address == old.address:
        raise P2PFLError(f"{new_keystore} holds the same key as {keystore}")
    peer_id = peer_id_bytes_from_public(new.compressed_public_key)
    tx = client.rotate_key(new.private_key, peer_id, new.x25519_public_key)
    return tx, new.address


def claim_command(
    rpc_url: str,
    deployment: str | Path,
    keystore: str | Path,
    password: str,
    reward_files: list[str | Path],
) -> list[TxResult]:
    """Claim every unclaimed reward leaf of this node's address in the given files."""
    client = _client(rpc_url, deployment, load_account(keystore, password))
    done = []
    for path in reward_files:
        task, rnd, entries = read_reward_file(path)
        for leaf, proof in entries:
            if leaf.account != client.address or leaf.role == ROLE_REJECTED or leaf.amount == 0:
                continue
            if client.is_consumed(task, rnd, leaf.index):
                continue
            done.append(client.claim(task, rnd, leaf, proof))
    return done


def buy_access_command(
    rpc_url: str,
    manifest_path: str | Path,
    keystore: str | Path,
    password: str,
    price_wei: int,
) -> TxResult:
    """Buy access to the private task of `manifest_path` for the keystore's X25519 key,
    paying `price_wei` (the task's price: the contract refuses any other amount). A key
    holder's node then posts the task model key wrapped to that key; `p2pfl model get
    --manifest` opens the task's models with it."""
    from p2pfl.keystore import load_keystore
    from p2pfl.manifest import TaskManifest

    manifest = TaskManifest.load(manifest_path)
    identity = load_keystore(keystore, password)
    deployment = Deployment(manifest.chain_id, manifest.registry, manifest.ledger, 0)
    client = ChainClient(rpc_web3(rpc_url), deployment, Account.from_key(identity.private_key))
    return client.buy_access(manifest.task_id, identity.x25519_public_key, price_wei)


def status_command(
    rpc_url: str, deployment: str | Path, address: bytes | None = None, task: bytes | None = None
) -> dict[str, Any]:
    """Node and/or task state as a plain dict (what `p2pfl status` prints)."""
    client = _client(rpc_url, deployment, None)
    out: dict[str, Any] = {
        "chain_id": client.deployment.chain_id,
        "registry": client.deployment.registry,
        "ledger": client.deployment.ledger,
        "block": client.block_number(),
        "nodes": len(client.registered_nodes()),
        "total_stake_wei": client.total_stake_at(client.block_number()),
    }
    if address is not None:
        n = client.node_info(address)
        out["node"] = {
            "address": to_checksum_address(address),
            "active": n.active,
            "banned": n.banned,
            "stake_wei": n.stake,
            "tier": TIER_NAMES.get(n.tier, str(n.tier)),
            "unbonding_wei": n.unbonding,
            "release_block": n.release_block,
            "reputation": n.reputation,
            "peer_id": n.peer_id.hex(),
            "x25519_key": n.enc_key.hex(),
            "balance_wei": client.balance(address),
        }
    if task is not None:
        t = client.task_info(task)
        if not t.exists:
            raise ChainError(f"no task 0x{task.hex()} on this ledger")
        out["task"] = {
            "task": "0x" + task.hex(),
            "last_round": t.last_round,
            "last_result": "0x" + t.last_result.hex(),
            "committee_size": t.committee_size,
            "quorum": t.quorum,
            "escrow_wei": t.escrow,
            "reward_per_round_wei": t.reward_per_round,
            "snapshot_block": t.snapshot_block,
            # A private task's price of access (`p2pfl buy-access`); 0: a public task.
            "access_price_wei": client.access_price(task),
        }
    return out


# ---------------------------------------------------------------- argparse


def _cmd_deploy(args: argparse.Namespace) -> int:
    dep = deploy_command(
        args.rpc,
        args.keystore,
        read_password(args),
        args.out,
        ether_to_wei(args.min_stake),
        ether_to_wei(args.compute_stake),
        ether_to_wei(args.trusted_stake),
        args.unbonding_blocks,
        args.fund_dev,
    )
    print(
        f"registry:   {dep.registry}\nledger:     {dep.ledger}\nchain id:   "
        f"{dep.chain_id}\nwritten:    {args.out}"
    )
    return 0


def _cmd_register(args: argparse.Namespace) -> int:
    tx = register_command(
        args.rpc,
        args.deployment,
        args.keystore,
        read_password(args),
        ether_to_wei(args.stake),
        args.fund_dev,
    )
    name = "Registered" if any(n == "Registered" for n, _ in tx.events) else "ToppedUp"
    ev = tx.event(name)
    print(
        f"{name.lower()}: stake {Decimal(ev['stake']) / WEI_PER_ETHER} ETH, tier "
        f"{TIER_NAMES[ev['tier']]}, "
        f"block {tx.block_number}, gas {tx.gas_used}"
    )
    return 0


def _cmd_rotate_key(args: argparse.Namespace) -> int:
    tx, new = rotate_key_command(
        args.rpc, args.deployment, args.keystore, read_password(args), args.new_keystore
    )
    ev = tx.event("KeyRotated")
    print(
        f"rotated: {ev['node']} -> {Web3.to_checksum_address(new)}, stake"
        f" {Decimal(ev['stake']) / WEI_PER_ETHER} ETH, block {tx.block_number}, gas {tx.gas_used}"
    )
    print(
        f"restart the node with --keystore {args.new_keystore}; keep {args.keystore}"
        " to claim the old address's rewards"
    )
    return 0


def _cmd_claim(args: argparse.Namespace) -> int:
    txs = claim_command(args.rpc, args.deployment, args.keystore, read_password(args), args.files)
    total = sum(tx.event("RewardClaimed")["amount"] for tx in txs)
    print(f"claimed {len(txs)} reward(s), {Decimal(total) / WEI_PER_ETHER} ETH")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    if args.data_dir:
        from p2pfl.cli.node import format_node_status, read_status

        node = read_status(args.data_dir)
        print(json.dumps(node, indent=1) if args.json else format_node_status(node))
        if not (args.address or args.keystore or args.task):
            return 0
    address = None
    if args.address:
        address = bytes.fromhex(Web3.to_checksum_address(args.address)[2:])
    elif args.keystore:
        doc = json.loads(Path(args.keystore).read_text())
        address = bytes.fromhex(doc["address"].removeprefix("0x"))  # keystores store it in clear
    task = hex32(args.task, "--task") if args.task else None
    status = status_command(args.rpc, args.deployment, address, task)
    if args.json:
        print(json.dumps(status, indent=1))
    else:
        for section, value in status.items():
            if isinstance(value, dict):
                print(f"{section}:")
                for k, v in value.items():
                    print(f"  {k}: {v}")
            else:
                print(f"{section}: {value}")
    return 0


def _cmd_buy_access(args: argparse.Namespace) -> int:
    tx = buy_access_command(
        args.rpc, args.manifest, args.keystore, read_password(args), ether_to_wei(args.price)
    )
    ev = tx.event("AccessBought")
    print(
        f"access bought: {Decimal(ev['price']) / WEI_PER_ETHER} ETH into the task's reward "
        f"escrow (now {Decimal(ev['escrow']) / WEI_PER_ETHER} ETH), block {tx.block_number}, "
        f"gas {tx.gas_used}; a key holder's node posts the model key for you shortly"
    )
    return 0


def add_chain_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register `chain deploy`, `register`, `claim` and `status` on the p2pfl CLI."""
    chain = subparsers.add_parser("chain", help="contract deployment")
    chain_sub = chain.add_subparsers(dest="chain_command", metavar="COMMAND")
    dep = chain_sub.add_parser(
        "deploy", help="deploy NodeRegistry + RoundLedger; writes a deployment file"
    )
    add_rpc_options(dep, deployment=False)
    add_key_options(dep)
    dep.add_argument(
        "--out",
        default=DEFAULT_DEPLOYMENT,
        help=f"deployment file to write (default {DEFAULT_DEPLOYMENT})",
    )
    dep.add_argument(
        "--min-stake", default="1", help="basic tier / minimum stake in ETH (default 1)"
    )
    dep.add_argument("--compute-stake", default="5", help="compute tier stake in ETH (default 5)")
    dep.add_argument("--trusted-stake", default="20", help="trusted tier stake in ETH (default 20)")
    dep.add_argument(
        "--unbonding-blocks",
        type=int,
        default=DEFAULT_UNBONDING_BLOCKS,
        help=f"blocks between exit and withdraw (default {DEFAULT_UNBONDING_BLOCKS})",
    )
    dep.add_argument(
        "--fund-dev", action="store_true", help="credit the deployer first (anvil/test chains only)"
    )
    dep.set_defaults(handler=_cmd_deploy)

    reg = subparsers.add_parser("register", help="register this node with stake (or top up)")
    add_rpc_options(reg)
    add_key_options(reg)
    reg.add_argument("--stake", required=True, help="stake in ETH")
    reg.add_argument(
        "--fund-dev", action="store_true", help="credit the account first (anvil/test chains only)"
    )
    reg.set_defaults(handler=_cmd_register)

    rot = subparsers.add_parser(
        "rotate-key",
        help="move this node's stake and reputation to a new key (from the next round)",
    )
    add_rpc_options(rot)
    add_key_options(rot)
    rot.add_argument(
        "--new-keystore",
        required=True,
        help="keystore of the new key (created with the same password if it does not exist)",
    )
    rot.set_defaults(handler=_cmd_rotate_key)

    claim = subparsers.add_parser("claim", help="claim rewards listed in reward files")
    add_rpc_options(claim)
    add_key_options(claim)
    claim.add_argument(
        "files", nargs="+", help="reward files written by the node for committed rounds"
    )
    claim.set_defaults(handler=_cmd_claim)

    buy = subparsers.add_parser(
        "buy-access", help="buy access to a private task's models (paid to its contributors)"
    )
    add_rpc_options(buy, deployment=False)
    add_key_options(buy, help="keystore whose key receives the model key (and pays)")
    buy.add_argument("--manifest", required=True, help="the private task's manifest")
    buy.add_argument("--price", required=True, help="the task's price in ETH (exactly)")
    buy.set_defaults(handler=_cmd_buy_access)

    status = subparsers.add_parser("status", help="registry, node and task state")
    add_rpc_options(status)
    status.add_argument("--keystore", help="show the node of this keystore (no password needed)")
    status.add_argument("--address", help="show the node of this address")
    status.add_argument("--task", help="show this task (32-byte hex id)")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument(
        "--data-dir",
        help="also show the running node of this data dir (round, peers, committee, accuracy)",
    )
    status.set_defaults(handler=_cmd_status)
