"""Network configuration: every limit the node's libp2p layer enforces, named and explained.

One frozen dataclass, `NetConfig`; the node builds it from its own configuration. Defaults are
chosen for laptops on home links and for the simulation on one machine (loopback, 2 cores).
The spec (protocol/spec/network.md) carries the constants a second implementation must match:
protocol ids, topic names, frame layouts. Everything else here is local policy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from p2pfl.core.cid import MAX_BLOCK_SIZE
from p2pfl.core.messages import MAX_MESSAGE_BYTES
from p2pfl.errors import ConfigError

# --- protocol identifiers (part of the spec) -----------------------------------------------

# Topics are per task: /p2pfl/1/<task>/<kind>. "1" is the topic-layout version.
TOPIC_PREFIX = "/p2pfl/1"
TOPIC_KINDS = ("updates", "consensus", "commits")
# Dedicated stream protocols (libp2p multistream ids).
BLOCKS_PROTOCOL = "/p2pfl/blocks/1.0.0"
SYNC_PROTOCOL = "/p2pfl/sync/1.0.0"


def topic_name(task: str, kind: str) -> str:
    """The gossipsub topic of `kind` ("updates", "consensus", "commits") for a task."""
    if kind not in TOPIC_KINDS:
        raise ConfigError(f"unknown topic kind {kind!r}; expected one of {TOPIC_KINDS}")
    if not task or "/" in task:
        raise ConfigError(f"task id {task!r} must be non-empty and contain no '/'")
    return f"{TOPIC_PREFIX}/{task}/{kind}"


# --- defaults, each with its reason ---------------------------------------------------------

# Gossipsub heartbeat. py-libp2p defaults to 120 s, which leaves a fresh mesh unformed for
# two minutes; go-libp2p uses 1 s. Mesh repair, IHAVE gossip and fanout expiry all tick here.
GOSSIP_HEARTBEAT_S = 1
# Mesh degree D / D_low / D_high: go-libp2p's defaults (6/4/12). With 20-200 peers every
# message reaches everyone in ~log_6(N) hops while each node forwards to at most 12 peers.
GOSSIP_DEGREE = 6
GOSSIP_DEGREE_LOW = 4
GOSSIP_DEGREE_HIGH = 12
# Connections a node keeps at least: below this many (relays aside) its maintenance loop
# dials peers it knows an address for. py-libp2p's own AutoConnector is stopped: it dials
# every peer in the peerstore (any peer ever connected or identified) while a node has fewer
# than 200 connections, which grew 100 simulated nodes' connections round after round (~65
# dials a round, 33 ms of CPU each) and churned the gossip meshes.
MIN_PEERS = GOSSIP_DEGREE_HIGH
# py-libp2p's spam protection drops (and penalises) a forwarder that relays more than this
# many messages per topic per second. A committee round legitimately sees ~N updates in a
# burst relayed by the same few mesh neighbours, so the library default (10) would drop
# honest traffic; per-peer limits are enforced by our own validator instead.
GOSSIP_MAX_MSGS_PER_TOPIC_PER_S = 1000.0
# Largest payload we publish or accept on a topic. The core codec's limit (1,000,000 bytes)
# leaves room for the pubsub envelope under py-libp2p's 1 MiB RPC cap, over which messages
# are dropped silently on send.
MAX_GOSSIP_MESSAGE_BYTES = MAX_MESSAGE_BYTES
# Publishing pace per topic. Gossipsub queues hold 32 RPCs per peer and drop the rest, so a
# node pushing 100 messages at once loses most of them; 50/s keeps a burst inside the queues
# and still publishes a round's worth of messages in about two seconds.
PUBLISH_RATE_PER_TOPIC_PER_S = 50.0
PUBLISH_BURST = 16
# Anti-entropy: every interval each node asks one random peer per topic for the messages it
# lacks (set reconciliation over message ids). Loss in gossip then costs at most a few
# intervals instead of stalling a round.
SYNC_INTERVAL_S = 1.0
# Messages remembered per topic for sync (oldest evicted first) and how long.
SYNC_LOG_MAX_MESSAGES = 4096
SYNC_LOG_TTL_S = 600.0
# One sync response carries at most this many bytes of messages; the rest follows next time.
SYNC_MAX_RESPONSE_BYTES = 8 * 1024 * 1024

# Block exchange.
# CIDs per request frame: 64 leaves are 16 MiB, enough to keep a stream busy between frames.
BLOCKS_MAX_CIDS_PER_REQUEST = 64
# CIDs a fetcher asks for per request: 16 leaves are 4 MiB, small enough that the last batch
# (whose hashing and disk write nothing overlaps) is short, large enough that request frames
# are rare. Up to BLOCKS_MAX_CIDS_PER_REQUEST is legal on the wire.
BLOCKS_BATCH_CIDS = 16
# Requests in flight per provider stream (pipelining hides the request round trip);
# 4 x 4 MiB fills the 16 MiB receive window.
BLOCKS_PIPELINE_DEPTH = 4
# Providers fetched from in parallel for one blob, at most. A fetch starts with the first
# provider alone; the next one joins while more than BLOCKS_PER_PROVIDER blocks wait per
# provider working (a large model: its providers' uploads add up) or when some block was
# refused by every provider working -- one that lacks it, fails, or has not answered within
# BLOCKS_FIRST_ANSWER_S of being asked (dial included: a silent or unreachable peer). A 400
# KB delta then costs one stream, not four (and no dial of three peers we may not be
# connected to): 100 nodes in 2 shards opened ~1,900 block streams a round for ~470 blobs.
BLOCKS_MAX_PROVIDERS = 4
BLOCKS_PER_PROVIDER = 16
BLOCKS_FIRST_ANSWER_S = 5.0
# Receive window granted on block streams. Yamux starts every stream at 256 KiB; at 1 ms RTT
# that caps a stream at ~256 MB/s and at 50 ms (home links) at ~5 MB/s. 16 MiB is
# go-yamux's maximum window.
BLOCKS_RECEIVE_WINDOW_BYTES = 16 * 1024 * 1024
# Deadline for one batch of blocks from one provider; a provider that misses it loses the
# batch to the others and a score point.
BLOCKS_BATCH_TIMEOUT_S = 30.0
# Deadline for a whole blob fetch unless the caller gives one.
BLOB_FETCH_TIMEOUT_S = 600.0

# Limits on what peers may ask of us.
# Block and sync requests per peer per second (token bucket), and burst.
PEER_REQUESTS_PER_S = 50.0
PEER_REQUEST_BURST = 100
# Gossip messages accepted from one forwarder per second, and burst. A forwarder relays
# other nodes' messages too, so this is generous; it only stops floods.
PEER_GOSSIP_PER_S = 200.0
PEER_GOSSIP_BURST = 400
# Peer score: starts at 0, each offence subtracts its weight; at or below the threshold the
# peer is disconnected and banned for BAN_S seconds.
SCORE_BAN_THRESHOLD = -100.0
BAN_S = 600.0

# Discovery: how long start-up waits for a first peer before raising, when bootstrap peers
# are configured; and Kademlia provider re-announce interval.
BOOTSTRAP_TIMEOUT_S = 15.0
DIAL_TIMEOUT_S = 10.0
# How long opening a stream may wait for the other side's multistream-select answer (both
# directions). py-libp2p's ConnectionConfig says 10 s; a peer whose event loop is saturated
# answers later but does answer: 100 simulated nodes on 2 cores timed out 737 of 1,264
# block-stream opens at 10 s (every one a failed delta fetch, retried from scratch), and
# none at 30 s. A dead peer is noticed by its connection, not by this.
STREAM_NEGOTIATION_TIMEOUT_S = 30.0
PROVIDE_INTERVAL_S = 600.0

# NAT traversal (p2pfl.net.nat).
# A relay's limits per circuit. go-libp2p's public-relay defaults (2 min, 128 KiB) only carry
# a hole-punch handshake; a p2pfl relay also carries rounds for nodes that cannot punch
# through (model deltas of a few MB per round, gossip for a whole task), so py-libp2p's own
# defaults: an hour and 1 GiB per circuit. The node re-dials through the relay after one ends.
RELAY_CIRCUIT_DURATION_S = 3600
RELAY_CIRCUIT_BYTES = 1024**3
# Reservations a relay grants (py-libp2p's default is 4): a committee of a few dozen nodes,
# all behind NATs, fits with room to spare.
RELAY_MAX_RESERVATIONS = 128
# Circuits open at once through one reservation: one per peer talking to the reserving node.
RELAY_MAX_CIRCUITS_PER_PEER = 64
# How often a node checks that it is still connected to its relays (a lost relay takes its
# reservation and circuits with it: logged at once), and retries one that disappeared.
RELAY_CHECK_S = 1.0
RESERVATION_RETRY_S = 5.0
# AutoNAT: a verdict needs this many peers to agree (the spec's "more than three"), or all
# the peers that answered when fewer are directly connected (one relay: one verdict).
AUTONAT_CONFIRMATIONS = 4
# Re-check reachability this often (py-libp2p's default), or sooner while no peer answered.
AUTONAT_INTERVAL_S = 300.0
AUTONAT_RETRY_S = 5.0
# An AutoNAT server's dial-back: a reachable node answers a TCP dial within a second or two;
# behind a NAT that drops unsolicited SYNs the dial hangs until this deadline.
AUTONAT_DIAL_TIMEOUT_S = 5.0
# How long the asking node waits for a server's verdict (the dial-back and its own round trip).
AUTONAT_QUERY_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class NetConfig:
    """What a node's network layer needs to start.

    `listen` is a TCP multiaddr (port 0 picks a free port; tests use 127.0.0.1).
    `bootstrap` lists full multiaddrs with /p2p/<peer id>. `mdns` multicasts on the local
    network: opt-in, never in tests. `data_dir` holds the block store (`<data_dir>/blocks`).
    `require_peers`: start-up raises `NoPeersError` when no peer can be reached (set False
    for the first node of a network, which legitimately starts alone). `known_peers` lists
    full multiaddrs of peers to remember but not dial: an address book, for a network
    without a DHT to ask (a simulation), so that a block fetch can dial any of them.

    NAT traversal (p2pfl.net.nat): `relay_service` makes this node a circuit relay v2 (for
    nodes on a public address); `relays` lists relay multiaddrs (/ip4/.../tcp/.../p2p/<id>)
    to reserve a slot on, so that peers reach this node at `<relay>/p2p-circuit/p2p/<us>`
    (bootstrap addresses may be such circuit addresses); `autonat` answers other nodes'
    dial-back requests and learns whether this node is publicly reachable; `hole_punching`
    (DCUtR) upgrades relayed connections to direct ones where both NATs allow it.
    """

    data_dir: Path
    listen: str = "/ip4/127.0.0.1/tcp/0"
    bootstrap: tuple[str, ...] = ()
    known_peers: tuple[str, ...] = ()
    mdns: bool = False
    dht: bool = True
    bitswap: bool = False
    require_peers: bool = False
    bootstrap_timeout_s: float = BOOTSTRAP_TIMEOUT_S
    stream_negotiation_timeout_s: float = STREAM_NEGOTIATION_TIMEOUT_S
    # Gossip.
    heartbeat_s: int = GOSSIP_HEARTBEAT_S
    degree: int = GOSSIP_DEGREE
    degree_low: int = GOSSIP_DEGREE_LOW
    degree_high: int = GOSSIP_DEGREE_HIGH
    min_peers: int = MIN_PEERS
    max_message_bytes: int = MAX_GOSSIP_MESSAGE_BYTES
    publish_rate_per_s: float = PUBLISH_RATE_PER_TOPIC_PER_S
    sync_interval_s: float = SYNC_INTERVAL_S
    # Blocks.
    max_block_bytes: int = MAX_BLOCK_SIZE
    blocks_max_providers: int = BLOCKS_MAX_PROVIDERS
    blocks_first_answer_s: float = BLOCKS_FIRST_ANSWER_S
    blocks_receive_window_bytes: int = BLOCKS_RECEIVE_WINDOW_BYTES
    blocks_batch_timeout_s: float = BLOCKS_BATCH_TIMEOUT_S
    # Limits.
    peer_requests_per_s: float = PEER_REQUESTS_PER_S
    peer_gossip_per_s: float = PEER_GOSSIP_PER_S
    ban_threshold: float = SCORE_BAN_THRESHOLD
    ban_s: float = BAN_S
    # Tuning of py-libp2p (yamux_tuning.py, pubsub_tuning.py, service_tuning.py); off only
    # to measure the difference.
    tune_yamux: bool = True
    # NAT traversal (p2pfl.net.nat), all off by default.
    relay_service: bool = False
    relays: tuple[str, ...] = ()
    autonat: bool = False
    hole_punching: bool = False

    def __post_init__(self) -> None:
        if not self.listen.startswith(("/ip4/", "/ip6/")) or "/tcp/" not in self.listen:
            raise ConfigError(
                f"listen address {self.listen!r} must be a TCP multiaddr, e.g. "
                "/ip4/0.0.0.0/tcp/4001"
            )
        for kind, addrs in (("bootstrap", self.bootstrap), ("known peer", self.known_peers)):
            for addr in addrs:
                if "/p2p/" not in addr:
                    raise ConfigError(f"{kind} address {addr!r} must end in /p2p/<peer id>")
        if not 0 < self.max_message_bytes <= MAX_GOSSIP_MESSAGE_BYTES:
            raise ConfigError(
                f"max_message_bytes must be in 1..{MAX_GOSSIP_MESSAGE_BYTES} (pubsub's 1 MiB cap)"
            )
        if not 0 < self.max_block_bytes <= MAX_BLOCK_SIZE:
            raise ConfigError(f"max_block_bytes must be in 1..{MAX_BLOCK_SIZE}")
        if not self.degree_low <= self.degree <= self.degree_high:
            raise ConfigError("gossip degrees must satisfy degree_low <= degree <= degree_high")
        for addr in self.relays:
            if "/p2p/" not in addr or "/p2p-circuit" in addr:
                raise ConfigError(
                    f"relay address {addr!r} must be a direct multiaddr ending in "
                    "/p2p/<relay peer id>"
                )
        if self.heartbeat_s < 1:
            raise ConfigError("heartbeat_s must be >= 1 (py-libp2p takes whole seconds)")
