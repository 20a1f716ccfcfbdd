"""The `p2pfl` command: the top layer of the product (nothing in `p2pfl` imports it).

app.py     the parser and `main` (errors print one clear line)
common.py  options and helpers every command group shares (password, RPC, ether)
keys.py    keygen, cid
node.py    task create, node start, model get, and the running node's status
chain.py   chain deploy, register, claim, status
launch.py  the one way a node process is started: `p2pfl node start` and the
           simulator's node processes (`sim.node_proc`) both go through it
"""

from p2pfl.cli.app import build_parser, main

__all__ = ["build_parser", "main"]
