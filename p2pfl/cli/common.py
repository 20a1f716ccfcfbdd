"""Options and helpers shared by the command groups: keystore password, chain RPC, ether."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount

from p2pfl.errors import ConfigError, P2PFLError

DEFAULT_RPC = "http://127.0.0.1:8545"
DEFAULT_DEPLOYMENT = "deployment.json"
DEFAULT_KEYSTORE = "node-key.json"
WEI_PER_ETHER = Decimal(10**18)


def read_password(args: argparse.Namespace, confirm: bool = False) -> str:
    """Keystore password from --password-file, $P2PFL_PASSWORD, or a prompt."""
    if getattr(args, "password_file", None):
        return Path(args.password_file).read_text().rstrip("\n")
    if "P2PFL_PASSWORD" in os.environ:
        return os.environ["P2PFL_PASSWORD"]
    if not sys.stdin.isatty():
        raise P2PFLError("no password: pass --password-file or set P2PFL_PASSWORD")
    first = getpass.getpass("keystore password: ")
    if confirm and getpass.getpass("repeat password: ") != first:
        raise P2PFLError("passwords differ")
    return first


def add_password_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--password-file",
        help="file holding the keystore password (else $P2PFL_PASSWORD or a prompt)",
    )


def add_key_options(parser: argparse.ArgumentParser, help: str = "node keystore") -> None:
    parser.add_argument(
        "--keystore", default=DEFAULT_KEYSTORE, help=f"{help} (default {DEFAULT_KEYSTORE})"
    )
    add_password_option(parser)


def default_rpc() -> str:
    return os.environ.get("P2PFL_RPC", DEFAULT_RPC)


def add_rpc_options(parser: argparse.ArgumentParser, deployment: bool = True) -> None:
    parser.add_argument(
        "--rpc", default=default_rpc(), help=f"JSON-RPC URL (default $P2PFL_RPC or {DEFAULT_RPC})"
    )
    if deployment:
        parser.add_argument(
            "--deployment",
            default=DEFAULT_DEPLOYMENT,
            help=f"deployment file from `p2pfl chain deploy` (default {DEFAULT_DEPLOYMENT})",
        )


def ether_to_wei(text: str) -> int:
    """'1.5' -> 1500000000000000000; ConfigError for anything else."""
    try:
        value = Decimal(text) * WEI_PER_ETHER
    except InvalidOperation:
        raise ConfigError(f"not an amount of ether: {text!r}") from None
    if value < 0 or value != value.to_integral_value():
        raise ConfigError(f"amount must be >= 0 with at most 18 decimals: {text!r}")
    return int(value)


def load_account(keystore: str | Path, password: str) -> LocalAccount:
    """Decrypt the node's eth-account keystore (the same key as its libp2p identity)."""
    from p2pfl.keystore import load_keystore

    return Account.from_key(load_keystore(keystore, password).private_key)


def fetch_only_host(
    data_dir: str | Path, bootstrap: Sequence[str]
) -> AbstractAsyncContextManager[Any]:
    """A host that only fetches blocks (`model get`, `serve`): listens on loopback, a
    throwaway identity (it signs nothing and holds no stake), fails fast without peers."""
    from p2pfl.keystore import generate_identity
    from p2pfl.net.config import NetConfig
    from p2pfl.net.host import open_node_host

    config = NetConfig(
        data_dir=Path(data_dir),
        listen="/ip4/127.0.0.1/tcp/0",
        bootstrap=tuple(bootstrap),
        require_peers=True,
    )
    return open_node_host(config, generate_identity().private_key)
