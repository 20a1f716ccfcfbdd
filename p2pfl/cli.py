"""The `p2pfl` command. Every subcommand has --help; errors print one clear line."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Callable
from pathlib import Path

from p2pfl.errors import P2PFLError

Handler = Callable[[argparse.Namespace], int]


def _password(args: argparse.Namespace, confirm: bool = False) -> str:
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
    parser.add_argument("--password-file", help="file holding the keystore password (else $P2PFL_PASSWORD or a prompt)")


def cmd_keygen(args: argparse.Namespace) -> int:
    from p2pfl.core.identity import NodeIdentity

    node = NodeIdentity.generate()
    path = node.save_keystore(args.output, _password(args, confirm=True))
    print(f"keystore:   {path}")
    print(f"address:    {node.checksum_address}")
    print(f"peer id:    {node.peer_id}")
    print(f"x25519 key: {node.x25519_public_key.hex()}")
    return 0


def cmd_cid(args: argparse.Namespace) -> int:
    from p2pfl.core.cid import blob_cid

    for name in args.files:
        data = Path(name).read_bytes()
        print(f"{blob_cid(data)}  {name}" if len(args.files) > 1 else blob_cid(data))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="p2pfl", description="Federated learning with no coordinator.")
    parser.add_argument("--log-json", action="store_true", help="structured JSON logs on stderr")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    keygen = sub.add_parser("keygen", help="create a node key (encrypted keystore)")
    keygen.add_argument("-o", "--output", default="node-key.json", help="keystore path (default: node-key.json)")
    add_password_option(keygen)
    keygen.set_defaults(handler=cmd_keygen)

    cid = sub.add_parser("cid", help="print the IPFS CIDv1 of files (same as `ipfs add --cid-version 1`)")
    cid.add_argument("files", nargs="+", help="files to hash")
    cid.set_defaults(handler=cmd_cid)

    for hook in _optional_hooks():
        hook(sub)
    return parser


def _optional_hooks() -> list[Callable[[argparse._SubParsersAction], None]]:
    """Subcommand groups contributed by other parts of the package."""
    from p2pfl.commands import add_node_commands

    hooks = [add_node_commands]
    try:
        from p2pfl.chain.commands import add_chain_commands

        hooks.append(add_chain_commands)
    except ImportError:
        pass
    return hooks


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    from p2pfl.logs import setup_logging

    setup_logging(verbose=args.verbose, json_lines=args.log_json)
    try:
        return args.handler(args)
    except P2PFLError as exc:
        print(f"p2pfl: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
