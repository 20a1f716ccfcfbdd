"""A node in its own OS process, driven by tests/net/test_multiprocess.py and sim/bench/transfer.py.

    python -m tests.net.node_proc --data DIR --key-seed N [--bootstrap ADDR ...] MODE

Modes (all listen on 127.0.0.1 only, mDNS off):
  serve --blob-seed S --blob-bytes B   store a deterministic blob, print "ROOT <cid>", serve
  fetch --root CID [--slow]            fetch from the bootstrap peers, print "PROGRESS n" per
                                       block batch and "DONE <blocks-fetched>", then serve
  gossip --topic T --publish N --expect M  publish N messages, print "GOT M" once M arrived
  updates --publish N --expect M [--go FILE] [--report FILE] [--attack [--attack-go FILE]]
                                       the node's real gossip checks on the updates topic
                                       (p2pfl.core.validation.check_gossip: task, round window,
                                       EIP-712 signature, registered signer); once the go file
                                       exists (else at once) publish N signed valid Updates for
                                       ROUND; print "GOT M" once M distinct messages arrived,
                                       then, once the report file exists, "REPORT <json>"
                                       (deliveries, rejections, ignores, connected peers).
                                       --attack: accept everything, also publish one message
                                       per ATTACKS kind (once the attack-go file exists, if
                                       given) and print "ATTACKED", and after GOT publish the
                                       valid ones again (a replay) and print "REPLAYED"
It prints "ADDR <multiaddr>" first, and lives until killed.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from dataclasses import replace
from pathlib import Path

import trio

from p2pfl.core.cid import CID, blob_cid
from p2pfl.core.identity import NodeIdentity
from p2pfl.core.messages import Update, decode_message
from p2pfl.core.signing import Domain
from p2pfl.core.validation import check_gossip
from p2pfl.net import NetConfig, ValidationResult, open_node_host, topic_name

TASK = b"\x07" * 32
DOMAIN = Domain(chain_id=31337, contract=b"\x42" * 20)
ROUND = 5
# Honest nodes' message size limit in `updates` mode, well under the attacker's (the codec's
# 1,000,000), so that a validly signed but oversized Update can be sent.
HONEST_MAX_MESSAGE_BYTES = 100_000
OVERSIZED_INLINE_BYTES = 200_000
# What `--attack` publishes, by the reason an honest node rejects (or ignores) it for.
ATTACKS = (
    "bad-signature",
    "replayed-round",
    "future-round",
    "wrong-task",
    "unregistered-signer",
    "oversized",
)


def say(*parts: object) -> None:
    print(*parts, flush=True)


def blob_bytes(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def identity(key_seed: int) -> NodeIdentity:
    return NodeIdentity.from_seed(bytes([key_seed]) * 32)


def update(
    author: NodeIdentity, j: int, round_: int = ROUND, task: bytes = TASK, inline: bytes = b""
) -> bytes:
    """Signed Update number `j` of `author` (deterministic bytes: same inputs, same message)."""
    u = Update(
        task=task,
        round=round_,
        base=blob_cid(b"base").to_bytes(),
        delta=blob_cid(author.address + bytes([j % 256, round_ % 256])).to_bytes(),
        n_samples=100 + j,
        norm=1.0,
        inline=inline,
        signer=author.address,
    )
    return u.signed(author.private_key, DOMAIN).encode()


def attack(kind: str, author: NodeIdentity) -> bytes:
    """One message an honest node must not deliver or forward, by ATTACKS kind."""
    if kind == "bad-signature":  # a valid signature over other content
        signed = decode_message(update(author, 200))
        return replace(signed, n_samples=10**6).encode()
    if kind == "replayed-round":
        return update(author, 201, round_=ROUND - 2)
    if kind == "future-round":
        return update(author, 202, round_=ROUND + 3)
    if kind == "wrong-task":
        return update(author, 203, task=b"\x08" * 32)
    if kind == "unregistered-signer":
        return update(NodeIdentity.from_seed(b"not registered"), 204)
    if kind == "oversized":  # validly signed, over the honest nodes' size limit
        return update(author, 205, inline=random.Random(5).randbytes(OVERSIZED_INLINE_BYTES))
    raise ValueError(kind)


def node_validator(registered: set[bytes]):  # type: ignore[no-untyped-def]
    """The node's gossip validator (p2pfl.node.intake.Intake.validator) for TASK at ROUND."""

    def validate(topic: str, data: bytes, peer: str) -> ValidationResult:
        return ValidationResult.of(
            check_gossip(data, task=TASK, domain=DOMAIN, registered=registered, current_round=ROUND)
        )

    return validate


async def updates_mode(net, args: argparse.Namespace) -> None:  # type: ignore[no-untyped-def]
    me = identity(args.key_seed)
    registered = {identity(s).address for s in range(1, args.registered + 1)}
    validate = (
        (lambda t, d, p: ValidationResult.accept()) if args.attack else node_validator(registered)
    )
    topic = topic_name(TASK.hex(), "updates")
    channel = await net.join(topic, validate)
    mine = [update(me, j) for j in range(args.publish)]
    if args.go:
        while not Path(args.go).exists():
            await trio.sleep(0.05)
    deliveries = 0
    seen: set[bytes] = set()
    async with trio.open_nursery() as nursery:
        if args.attack:

            async def publish_attacks() -> None:
                # After --attack-go (if given): a peer that bans us for them must already
                # hold our valid updates, or the test would measure the ban, not delivery.
                while args.attack_go and not Path(args.attack_go).exists():
                    await trio.sleep(0.05)
                for kind in ATTACKS:
                    await net.publish(topic, attack(kind, me))
                say("ATTACKED")

            nursery.start_soon(publish_attacks)
        for data in mine:
            nursery.start_soon(net.publish, topic, data)
        while len(seen) < args.expect:
            message = await channel.receive()
            deliveries += 1
            seen.add(message.msg_id)
    say("GOT", len(seen))
    if args.attack:
        for data in mine:
            await net.publish(topic, data)
        say("REPLAYED")
    if not args.report:
        return
    async with trio.open_nursery() as nursery:

        async def count_late() -> None:
            nonlocal deliveries
            async for message in channel:
                deliveries += 1
                seen.add(message.msg_id)

        nursery.start_soon(count_late)
        while not Path(args.report).exists():
            await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
    m = net.metrics()
    report = {
        "deliveries": deliveries,
        "distinct": len(seen),
        "rejected": m.get("rejections_by_reason", {}),
        "ignored": {k: v for k, v in m.items() if k.startswith("ignored-")},
        "via_sync": m.get("admitted-sync", 0),
        "peers": net.connected_peers(),
        "peer_id": net.peer_id,
    }
    say("REPORT", json.dumps(report, sort_keys=True))


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
        max_message_bytes=args.max_message_bytes,
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
        elif args.mode == "updates":
            await updates_mode(net, args)
        await trio.sleep_forever()


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--key-seed", type=int, required=True)
    p.add_argument("--bootstrap", action="append", default=[])
    p.add_argument("--bitswap", action="store_true")
    p.add_argument("--untuned", action="store_true")
    p.add_argument("--max-message-bytes", type=int, default=NetConfig.max_message_bytes)
    p.add_argument("mode", choices=["serve", "fetch", "gossip", "updates"])
    p.add_argument("--blob-seed", type=int, default=0)
    p.add_argument("--blob-bytes", type=int, default=0)
    p.add_argument("--root")
    p.add_argument("--slow", action="store_true")
    p.add_argument("--topic", default="/p2pfl/1/t/updates")
    p.add_argument("--publish", type=int, default=0)
    p.add_argument("--expect", type=int, default=0)
    p.add_argument("--go")
    p.add_argument("--attack", action="store_true")
    p.add_argument(
        "--attack-go", help="with --attack: publish the bad messages once this file exists"
    )
    p.add_argument("--registered", type=int, default=8, help="key seeds 1..N are registered nodes")
    p.add_argument("--report")
    return p.parse_args(argv)


if __name__ == "__main__":
    try:
        trio.run(main, parse(sys.argv[1:]))
    except KeyboardInterrupt:
        pass
