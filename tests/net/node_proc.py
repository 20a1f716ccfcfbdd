"""A node in its own OS process, driven by tests/net/test_multiprocess.py and sim/bench/transfer.py.

    python -m tests.net.node_proc --data DIR --key-seed N [--bootstrap ADDR ...] MODE

Modes (all listen on 127.0.0.1 only, mDNS off):
  serve --blob-seed S --blob-bytes B   store a deterministic blob, print "ROOT <cid>", serve
  fetch --root CID [--slow]            fetch from the bootstrap peers, print "PROGRESS n" per
                                       block batch and "DONE <blocks-fetched>", then serve
  gossip --topic T --publish N --expect M  publish N messages, print "GOT M" once M arrived
It prints "ADDR <multiaddr>" first, and lives until killed.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import trio

from p2pfl.core.cid import CID
from p2pfl.core.identity import NodeIdentity
from p2pfl.net import NetConfig, ValidationResult, open_node_host


def say(*parts: object) -> None:
    print(*parts, flush=True)


def blob_bytes(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


async def main(args: argparse.Namespace) -> None:
    key = NodeIdentity.from_seed(bytes([args.key_seed]) * 32).private_key
    config = NetConfig(
        data_dir=Path(args.data),
        listen="/ip4/127.0.0.1/tcp/0",
        bootstrap=tuple(args.bootstrap),
        require_peers=bool(args.bootstrap),
        mdns=False,
        bitswap=args.bitswap,
        tune_yamux=not args.untuned,
    )
    async with open_node_host(config, key) as net:
        say("ADDR", net.listen_addrs[0])
        if args.mode == "serve":
            root = net.put_blob(blob_bytes(args.blob_seed, args.blob_bytes))
            await net.provide(root)
            say("ROOT", root)
        elif args.mode == "fetch":
            root = CID.parse(args.root)
            providers = [a.rsplit("/p2p/", 1)[1] for a in args.bootstrap]
            if args.slow:  # one batch of 4 blocks every 0.2 s, so a test can kill us midway
                while frontier := net.store.missing(root):
                    await net.blocks.fetch_blocks(frontier[:4], providers)
                    say("PROGRESS", sum(1 for _ in net.store))
                    await trio.sleep(0.2)
            else:
                await net.fetch_blob(root, providers)
            say("DONE", net.metrics().get("blocks-fetched", 0))
        elif args.mode == "gossip":
            channel = await net.join(args.topic, lambda t, d, p: ValidationResult.accept())
            await trio.sleep(2.0)  # meshes form
            for i in range(args.publish):
                await net.publish(args.topic, f"{net.peer_id} {i}".encode())
            seen: set[bytes] = set()
            while len(seen) < args.expect:
                seen.add((await channel.receive()).data)
            say("GOT", len(seen))
        await trio.sleep_forever()


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--key-seed", type=int, required=True)
    p.add_argument("--bootstrap", action="append", default=[])
    p.add_argument("--bitswap", action="store_true")
    p.add_argument("--untuned", action="store_true")
    p.add_argument("mode", choices=["serve", "fetch", "gossip"])
    p.add_argument("--blob-seed", type=int, default=0)
    p.add_argument("--blob-bytes", type=int, default=0)
    p.add_argument("--root")
    p.add_argument("--slow", action="store_true")
    p.add_argument("--topic", default="/p2pfl/1/t/updates")
    p.add_argument("--publish", type=int, default=0)
    p.add_argument("--expect", type=int, default=0)
    return p.parse_args(argv)


if __name__ == "__main__":
    try:
        trio.run(main, parse(sys.argv[1:]))
    except KeyboardInterrupt:
        pass
