"""The node's libp2p host: one secp256k1 identity, Noise only, yamux, TCP — and everything the
node needs from the network behind one object, `NodeNet`.

    async with open_node_host(NetConfig(data_dir=...), private_key) as net:
        updates = await net.join(topic_name(task, "updates"), validate)
        await net.publish(topic, data)
        root = net.put_blob(delta_bytes); await net.provide(root)
        data = await net.get_blob(root)          # from whoever holds it

Tree of tasks (all inside the caller's `async with`):

    open_node_host
    └── host.run (swarm: listeners, connections, identify)
        ├── pubsub service ── gossipsub service (heartbeat)
        ├── Kademlia DHT service (optional)
        ├── Bitswap (optional)
        └── our nursery: NAT traversal (p2pfl.net.nat: relay, reservations, AutoNAT,
            DCUtR; as configured), gossip sync loop, maintenance loop (DHT routing
            table, ban expiry, re-dial bootstrap when alone)

Start-up dials the bootstrap peers; with `require_peers`, no reachable peer is an error
(`NoPeersError`) rather than a node waiting forever for a network that is not there.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import random
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import multiaddr
import trio

from p2pfl.core.cid import CID
from p2pfl.errors import ConfigError, P2PFLError
from p2pfl.net import (
    multiselect_tuning,
    notify_tuning,
    pubsub_tuning,
    service_tuning,
    yamux_tuning,
)
from p2pfl.net.blocks import STRIPE_PATIENCE_S, BlockExchange, FetchError, peer_of
from p2pfl.net.blockstore import BlockStore
from p2pfl.net.config import (
    BLOB_FETCH_TIMEOUT_S,
    BLOCKS_PROTOCOL,
    DIAL_TIMEOUT_S,
    GOSSIP_MAX_MSGS_PER_TOPIC_PER_S,
    PEER_GOSSIP_BURST,
    PEER_REQUEST_BURST,
    SYNC_PROTOCOL,
    NetConfig,
)
from p2pfl.net.gossip import Gossip, GossipMessage, Validator
from p2pfl.net.limits import Metrics, Offence, PeerBook
from p2pfl.net.nat import NatTraversal, is_circuit_addr
from p2pfl.net.services import quietly, run_service

log = logging.getLogger(__name__)

# Addresses from the address book (`NodeNet.remember_peers`) stay in the peerstore this long
# after a dial needed them.
ADDRESS_BOOK_TTL_S = 60
# How often the maintenance loop runs (DHT routing table, ban expiry, lonely re-dial).
MAINTENANCE_INTERVAL_S = 2.0
# A peer the top-up to `min_peers` dialled is not dialled by it again for this long (one
# that dropped us -- it banned us, or is full -- is not hammered every pass).
TOPUP_REDIAL_S = 60.0
# Providers asked for in one DHT lookup.
DHT_PROVIDER_COUNT = 20
DHT_LOOKUP_TIMEOUT_S = 10.0
# Time allowed at shutdown for closing connections before the services stop.
SHUTDOWN_CLOSE_TIMEOUT_S = 5.0
# py-libp2p loggers that report routine events (peers leaving, streams reset by a closing
# peer, identify races) at WARNING/ERROR; kept at CRITICAL unless the user asks for debug.
NOISY_LIBP2P_LOGGERS = (
    "libp2p",
    "libp2p.pubsub",
    "libp2p.network",
    "libp2p.stream_muxer",
    "libp2p.host",
    "libp2p.kad_dht",
    "libp2p.bitswap",
    "libp2p.identity",
    "libp2p.transport",
    "libp2p.security",
    "libp2p.discovery",
    "libp2p.tools",
    "async_service",
)


class NoPeersError(P2PFLError):
    """Start-up could not reach any peer, and the configuration says one is required."""


def quiet_libp2p_logs(level: int = logging.CRITICAL) -> None:
    """Silence py-libp2p's routine warnings unless debug output was asked for.

    Leaves the level alone when the root logger is at DEBUG (`p2pfl -vv`).
    """
    if logging.getLogger().getEffectiveLevel() <= logging.DEBUG:
        return
    for name in NOISY_LIBP2P_LOGGERS:
        logging.getLogger(name).setLevel(level)
    # Some py-libp2p modules pin their own logger's level (auto_connector at INFO): lower
    # every already-created libp2p logger that has an explicit level.
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if name.startswith("libp2p.") and isinstance(logger, logging.Logger) and logger.level:
            logger.setLevel(max(logger.level, level))
    warnings.filterwarnings("ignore", module="libp2p")


def key_pair_from_private_key(private_key: bytes) -> Any:
    """The libp2p secp256k1 key pair for the node's 32-byte private key (same as its address)."""
    from libp2p.crypto.secp256k1 import create_new_key_pair

    if len(private_key) != 32:
        raise ConfigError("the node's private key must be 32 raw bytes of secp256k1")
    return create_new_key_pair(private_key)


class NodeNet:
    """A running libp2p host with gossip, block exchange and discovery. Built by "
    "`open_node_host`."""

    def __init__(self, config: NetConfig, host: Any, pubsub: Any, dht: Any, bitswap: Any) -> None:
        self.config = config
        self.host = host
        self.pubsub = pubsub
        self.dht = dht
        self.bitswap = bitswap
        self._metrics = Metrics()
        self.peers = PeerBook(
            ban_threshold=config.ban_threshold,
            ban_s=config.ban_s,
            rates={
                "requests": (config.peer_requests_per_s, PEER_REQUEST_BURST),
                "gossip": (config.peer_gossip_per_s, PEER_GOSSIP_BURST),
            },
            metrics=self._metrics,
        )
        self.peers.on_ban = self._on_ban
        # py-libp2p 0.8.1's add_to_blacklist spawns a teardown that resets the peer's pubsub
        # stream, then `del`s it from `pubsub.peers`; our disconnect on ban removes it while
        # the reset is awaited, and that KeyError took the whole host down. Same teardown,
        # tolerant of the peer being gone already (the instance attribute shadows the method).
        pubsub._teardown_if_connected = functools.partial(_teardown_pubsub_peer, pubsub)
        self.store = BlockStore(config.data_dir / "blocks")
        self.blocks = BlockExchange(
            self.store, config, self.peers, self._metrics, self._open_stream
        )
        self.gossip = Gossip(pubsub, config, self.peers, self._metrics, self._open_stream)
        self.nat = NatTraversal(config, host)
        self._nursery: trio.Nursery | None = None
        self._blacklisted: set[str] = set()
        self._address_book: dict[str, list[Any]] = {}  # peer ID -> multiaddrs (remember_peers)
        self._provided: set[CID] = set()
        # Which known peers a top-up dials (`_dial_candidates`): seeded by our peer ID, so a
        # simulation's connections are the same run after run.
        self._rng = random.Random(host.get_id().to_bytes())
        self._topup_dialled: dict[str, float] = {}  # peer -> when the top-up last dialled it

    # --- identity and connections -------------------------------------------------------

    @property
    def peer_id(self) -> str:
        """This node's libp2p peer ID (base58, "16Uiu2...")."""
        return self.host.get_id().to_base58()

    @property
    def listen_addrs(self) -> list[str]:
        """Full multiaddrs (with /p2p/<peer id>) other nodes can dial: where we listen, then
        our circuit addresses on the relays we hold a reservation on."""
        direct = [f"{addr}/p2p/{self.peer_id}" for addr in self.host.get_transport_addrs()]
        return direct + self.nat.circuit_addrs

    @property
    def reachability(self) -> str:
        """What AutoNAT found: "public", "private" or "unknown" (also when AutoNAT is off)."""
        return self.nat.reachability

    def connection_kind(self, peer: str) -> str | None:
        """ "direct", "relayed" (every connection to `peer` goes through a relay), or None."""
        return self.nat.connection_kind(peer)

    def remember_peers(self, addrs: Sequence[str]) -> None:
        """Keep full multiaddrs (/p2p/<peer id>) in an address book, without dialling: a
        stream to one of those peers (a block fetch) dials the address the book gives.

        The book stays out of the peerstore until a stream needs it: py-libp2p's
        AutoConnector dials every peer the peerstore has addresses for while a node has
        fewer than 100 connections, and 100 simulated nodes then built a full mesh of
        4,950 connections before round 1."""
        from libp2p.peer.peerinfo import info_from_p2p_addr

        for addr in addrs:
            info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
            if info.peer_id != self.host.get_id():
                self._address_book[info.peer_id.to_base58()] = list(info.addrs)

    def connected_peers(self) -> list[str]:
        """Peer IDs with an open connection."""
        return [p.to_base58() for p in self.host.get_connected_peers()]

    async def connect(self, addr: str, timeout_s: float = DIAL_TIMEOUT_S) -> str:
        """Dial a full multiaddr (/ip4/.../tcp/.../p2p/<id>, or a circuit address
        <relay>/p2p-circuit/p2p/<id>); returns the peer ID."""
        from libp2p.peer.peerinfo import info_from_p2p_addr

        if is_circuit_addr(addr):
            peer = addr.rsplit("/p2p/", 1)[1]
            if self.peers.is_banned(peer):
                raise P2PFLError(f"peer {peer} is banned")
            peer_id = await self.nat.dial(addr, timeout_s)
            if self.dht is not None:
                await self._add_to_dht(peer_id)
            return str(peer_id.to_base58())
        try:
            info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
        except Exception as exc:
            raise ConfigError(f"cannot parse peer address {addr!r}: {exc}") from None
        peer = info.peer_id.to_base58()
        if self.peers.is_banned(peer):
            raise P2PFLError(f"peer {peer} is banned")
        with trio.fail_after(timeout_s):
            await self.host.connect(info)
        if self.dht is not None:
            await self._add_to_dht(info.peer_id)
        return peer

    async def disconnect(self, peer: str) -> None:
        """Close every connection to `peer`."""
        from libp2p.peer.id import ID

        try:
            await self.host.disconnect(ID.from_base58(peer))
        except Exception as exc:
            log.debug("disconnect %s: %r", peer, exc)

    def metrics(self) -> dict[str, Any]:
        """Counters: messages admitted/rejected (by reason and peer), blocks, bans, syncs."""
        snap = self._metrics.snapshot()
        snap["peers-connected"] = len(self.host.get_connected_peers())
        # Payload bytes this node originated or served, and fetched or admitted: blocks and
        # gossip messages (not Noise/yamux framing, nor gossip forwarded on others' behalf).
        c = self._metrics.counters
        snap["bytes_sent"] = c["bytes-served"] + c["bytes-published"]
        snap["bytes_received"] = c["bytes-fetched"] + c["bytes-admitted"]
        return snap

    async def _open_stream(self, peer: str, protocol: str) -> Any:
        from libp2p.custom_types import TProtocol
        from libp2p.peer.id import ID

        peer_id = ID.from_base58(peer)
        book = self._address_book.get(peer)
        if book and not self._has_addrs(peer_id):
            # For this dial only (and the AutoConnector's next look, within the TTL).
            self.host.get_peerstore().add_addrs(peer_id, book, ADDRESS_BOOK_TTL_S)
        return await self.host.new_stream(peer_id, [TProtocol(protocol)])

    def _has_addrs(self, peer_id: Any) -> bool:
        from libp2p.peer.peerstore import PeerStoreError

        try:
            return bool(self.host.get_peerstore().addrs(peer_id))
        except PeerStoreError:
            return False

    def _on_ban(self, peer: str) -> None:
        log.info(
            "banning peer %s for %.0f s (score below %.0f)",
            peer,
            self.config.ban_s,
            self.config.ban_threshold,
        )
        from libp2p.peer.id import ID

        self.pubsub.add_to_blacklist(ID.from_base58(peer))  # teardown: _teardown_pubsub_peer
        self._blacklisted.add(peer)
        if self._nursery is not None:
            self._nursery.start_soon(self.disconnect, peer)

    # --- gossip -------------------------------------------------------------------------

    async def join(
        self, topic: str, validate: Validator, sync: bool = True, gossip: bool = True
    ) -> trio.MemoryReceiveChannel[GossipMessage]:
        """Subscribe to a topic; `validate(topic, data, from_peer)` gates every message;
        `sync=False` leaves it out of the anti-entropy rounds, `gossip=False` out of
        gossipsub too (its messages are pushed and pulled only)."""
        return await self.gossip.join(topic, validate, sync, gossip)

    async def publish(self, topic: str, data: bytes, synced: bool = True) -> bytes:
        """Publish on a joined topic (paced; sync makes delivery reliable unless `synced` is
        False: gossiped once, as for a heartbeat); returns the id."""
        return await self.gossip.publish(topic, data, synced)

    async def push(self, peer: str, topic: str, data: bytes, attachment: bytes = b"") -> str:
        """Send one message on a joined topic to `peer` alone (not gossiped, not kept for
        sync), with `attachment` delivered beside it; returns the peer's verdict
        ("accept", "reject", "ignore"). `P2PFLError` when the exchange fails."""
        return await self.gossip.push(peer, topic, data, attachment)

    async def pull(self, peer: str, topic: str, since: int = 0) -> list[bytes]:
        """The messages pushed to `peer` on a joined topic, tagged `since` or later (a
        node's messages: their round), that were not pushed to us, unjudged (the caller
        checks what it asked for). `P2PFLError` when it fails."""
        return await self.gossip.pull(peer, topic, since)

    async def pull_and_admit(
        self, peer: str, topic: str, since: int = 0, timeout_s: float | None = None
    ) -> int:
        """Pull from `peer` what was pushed to it on a joined topic, tagged `since` or
        later, and we lack, each message judged and delivered like a pushed one; returns
        how many were admitted. `timeout_s`: the exchange's bound (default: a push's)."""
        return await self.gossip.pull_and_admit(peer, topic, since, timeout_s)

    # --- blocks -------------------------------------------------------------------------

    def put_blob(self, data: bytes | bytearray | memoryview) -> CID:
        """Store `data` as IPFS-compatible blocks; returns its root CID (announce with "
        "`provide`)."""
        return self.store.put_blob(data)

    def read_blob(self, root: CID, max_size_bytes: int | None = None) -> bytes:
        """Assemble a complete stored blob (`BlockNotFound` if some block is missing)."""
        return self.store.read_blob(root, max_size_bytes)

    async def provide(self, cid: CID) -> None:
        """Announce on the DHT that this node holds `cid` (no-op without DHT)."""
        self._provided.add(cid)
        if self.dht is None:
            return
        with trio.move_on_after(DHT_LOOKUP_TIMEOUT_S):
            try:
                await self.dht.provide(str(cid))
            except Exception as exc:
                log.debug("DHT provide %s failed: %r", cid, exc)

    async def find_providers(self, cid: CID, timeout_s: float = DHT_LOOKUP_TIMEOUT_S) -> list[str]:
        """Peers the DHT says hold `cid` (possibly empty)."""
        if self.dht is None:
            return []
        with trio.move_on_after(timeout_s):
            try:
                infos = await self.dht.find_providers(str(cid), DHT_PROVIDER_COUNT)
            except Exception as exc:
                log.debug("DHT find_providers %s failed: %r", cid, exc)
                return []
            out = []
            for info in infos:
                if info.peer_id == self.host.get_id():
                    continue
                if info.addrs:
                    self.host.get_peerstore().add_addrs(info.peer_id, info.addrs, 600)
                out.append(info.peer_id.to_base58())
            return out
        return []

    async def fetch_blob(
        self,
        root: CID,
        providers: Sequence[str] | None = None,
        *,
        timeout_s: float = BLOB_FETCH_TIMEOUT_S,
        provide: bool = True,
    ) -> None:
        """Fetch every block of `root` into the store, verified; resumes after a kill.

        Providers: those given, else the DHT's answer plus every connected peer (a peer
        that lacks a block just says so). After a complete fetch the node announces itself
        as a provider, so later fetchers can use it instead of the author.
        """
        if self.store.has_blob(root):
            return
        candidates = list(providers or [])
        if not candidates:
            candidates = await self.find_providers(root)
            candidates += [p for p in self.connected_peers() if p not in candidates]
        candidates = [p for p in candidates if p != self.peer_id]
        if not candidates:
            raise FetchError(f"no provider known for {root}: connect to peers or pass providers")
        await self.blocks.fetch_blob(root, candidates, timeout_s=timeout_s)
        if provide:
            await self.provide(root)

    async def fetch_blob_with_group(
        self,
        root: CID,
        seeders: Sequence[str],
        group: Sequence[str],
        *,
        patience_s: float = STRIPE_PATIENCE_S,
        timeout_s: float = BLOB_FETCH_TIMEOUT_S,
    ) -> None:
        """Fetch `root` striped across `group` (same ordered peer list on every member, self
        included) so the seeders (e.g. the author) upload it about once; see
        `BlockExchange.fetch_blob_striped`."""
        if not self.store.has_blob(root):
            await self.blocks.fetch_blob_striped(
                root, seeders, group, self.peer_id, patience_s=patience_s, timeout_s=timeout_s
            )

    async def get_blob(
        self,
        root: CID,
        providers: Sequence[str] | None = None,
        *,
        max_size_bytes: int | None = None,
    ) -> bytes:
        """`fetch_blob` then `read_blob`."""
        await self.fetch_blob(root, providers)
        return self.read_blob(root, max_size_bytes)

    async def fetch_blob_bitswap(
        self, root: CID, provider: str, timeout_s: float = BLOB_FETCH_TIMEOUT_S
    ) -> None:
        """Fetch a blob over Bitswap 1.2 from one peer (interoperability; slower than "
        "fetch_blob)."""
        if self.bitswap is None:
            raise ConfigError("Bitswap is off: start the node with NetConfig(bitswap=True)")
        from libp2p.peer.id import ID

        session = self.bitswap.new_session()
        with trio.fail_after(timeout_s):
            while frontier := self.store.missing(root):
                got = await session.get_blocks_batch(
                    [c.to_bytes() for c in frontier],
                    peer_id=ID.from_base58(provider),
                    timeout=timeout_s,
                )
                for cid in frontier:
                    block = got.get(cid.to_bytes())
                    if block is None:
                        raise FetchError(f"Bitswap peer {provider} did not send {cid}")
                    self.store.put(cid, block)  # verified (hashed once) before it is stored

    # --- lifecycle ----------------------------------------------------------------------

    async def _add_to_dht(self, peer_id: Any) -> None:
        try:
            await self.dht.add_peer(peer_id)
        except Exception as exc:
            log.debug("DHT add_peer %s: %r", peer_id, exc)

    async def _bootstrap(self) -> None:
        cfg = self.config
        if not cfg.bootstrap:
            if not cfg.mdns:
                message = (
                    "no bootstrap peers configured and mDNS is off: this node will only talk to "
                    "peers "
                    "that dial it (add bootstrap multiaddrs, or enable mDNS on a trusted LAN)"
                )
                if cfg.require_peers:
                    raise NoPeersError(message)
                log.warning(message)
            return
        errors: list[str] = []
        with trio.move_on_after(cfg.bootstrap_timeout_s):
            async with trio.open_nursery() as nursery:
                for addr in cfg.bootstrap:
                    nursery.start_soon(self._dial_quietly, addr, errors)
        if not self.connected_peers():
            reasons = "; ".join(errors) or "timeout"
            message = f"could not reach any of {len(cfg.bootstrap)} bootstrap peer(s): {reasons}"
            if cfg.require_peers:
                raise NoPeersError(message)
            log.warning(message)

    async def _dial_quietly(self, addr: str, errors: list[str]) -> None:
        try:
            await self.connect(addr)
        except Exception as exc:
            errors.append(f"{addr}: {type(exc).__name__} {exc}".strip())

    async def _maintain(self) -> None:
        """Keep the DHT routing table fed, lift expired bans, re-dial bootstrap when alone
        (connected to no peer but our relays), top up to `config.min_peers` connections."""
        from libp2p.peer.id import ID

        # (Stopped as the host starts too; again here in case the swarm's start-up had not
        # reached starting it then: `stop` only clears a flag its loop checks.)
        await self.host.get_network().auto_connector.stop()
        while True:
            await trio.sleep(MAINTENANCE_INTERVAL_S)
            connected = self.host.get_connected_peers()
            if self.dht is not None:
                for peer_id in connected:
                    await self._add_to_dht(peer_id)
            for peer in list(self._blacklisted):
                if not self.peers.is_banned(peer):
                    self.pubsub.remove_from_blacklist(ID.from_base58(peer))
                    self._blacklisted.discard(peer)
            # A node behind a NAT stays connected to its relays: alone is without others.
            relays = self.nat.relay_peers
            others = [p for p in connected if p.to_base58() not in relays]
            errors: list[str] = []
            if not others and self.config.bootstrap:
                for addr in self.config.bootstrap:
                    await self._dial_quietly(addr, errors)
            elif len(others) < self.config.min_peers:
                now = trio.current_time()
                for peer, addr in self._dial_candidates(self.config.min_peers - len(others), now):
                    self._topup_dialled[peer] = now
                    await self._dial_quietly(addr, errors)

    def _dial_candidates(self, count: int, now: float) -> list[tuple[str, str]]:
        """Up to `count` (peer ID, full multiaddr) of peers the peerstore has an address for (peers
        we were connected to or learned of by identify; not the address book, which is
        dialled only for a stream that needs it) and are not connected to, none banned nor
        dialled by a top-up in the last TOPUP_REDIAL_S, in a random order."""
        for peer, when in list(self._topup_dialled.items()):
            if now - when >= TOPUP_REDIAL_S:
                del self._topup_dialled[peer]
        connected = {p.to_base58() for p in self.host.get_connected_peers()}
        connected |= set(self._topup_dialled)  # (recently dialled: left out too)
        me = self.host.get_id().to_base58()
        peerstore = self.host.get_peerstore()
        known = {p.to_base58(): list(peerstore.addrs(p)) for p in peerstore.peers_with_addrs()}
        candidates = [
            (peer, str(addrs[0]) if "/p2p/" in str(addrs[0]) else f"{addrs[0]}/p2p/{peer}")
            for peer, addrs in known.items()
            if addrs and peer not in connected and peer != me and not self.peers.is_banned(peer)
        ]
        self._rng.shuffle(candidates)
        return candidates[:count]


def _build(config: NetConfig, private_key: bytes) -> tuple[Any, Any, Any, Any]:
    from libp2p import new_host
    from libp2p.crypto.x25519 import create_new_key_pair as create_x25519
    from libp2p.network.config import ConnectionConfig
    from libp2p.pubsub.gossipsub import PROTOCOL_ID, PROTOCOL_ID_V11, PROTOCOL_ID_V12, GossipSub
    from libp2p.pubsub.pubsub import Pubsub
    from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
    from libp2p.security.noise.transport import Transport as NoiseTransport

    key_pair = key_pair_from_private_key(private_key)
    # Noise only: without sec_opt py-libp2p also offers TLS, SECIO and *plaintext*.
    security = {
        NOISE_PROTOCOL_ID: NoiseTransport(key_pair, noise_privkey=create_x25519().private_key)
    }
    host = new_host(
        key_pair=key_pair,
        sec_opt=security,
        muxer_preference="YAMUX",
        listen_addrs=[multiaddr.Multiaddr(config.listen)],
        enable_mDNS=config.mdns,
        connection_config=ConnectionConfig(
            outbound_stream_protocol_negotiation_timeout=config.stream_negotiation_timeout_s,
            inbound_stream_protocol_negotiation_timeout=config.stream_negotiation_timeout_s,
        ),
    )
    router = GossipSub(
        protocols=[PROTOCOL_ID_V12, PROTOCOL_ID_V11, PROTOCOL_ID],
        degree=config.degree,
        degree_low=config.degree_low,
        degree_high=config.degree_high,
        heartbeat_interval=config.heartbeat_s,
        heartbeat_initial_delay=0.1,
        max_messages_per_topic_per_second=GOSSIP_MAX_MSGS_PER_TOPIC_PER_S,
        # Mesh IP diversity makes no sense when every peer of a simulation is 127.0.0.1,
        # and on real networks our own per-peer limits and bans do the job.
        eclipse_protection_enabled=False,
    )
    # Content-addressed message ids: the same bytes are one message whoever (re)publishes
    # them, which is what lets sync and gossip deduplicate each other.
    pubsub = Pubsub(host, router, msg_id_constructor=_content_message_id, strict_signing=True)
    dht = None
    if config.dht:
        from libp2p.kad_dht.kad_dht import DHTMode, KadDHT

        dht = KadDHT(host, DHTMode.SERVER, enable_random_walk=False)
    bitswap = None
    if config.bitswap:
        from libp2p.bitswap import BitswapClient

        bitswap = BitswapClient(host)
    return host, pubsub, router, (dht, bitswap)


async def _teardown_pubsub_peer(pubsub: Any, peer_id: Any) -> None:
    """py-libp2p's `Pubsub._teardown_if_connected`, without the KeyError race."""
    stream = pubsub.peers.get(peer_id)
    if stream is not None:
        try:
            await stream.reset()
        except Exception:
            pass
        pubsub.peers.pop(peer_id, None)
    pubsub._forget_all_subscriptions(peer_id)


def _content_message_id(msg: Any) -> bytes:
    import hashlib

    return hashlib.sha256(msg.data).digest()


@asynccontextmanager
async def open_node_host(config: NetConfig, private_key: bytes) -> AsyncIterator[NodeNet]:
    """Start the node's network layer; everything stops cleanly when the block exits."""
    from libp2p.custom_types import TProtocol

    quiet_libp2p_logs()
    if config.tune_yamux:
        yamux_tuning.apply()
        pubsub_tuning.apply()
        service_tuning.apply()
        multiselect_tuning.apply()
        notify_tuning.apply()
    host, pubsub, router, (dht, bitswap) = _build(config, private_key)
    quiet_libp2p_logs()  # again: building the host imported more libp2p modules
    net = NodeNet(config, host, pubsub, dht, bitswap)
    net.remember_peers(config.known_peers)
    if bitswap is not None:
        bitswap.block_store = _BitswapStoreAdapter(net.store)
    host.set_stream_handler(TProtocol(BLOCKS_PROTOCOL), net.blocks.handle_stream)
    host.set_stream_handler(TProtocol(SYNC_PROTOCOL), net.gossip.handle_sync_stream)
    for protocol in router.get_protocols():
        host.set_stream_handler(protocol, _guarded_pubsub_handler(net, pubsub))
    # Nested nurseries (ours and py-libp2p's services) would wrap an exception raised by the
    # caller's block in ~10 levels of ExceptionGroup; give the caller its own exception back.
    raised: list[BaseException] = []
    try:
        async with _run_host(net, host, pubsub, router, dht, bitswap, raised):
            yield net
    except BaseExceptionGroup as group:
        leaves = list(_leaves(group))
        if raised and leaves and all(leaf is raised[0] for leaf in leaves):
            raise raised[0] from None
        if len(leaves) == 1 and isinstance(leaves[0], P2PFLError):  # e.g. NoPeersError at start-up
            raise leaves[0] from None
        raise


def _drop_tasks_once_stopping(manager: Any) -> None:
    """Make a py-libp2p service manager's `run_task` a no-op once the service is stopping.

    py-libp2p 0.8.1's pubsub reads its streams in the swarm's connection tasks, not in its own
    service, and from there spawns `push_msg` (and the like) into its service's task nursery,
    guarded only by `manager.is_running`. That flag stays True for a scheduling tick or two
    after the task nursery has closed (`TrioManager.run` sets `_finished` only after its
    system nursery exits), so a message arriving in that window raised "Nursery is closed to
    new arrivals" into the swarm and took the host down -- and with it a whole in-process
    simulation when a fault killed a node. Closing the connections before pubsub stops does
    not close the window: they may not all close within SHUTDOWN_CLOSE_TIMEOUT_S, and the
    listener stays open, so peers re-dial a closing node and publish to it.

    Dropping is what the library means by its `is_running` guard: every task spawned this
    way is fire-and-forget (handle or forward a received message, feed a new peer, retry a
    subscription announcement), and a service that is cancelled cancels them anyway.
    """
    run_task = manager.run_task

    def run_task_unless_stopping(async_fn: Any, *args: Any, **kwargs: Any) -> None:
        if manager.is_cancelled or manager.is_finished:
            log.debug("shutdown: not starting %s", getattr(async_fn, "__name__", async_fn))
            return
        run_task(async_fn, *args, **kwargs)

    manager.run_task = run_task_unless_stopping  # the instance attribute shadows the method


def _guarded_pubsub_handler(net: NodeNet, pubsub: Any) -> Callable[[Any], Awaitable[None]]:
    """py-libp2p's pubsub stream handler, with undecodable RPCs contained.

    `Pubsub.stream_handler` catches stream and varint errors but not protobuf's
    `DecodeError`, so one peer sending bytes that are not an RPC (a hostile peer, or a
    frame cut by a dropped link) raised out of the connection's task group and took the
    whole host down (seen in a partition run). Here it costs the peer MALFORMED_FRAME,
    the stream is reset and the peer dropped from pubsub, as for the other read errors.
    """
    from google.protobuf.message import DecodeError

    async def handler(stream: Any) -> None:
        try:
            await pubsub.stream_handler(stream)
        except DecodeError as exc:
            peer_id = stream.muxed_conn.peer_id
            log.debug("undecodable pubsub RPC from %s: %s", peer_id, exc)
            net.peers.offence(peer_of(stream), Offence.MALFORMED_FRAME, "pubsub-undecodable-rpc")
            with contextlib.suppress(Exception):
                await stream.reset()
            with contextlib.suppress(Exception):
                pubsub._handle_dead_peer(peer_id)

    return handler


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _leaves(inner)
    else:
        yield exc


@asynccontextmanager
async def _run_host(
    net: NodeNet,
    host: Any,
    pubsub: Any,
    router: Any,
    dht: Any,
    bitswap: Any,
    raised: list[BaseException],
) -> AsyncIterator[None]:
    from libp2p.tools.anyio_service import background_trio_service

    config = net.config
    async with host.run([multiaddr.Multiaddr(config.listen)]), _swarm_closed_last(host):
        # Connections are topped up by `NodeNet._maintain` (config.min_peers) instead.
        await host.get_network().auto_connector.stop()
        async with background_trio_service(pubsub), background_trio_service(router):
            _drop_tasks_once_stopping(pubsub.manager)
            await pubsub.wait_until_ready()
            async with trio.open_nursery() as nursery:
                net._nursery = nursery
                if dht is not None:
                    await nursery.start(run_service, dht)
                if bitswap is not None:
                    bitswap.set_nursery(nursery)
                    await bitswap.start()
                await nursery.start(net.nat.run)
                await nursery.start(net.gossip.run)
                nursery.start_soon(net._maintain)
                await net._bootstrap()
                try:
                    yield
                except BaseException as exc:
                    raised.append(exc)
                    raise
                finally:
                    nursery.cancel_scope.cancel()
                    with trio.CancelScope(shield=True):
                        if bitswap is not None:
                            await quietly(bitswap.stop(), "shutdown")
                        # Stop py-libp2p's auto-connector first: each disconnect below would
                        # otherwise trigger a redial, and a connection it completes after the
                        # swarm closed its connections leaks its socket.
                        await quietly(host.get_network().auto_connector.stop(), "shutdown")
                        # Close connections while pubsub still runs: a message arriving on a
                        # live connection after pubsub stopped makes py-libp2p raise
                        # "Nursery is closed to new arrivals" into the swarm.
                        with trio.move_on_after(SHUTDOWN_CLOSE_TIMEOUT_S):
                            for peer_id in list(host.get_connected_peers()):
                                await quietly(host.disconnect(peer_id), "shutdown")


@asynccontextmanager
async def _swarm_closed_last(host: Any) -> AsyncIterator[None]:
    """Close the swarm (connections, then listeners) once the services above it stopped,
    before `host.run` stops the swarm's service manager.

    A connection opened after the shutdown's disconnect pass -- a dial or an inbound
    connection completing while pubsub stops -- was otherwise closed by the swarm's own
    `run` as its manager was being cancelled: the close's first await raised Cancelled
    before the socket was touched, and the socket leaked (the CI's "unclosed socket"
    ResourceWarning, about 1 kill test in 4 on a loaded machine). `Swarm.close` closes them
    first, outside any cancellation, and marks the swarm closing so nothing redials."""
    try:
        yield
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(SHUTDOWN_CLOSE_TIMEOUT_S):
            await quietly(host.get_network().close(), "shutdown")


class _BitswapStoreAdapter:
    """Presents our `BlockStore` to py-libp2p's Bitswap (which speaks bytes or py-cid CIDs)."""

    def __init__(self, store: BlockStore) -> None:
        self.store = store

    @staticmethod
    def _cid(cid: Any) -> CID | None:
        from libp2p.bitswap.cid import cid_to_bytes

        try:
            return CID.parse(cid_to_bytes(cid))
        except Exception:
            return None

    async def get_block(self, cid: Any) -> bytes | None:
        ours = self._cid(cid)
        if ours is None or not self.store.has(ours):
            return None
        try:
            return self.store.get(ours)
        except Exception:
            return None

    async def put_block(self, cid: Any, data: bytes) -> None:
        ours = self._cid(cid)
        if ours is not None:
            self.store.put(ours, data)

    async def has_block(self, cid: Any) -> bool:
        ours = self._cid(cid)
        return ours is not None and self.store.has(ours)

    async def delete_block(self, cid: Any) -> None:
        ours = self._cid(cid)
        if ours is not None:
            self.store.delete(ours)

    def get_all_cids(self) -> list[bytes]:
        return [cid.to_bytes() for cid in self.store]
