"""The peer directory's registry reads (p2pfl.node.peers): the gossip validator's list of
registered signers never shows a half-finished read."""

from __future__ import annotations

import threading

import trio

from p2pfl.chain.client import NodeInfo
from p2pfl.core.identity import NodeIdentity, peer_id_bytes_from_public
from p2pfl.node.peers import PeerDirectory, SharedRegistryReads

NODES = [NodeIdentity.from_seed(bytes([i]) * 32) for i in range(1, 4)]


def _by_address(address: bytes) -> NodeIdentity:
    return next(n for n in NODES if n.address == address)


class _SlowRegistry:
    """`node_info` of a registry whose read of the last node waits for `release`."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.reads: list[bytes] = []

    def node_info(self, address: bytes) -> NodeInfo:
        self.reads.append(address)
        if address == NODES[-1].address:
            assert self.release.wait(10), "the test never released the last read"
        return _info(address)


def _info(address: bytes) -> NodeInfo:
    """A registered node's entry, as the registry would return it."""
    return NodeInfo(
        address=address,
        peer_id=peer_id_bytes_from_public(_by_address(address).compressed_public_key),
        enc_key=b"",
        stake=1,
        unbonding=0,
        release_block=0,
        reputation=0,
        tier=0,
        active=True,
        banned=False,
    )


async def test_registered_signers_appear_all_at_once_after_the_last_read() -> None:
    chain = _SlowRegistry()
    directory = PeerDirectory(chain, None, b"\x00" * 20, lambda: [], lambda name: None)  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(directory.refresh, [n.address for n in NODES])
        while len(chain.reads) < len(NODES):
            await trio.sleep(0.01)
        await trio.sleep(0.05)
        # Two of three read, the third in flight: a validator must not see a partial list
        # (it would reject the third node's messages as unregistered and blame their relays).
        assert directory.ids == {}
        chain.release.set()
    assert set(directory.ids) == {n.address for n in NODES}
    await directory.refresh([n.address for n in NODES])  # known: not read again
    assert len(chain.reads) == len(NODES)


class _CountingRegistry:
    """`node_info` that takes a while (a loaded RPC node) and counts its reads."""

    def __init__(self) -> None:
        self.reads: list[bytes] = []

    def node_info(self, address: bytes) -> NodeInfo:
        self.reads.append(address)
        threading.Event().wait(0.01)
        return _info(address)


async def test_nodes_sharing_reads_read_each_address_once_when_rounds_start_together() -> None:
    chain = _CountingRegistry()
    shared = SharedRegistryReads()
    directories = [
        PeerDirectory(chain, None, b"\x00" * 20, lambda: [], lambda name: None, shared)  # type: ignore[arg-type]
        for _ in range(8)
    ]
    addresses = [n.address for n in NODES]
    async with trio.open_nursery() as nursery:
        for directory in directories:
            nursery.start_soon(directory.refresh, addresses)
    assert sorted(chain.reads) == sorted(addresses)  # 3 reads, not 8 x 3
    for directory in directories:
        assert set(directory.ids) == set(addresses)
