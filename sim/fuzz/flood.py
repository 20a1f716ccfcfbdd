"""Spam flood against a real node: memory must stay bounded, everything must be counted.

In one trio run on 127.0.0.1: a *victim* host joins the task's three topics with the real
node validator (`Node.validate` over a node's state: task, round 5, a registry) and feeds
what it admits into a real `RoundMachine`, as `Node.deliver` does. `ATTACKERS` hosts flood
the topics as a hostile client would: validly signed pubsub messages written straight on
a pubsub stream of their own to the victim, `BATCH` per RPC, with no pacing and no
outbound queue (py-libp2p's own publish drops past 32 queued RPCs per peer, so a flood
sent through it mostly never leaves the attacker). yamux flow control is the only brake:
the flood goes as fast as the victim reads. The attackers also keep every message in their
sync log, so the victim's sync rounds pull them a second time: both paths are flooded.
The mix of hostile messages:

    garbage       random bytes                               -> reject malformed
    truncated     a valid message cut short                  -> reject malformed
    oversized     over the victim's message limit (500 kB)   -> reject oversized
    wrong-task    signed, another task                       -> reject wrong-task
    forged        a signed message with one field changed    -> reject bad-signature
    stranger      validly signed by an unregistered key      -> reject unregistered-signer
    replay        a round long finished                      -> reject replayed-round
    future        three rounds ahead                         -> ignore future-round
    views         a registered committee member's votes for views that never run
                  (admitted by gossip; the machine drops them as future-view)

Every message is distinct (a counter is folded in), so no dedup cache shortcuts the work.
Two phases: `defended` with the node's default limits (peers are banned after a few dozen
rejections, so the flood is cut off), then `open`: bans and per-peer rate limits disabled,
so every message reaches the validator; this is the worst case for memory. The attackers
run in a child process, so the RSS sampled here (every 50 ms; `before` after start-up and a
warm-up) is the victim's alone.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import random
import resource
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import trio
from libp2p.peer.id import ID

from p2pfl.core import round_events as ev
from p2pfl.core.cid import blob_cid
from p2pfl.core.identity import NodeIdentity
from p2pfl.core.messages import Update, Vote, decode_message
from p2pfl.core.round import RoundConfig, RoundMachine
from p2pfl.core.signing import Domain
from p2pfl.errors import InvalidMessage
from p2pfl.net import NetConfig, NodeNet, ValidationResult, open_node_host
from p2pfl.net.config import topic_name
from p2pfl.net.gossip import message_id

TASK = b"\x5a" * 32
DOMAIN = Domain(chain_id=31337, contract=b"\x42" * 20)
CURRENT_ROUND = 5
MEMBERS = [NodeIdentity.from_seed(b"flood member %d" % i) for i in range(7)]
STRANGER = NodeIdentity.from_seed(b"flood stranger")
BASE = blob_cid(b"flood base model").to_bytes()
ATTACKERS = 3
CATEGORIES = (
    "garbage",
    "truncated",
    "oversized",
    "wrong-task",
    "forged",
    "stranger",
    "replay",
    "future",
    "views",
)
# The victim's message limit, below the attackers' (pubsub's 1 MiB cap bounds theirs), so
# oversized messages get through the attackers' own gossip and reach the victim's check.
VICTIM_MAX_MESSAGE_BYTES = 500_000
# Oversized messages cost 0.5 MB each to build and send: one in this many.
OVERSIZED_EVERY = 200
BATCH = 8  # messages per RPC (an oversized one goes alone: the RPC frame limit is 1 MiB)
# After the last message is sent, the victim drains until its counts stand still this long.
DRAIN_QUIET_S = 1.0
DRAIN_MAX_S = 60.0
# An attacker's write that the victim does not take within this long (it was banned and
# dropped the connection) counts as refused, and so does every message until its next
# redial, at most this often. (An unbanned victim busy with a sync round can take over a
# second to read again: the timeout is well above that.)
WRITE_TIMEOUT_S = 5.0
REDIAL_EVERY_S = 1.0
RSS_SAMPLE_S = 0.05


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


@dataclass
class FloodResult:
    sent: int = 0
    sent_by_category: dict[str, int] = field(default_factory=dict)
    refused: int = 0  # of `sent`, what the attackers could not write: cut off by a ban
    rss_before_mib: float = 0.0
    rss_peak_mib: float = 0.0
    rss_half_mib: float = 0.0  # when the victim had judged half as many as were sent
    rss_after_mib: float = 0.0
    # After glibc's malloc_trim: what of `after` was freed memory the allocator had kept
    # (not returned to the OS) rather than state the victim still holds. None off glibc.
    rss_after_trim_mib: float | None = None
    seconds: float = 0.0
    rejected: int = 0
    rejections_by_reason: dict[str, int] = field(default_factory=dict)
    ignored: int = 0
    validated: int = 0  # messages the victim judged (rejected + ignored + admitted)
    admitted: int = 0
    peers_banned: int = 0
    machine_rejected: dict[str, int] = field(default_factory=dict)
    machine_statements: int = 0


class Victim:
    """The node side: real validator, real machine, counting like `Node`."""

    def __init__(self) -> None:
        from sim.fuzz.targets import node_validator

        registered = frozenset(m.address for m in MEMBERS)
        config = RoundConfig(task=TASK, committee_size=7, rule="fedavg")
        self.machine = RoundMachine(config, MEMBERS[0].private_key, DOMAIN)
        self.machine.handle(
            ev.RoundStarted(CURRENT_ROUND, BASE, {m.address: 100 for m in MEMBERS}, 0.0)
        )
        self.validate = node_validator(TASK, registered, CURRENT_ROUND, self.machine)
        self.counts: dict[str, int] = {}

    def validator(self, topic: str, data: bytes, peer: str) -> ValidationResult:
        return ValidationResult.of(self.validate(data))

    async def intake(self, channel: Any) -> None:
        async for message in channel:
            try:
                m = decode_message(message.data)
            except InvalidMessage:
                continue
            event = ev.event_for(m)  # the validator checked the signature
            if event is not None:
                self.machine.handle(event)


def _update(
    author: NodeIdentity, i: int, *, task: bytes = TASK, round_: int = CURRENT_ROUND
) -> Update:
    u = Update(
        task=task,
        round=round_,
        base=BASE,
        delta=blob_cid(i.to_bytes(8, "big")).to_bytes(),
        n_samples=1 + i % 1000,
        norm=1.0,
        inline=b"",
        signer=author.address,
    )
    return u.signed(author.private_key, DOMAIN)  # type: ignore[return-value]


def hostile_message(category: str, i: int, rng: random.Random) -> tuple[str, bytes]:
    """One distinct hostile message of `category`: (topic kind, bytes)."""
    if category == "garbage":
        return "updates", i.to_bytes(8, "big") + rng.randbytes(rng.randint(0, 600))
    if category == "truncated":
        data = _update(MEMBERS[1], i).encode()
        return "updates", data[: rng.randint(1, len(data) - 1)]
    if category == "oversized":
        return "updates", i.to_bytes(8, "big") + bytes(VICTIM_MAX_MESSAGE_BYTES + 1 - 8)
    if category == "wrong-task":
        return "updates", _update(MEMBERS[1], i, task=b"\x01" * 32).encode()
    if category == "forged":
        return "updates", replace(_update(MEMBERS[2], 0), n_samples=2 + i).encode()
    if category == "stranger":
        return "updates", _update(STRANGER, i).encode()
    if category == "replay":
        return "updates", _update(MEMBERS[3], i, round_=1).encode()
    if category == "future":
        return "updates", _update(MEMBERS[3], i, round_=CURRENT_ROUND + 3).encode()
    # views: a registered member's genuinely signed votes for views that never run
    member = MEMBERS[4]
    vote = Vote(
        TASK, CURRENT_ROUND, 0, 1000 + i, BASE, blob_cid(b"x").to_bytes(), bytes(32), member.address
    )
    return "consensus", vote.signed(member.private_key, DOMAIN).encode()


async def _attackers_main(victim_addr: str, tmp: Path, messages: int, seed: int, conn: Any) -> None:
    """The attackers' process: connect, join, wait for "go", flood, report, wait for "stop"."""
    logging.getLogger("p2pfl.net.host").setLevel(logging.ERROR)
    rng = random.Random(seed)
    async with AsyncExitStack() as stack:
        attackers: list[NodeNet] = []
        for a in range(ATTACKERS):
            key = NodeIdentity.from_seed(b"flood attacker %d" % a).private_key
            net = await stack.enter_async_context(
                open_node_host(NetConfig(data_dir=tmp / f"attacker{a}", mdns=False), key)
            )
            await net.connect(victim_addr)
            attackers.append(net)
        topics = {
            kind: topic_name(TASK.hex(), kind) for kind in ("updates", "consensus", "commits")
        }
        for topic in topics.values():
            for net in attackers:
                await net.join(topic, lambda t, d, p: ValidationResult.accept())
        victim = ID.from_base58(victim_addr.rsplit("/p2p/", 1)[1])
        streams = [
            await net.host.new_stream(victim, list(net.pubsub.protocols)) for net in attackers
        ]
        conn.send("ready")
        await trio.to_thread.run_sync(conn.recv)  # "go"
        counts = dict.fromkeys(CATEGORIES, 0)

        async def attack(index: int, net: NodeNet, attacker: _RawClient) -> None:
            batch: list[Any] = []
            for i in range(index, messages, ATTACKERS):
                category = CATEGORIES[i % len(CATEGORIES)]
                if category == "oversized" and i % OVERSIZED_EVERY >= len(CATEGORIES):
                    category = "garbage"
                kind, data = hostile_message(category, i, rng)
                counts[category] += 1
                net.gossip.topics[topics[kind]].remember(
                    message_id(data), data, net.gossip.clock()
                )  # served by sync
                if category == "oversized":
                    await attacker.send([_signed_pubsub_message(net, topics[kind], data)])
                    continue
                batch.append(_signed_pubsub_message(net, topics[kind], data))
                if len(batch) == BATCH:
                    await attacker.send(batch)
                    batch = []
            await attacker.send(batch)

        clients = [_RawClient(net, victim, stream) for net, stream in zip(attackers, streams)]
        async with trio.open_nursery() as flood:
            for index, net in enumerate(attackers):
                flood.start_soon(attack, index, net, clients[index])
        conn.send((counts, sum(c.unsent for c in clients)))
        await trio.to_thread.run_sync(conn.recv)  # "stop": the victim has drained (sync needs us)


def _signed_pubsub_message(net: NodeNet, topic: str, data: bytes) -> Any:
    """A pubsub message from `net`, signed as `Pubsub.publish` signs it (the victim runs
    strict signing: an unsigned message would die in py-libp2p, before our validator)."""
    from libp2p.pubsub.pb import rpc_pb2
    from libp2p.pubsub.pubsub import PUBSUB_SIGNING_PREFIX

    pubsub = net.pubsub
    msg = rpc_pb2.Message(
        data=data, topicIDs=[topic], from_id=pubsub.my_id.to_bytes(), seqno=pubsub._next_seqno()
    )
    msg.signature = pubsub.sign_key.sign(PUBSUB_SIGNING_PREFIX.encode() + msg.SerializeToString())
    msg.key = net.host.get_public_key().serialize()
    return msg


class _RawClient:
    """One attacker's pubsub stream to the victim. Once the victim cuts it off (a ban closes
    the connection), it redials at most every REDIAL_EVERY_S, as a spammer would, and counts
    the messages it could not write."""

    def __init__(self, net: NodeNet, victim: ID, stream: Any) -> None:
        self.net, self.victim, self.stream = net, victim, stream
        self.next_redial = 0.0
        self.unsent = 0

    async def send(self, messages: list[Any]) -> None:
        from libp2p.pubsub.pb import rpc_pb2

        if not messages:
            return
        if self.stream is None and trio.current_time() >= self.next_redial:
            self.next_redial = trio.current_time() + REDIAL_EVERY_S
            with trio.move_on_after(WRITE_TIMEOUT_S):
                try:
                    self.stream = await self.net.host.new_stream(
                        self.victim, list(self.net.pubsub.protocols)
                    )
                except Exception:
                    pass
        written = False
        if self.stream is not None:
            with trio.move_on_after(WRITE_TIMEOUT_S):
                try:
                    written = await self.net.pubsub.write_msg(
                        self.stream, rpc_pb2.RPC(publish=messages)
                    )
                except Exception:
                    pass
        if not written:
            self.next_redial = max(self.next_redial, trio.current_time() + REDIAL_EVERY_S)
            self.stream = None
            self.unsent += len(messages)
        else:
            await trio.lowlevel.checkpoint()


def _attackers_process(victim_addr: str, tmp: Path, messages: int, seed: int, conn: Any) -> None:
    trio.run(_attackers_main, victim_addr, tmp, messages, seed, conn)


async def _flood_phase(tmp: Path, messages: int, defended: bool, seed: int) -> FloodResult:
    """The victim's side, in this process (so its RSS is the victim's alone); the
    attackers run in a child process."""
    import multiprocessing

    logging.getLogger("p2pfl.net.host").setLevel(logging.ERROR)  # "no bootstrap peers"
    result = FloodResult()
    limits: dict[str, Any] = {"max_message_bytes": VICTIM_MAX_MESSAGE_BYTES}
    if not defended:
        limits |= {"ban_threshold": -1e18, "peer_gossip_per_s": 1e9, "peer_requests_per_s": 1e9}
    victim = Victim()
    ctx = multiprocessing.get_context("spawn")
    conn, child_conn = ctx.Pipe()
    async with AsyncExitStack() as stack:
        v_net: NodeNet = await stack.enter_async_context(
            open_node_host(
                NetConfig(data_dir=tmp / "victim", mdns=False, **limits), MEMBERS[0].private_key
            )
        )
        topics = {
            kind: topic_name(TASK.hex(), kind) for kind in ("updates", "consensus", "commits")
        }
        process = ctx.Process(
            target=_attackers_process,
            args=(v_net.listen_addrs[0], tmp, messages, seed, child_conn),
            daemon=True,
        )
        process.start()
        try:
            async with trio.open_nursery() as nursery:
                for topic in topics.values():
                    nursery.start_soon(victim.intake, await v_net.join(topic, victim.validator))
                with trio.fail_after(120):
                    await trio.to_thread.run_sync(conn.recv)  # "ready"
                await trio.sleep(2.0)  # meshes form
                gc.collect()
                result.rss_before_mib = result.rss_peak_mib = _rss_mib()
                stop = trio.Event()
                half_done = trio.Event()

                async def sample() -> None:
                    while not stop.is_set():
                        result.rss_peak_mib = max(result.rss_peak_mib, _rss_mib())
                        if not half_done.is_set() and _judged(v_net.metrics()) >= messages // 2:
                            result.rss_half_mib = _rss_mib()  # a plateau from here on means bounded
                            half_done.set()
                        await trio.sleep(RSS_SAMPLE_S)

                nursery.start_soon(sample)
                started = time.perf_counter()
                conn.send("go")
                counts, result.refused = await trio.to_thread.run_sync(conn.recv)
                if not half_done.is_set():
                    result.rss_half_mib = _rss_mib()
                # Let the victim drain what is in flight (sync included): until its counts
                # stand still for DRAIN_QUIET_S.
                with trio.move_on_after(DRAIN_MAX_S):
                    last = None
                    while (now := _judged(v_net.metrics())) != last:
                        last = now
                        await trio.sleep(DRAIN_QUIET_S)
                result.seconds = time.perf_counter() - started
                gc.collect()
                result.rss_after_mib = _rss_mib()
                result.rss_peak_mib = max(result.rss_peak_mib, result.rss_after_mib)
                result.rss_after_trim_mib = _rss_after_trim()
                stop.set()
                conn.send("stop")
                metrics = v_net.metrics()
                result.sent_by_category = counts
                result.sent = sum(counts.values())
                result.rejected = int(metrics.get("rejected", 0))  # type: ignore[arg-type]
                result.rejections_by_reason = dict(metrics["rejections_by_reason"])  # type: ignore[arg-type]
                result.ignored = sum(int(v) for k, v in metrics.items() if k.startswith("ignored-"))  # type: ignore[arg-type]
                result.admitted = int(metrics.get("admitted-gossip", 0)) + int(
                    metrics.get("admitted-sync", 0)
                )
                result.validated = _judged(metrics)  # = rejected + ignored + admitted
                result.peers_banned = int(metrics.get("peers-banned", 0))  # type: ignore[arg-type]
                result.machine_rejected = {
                    k: v for k, v in victim.machine.counters.items() if k.startswith("rejected:")
                }
                result.machine_statements = len(victim.machine._statements)
                nursery.cancel_scope.cancel()
        finally:
            await trio.to_thread.run_sync(process.join, 20)
            if process.is_alive():
                process.kill()
    return result


def _rss_after_trim() -> float | None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        return None
    return _rss_mib()


def _judged(metrics: dict[str, Any]) -> int:
    """Messages the victim has judged so far (rejected, ignored or admitted)."""
    return sum(
        int(v)
        for k, v in metrics.items()
        if k == "rejected" or k.startswith(("ignored-", "admitted-"))
    )


def run_flood(tmp: Path, messages: int, defended: bool, seed: int = 0) -> FloodResult:
    """Run one flood phase (its own trio run) and return what the victim counted."""
    return trio.run(_flood_phase, tmp, messages, defended, seed)
