"""A node for tests/net/test_nat.py, in its own OS process (the test puts it in a network
namespace behind a NAT, or on the public network for the relay).

    python -m tests.net.nat_proc --data DIR --key-seed N --listen MULTIADDR [options] MODE

Modes:
  relay                     a circuit relay v2 (and AutoNAT server); prints "REACH <verdict>"
                            whenever AutoNAT's verdict changes
  serve --blob-bytes B      reserve on --relay, print "CIRCUIT <addr>", store a blob and print
                            "ROOT <cid>", then as `peer`
  fetch --root CID [--slow] dial --bootstrap (a circuit address), fetch the blob from the
                            bootstrap peer and print "FETCHED <blocks>", then as `peer`
                            (--slow: see fetch_slowly)
`serve` and `fetch` then publish "<peer id> hello" on a topic and print "GOT <n>" once the
other node's message arrived; print "REACH <verdict>" when AutoNAT has one and
"KIND <direct|relayed> <peer>" whenever the kind of connection to the other node changes.
Everything is printed once the thing happened; the process lives until killed.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import trio

from p2pfl.core.cid import CID
from p2pfl.core.identity import NodeIdentity
from p2pfl.net import NetConfig, ValidationResult, open_node_host
from tests.net.node_proc import blob_bytes, say

TOPIC = "/p2pfl/1/nat/updates"
POLL_S = 0.2


async def watch(net, other: str | None) -> None:  # type: ignore[no-untyped-def]
    """Print AutoNAT's verdict and the kind of connection to `other` when they change."""
    reach, kind = "unknown", None
    while True:
        if net.reachability != reach:
            reach = net.reachability
            say("REACH", reach)
        if other is not None and (now := net.connection_kind(other)) != kind:
            kind = now
            say("KIND", kind, other)
        await trio.sleep(POLL_S)


async def fetch_slowly(net, root: CID, provider: str) -> None:  # type: ignore[no-untyped-def]
    """Fetch `root` 2 blocks at a time, printing "PROGRESS <blocks held>" after each batch and
    "FETCH-ERROR <error>" for each failed one (then retry a second later), as a node's round
    retries a delta fetch; "FETCHED <blocks>" at the end."""
    while frontier := net.store.missing(root):
        try:
            await net.blocks.fetch_blocks(frontier[:2], [provider])
        except Exception as exc:
            say("FETCH-ERROR", f"{type(exc).__name__}: {exc}")
            await trio.sleep(1.0)
            continue
        say("PROGRESS", sum(1 for _ in net.store))
        await trio.sleep(0.2)
    say("FETCHED", net.metrics().get("blocks-fetched", 0))


async def main(args: argparse.Namespace) -> None:
    key = NodeIdentity.from_seed(bytes([args.key_seed]) * 32).private_key
    relay_mode = args.mode == "relay"
    config = NetConfig(
        data_dir=Path(args.data),
        listen=args.listen,
        bootstrap=tuple(args.bootstrap),
        require_peers=bool(args.bootstrap),
        dht=False,
        relay_service=relay_mode,
        relays=tuple(args.relay),
        autonat=True,
        hole_punching=args.hole_punching,
    )
    async with open_node_host(config, key) as net, trio.open_nursery() as nursery:
        for name in args.debug_log:  # after open_node_host, which quiets py-libp2p
            logger = logging.getLogger(name)  # ("libp2p" does not propagate to the root)
            logger.setLevel(logging.DEBUG)
            logger.addHandler(logging.StreamHandler(sys.stdout))
        say("ADDR", net.listen_addrs[0])
        if relay_mode:
            nursery.start_soon(watch, net, None)
            await trio.sleep_forever()
        for addr in net.nat.circuit_addrs:
            say("CIRCUIT", addr)
        other = args.bootstrap[0].rsplit("/p2p/", 1)[1] if args.bootstrap else None
        channel = await net.join(TOPIC, lambda t, d, p: ValidationResult.accept())
        if args.mode == "serve":
            root = net.put_blob(blob_bytes(7, args.blob_bytes))
            say("ROOT", root)
            while other is None:  # the fetcher dials us; watch the first peer that is not a relay
                relays = {a.rsplit("/p2p/", 1)[1] for a in args.relay}
                others = [p for p in net.connected_peers() if p not in relays]
                other = others[0] if others else None
                await trio.sleep(POLL_S)
        nursery.start_soon(watch, net, other)
        if args.mode == "fetch" and args.slow:
            await fetch_slowly(net, CID.parse(args.root), other)
        elif args.mode == "fetch":
            assert other is not None
            await net.fetch_blob(CID.parse(args.root), [other], timeout_s=60)
            say("FETCHED", net.metrics().get("blocks-fetched", 0))
        await trio.sleep(2.0)  # the gossip mesh forms (1 s heartbeats)
        await net.publish(TOPIC, f"{net.peer_id} hello".encode())
        while (got := (await channel.receive()).data.decode()).startswith(net.peer_id):
            pass  # py-libp2p delivers our own messages to us too
        say("GOT", got)
        await trio.sleep_forever()


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--key-seed", type=int, required=True)
    p.add_argument("--listen", required=True)
    p.add_argument("--bootstrap", action="append", default=[])
    p.add_argument("--relay", action="append", default=[])
    p.add_argument("--hole-punching", action="store_true")
    p.add_argument("--debug-log", action="append", default=[], help="a logger to show at DEBUG")
    p.add_argument("--blob-bytes", type=int, default=0)
    p.add_argument("--root")
    p.add_argument("--slow", action="store_true", help="fetch: 2 blocks every 0.2 s")
    p.add_argument("mode", choices=["relay", "serve", "fetch"])
    return p.parse_args(argv)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("p2pfl").setLevel(logging.INFO)
    try:
        trio.run(main, parse(sys.argv[1:]))
    except KeyboardInterrupt:
        pass
