"""The `p2pfl` parser and entry point. Every subcommand has --help; errors print one clear line."""

from __future__ import annotations

import argparse
import sys

from p2pfl.cli.audit import add_audit_command
from p2pfl.cli.chain import add_chain_commands
from p2pfl.cli.keys import add_key_commands
from p2pfl.cli.node import add_node_commands
from p2pfl.cli.serve import add_serve_command
from p2pfl.errors import P2PFLError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="p2pfl", description="Federated learning with no coordinator."
    )
    parser.add_argument("--log-json", action="store_true", help="structured JSON logs on stderr")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)"
    )
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no progress lines on stderr (training epochs, model fetches; on in a terminal)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_key_commands(sub)
    add_node_commands(sub)
    add_chain_commands(sub)
    add_serve_command(sub)
    add_audit_command(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    from p2pfl.logs import setup_logging

    setup_logging(verbose=args.verbose, json_lines=args.log_json)
    try:
        return int(args.handler(args))
    except P2PFLError as exc:
        print(f"p2pfl: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
