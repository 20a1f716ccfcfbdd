"""Models and blocks the node needs: the model cache (fetch until held, decode off the
event loop, keep a few decoded) and block fetches retried with backoff."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence

import numpy as np
import trio

from p2pfl.core.cid import CHUNK_SIZE, CID, CODEC_DAG_PB, CODEC_RAW, digest_to_cid
from p2pfl.core.tensors import decode_tensors
from p2pfl.errors import P2PFLError
from p2pfl.net.config import BAN_S
from p2pfl.node.peers import PeerDirectory
from p2pfl.node.ports import NodeNet

log = logging.getLogger("p2pfl.node")

# Retry a failed fetch after this long, doubling up to the cap.
FETCH_RETRY_S = 0.5
FETCH_RETRY_MAX_S = 4.0
# Providers one model fetch asks (p2pfl.net.config.BLOCKS_MAX_PROVIDERS); retries rotate by it.
MODEL_FETCH_PROVIDERS_PER_TRY = 4
# After this many failed fetches of a model, warn the operator (once per model): with the
# 4 s backoff cap that is about a minute without the model.
MODEL_FETCH_WARN_AFTER = 20
# Decoded models kept: the current base, the model being built on it, a few spares for a
# node catching up (a model is tens of MB for the larger architectures).
MODEL_CACHE_SIZE = 5
# A model fetch in progress reports this often (when someone asked for progress lines):
# a person sees it move, a log stays short.
PROGRESS_EVERY_S = 1.0


class ModelCache:
    """Decoded models by CID; `ensure` fetches one (from peers, retrying) until held."""

    def __init__(
        self,
        net: NodeNet,
        peers: PeerDirectory,
        count: Callable[[str], None],
        progress: Callable[[str], None] | None = None,
        open_blob: Callable[[bytes], bytes] | None = None,
    ) -> None:
        self.net = net
        self.peers = peers
        self.count = count
        self.progress = progress  # a line of text for a person (p2pfl.cli.progress), or None
        # A private task's model opening (p2pfl.task_access.ModelKey.open): stored blocks
        # are sealed, the canonical bytes are inside. None: models are stored in the clear.
        self.open_blob = open_blob
        self._models: dict[bytes, dict[str, np.ndarray]] = {}  # CID bytes -> weights, oldest first
        self.blob_size: int | None = None  # every model of a task has one size

    def held(self, cid_bytes: bytes) -> bool:
        """Whether the model is decoded here (`ensure` returns at once)."""
        return cid_bytes in self._models

    async def ensure(self, cid_bytes: bytes) -> dict[str, np.ndarray]:
        """The model's weights, fetched first if the store lacks it; reading and decoding
        run in a worker thread. Without the model there is nothing to do, so this retries
        until it has it (or is cancelled)."""
        if cid_bytes in self._models:
            return self._models[cid_bytes]
        cid = CID.parse(cid_bytes)
        delay = FETCH_RETRY_S
        attempt = 0
        while not await trio.to_thread.run_sync(self.net.store.has_blob, cid):
            providers = self.peers.rotated(attempt, MODEL_FETCH_PROVIDERS_PER_TRY)
            attempt += 1
            try:
                await fetch_reporting(self.net, cid, providers, self.progress)
            except P2PFLError as exc:
                self.count("model-fetch-retries")
                log.info("model %s not fetched yet (%s); retrying in %.1f s", cid, exc, delay)
                if attempt == MODEL_FETCH_WARN_AFTER:
                    # Say it once, loudly: the usual cause is on our side, and only the
                    # operator can fix it.
                    log.warning(
                        "model %s: %d fetches failed (last: %s). If every peer refuses, they have "
                        "banned this node (it sent them invalid or too many messages; bans lapse "
                        "after %d s); otherwise check the bootstrap peers and the network.",
                        cid,
                        attempt,
                        exc,
                        int(BAN_S),
                    )
                await trio.sleep(delay)
                delay = min(delay * 2, FETCH_RETRY_MAX_S)
        blob = await trio.to_thread.run_sync(self.net.store.read_blob, cid)
        weights = await trio.to_thread.run_sync(self.decode, blob)
        self.put(cid_bytes, weights, len(blob))  # the stored (sealed) size names CIDs
        return weights

    def decode(self, stored: bytes) -> dict[str, np.ndarray]:
        """Weights of a model's stored bytes (opened first in a private task; blocking).
        A model that does not open under the task's key raises SealError (a P2PFLError)."""
        return decode_tensors(self.open_blob(stored) if self.open_blob is not None else stored)

    def put(self, cid_bytes: bytes, weights: dict[str, np.ndarray], blob_size: int) -> None:
        """Keep decoded weights (e.g. a model we just computed), evicting the oldest."""
        self.blob_size = blob_size
        if cid_bytes not in self._models and len(self._models) >= MODEL_CACHE_SIZE:
            self._models.pop(next(iter(self._models)))
        self._models[cid_bytes] = weights

    def cid_for_digest(self, digest: bytes) -> CID:
        """Rebuild a model CID from the 32-byte digest the chain stores.

        Every model of a task has one size (same architecture, float32), and the
        IPFS layout makes blobs up to one chunk a raw block and larger ones dag-pb.
        """
        size = self.blob_size
        if size is None:
            raise P2PFLError("model size unknown before the genesis model is loaded")
        return digest_to_cid(digest, CODEC_RAW if size <= CHUNK_SIZE else CODEC_DAG_PB)


async def fetch_reporting(
    net: NodeNet,
    cid: CID,
    providers: Sequence[str] | None,
    progress: Callable[[str], None] | None,
    what: str = "model",
) -> None:
    """`net.fetch_blob`, with a progress line every PROGRESS_EVERY_S while it runs and one
    when it is done (nothing without `progress`). The bytes are the node's block bytes
    received meanwhile: other fetches running at the same time count too."""
    if progress is None:
        await net.fetch_blob(cid, providers)
        return

    def received() -> int:
        return int(net.metrics().get("bytes-fetched", 0))  # type: ignore[call-overload]

    start = received()

    async def report() -> None:
        while True:
            await trio.sleep(PROGRESS_EVERY_S)
            progress(f"fetching {what} {cid}: {(received() - start) / 2**20:.1f} MiB received")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(report)
        await net.fetch_blob(cid, providers)
        nursery.cancel_scope.cancel()
    progress(f"fetched {what} {cid} ({(received() - start) / 2**20:.1f} MiB)")


async def fetch_with_retries(
    net: NodeNet,
    cid: CID,
    providers: Callable[[], list[str]],
    worth_retrying: Callable[[], bool],
    count: Callable[[str], None],
    slots: trio.CapacityLimiter | None = None,
) -> None:
    """Fetch a blob, retrying with backoff while `worth_retrying()`: holders multiply as
    the committee fetches, so a first failure (author busy, no route yet) is often
    temporary. The caller's cancel scope (the round's nursery) bounds it in time. With
    `slots`, each attempt holds one of them (not the wait between attempts: a fetch from
    an author who has gone keeps no slot from the others)."""
    delay = FETCH_RETRY_S
    while True:
        try:
            async with slots if slots is not None else contextlib.nullcontext():
                await net.fetch_blob(cid, providers())
            return
        except P2PFLError as exc:
            if not worth_retrying():
                raise
            count("fetch-retries")
            log.debug("fetch %s failed (%s); retrying in %.1f s", cid, exc, delay)
            await trio.sleep(delay)
            delay = min(delay * 2, FETCH_RETRY_MAX_S)
