"""Gossip: gossipsub topics with the node's validator in front, paced publishing, and
anti-entropy sync so that a lost message costs a second instead of a round.

Three paths bring a message to a node, all through the same gate (`Gossip._admit`):

- **gossipsub** (fast, lossy): py-libp2p runs our topic validator *before* it forwards, so a
  message the node's `validate` callable rejects stops at the first honest hop.
- **sync** (`/p2pfl/sync/1.0.0`, reliable): every `sync_interval_s` each node sends one random
  peer subscribed to the topic the ids of the messages it already has; the peer answers with
  the ones missing. Gossipsub in py-libp2p drops bursts (32-slot per-peer queues, a 10
  msg/topic/s spam limit per forwarder, a 32-slot subscription channel); sync repairs every
  such loss within a few intervals, without knowing anything about rounds.
- **local publish**: admitted directly, then handed to gossipsub at a paced rate.
- **push** (on the sync protocol): one message sent to one chosen peer, which judges it
  through the same gate and answers with its verdict; neither side gossips it or keeps it
  in its sync log (a task whose updates go to the committee only sends them this way).

Message id = sha256(data) (content addressed), so the same bytes arriving by gossip, by sync,
or republished by another node are one message.

`validate(topic, data, from_peer) -> ValidationResult` is supplied by the node; this module
knows nothing about what a message means. ACCEPT delivers and forwards; REJECT drops, counts
the reason, and lowers the sender's score (unless the result says the sender is not to
blame); IGNORE drops without penalty (e.g. a message for a
round this node has not reached yet: it will be offered again by sync).

Sync wire format (big-endian; spec: protocol/spec/network.md):

    request  = 0x02 | u16 topic length | topic (UTF-8) | u32 n | n x 32-byte message ids
    response = u32 m | m x (u32 length | message bytes)

    push     = 0x03 | u16 topic length | topic (UTF-8) | u32 length | message bytes
             | u32 attachment length | attachment bytes (e.g. the delta an update names)
    answer   = 1 byte: 0 accepted (or already held), 1 rejected, 2 ignored (try later)

    pull     = 0x04 | u16 topic length | topic (UTF-8) | u32 n | n x 32-byte message ids
    response = as sync's, from the messages pushed to the peer instead of its sync log
"""

from __future__ import annotations

import hashlib
import logging
import random
import struct
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from enum import Enum
from typing import Any

import trio

from p2pfl.core.validation import ACCEPT, IGNORE
from p2pfl.core.validation import Verdict as CoreVerdict
from p2pfl.errors import InvalidMessage, P2PFLError
from p2pfl.net.blocks import FrameReader, StreamClosed, peer_of
from p2pfl.net.config import (
    PUBLISH_BURST,
    SYNC_LOG_MAX_MESSAGES,
    SYNC_LOG_TTL_S,
    SYNC_MAX_RESPONSE_BYTES,
    SYNC_PROTOCOL,
    NetConfig,
)
from p2pfl.net.limits import Metrics, Offence, PeerBook, TokenBucket
from p2pfl.net.yamux_tuning import grow_receive_window

log = logging.getLogger(__name__)

MSG_SYNC = 0x02
MSG_PUSH = 0x03
MSG_PULL = 0x04
# A pull whose answer carries, after each message, the bytes that came with it (a relayed
# update's delta): a member relaying updates then needs no block fetch per delta.
MSG_PULL_ATTACHED = 0x05
PULL_KINDS = (MSG_PULL, MSG_PULL_ATTACHED)
PUSH_ANSWERS = {0: "accept", 1: "reject", 2: "ignore"}
# Largest attachment a push may carry (a model-sized delta; the node checks it against the
# CID its message names before storing anything).
PUSH_MAX_ATTACHMENT_BYTES = 64 * 1024 * 1024
# Attachments of pushed (and attached-pulled) messages kept per topic to serve attached
# pulls, newest first (a round's deltas for a committee member: 100 x 400 KB); older ones
# are dropped and their messages served bare (the puller fetches those deltas as blocks).
PULL_ATTACHMENTS_MAX_BYTES = 48 * 1024 * 1024
# Receive window granted on a stream that brings attachments: a `pull+` answer (up to 8 MiB
# and one message more) and a push (a delta). Yamux starts every stream at 256 KiB and
# re-credits each half of it consumed: one round trip through both hosts' event loops per
# 128 KiB, which on a loaded loop (20-50 ms) held a member's relay pulls to ~5 MB/s.
ATTACHED_RECEIVE_WINDOW_BYTES = 16 * 1024 * 1024
# A push exchange (opening the stream included) gets this long. A loaded host moves a few
# MB/s through py-libp2p's Noise and yamux and can take over 10 s to negotiate a stream
# (NetConfig.stream_negotiation_timeout_s); a push cut short is sent again in full, so a
# short timeout only multiplies the load that made it time out.
PUSH_TIMEOUT_S = 60.0
MESSAGE_ID_SIZE = 32
MAX_TOPIC_BYTES = 256
# Ids of ignored messages are sent as "have" for this long, so sync does not fetch the same
# not-yet-valid message every interval; after it, the message gets another chance.
IGNORED_TTL_S = 10.0
# Delivered messages wait here for the node to read them. Full = the node is not keeping up:
# the message is not admitted (sync offers it again later) rather than dropped silently.
DELIVERY_BUFFER = 4096
# A sync exchange (open stream, request, response) must finish in this time.
SYNC_TIMEOUT_S = 10.0


class Verdict(Enum):
    """What the node's validator decided about one message."""

    ACCEPT = "accept"
    REJECT = "reject"
    IGNORE = "ignore"


@dataclass(frozen=True)
class ValidationResult:
    """A verdict with a short machine-friendly reason ("bad-signature", "wrong-round")."""

    verdict: Verdict
    reason: str = ""
    # For REJECT: lower the sending peer's score (False: the message is useless to us but no
    # evidence against the peer, e.g. an honest sync log's message of a finished round).
    blame: bool = True
    # For ACCEPT: keep the message in the sync log, to offer it to peers that lack it
    # (False: forwarded by gossip once, never offered again, e.g. a heartbeat).
    synced: bool = True
    # For ACCEPT: a number a pull selects pushed messages by (`pull`'s `since`: the node's
    # messages give their round, so a member's relay pull takes only its round's updates).
    tag: int = 0

    @classmethod
    def accept(cls, synced: bool = True, tag: int = 0) -> ValidationResult:
        return cls(Verdict.ACCEPT, synced=synced, tag=tag)

    @classmethod
    def reject(cls, reason: str, blame: bool = True) -> ValidationResult:
        return cls(Verdict.REJECT, reason, blame)

    @classmethod
    def ignore(cls, reason: str) -> ValidationResult:
        return cls(Verdict.IGNORE, reason)

    @classmethod
    def of(cls, verdict: CoreVerdict) -> ValidationResult:
        """The topic verdict of the core's `check_gossip` answer (accept / ignore / reject)."""
        if verdict.action == ACCEPT:
            return cls.accept(verdict.synced, verdict.round)
        if verdict.action == IGNORE:
            return cls.ignore(verdict.reason)
        return cls.reject(verdict.reason, verdict.blame)


Validator = Callable[[str, bytes, str], ValidationResult]


@dataclass(frozen=True)
class GossipMessage:
    """A message admitted on a topic: its bytes, id, the peer it came from, and by which path."""

    topic: str
    data: bytes
    msg_id: bytes
    from_peer: str
    via: str  # "gossip", "sync", "local", "push" or "pull" (`pull_and_admit`)
    # Bytes that came with a pushed message, unjudged (the receiver checks them against
    # what the message names); never gossiped, synced or pulled.
    attachment: bytes = b""


def message_id(data: bytes) -> bytes:
    """Content-addressed message id: sha256 of the message bytes."""
    return hashlib.sha256(data).digest()


class _TopicState:
    def __init__(
        self, topic: str, validate: Validator, rate: float, now: float, synced: bool = True
    ) -> None:
        self.topic = topic
        self.validate = validate
        self.log: OrderedDict[bytes, tuple[bytes, float]] = OrderedDict()
        self.ignored: OrderedDict[bytes, float] = OrderedDict()
        # Pushed messages admitted (kept out of `log`: sync never offers them; a pull asks
        # for them), by arrival: (bytes, arrival, tag (`ValidationResult.tag`)).
        self.pushed: OrderedDict[bytes, tuple[bytes, float, int]] = OrderedDict()
        # The bytes that came with pushed messages, by id (PULL_ATTACHMENTS_MAX_BYTES at most).
        self.attached: OrderedDict[bytes, bytes] = OrderedDict()
        self.attached_bytes = 0
        # Rejected ids are listed as "have" in sync requests so a peer (an attacker, or an
        # honest peer with a different view) cannot make us fetch and judge them again.
        self.rejected: OrderedDict[bytes, float] = OrderedDict()
        self.send, self.receive = trio.open_memory_channel[GossipMessage](DELIVERY_BUFFER)
        self.pace = TokenBucket(rate, PUBLISH_BURST, now)
        self.publish_lock = trio.Lock()
        self.synced = synced  # take part in the sync loop (`Gossip.join`)
        self.gossiped = True  # joined on gossipsub (`Gossip.join`)

    def remember(self, msg_id: bytes, data: bytes, now: float) -> None:
        self.log[msg_id] = (data, now)
        while len(self.log) > SYNC_LOG_MAX_MESSAGES:
            self.log.popitem(last=False)

    def expire(self, now: float) -> None:
        while self.log and next(iter(self.log.values()))[1] < now - SYNC_LOG_TTL_S:
            self.log.popitem(last=False)
        while self.ignored and next(iter(self.ignored.values())) < now - IGNORED_TTL_S:
            self.ignored.popitem(last=False)
        while self.rejected and next(iter(self.rejected.values())) < now - SYNC_LOG_TTL_S:
            self.rejected.popitem(last=False)
        while self.pushed and next(iter(self.pushed.values()))[1] < now - SYNC_LOG_TTL_S:
            self._drop_attached(self.pushed.popitem(last=False)[0])

    def known(self, msg_id: bytes) -> bool:
        """Admitted, recently ignored, or rejected: nothing to fetch or judge again."""
        return (
            msg_id in self.log
            or msg_id in self.ignored
            or msg_id in self.rejected
            or msg_id in self.pushed
        )

    def pushed_since(self, since: int) -> Iterator[tuple[bytes, bytes]]:
        """(id, bytes) of the pushed messages tagged `since` or later, by arrival."""
        return ((i, data) for i, (data, _, tag) in self.pushed.items() if tag >= since)

    def have_list(self, since: int = 0) -> list[bytes]:
        """The ids a sync or pull request lists as held (pushed ones tagged below `since`
        left out: the pull does not ask for them)."""
        pushed = [i for i, _ in self.pushed_since(since)]
        return [*self.log.keys(), *self.ignored.keys(), *self.rejected.keys(), *pushed]

    def remember_pushed(
        self, msg_id: bytes, data: bytes, now: float, attachment: bytes = b"", tag: int = 0
    ) -> None:
        self.pushed[msg_id] = (data, now, tag)
        while len(self.pushed) > SYNC_LOG_MAX_MESSAGES:
            self._drop_attached(self.pushed.popitem(last=False)[0])
        if attachment and len(attachment) <= PULL_ATTACHMENTS_MAX_BYTES:
            self.attached[msg_id] = attachment
            self.attached_bytes += len(attachment)
            while self.attached_bytes > PULL_ATTACHMENTS_MAX_BYTES:
                self._drop_attached(next(iter(self.attached)))

    def _drop_attached(self, msg_id: bytes) -> None:
        self.attached_bytes -= len(self.attached.pop(msg_id, b""))


class Gossip:
    """Topics, validation, paced publishing and sync on top of a py-libp2p `Pubsub`."""

    def __init__(
        self,
        pubsub: Any,
        config: NetConfig,
        peers: PeerBook,
        metrics: Metrics,
        open_stream: Callable[[str, str], Any],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pubsub = pubsub
        self.config = config
        self.peers = peers
        self.metrics = metrics
        self.open_stream = open_stream
        self.clock = clock
        self.topics: dict[str, _TopicState] = {}
        self._nursery: trio.Nursery | None = None
        self.rng = random.Random()

    async def run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Run the sync loop and subscription drains until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            while True:
                await trio.sleep(self.config.sync_interval_s * (0.75 + 0.5 * self.rng.random()))
                for state in list(self.topics.values()):
                    state.expire(self.clock())
                    if not state.synced:
                        continue
                    peer = self._sync_peer(state.topic)
                    if peer is not None:
                        nursery.start_soon(self.sync_with, peer, state.topic)

    # --- topics -------------------------------------------------------------------------

    async def join(
        self, topic: str, validate: Validator, sync: bool = True, gossip: bool = True
    ) -> trio.MemoryReceiveChannel[GossipMessage]:
        """Subscribe to `topic` with `validate` in front; returns the channel of admitted
        messages. `sync=False`: no anti-entropy rounds for it (a topic whose messages are
        pushed, never gossiped, has nothing in its sync log). `gossip=False`: not joined on
        gossipsub either (no mesh to keep for a topic only pushed and pulled; `publish`
        refuses it)."""
        if topic in self.topics:
            raise ValueError(f"already joined {topic}")
        if len(topic.encode()) > MAX_TOPIC_BYTES:
            raise ValueError(f"topic name over {MAX_TOPIC_BYTES} bytes")
        state = _TopicState(topic, validate, self.config.publish_rate_per_s, self.clock(), sync)
        state.gossiped = gossip
        self.topics[topic] = state
        if not gossip:
            return state.receive

        async def pubsub_validator(forwarder: Any, msg: Any) -> bool:
            return self._on_gossip(topic, str(forwarder), msg)

        self.pubsub.set_topic_validator(topic, pubsub_validator, is_async_validator=True)
        subscription = await self.pubsub.subscribe(topic)
        if self._nursery is not None:
            # Messages are delivered from the validator; the library's own 32-slot
            # subscription queue is drained so it never logs "fail to deliver".
            self._nursery.start_soon(_drain, subscription)
        return state.receive

    def messages(self, topic: str) -> list[GossipMessage]:
        """Messages currently remembered on a topic (admitted, not expired), oldest first."""
        state = self.topics[topic]
        return [GossipMessage(topic, data, mid, "", "log") for mid, (data, _) in state.log.items()]

    def has(self, topic: str, msg_id: bytes) -> bool:
        """Whether a message with this id was admitted on `topic` (and is still remembered)."""
        state = self.topics.get(topic)
        return state is not None and msg_id in state.log

    # --- publishing ---------------------------------------------------------------------

    async def publish(self, topic: str, data: bytes, synced: bool = True) -> bytes:
        """Admit `data` locally and push it to gossipsub, paced; returns the message id.

        Raises `InvalidMessage("oversized")` over the size limit. Delivery to every
        subscribed peer is then ensured by sync even if gossipsub drops the message, unless
        `synced` is False (kept out of the sync log, like the heartbeats peers receive:
        `ValidationResult.synced`).
        """
        state = self.topics.get(topic)
        if state is None:
            raise ValueError(f"join {topic} before publishing on it")
        if not state.gossiped:
            raise ValueError(f"{topic} is joined for pushes and pulls only")
        self._check_size(topic, data)
        msg_id = message_id(data)
        if msg_id not in state.log:
            if synced:
                state.remember(msg_id, data, self.clock())
            self._deliver(state, GossipMessage(topic, data, msg_id, "", "local"))
        async with state.publish_lock:
            delay = state.pace.delay_for(self.clock())
            if delay > 0:
                await trio.sleep(delay)
            state.pace.take(self.clock())
            await self.pubsub.publish(topic, data)
        self.metrics.inc("gossip-published")
        self.metrics.inc("bytes-published", len(data))
        return msg_id

    def _check_size(self, topic: str, data: bytes) -> None:
        """`InvalidMessage("oversized")` for a message over the size limit we send."""
        if len(data) > self.config.max_message_bytes:
            raise InvalidMessage(
                "oversized", f"{len(data)} bytes > {self.config.max_message_bytes} on {topic}"
            )

    # --- the gate -----------------------------------------------------------------------

    def _on_gossip(self, topic: str, forwarder: str, msg: Any) -> bool:
        """Pubsub topic validator: True lets gossipsub deliver and forward the message."""
        state = self.topics.get(topic)
        if state is None:
            return False
        if len(msg.topicIDs) != 1:
            self.peers.offence(forwarder, Offence.MALFORMED_FRAME, "gossip-multi-topic")
            return False
        data = bytes(msg.data)
        msg_id = message_id(data)
        if msg_id in state.log:  # our own publish, or already admitted via sync
            return True
        if msg_id in state.rejected:
            return False
        if self.peers.is_banned(forwarder):  # (what it had sent before the ban was read)
            return False
        if not self.peers.allow(forwarder, "gossip"):
            return False
        return self._admit(state, data, msg_id, forwarder, "gossip") is Verdict.ACCEPT

    def _admit(
        self,
        state: _TopicState,
        data: bytes,
        msg_id: bytes,
        peer: str,
        via: str,
        attachment: bytes = b"",
    ) -> Verdict:
        """Validate and, on ACCEPT, remember and deliver one message (a pushed one is
        remembered as held, not kept for sync). Never raises."""
        if len(data) > self.config.max_message_bytes:
            self.peers.offence(peer, Offence.OVERSIZED, f"{via}-oversized")
            self._remember_rejected(state, msg_id)
            return Verdict.REJECT
        try:
            result = state.validate(state.topic, data, peer)
        except Exception as exc:
            log.warning(
                "validator for %s raised %r; treating the message as rejected", state.topic, exc
            )
            result = ValidationResult.reject("validator-error")
        if via == "sync" and result.verdict is not Verdict.IGNORE:
            self._judged_via_sync(msg_id)
        if result.verdict is Verdict.REJECT:
            reason = f"{via}-{result.reason or 'rejected'}"
            if result.blame:
                self.peers.offence(peer, Offence.REJECTED_MESSAGE, reason)
            else:
                self.metrics.reject(reason, peer)  # counted, the peer's score untouched
            self._remember_rejected(state, msg_id)
            return Verdict.REJECT
        if result.verdict is Verdict.IGNORE:
            self.metrics.inc(f"ignored-{result.reason or 'unspecified'}")
            state.ignored[msg_id] = self.clock()
            return Verdict.IGNORE
        message = GossipMessage(state.topic, data, msg_id, peer, via, attachment)
        if not self._deliver(state, message):
            return Verdict.IGNORE
        if via in ("push", "pull"):
            state.remember_pushed(msg_id, data, self.clock(), attachment, result.tag)
        elif result.synced:
            state.remember(msg_id, data, self.clock())
        self.metrics.inc(f"admitted-{via}")
        self.metrics.inc("bytes-admitted", len(data))
        return Verdict.ACCEPT

    def _judged_via_sync(self, msg_id: bytes) -> None:
        """Tell gossipsub it has seen a message sync brought us: otherwise a peer's IHAVE for
        it is answered with an IWANT and the message comes (and is forwarded) once more."""
        seen = getattr(self.pubsub, "seen_messages", None)
        if seen is not None:
            seen.add(msg_id)

    def _remember_rejected(self, state: _TopicState, msg_id: bytes) -> None:
        state.rejected[msg_id] = self.clock()
        while len(state.rejected) > SYNC_LOG_MAX_MESSAGES:
            state.rejected.popitem(last=False)

    def _deliver(self, state: _TopicState, message: GossipMessage) -> bool:
        try:
            state.send.send_nowait(message)
            return True
        except trio.WouldBlock:
            self.metrics.inc("delivery-overflow")
            return False

    # --- sync ---------------------------------------------------------------------------

    def _sync_peer(self, topic: str) -> str | None:
        candidates = [str(p) for p in self.pubsub.peer_topics.get(topic, ())]
        candidates = [p for p in candidates if not self.peers.is_banned(p)]
        return self.rng.choice(candidates) if candidates else None

    async def sync_with(self, peer: str, topic: str) -> int:
        """Ask `peer` for the messages on `topic` we lack; returns how many were admitted."""
        state = self.topics[topic]
        request = _request(MSG_SYNC, topic, state.have_list())
        try:
            async with self._exchange(peer, "sync", SYNC_TIMEOUT_S) as stream:
                await stream.write(request)
                messages = await self._read_messages(FrameReader(stream), peer, "sync")
        except P2PFLError as exc:
            log.debug("sync with %s on %s failed: %s", peer, topic, exc)
            return 0
        admitted = self._admit_new(state, messages, peer, "sync")
        self.metrics.inc("sync-rounds")
        return admitted

    def _admit_new(
        self, state: _TopicState, messages: list[tuple[bytes, bytes]], peer: str, via: str
    ) -> int:
        """`_admit` each (message, attachment) whose message is not known yet (`via` "sync"
        or "pull"); how many passed."""
        admitted = 0
        for data, attachment in messages:
            msg_id = message_id(data)
            if state.known(msg_id):
                continue
            if self._admit(state, data, msg_id, peer, via, attachment) is Verdict.ACCEPT:
                admitted += 1
        return admitted

    async def push(self, peer: str, topic: str, data: bytes, attachment: bytes = b"") -> str:
        """Send one message to `peer` alone (not gossiped, not kept for sync), with
        `attachment` (delivered beside it, unjudged); returns its verdict: "accept"
        (admitted, or held already), "reject" or "ignore" (e.g. a round the peer has not
        reached: worth sending again later). Raises `P2PFLError` when the exchange fails
        (no stream, timeout, a bad answer) and `InvalidMessage("oversized")` over the size
        limits."""
        if topic not in self.topics:
            raise ValueError(f"join {topic} before pushing on it")
        self._check_size(topic, data)
        if len(attachment) > PUSH_MAX_ATTACHMENT_BYTES:
            raise InvalidMessage(
                "oversized", f"{len(attachment)}-byte attachment > {PUSH_MAX_ATTACHMENT_BYTES}"
            )
        frame = (
            _head(MSG_PUSH, topic)
            + struct.pack(">I", len(data))
            + data
            + struct.pack(">I", len(attachment))
        )
        async with self._exchange(peer, "push", PUSH_TIMEOUT_S) as stream:
            await stream.write(frame)
            if attachment:
                await stream.write(attachment)
            (code,) = await FrameReader(stream).read_exactly(1)
        answer = PUSH_ANSWERS.get(code)
        if answer is None:
            self.metrics.inc("push-errors")
            raise P2PFLError(f"push to {peer}: unknown answer {code}")
        self.metrics.inc(f"pushed-{answer}")
        self.metrics.inc("bytes-published", len(data) + len(attachment))
        return answer

    async def _answer_push(self, peer: str, reader: FrameReader, topic: str) -> int:
        """The push request's message, judged at the gate: its answer code."""
        (length,) = struct.unpack(">I", await reader.read_exactly(4))
        if length > self.config.max_message_bytes:
            self.peers.offence(peer, Offence.OVERSIZED, "push-oversized")
            return 1
        data = await reader.read_exactly(length)
        (attached,) = struct.unpack(">I", await reader.read_exactly(4))
        if attached > PUSH_MAX_ATTACHMENT_BYTES:
            self.peers.offence(peer, Offence.OVERSIZED, "push-oversized")
            return 1
        # Read in full whatever the answer: the pusher writes it all before reading one.
        attachment = await reader.read_exactly(attached) if attached else b""
        state = self.topics.get(topic)
        if state is None:
            return 2  # not a topic of ours (yet): nothing against the peer
        msg_id = message_id(data)
        if msg_id in state.log or msg_id in state.pushed:
            return 0
        if msg_id in state.rejected:
            return 1
        verdict = self._admit(state, data, msg_id, peer, "push", attachment)
        return {Verdict.ACCEPT: 0, Verdict.REJECT: 1, Verdict.IGNORE: 2}[verdict]

    async def pull(self, peer: str, topic: str, since: int = 0) -> list[bytes]:
        """The messages pushed to `peer` on `topic`, tagged `since` or later, that were not
        pushed to us (e.g. a committee member's updates of a round, for a node off the
        committee to rebuild its reward file). Returned unjudged: the caller validates what
        it asked for. Raises `P2PFLError` when the exchange fails."""
        state = self.topics.get(topic)
        if state is None:
            raise ValueError(f"join {topic} before pulling on it")
        have = [*(i for i, _ in state.pushed_since(since)), *state.log]
        pulled = await self._pull(peer, topic, since, have, attached=False)
        return [data for data, _ in pulled]

    async def _pull(
        self,
        peer: str,
        topic: str,
        since: int,
        have: list[bytes],
        attached: bool,
        timeout_s: float | None = None,
    ) -> list[tuple[bytes, bytes]]:
        kind = MSG_PULL_ATTACHED if attached else MSG_PULL
        if timeout_s is None:
            timeout_s = PUSH_TIMEOUT_S if attached else SYNC_TIMEOUT_S  # (model-sized answers)
        async with self._exchange(peer, "pull", timeout_s) as stream:
            if attached:
                await grow_receive_window(stream, ATTACHED_RECEIVE_WINDOW_BYTES)
            await stream.write(_pull_request(kind, topic, since, have))
            messages = await self._read_messages(FrameReader(stream), peer, "pull", attached)
        self.metrics.inc("pulls")
        return messages

    async def pull_and_admit(
        self, peer: str, topic: str, since: int = 0, timeout_s: float | None = None
    ) -> int:
        """`pull` with attachments (the bytes each message was pushed with, e.g. an update's
        delta, when the peer still holds them), then each message we do not hold judged and
        delivered with its attachment as a pushed one would be (held as pushed, with its
        attachment: the next pull does not ask for it again, and we serve it on); returns
        how many were admitted. A member of a committee gets the updates pushed to the
        other members this way, `since` its round: those of earlier rounds the other member
        still holds are not sent. Raises `P2PFLError` when the exchange fails or takes
        over `timeout_s` (default PUSH_TIMEOUT_S)."""
        state = self.topics.get(topic)
        if state is None:
            raise ValueError(f"join {topic} before pulling on it")
        have = state.have_list(since)
        messages = await self._pull(peer, topic, since, have, attached=True, timeout_s=timeout_s)
        return self._admit_new(state, messages, peer, "pull")

    @asynccontextmanager
    async def _exchange(self, peer: str, kind: str, timeout_s: float) -> AsyncIterator[Any]:
        """A stream to `peer` on SYNC_PROTOCOL for one request of `kind` ("sync", "push",
        "pull"), within `timeout_s` from its opening; closed after. Any failure is counted
        (`<kind>-timeouts`, `<kind>-errors`) and raised as `P2PFLError`."""
        stream = None
        try:
            with trio.fail_after(timeout_s):
                stream = await self.open_stream(peer, SYNC_PROTOCOL)
                yield stream
        except trio.TooSlowError:
            self.metrics.inc(f"{kind}-timeouts")
            raise P2PFLError(f"{kind} with {peer} timed out") from None
        except P2PFLError:
            self.metrics.inc(f"{kind}-errors")
            raise
        except Exception as exc:
            self.metrics.inc(f"{kind}-errors")
            raise P2PFLError(f"{kind} with {peer} failed: {exc!r}") from None
        finally:
            if stream is not None:
                await _close(stream)

    async def _read_messages(
        self, reader: FrameReader, peer: str, kind: str, attached: bool = False
    ) -> list[tuple[bytes, bytes]]:
        """A sync or pull response: `u32 m | m x (u32 length | message)`, and with
        `attached` each message followed by `u32 length | attachment` (empty: none held).
        A count, a length or a total over the limits (the responder stops after
        `SYNC_MAX_RESPONSE_BYTES`, so at most one message and attachment more) is the
        peer's offence and a `P2PFLError`. Returns (message, attachment) pairs."""
        (count,) = struct.unpack(">I", await reader.read_exactly(4))
        if count > SYNC_LOG_MAX_MESSAGES:
            self.peers.offence(peer, Offence.MALFORMED_FRAME, f"{kind}-bad-count")
            raise P2PFLError(f"{kind} from {peer}: {count} messages announced")
        out: list[tuple[bytes, bytes]] = []
        budget = SYNC_MAX_RESPONSE_BYTES + self.config.max_message_bytes
        if attached:
            budget += PUSH_MAX_ATTACHMENT_BYTES
        for _ in range(count):
            (length,) = struct.unpack(">I", await reader.read_exactly(4))
            budget -= length
            if length > self.config.max_message_bytes or budget < 0:
                self.peers.offence(peer, Offence.OVERSIZED, f"{kind}-oversized")
                raise P2PFLError(f"{kind} from {peer}: a {length}-byte message over the limits")
            data = await reader.read_exactly(length)
            attachment = b""
            if attached:
                (length,) = struct.unpack(">I", await reader.read_exactly(4))
                budget -= length
                if length > PUSH_MAX_ATTACHMENT_BYTES or budget < 0:
                    self.peers.offence(peer, Offence.OVERSIZED, f"{kind}-oversized")
                    raise P2PFLError(
                        f"{kind} from {peer}: a {length}-byte attachment over the limits"
                    )
                attachment = await reader.read_exactly(length) if length else b""
            out.append((data, attachment))
        return out

    async def handle_sync_stream(self, stream: Any) -> None:
        """Stream handler for SYNC_PROTOCOL: answer a sync or a pull request with the
        messages it lacks (from the sync log, or the messages pushed to us), or judge one
        pushed message."""
        peer = peer_of(stream)
        try:
            if self.peers.is_banned(peer) or not self.peers.allow(peer, "requests"):
                return
            with trio.fail_after(SYNC_TIMEOUT_S) as scope:
                reader = FrameReader(stream)
                kind, topic_len = struct.unpack(">BH", await reader.read_exactly(3))
                if kind in (MSG_PUSH, MSG_PULL_ATTACHED):  # (model-sized attachments)
                    scope.deadline = trio.current_time() + PUSH_TIMEOUT_S
                if kind == MSG_PUSH:
                    await grow_receive_window(stream, ATTACHED_RECEIVE_WINDOW_BYTES)
                if kind not in (MSG_SYNC, MSG_PUSH, *PULL_KINDS) or topic_len > MAX_TOPIC_BYTES:
                    raise InvalidMessage("bad-frame", "not a sync request")
                topic = (await reader.read_exactly(topic_len)).decode("utf-8", errors="replace")
                if kind == MSG_PUSH:
                    code = await self._answer_push(peer, reader, topic)
                    await stream.write(bytes([code]))
                    return
                since = 0
                if kind in PULL_KINDS:
                    (since,) = struct.unpack(">Q", await reader.read_exactly(8))
                (count,) = struct.unpack(">I", await reader.read_exactly(4))
                if count > 4 * SYNC_LOG_MAX_MESSAGES:  # (`have_list`: four kinds of ids)
                    raise InvalidMessage("bad-frame", f"sync request lists {count} ids")
                raw = await reader.read_exactly(count * MESSAGE_ID_SIZE)
                have = {raw[i : i + MESSAGE_ID_SIZE] for i in range(0, len(raw), MESSAGE_ID_SIZE)}
                state = self.topics.get(topic)
                out: list[bytes] = [b""]  # (the count goes first; each piece is copied once)
                count = size = 0
                if state is not None:
                    held = _held(state, kind, since)
                    for msg_id, data in held:
                        if msg_id in have:
                            continue
                        attachment = b""
                        if kind == MSG_PULL_ATTACHED:
                            attachment = state.attached.get(msg_id, b"")
                        if size + len(data) + len(attachment) > SYNC_MAX_RESPONSE_BYTES and count:
                            break
                        out += (struct.pack(">I", len(data)), data)
                        if kind == MSG_PULL_ATTACHED:
                            out += (struct.pack(">I", len(attachment)), attachment)
                            if attachment:
                                self.metrics.inc("pull-attachments-served")
                        count += 1
                        size += len(data) + len(attachment)
                out[0] = struct.pack(">I", count)
                await stream.write(b"".join(out))
                self.metrics.inc("pull-served" if kind in PULL_KINDS else "sync-served")
        except InvalidMessage as exc:
            self.peers.offence(peer, Offence.MALFORMED_FRAME, "sync-" + exc.reason)
        except (trio.TooSlowError, StreamClosed):
            pass
        except Exception as exc:
            log.debug("sync stream from %s ended: %r", peer, exc)
        finally:
            await _close(stream)


def _head(kind: int, topic: str) -> bytes:
    """Every request's start: `kind | u16 topic length | topic (UTF-8)`."""
    topic_bytes = topic.encode()
    return struct.pack(">BH", kind, len(topic_bytes)) + topic_bytes


def _request(kind: int, topic: str, have: list[bytes]) -> bytes:
    """A sync request: `head | u32 n | n ids held`."""
    return _head(kind, topic) + struct.pack(">I", len(have)) + b"".join(have)


def _pull_request(kind: int, topic: str, since: int, have: list[bytes]) -> bytes:
    """A pull request: `head | u64 since | u32 n | n ids held` (the messages wanted are
    those pushed to the responder tagged `since` or later)."""
    return _head(kind, topic) + struct.pack(">QI", since, len(have)) + b"".join(have)


def _held(state: _TopicState, kind: int, since: int) -> Iterator[tuple[bytes, bytes]]:
    """(id, bytes) of what a request of `kind` may be answered from: the sync log, or for
    a pull the messages pushed to us tagged `since` or later."""
    if kind not in PULL_KINDS:
        return ((msg_id, data) for msg_id, (data, _) in state.log.items())
    return state.pushed_since(since)


async def _drain(subscription: Any) -> None:
    try:
        while True:
            await subscription.get()
    except Exception:
        return


async def _close(stream: Any) -> None:
    try:
        await stream.close()
    except Exception:
        pass
