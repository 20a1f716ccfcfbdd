"""Who serves blocks: the registered nodes' libp2p peer IDs (read from the registry as
rounds draw on them) and the order in which to ask them."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import trio

from p2pfl.chain.trio_client import run_chain
from p2pfl.errors import P2PFLError
from p2pfl.node.ports import ChainPort, NodeNet
from p2pfl.sealing import usable_recipient


@dataclass
class SharedRegistryReads:
    """Registry reads (address -> NodeInfo) shared by the nodes of one process on the same
    task (a simulator's shard): each address is read once for all of them. The reads go
    one node at a time (`lock`): nodes whose rounds start together would otherwise all miss
    the same addresses and read them all (50 nodes x 100 addresses: 5,000 reads before
    round 1 instead of 100)."""

    infos: dict[bytes, Any] = field(default_factory=dict)
    lock: trio.Lock = field(default_factory=trio.Lock)


class PeerDirectory:
    """address -> peer ID of registered nodes, and provider lists for block fetches."""

    def __init__(
        self,
        chain: ChainPort,
        net: NodeNet,
        address: bytes,
        committee: Callable[[], Sequence[bytes]],
        count: Callable[[str], None],
        shared_reads: SharedRegistryReads | None = None,
    ) -> None:
        self.chain = chain
        self.net = net
        self.address = address
        self.committee = committee  # the current attempt's committee (the round machine's)
        self.count = count
        self.ids: dict[bytes, str] = {}  # address -> base58 peer ID, from the registry
        # address -> the X25519 key it registered (sealed updates' key wraps go to it), and
        # the addresses whose key nothing can be wrapped to (spec sealing.md §4)
        self.enc_keys: dict[bytes, bytes] = {}
        self.unsealable: set[bytes] = set()
        # Registry reads shared by the nodes of one process (None: our own). `ids` and
        # `enc_keys` still fill only as this node's rounds start.
        self.shared_reads = shared_reads

    async def refresh(self, addresses: Iterable[bytes]) -> None:
        """Read the peer IDs and X25519 keys of the addresses we do not know yet from the
        registry. They are published all at once, after the last read: `ids` is the gossip
        validator's list of registered signers, and a list half read (100 reads can take
        seconds on a loaded machine) would reject honest messages as `unregistered-signer`
        and blame the peers that forwarded them."""
        missing = list(dict.fromkeys(a for a in addresses if a not in self.ids))
        if self.shared_reads is None:
            infos = {a: await run_chain(self.chain, self.chain.node_info, a) for a in missing}
        else:
            shared = self.shared_reads
            async with shared.lock:
                for address in missing:
                    if address not in shared.infos:
                        shared.infos[address] = await run_chain(
                            self.chain, self.chain.node_info, address
                        )
            infos = {a: shared.infos[a] for a in missing}
        ids: dict[bytes, str] = {}
        enc_keys: dict[bytes, bytes] = {}
        for address, info in infos.items():
            enc_keys[address] = bytes(info.enc_key)
            try:
                ids[address] = peer_id_text(info.peer_id)
            except P2PFLError:
                self.count("bad-registered-peer-id")
        for address, key in enc_keys.items():
            self.enc_keys[address] = key
            if not usable_recipient(key):
                self.unsealable.add(address)
                self.count("unsealable-registered-key")
        self.ids.update(ids)

    def linked(self, addresses: Iterable[bytes]) -> list[bytes]:
        """The addresses of `addresses` (in their order) whose node we hold a connection to:
        reaching them costs no new connection (~28 ms of CPU at both ends)."""
        connected = set(self.net.connected_peers())
        return [a for a in addresses if self.ids.get(a) in connected]

    def providers(self, first: bytes | None = None, via: str | None = None) -> list[str]:
        """Peers to ask for blocks: the author (if given: the one peer sure to hold its
        delta, dialled if need be), then committee members (they fetch every delta of the
        round), then everyone else, connected peers before the rest (a peer we hold no
        address for cannot be dialled). `via`: a peer that holds the delta too (the member
        an update was pulled from) is asked first, and the author then goes with the rest
        (not dialled while a connected peer may hold it)."""
        if via is not None:
            return [via, *(p for p in self.providers() if p != via)]
        connected = set(self.net.connected_peers())
        head = [self.ids[first]] if first in self.ids and first != self.address else []
        order = list(self.committee()) + list(self.ids)
        rest = [
            self.ids[a]
            for a in dict.fromkeys(order)
            if a in self.ids and a != self.address and a != first
        ]
        return head + sorted(
            rest, key=lambda p: p not in connected
        )  # stable: keeps the order within each group

    def rotated(self, attempt: int, per_try: int) -> list[str]:
        """`providers()` with the connected ones rotated by `attempt * per_try`: a fetch asks
        only the first few, so each retry starts further down the list (otherwise the same
        peers that lack the block, or are unreachable, are asked forever)."""
        providers = self.providers()
        connected = set(self.net.connected_peers())
        n_connected = sum(1 for p in providers if p in connected) or len(providers)
        shift = (attempt * per_try) % max(1, n_connected)
        return providers[shift:n_connected] + providers[:shift] + providers[n_connected:]


def peer_id_text(raw: bytes) -> str:
    """Registered peer IDs are stored as the binary multihash; the network uses base58."""
    import base58

    if not raw:
        raise P2PFLError("node registered no peer id")
    return base58.b58encode(raw).decode()
