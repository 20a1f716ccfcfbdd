"""`p2pfl keygen` and `p2pfl cid`."""

from __future__ import annotations

import argparse
from pathlib import Path

from p2pfl.cli.common import add_password_option, read_password


def cmd_keygen(args: argparse.Namespace) -> int:
    from p2pfl.keystore import generate_identity, save_keystore

    node = generate_identity()
    path = save_keystore(node, args.output, read_password(args, confirm=True))
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


def add_key_commands(sub: argparse._SubParsersAction) -> None:
    keygen = sub.add_parser("keygen", help="create a node key (encrypted keystore)")
    keygen.add_argument(
        "-o", "--output", default="node-key.json", help="keystore path (default: node-key.json)"
    )
    add_password_option(keygen)
    keygen.set_defaults(handler=cmd_keygen)

    cid = sub.add_parser(
        "cid", help="print the IPFS CIDv1 of files (same as `ipfs add --cid-version 1`)"
    )
    cid.add_argument("files", nargs="+", help="files to hash")
    cid.set_defaults(handler=cmd_cid)
