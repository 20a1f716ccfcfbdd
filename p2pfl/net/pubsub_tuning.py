"""Six fixes to py-libp2p 0.8.1's gossipsub, each measured on our simulations.

**1. Signed peer records verified once, not on every RPC.** py-libp2p's gossipsub attaches the
sender's signed peer record (a libp2p Envelope, ~200 bytes with a secp256k1 signature) to every
RPC it sends, and on receipt `maybe_consume_signed_record` parses it, checks the signature and
stores it in the certified address book — for every RPC, although a peer's record only changes
when its addresses do. In a 10-node simulation that was ~7% of all CPU.

Fix: remember, per sending peer, the exact record bytes last accepted from it. An RPC carrying
those same bytes from that same peer is accepted without verifying again: the same bytes give
the same signature check and the same (already stored) record, so the outcome is identical. Any
other bytes go through the library's full check. Memory: one record per connected peer ever
seen, bounded by `MAX_REMEMBERED_PEERS` (cleared when full).

**2. IDONTWANT only for messages worth it.** Gossipsub v1.2's IDONTWANT tells mesh peers not to
send a message we already hold; it saves bandwidth when the message is large. py-libp2p sends
one to every mesh peer for *every* message it forwards, each as its own RPC (with the ~200-byte
record above), so a 170-byte heartbeat costs more in IDONTWANTs than in itself. With the
node's heartbeats (one per node every 5 s) the 10-node quickstart's event loop spent most of its
time on them: gossip latency of an update went from 0.3 s to 2 s, a delta fetch from 1 s to
4 s, the round from 7 s to 12 s. go-libp2p sends IDONTWANT only for messages of at least
`GossipSubIDontWantMessageThreshold` = 1 KiB, a bandwidth trade-off; in py-libp2p an RPC
costs the CPU of sending ~20 KiB more (noise and yamux in Python, ~0.3 ms per RPC against
~75 MB/s), and an update (no inline delta) is 1-2 KiB: with 100 nodes on 2 cores, each
shard sent 6,500 IDONTWANTs per 20 s for the 5,400 updates it forwarded, and 73% of the
updates it received were duplicates all the same (they were in flight already). So the
threshold here is `IDONTWANT_MIN_BYTES` = 16 KiB: the large inline deltas and anything
bigger. The wire protocol is unchanged: IDONTWANT is advisory, and peers that get none send
us the duplicate, which gossipsub's seen-cache drops.

**3. Our own signed peer record built once in a while, not for every RPC.** To attach that
record, `env_to_send_in_RPC` first lists the host's addresses (`BasicHost.get_addrs`: every
listen address parsed again into a new `Multiaddr`, each parse raising and catching an
exception inside multiaddr) and compares them with the cached record's. In a 100-node
simulation that was 8.6% of a shard's CPU (py-spy). Fix: the envelope bytes are reused for
`OWN_RECORD_REUSE_S` before the library's check runs again, so a new address (a relay
reservation, an observed address confirmed) reaches peers' records within that time
instead of with the next RPC. Peers' address books are advisory: a record a few seconds
behind changes no protocol decision of ours.

**4. No replay of the message cache to every new peer.** When a peer subscribes to a topic,
py-libp2p's gossipsub sends it every message of its gossip window (the last 3 heartbeats), one
RPC each, against the race of a message published while a connection was being set up. Our
anti-entropy sync (gossip.py) already closes that gap, one exchange per topic per interval
with one peer, sending only what the peer lacks. The replay sends everything on *every* new
connection, and a committee member dials dozens of authors to fetch their deltas just after
all the updates went out: with 100 nodes on 2 cores, 99% of the update-topic messages a shard
received in the following minute were duplicates (17,714 of 17,861 in 20 s). Fix: the
replay sends nothing (`skip_recent_messages`); sync delivers what a new peer missed.

**5. The message cache keyed by the message id gossip uses.** py-libp2p's `MessageCache.put`
keys every message by `default_msg_id_fn` (sender + sequence number) whatever id function
the `Pubsub` was given; ours is content-addressed (sha256 of the data, network.md §2). The
IHAVEs a node sends list cache keys, and a peer asks (IWANT) for every id it has not *seen*,
and seen ids are ours: no advertised id ever matches, so every message a node holds is sent
again to each peer it gossips to, every heartbeat of the cache window. With 100 nodes on 2
cores, 96-99% of the update-topic messages a shard received were such duplicates (9,509 of
9,509 in one 20 s window after every update had arrived). Fix (`key_cache_by`, run by
`GossipSub.attach` when a `Pubsub` takes the router): the cache keys messages by that
`Pubsub`'s own id function, so IHAVE ids are seen ids and IWANT asks only for what is
missing. With the library's default id function nothing changes.

**6. One copy of a message in validation at a time.** `Pubsub.push_msg` checks the seen-cache,
then awaits the message's signature check and topic validator, and only then marks it seen
and forwards it. Every copy that arrives from another mesh peer during that wait passes the
seen check too, is verified again and forwarded again to the whole mesh, whose members do
the same: on a loaded event loop (long waits) a message snowballs. With 100 nodes on 2
cores, after the fixes above, a shard received 46 copies of each new update-topic message
(6,150 duplicates for 134 new ones in 20 s). go-libp2p drops such duplicates while the
first copy is validated; so do we (`make_single_flight`): a message id being validated is
dropped on arrival; once validated, the seen-cache answers as before. A copy that arrived
during a validation that then failed is gone too, which changes nothing for a
content-addressed id (same bytes, same verdict) except for the per-forwarder rate limit;
sync brings such a message later.

Version-guarded like `yamux_tuning`: names are replaced only for a libp2p version this was
read against.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from p2pfl.net.yamux_tuning import libp2p_is_tested

# Peers whose last record is remembered; past this the memory is cleared (cost: one
# re-verification per peer), so a flood of fresh identities cannot grow it.
MAX_REMEMBERED_PEERS = 4096
# Modules of py-libp2p 0.8.1 that call `maybe_consume_signed_record` by its imported name.
_CALLERS = ("libp2p.pubsub.pubsub", "libp2p.pubsub.gossipsub", "libp2p.pubsub.floodsub")

# How long our own signed peer record's bytes are reused before the addresses are checked.
OWN_RECORD_REUSE_S = 10.0
# Modules of py-libp2p 0.8.1 that call `env_to_send_in_RPC` by its imported name.
_SENDERS = ("libp2p.pubsub.pubsub", "libp2p.pubsub.gossipsub")

# Smaller messages get no IDONTWANT (go-libp2p's GossipSubIDontWantMessageThreshold is 1 KiB;
# see the module docstring for why ours is larger).
IDONTWANT_MIN_BYTES = 16 * 1024

_applied = False


def make_cached(check: Any) -> Any:
    """Wrap `maybe_consume_signed_record(rpc, host, peer_id) -> bool` with the per-peer memo."""
    accepted: dict[Any, bytes] = {}  # peer ID -> record bytes last accepted from it

    def maybe_consume_signed_record(msg: Any, host: Any, peer_id: Any) -> bool:
        if not msg.HasField("senderRecord"):
            return True
        record = msg.senderRecord
        if accepted.get(peer_id) == record:
            return True
        ok = bool(check(msg, host, peer_id))
        if ok:
            if len(accepted) >= MAX_REMEMBERED_PEERS:
                accepted.clear()
            accepted[peer_id] = record
        return ok

    return maybe_consume_signed_record


def make_reused_record(
    build: Any, clock: Callable[[], float] = time.monotonic, reuse_s: float = OWN_RECORD_REUSE_S
) -> Any:
    """Wrap `env_to_send_in_RPC(host) -> (envelope bytes, created)` so one host's answer is
    reused for `reuse_s` seconds (kept on the host object: one per host, gone with it)."""

    def env_to_send_in_RPC(host: Any) -> tuple[bytes, bool]:
        now = clock()
        kept = getattr(host, "_p2pfl_own_record", None)
        if kept is not None and now < kept[0]:
            return kept[1], False
        envelope, created = build(host)
        host._p2pfl_own_record = (now + reuse_s, envelope)
        return envelope, created

    return env_to_send_in_RPC


def make_sized_idontwant(publish: Any, emit: Any) -> tuple[Any, Any]:
    """Wrap `GossipSub.publish` and `GossipSub._emit_idontwant_for_message` so that the
    IDONTWANT a forwarded message triggers is sent only when it has `IDONTWANT_MIN_BYTES`.

    `publish` calls the emitter with the message id alone, before its first await: the
    size is noted on the router just before and read (and reset) by the emitter first thing,
    with no checkpoint between, so concurrent publishes cannot see each other's size."""

    async def sized_publish(self: Any, msg_forwarder: Any, pubsub_msg: Any) -> None:
        self._p2pfl_idontwant = len(pubsub_msg.data) >= IDONTWANT_MIN_BYTES
        await publish(self, msg_forwarder, pubsub_msg)

    async def sized_emit(self: Any, msg_id: bytes, topic_ids: Any) -> None:
        wanted = getattr(self, "_p2pfl_idontwant", True)
        self._p2pfl_idontwant = True  # any other caller gets the library's behaviour
        if wanted:
            await emit(self, msg_id, topic_ids)

    return sized_publish, sized_emit


def key_cache_by(cache: Any, message_id: Callable[[Any], bytes]) -> None:
    """Make `cache` (a py-libp2p `MessageCache`) key messages by `message_id`, the id the
    `Pubsub` uses for its seen-cache (fix 5 above). The library's `put`, with the id
    function swapped; `get`, `window` and `shift` read the keys `put` wrote."""
    from libp2p.pubsub.mcache import CacheEntry

    def put(msg: Any) -> None:
        mid = message_id(msg)
        if mid in cache.msgs:
            return
        cache.msgs[mid] = msg
        cache.history[0].append(CacheEntry(mid, msg.topicIDs))

    cache.put = put


def make_cache_keyed_on_attach(attach: Any) -> Any:
    """Wrap `GossipSub.attach(self, pubsub)` so the router's message cache is keyed by the
    attaching `Pubsub`'s message id function (fix 5 above)."""

    def attach_keyed(self: Any, pubsub: Any) -> None:
        attach(self, pubsub)
        key_cache_by(self.mcache, pubsub._msg_id_constructor)

    return attach_keyed


def make_single_flight(push_msg: Any) -> Any:
    """Wrap `Pubsub.push_msg(self, forwarder, msg)` so that a message whose id is already
    being processed is dropped on arrival (fix 6 above)."""

    async def push_msg_once(self: Any, msg_forwarder: Any, msg: Any) -> None:
        in_flight: set[bytes] = self.__dict__.setdefault("_p2pfl_in_flight", set())
        msg_id = self._msg_id_constructor(msg)
        if msg_id in in_flight:
            return
        in_flight.add(msg_id)
        try:
            await push_msg(self, msg_forwarder, msg)
        finally:
            in_flight.discard(msg_id)

    return push_msg_once


async def skip_recent_messages(self: Any, peer_id: Any, topic: str) -> None:
    """`GossipSub.send_recent_messages` replaced: nothing is replayed (fix 4 above)."""


def apply() -> bool:
    """Install the six fixes once per process; False if this libp2p is untested."""
    global _applied
    if _applied:
        return True
    if not libp2p_is_tested(
        "signed peer records built and checked per RPC, IDONTWANTs for every message,"
        " the message cache replayed to every new peer and keyed by another id than the"
        " seen-cache, copies forwarded while validated"
    ):
        return False
    import importlib

    from libp2p.pubsub import utils

    cached = make_cached(utils.maybe_consume_signed_record)
    for name in _CALLERS:
        module = importlib.import_module(name)
        if (
            getattr(module, "maybe_consume_signed_record", None)
            is utils.maybe_consume_signed_record
        ):
            module.maybe_consume_signed_record = cached  # type: ignore[attr-defined]
    from libp2p.peer import peerstore

    reused = make_reused_record(peerstore.env_to_send_in_RPC)
    for name in _SENDERS:
        module = importlib.import_module(name)
        if getattr(module, "env_to_send_in_RPC", None) is peerstore.env_to_send_in_RPC:
            module.env_to_send_in_RPC = reused  # type: ignore[attr-defined]
    from libp2p.pubsub.gossipsub import GossipSub

    publish, emit = make_sized_idontwant(GossipSub.publish, GossipSub._emit_idontwant_for_message)
    GossipSub.publish = publish  # type: ignore[method-assign]
    GossipSub._emit_idontwant_for_message = emit  # type: ignore[method-assign]
    GossipSub.send_recent_messages = skip_recent_messages  # type: ignore[method-assign]
    GossipSub.attach = make_cache_keyed_on_attach(GossipSub.attach)  # type: ignore[method-assign]
    from libp2p.pubsub.pubsub import Pubsub

    Pubsub.push_msg = make_single_flight(Pubsub.push_msg)  # type: ignore[method-assign]
    _applied = True
    return True
