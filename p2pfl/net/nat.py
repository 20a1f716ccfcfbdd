"""NAT traversal for the node's host, from py-libp2p 0.8.1: circuit relay v2 (serve as a relay;
reserve a slot on relays and be reached, or dial others, through them), AutoNAT (are we
reachable from the public network?) and DCUtR (hole punching: upgrade a relayed connection to
a direct one). Everything is off unless `NetConfig` asks (`relay_service`, `relays`, `autonat`,
`hole_punching`).

Tree of tasks (in `NodeNet`'s nursery, started before the bootstrap dials):

    NatTraversal.run
    ├── circuit relay v2 service: HOP handler (relay_service), STOP handler (relays)
    ├── reservations loop (relays): reserve on each relay, re-reserve after a relay comes back;
    │   py-libp2p's refresh worker renews a reservation before it expires
    ├── DCUtR service (hole_punching): its auto-drive loop punches every relayed peer
    └── AutoNAT loop (autonat): ask directly connected peers to dial us back

What py-libp2p 0.8.1 does not do for us, and is done here:
- The swarm never dials a /p2p-circuit address (`Swarm.dial_peer` skips them): `dial` sends
  those to the relay transport.
- AutoNAT's server dials back with `host.connect`, which returns at once when a connection to
  the peer exists -- and the request itself came over one -- so every server answered OK and
  every node behind a NAT believed it was public. `_DialBackAutoNAT` opens a fresh connection
  (`Swarm.dial_addr`, as DCUtR does) and closes it after. The client counts only real verdicts
  (a refused request, e.g. no address at the observed IP, is no evidence). Its dial-backs go
  to every candidate address at once under one deadline: behind a NAT that drops unsolicited
  SYNs each dial hangs, and one after the other they outlasted the client's wait.
- After a failed dial the swarm refuses to dial the peer again for 60 s (negative cache):
  configured relays are retried on our own schedule, and a live circuit connection clears
  the cache for its peer (else no stream could be opened on it for that minute).
- Relayed connections on the listening side are tagged /p2p/<its own id>/p2p-circuit/...
  (py-libp2p names the wrong relay); we only ever test for "/p2p-circuit".

DCUtR is py-libp2p's, unchanged: once both sides have seen their external address (identify
over the relay connection), each predicts <external IP>/tcp/<listen port> and both dial at
once from their listen port (SO_REUSEPORT). Through Linux MASQUERADE that works when the NATs
drop unsolicited SYNs (home routers do; tests/net/test_nat.py). A NAT that answers them with
a RST (plain MASQUERADE, nothing listening on the NAT) aborts a dial whose peer's SYN arrives
before its own has left ("fail to open connection"), which is usual but not certain: SYNs
that cross in flight open the connection. A symmetric NAT (a random port for every new
connection) defeats the prediction every time, and the peers stay on the relay.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import multiaddr
import trio

from p2pfl.errors import ConfigError, P2PFLError
from p2pfl.net.config import (
    AUTONAT_CONFIRMATIONS,
    AUTONAT_DIAL_TIMEOUT_S,
    AUTONAT_INTERVAL_S,
    AUTONAT_QUERY_TIMEOUT_S,
    AUTONAT_RETRY_S,
    DIAL_TIMEOUT_S,
    RELAY_CHECK_S,
    RELAY_CIRCUIT_BYTES,
    RELAY_CIRCUIT_DURATION_S,
    RELAY_MAX_CIRCUITS_PER_PEER,
    RELAY_MAX_RESERVATIONS,
    RESERVATION_RETRY_S,
    NetConfig,
)
from p2pfl.net.services import quietly, run_service

log = logging.getLogger(__name__)

# Reachability, as AutoNAT reports it.
UNKNOWN, PUBLIC, PRIVATE = "unknown", "public", "private"
# Connection kinds `NatTraversal.connection_kind` reports.
DIRECT, RELAYED = "direct", "relayed"
CIRCUIT = "/p2p-circuit"


class RelayError(P2PFLError):
    """A relay could not be reached, refused a reservation, or failed to connect a circuit."""


def is_circuit_addr(addr: str) -> bool:
    """Whether `addr` goes through a relay (/.../p2p/<relay>/p2p-circuit/p2p/<peer>)."""
    return CIRCUIT in addr


def _relay_id(addr: str) -> str:
    """The relay's peer id in a relay multiaddr (/ip4/.../tcp/.../p2p/<relay id>)."""
    if "/p2p/" not in addr or is_circuit_addr(addr):
        raise ConfigError(f"relay address {addr!r} must be /ip4/.../tcp/.../p2p/<relay peer id>")
    return addr.rsplit("/p2p/", 1)[1]


class NatTraversal:
    """The relay, AutoNAT and DCUtR services of one host, as `NetConfig` asks."""

    def __init__(self, config: NetConfig, host: Any) -> None:
        from libp2p.relay.circuit_v2.config import RelayConfig, RelayRole
        from libp2p.relay.circuit_v2.protocol import CircuitV2Protocol
        from libp2p.relay.circuit_v2.resources import RelayLimits

        self.config = config
        self.host = host
        self.reachability = UNKNOWN
        # Relay address -> True while we hold a reservation there.
        self.reserved: dict[str, bool] = {addr: False for addr in config.relays}
        self._failing: set[str] = set()  # relays whose last reservation attempt failed
        for addr in config.relays:
            _relay_id(addr)
        self.protocol: Any = None
        self.transport: Any = None
        self.dcutr: Any = None
        self.autonat: Any = None
        if not (config.relay_service or config.relays or config.autonat or config.hole_punching):
            return
        limits = RelayLimits(
            duration=RELAY_CIRCUIT_DURATION_S,
            data=RELAY_CIRCUIT_BYTES,
            max_circuit_conns=RELAY_MAX_CIRCUITS_PER_PEER,
            max_reservations=RELAY_MAX_RESERVATIONS,
        )
        # The STOP handler (accept relayed connections) comes with the protocol; a node
        # without relays gets none anyway, as nobody holds a reservation for it.
        self.protocol = CircuitV2Protocol(host, limits=limits, allow_hop=config.relay_service)
        roles = RelayRole.STOP | RelayRole.CLIENT
        if config.relay_service:
            roles |= RelayRole.HOP
        # Reservations are made by our loop below, not by py-libp2p's relay discovery (which
        # probes every connected peer for the HOP protocol), so discovery stays unstarted.
        self.transport = _client_transport(host, self.protocol, RelayConfig(roles=roles))
        if config.hole_punching:
            from libp2p.relay.circuit_v2.dcutr import DCUtRProtocol

            self.dcutr = DCUtRProtocol(host)
        if config.autonat:
            self.autonat = _dial_back_autonat(host)

    @property
    def relay_peers(self) -> set[str]:
        """Peer IDs of the configured relays."""
        return {_relay_id(addr) for addr in self.config.relays}

    @property
    def circuit_addrs(self) -> list[str]:
        """Our addresses through the relays we hold a reservation on."""
        me = self.host.get_id().to_base58()
        return [f"{addr}{CIRCUIT}/p2p/{me}" for addr, ok in self.reserved.items() if ok]

    async def run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Run the services until cancelled; `started` once the first reservations were tried."""
        from libp2p.tools.anyio_service import background_trio_service

        if self.protocol is None:
            task_status.started()
            await trio.sleep_forever()
        async with background_trio_service(self.protocol), trio.open_nursery() as nursery:
            await self.protocol.event_started.wait()
            if self.dcutr is not None:
                await nursery.start(run_service, self.dcutr)
            for addr in self.config.relays:
                with trio.move_on_after(DIAL_TIMEOUT_S):
                    await self._reserve_quietly(addr, nursery)
            if self.config.relays:
                nursery.start_soon(self._keep_reservations, nursery)
            if self.autonat is not None:
                nursery.start_soon(self._autonat_loop)
            task_status.started()
            await trio.sleep_forever()

    # --- relay client -------------------------------------------------------------------

    async def reserve(self, addr: str, nursery: trio.Nursery) -> None:
        """Reserve a slot on the relay at `addr` (RelayError if it cannot be had)."""
        from libp2p.peer.peerinfo import info_from_p2p_addr
        from libp2p.relay.circuit_v2.protocol import PROTOCOL_ID

        info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
        # A relay we failed to reach is in the swarm's negative cache for 60 s; we retry a
        # configured relay on our own schedule (RESERVATION_RETRY_S) instead.
        self.host.get_network().unblock_peer(info.peer_id)
        try:
            with trio.fail_after(DIAL_TIMEOUT_S):
                await self.host.connect(info)
                stream = await self.host.new_stream(info.peer_id, [PROTOCOL_ID])
        except Exception as exc:
            raise RelayError(f"relay {addr} unreachable: {type(exc).__name__} {exc}") from None
        try:
            ok = await self.transport.reserve(stream, info.peer_id, nursery)
        finally:
            await quietly(stream.close())
        if not ok:
            raise RelayError(f"relay {addr} refused a reservation (or is not a relay)")

    async def _reserve_quietly(self, addr: str, nursery: trio.Nursery) -> None:
        """Reserve on `addr`; a failure is logged once per outage, not at every retry."""
        try:
            await self.reserve(addr, nursery)
        except RelayError as exc:
            if addr not in self._failing:
                log.warning("%s; retrying every %.0f s", exc, RESERVATION_RETRY_S)
                self._failing.add(addr)
            self.reserved[addr] = False
            return
        self._failing.discard(addr)
        if not self.reserved[addr]:
            log.info("reserved a slot on relay %s", addr)
        self.reserved[addr] = True

    async def _keep_reservations(self, nursery: trio.Nursery) -> None:
        """A relay that disappears loses its reservation (and its circuits): say so within
        RELAY_CHECK_S, and reserve again every RESERVATION_RETRY_S until it is back.
        py-libp2p's refresh worker renews live reservations."""
        from libp2p.peer.id import ID

        last_try = {addr: trio.current_time() for addr in self.reserved}
        while True:
            await trio.sleep(RELAY_CHECK_S)
            connected = set(self.host.get_connected_peers())
            for addr, ok in list(self.reserved.items()):
                if ok and ID.from_base58(_relay_id(addr)) in connected:
                    continue
                if ok:
                    log.warning("lost the connection to relay %s; its reservation is gone", addr)
                    self.reserved[addr] = False
                elif trio.current_time() - last_try[addr] < RESERVATION_RETRY_S:
                    continue
                last_try[addr] = trio.current_time()
                await self._reserve_quietly(addr, nursery)

    async def dial(self, addr: str, timeout_s: float = DIAL_TIMEOUT_S) -> Any:
        """Connect through a relay to the peer at circuit address `addr`; its peer ID."""
        if self.transport is None:
            raise ConfigError(
                f"cannot dial {addr}: relayed dials need the relay client, on with any of "
                "NetConfig's relays, relay_service, autonat, hole_punching (--relay, ...)"
            )
        try:
            with trio.fail_after(timeout_s):
                conn = await self.transport.dial(multiaddr.Multiaddr(addr))
        except trio.TooSlowError:
            raise RelayError(f"no relayed connection to {addr} within {timeout_s:.0f} s") from None
        except Exception as exc:
            raise RelayError(f"relayed dial to {addr} failed: {exc}") from None
        peer_id = conn.muxed_conn.peer_id
        # The swarm's negative cache (60 s after a failed dial, e.g. while the relay was
        # gone) would refuse new streams to the peer despite this live connection.
        self.host.get_network().unblock_peer(peer_id)
        return peer_id

    def connection_kind(self, peer: str) -> str | None:
        """DIRECT if some connection to `peer` is direct, RELAYED if all go through a relay,
        None when not connected."""
        from libp2p.peer.id import ID

        conns = self.host.get_network().connections.get(ID.from_base58(peer)) or []
        if not isinstance(conns, list):
            conns = [conns]
        if not conns:
            return None
        for conn in conns:
            try:
                addrs = [str(a) for a in conn.get_transport_addresses()]
            except Exception:
                addrs = []
            if addrs and not any(is_circuit_addr(a) for a in addrs):
                return DIRECT
        return RELAYED

    # --- AutoNAT ------------------------------------------------------------------------

    async def _autonat_loop(self) -> None:
        while True:
            verdicts = await self.check_reachability()
            await trio.sleep(AUTONAT_INTERVAL_S if verdicts else AUTONAT_RETRY_S)

    async def check_reachability(self, servers: Sequence[Any] | None = None) -> int:
        """Ask `servers` (default: every directly connected peer) to dial us back on our
        advertised addresses; update `reachability`. Returns the number of verdicts."""
        if servers is None:
            servers = [
                p
                for p in self.host.get_connected_peers()
                if self.connection_kind(p.to_base58()) == DIRECT
            ]
        from libp2p.host.autonat.pb.autonat_pb2 import Message

        addrs = [a.to_bytes() for a in self.advertised_addrs()]
        reached, unreached = 0, 0
        for server in servers:
            try:
                status, _ = await self.autonat.query_server(
                    server, addrs, timeout=AUTONAT_QUERY_TIMEOUT_S
                )
            except Exception as exc:
                log.debug("AutoNAT: %s gave no verdict: %r", server, exc)
                continue
            if status == Message.OK:
                reached += 1
            elif status == Message.E_DIAL_ERROR:
                unreached += 1
        needed = min(AUTONAT_CONFIRMATIONS, reached + unreached)
        before = self.reachability
        if needed and reached >= needed:
            self.reachability = PUBLIC
        elif needed and unreached >= needed:
            self.reachability = PRIVATE
        if self.reachability != before:
            log.info(
                "AutoNAT: this node is %s (%d peer(s) reached us, %d could not)",
                self.reachability,
                reached,
                unreached,
            )
        return reached + unreached

    def advertised_addrs(self) -> list[Any]:
        """What we ask AutoNAT servers to dial: our listen addresses and, for each external IP
        peers saw us at, that IP with our listen port -- where a peer would reach us behind a
        NAT that keeps ports (as Linux MASQUERADE does) and forwards them, or on a public
        address. (The observed ports themselves belong to our outgoing connections.)"""
        listen = [a for a in self.host.get_transport_addrs() if not is_circuit_addr(str(a))]
        addrs = {str(a): a for a in listen}
        manager = getattr(self.host, "_observed_addr_manager", None)
        observed = list(manager.addrs(min_observers=1)) if manager is not None else []
        for seen in observed:
            try:
                ip = seen.value_for_protocol("ip4")
            except Exception:
                continue
            for own in listen:
                try:
                    predicted = multiaddr.Multiaddr(
                        f"/ip4/{ip}/tcp/{own.value_for_protocol('tcp')}"
                    )
                except Exception:
                    continue
                addrs.setdefault(str(predicted), predicted)
        return list(addrs.values())


def _client_transport(host: Any, protocol: Any, relay_config: Any) -> Any:
    from libp2p.relay.circuit_v2.transport import CircuitV2Transport

    return CircuitV2Transport(host, protocol, relay_config)


def _dial_back_autonat(host: Any) -> Any:
    """py-libp2p's AutoNAT service with a dial-back that really dials (see the module doc)."""
    from libp2p.host.autonat.autonat import AutoNATService

    class DialBackAutoNAT(AutoNATService):  # type: ignore[misc]
        async def _try_dial(self, peer_id: Any, addrs: list[bytes]) -> bytes | None:
            """Dial every candidate at once, on fresh connections; the first that connects
            is the verdict. A NAT that drops unsolicited SYNs makes a dial hang, not fail:
            one deadline for all (AUTONAT_DIAL_TIMEOUT_S), within the client's wait."""
            network = self.host.get_network()
            reached: list[bytes] = []

            async def dial(raw: bytes, cancel: trio.CancelScope) -> None:
                try:
                    conn = await network.dial_addr(multiaddr.Multiaddr(raw), peer_id)
                except Exception as exc:
                    log.debug("AutoNAT dial-back to %s failed: %r", multiaddr.Multiaddr(raw), exc)
                    return
                reached.append(bytes(raw))
                await quietly(conn.close())
                cancel.cancel()

            with trio.move_on_after(AUTONAT_DIAL_TIMEOUT_S):
                async with trio.open_nursery() as nursery:
                    for raw in addrs:
                        nursery.start_soon(dial, raw, nursery.cancel_scope)
            return reached[0] if reached else None

    return DialBackAutoNAT(host)
