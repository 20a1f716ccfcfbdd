"""What the node needs from the layers below it: the network (`NodeNet`) and the chain
(`ChainPort`). Every call the node makes goes through one of these, so another network
or chain backend (a simulated one, another RPC client) plugs in by providing them.

`p2pfl.net.host.NodeNet` and `p2pfl.chain.client.ChainClient` are the real ones
(tests/test_node_ports.py checks that they provide every member).
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from p2pfl.chain.client import NodeInfo, RoundCommitted, TaskInfo, TxResult
    from p2pfl.core.cid import CID
    from p2pfl.core.signing import Domain


class NodeNet(Protocol):
    """The network layer: gossip topics, the block store and block exchange, peers."""

    store: Any  # p2pfl.net.blockstore.BlockStore

    @property
    def peer_id(self) -> str: ...

    async def join(
        self,
        topic: str,
        validate: Callable[[str, bytes, str], Any],
        sync: bool = True,
        gossip: bool = True,
    ) -> AsyncIterable[Any]:
        """Subscribe with a validator; yields admitted messages (`.data`, `.from_peer`);
        `sync=False`: no anti-entropy rounds for the topic; `gossip=False`: not on
        gossipsub either (pushed and pulled only)."""
        ...

    async def publish(self, topic: str, data: bytes, synced: bool = True) -> bytes: ...

    async def push(self, peer: str, topic: str, data: bytes, attachment: bytes = b"") -> str: ...

    async def pull(self, peer: str, topic: str, since: int = 0) -> list[bytes]: ...

    async def pull_and_admit(
        self, peer: str, topic: str, since: int = 0, timeout_s: float | None = None
    ) -> int: ...

    async def fetch_blob(self, root: CID, providers: Sequence[str] | None = None) -> None: ...

    def connected_peers(self) -> list[str]: ...

    def metrics(self) -> Mapping[str, object]: ...


class ChainPort(Protocol):
    """The chain calls the node makes (blocking; the node runs them in a worker thread
    with `p2pfl.chain.trio_client.run_chain`). Names and parameters are ChainClient's."""

    def domain(self) -> Domain: ...

    def block_number(self) -> int: ...

    def task_info(self, task: bytes) -> TaskInfo: ...

    def committee_stakes(
        self, task: bytes, after: RoundCommitted | None = None
    ) -> tuple[int, dict[bytes, int]]: ...

    def node_info(self, address: bytes | None = None) -> NodeInfo: ...

    def commits(
        self, from_block: int, to_block: int, task: bytes | None = None
    ) -> list[RoundCommitted]: ...

    def commit_round(
        self,
        task: bytes,
        round: int,
        attempt: int,
        view: int,
        base: bytes,
        result: bytes,
        contributors_root: bytes,
        votes: Iterable[tuple[bytes, bytes]],
        gas: int | None = None,
    ) -> TxResult: ...

    def submit_equivocation(
        self,
        kind: int,
        task: bytes,
        round: int,
        attempt: int,
        view: int,
        body_a: bytes,
        sig_a: bytes,
        body_b: bytes,
        sig_b: bytes,
    ) -> TxResult: ...
