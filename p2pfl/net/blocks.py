"""Block exchange over a dedicated libp2p stream protocol, `/p2pfl/blocks/1.0.0`.

Why not only Bitswap: py-libp2p's Bitswap moves ~6 MB/s on loopback where a plain
TCP+Noise+yamux stream moves ~50-130 MB/s. This protocol is the simplest thing that keeps a
stream full: the fetcher sends lists of CIDs, the holder answers with the blocks in order.

Wire format (all integers big-endian; spec: protocol/spec/network.md):

    request  = 0x01 | u16 count (1..64) | count x 36-byte binary CIDv1
    response = per requested CID, in request order:
               0x00 | u32 length | block       (have it)
               0x01                            (don't have it)

A fetcher may pipeline several requests on one stream; the holder answers them in order and
stops at end of stream. Every block is verified against its CID before it is stored (its one
hash on this node: the store remembers it, so reading the blob back hashes nothing); a peer
that sends a block that does not match, an unparsable frame or an oversized length is scored
down (see limits.py) and dropped from the fetch, which continues with the other providers.

Fetching a blob starts from its frontier (`BlockStore.missing`: the root, or whatever a killed
fetch left missing) and descends in the same session: each dag-pb node, once verified and
stored, queues its children the store lacks on the streams already open, so the DAG's levels
cost no extra stream opens or round-trip barriers. A final walk from the root confirms the blob
is whole. Blocks already on disk are never fetched again, so a fetch interrupted by a kill
resumes where it stopped.

Throughput (sim/bench/transfer.py): per provider, one task keeps requests in flight and reads
answers off the stream, keeping each block as the pieces it arrived in, and every few blocks
hashes and appends them to the store (`BlockStore.put_parts`), so no block is joined or copied
on the way; the requests in flight keep the holder sending meanwhile. The holder copies
each block once into a reused buffer and writes it as views cut at yamux frame boundaries.
"""

from __future__ import annotations

import contextlib
import logging
import math
import struct
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

import trio

from p2pfl.core.cid import (
    CID,
    CID_BYTES_SIZE,
    CODEC_DAG_PB,
    MAX_BLOCK_SIZE,
    MAX_DAG_DEPTH,
    decode_dag_pb,
)
from p2pfl.errors import InvalidBlock, InvalidMessage, P2PFLError
from p2pfl.net.blockstore import BlockNotFound, BlockStore
from p2pfl.net.config import (
    BLOB_FETCH_TIMEOUT_S,
    BLOCKS_BATCH_CIDS,
    BLOCKS_MAX_CIDS_PER_REQUEST,
    BLOCKS_PER_PROVIDER,
    BLOCKS_PIPELINE_DEPTH,
    BLOCKS_PROTOCOL,
    NetConfig,
)
from p2pfl.net.limits import Metrics, Offence, PeerBook
from p2pfl.net.yamux_tuning import FRAME_PAYLOAD_BYTES, grow_receive_window

log = logging.getLogger(__name__)

MSG_WANT = 0x01
STATUS_HAVE = 0x00
STATUS_DONT_HAVE = 0x01
_REQUEST_HEADER = struct.Struct(">BH")
_BLOCK_HEADER = struct.Struct(">BI")
_LENGTH = struct.Struct(">I")
# A holder that has not received a request for this long closes the stream.
SERVE_IDLE_TIMEOUT_S = 60.0
# Group (striped) fetch: how long to keep asking a member for its stripe before taking it
# from the seeders, and the pause between asks. A member fetches its stripe at the same
# speed we would, so a few seconds is plenty; longer only delays a round when a member is gone.
STRIPE_PATIENCE_S = 10.0
STRIPE_RETRY_S = 0.1
# Stream reads ask for up to this much at once; yamux returns what is buffered.
_READ_CHUNK = 1 << 20
# A holder writes its answer once this much is ready (cut at a yamux frame boundary): large
# enough that frames are full, small enough that the fetcher starts hashing early.
_ANSWER_FLUSH_BYTES = 1 << 20
# The reader verifies and stores blocks in groups of this many: small enough that hashing
# starts soon after an answer starts arriving and the event loop is never held for more than
# about a millisecond (4 leaves), large enough that per-group bookkeeping is shared.
_STORE_GROUP_BLOCKS = 4


class FetchError(P2PFLError):
    """A blob could not be fetched: no provider had some block, or the deadline passed."""


class StreamClosed(P2PFLError):
    """The peer closed the stream before the expected bytes arrived."""


class FrameReader:
    """Exact-size reads over a libp2p stream: chunks are kept as read and joined once.

    A block of n bytes costs one copy (none if it is exactly one chunk); appending every
    chunk to one buffer and slicing it out costs two or three, each a fresh allocation.
    """

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.chunks: deque[bytes] = deque()
        self.head = 0  # bytes of chunks[0] already consumed
        self.buffered = 0  # unconsumed bytes over all chunks

    async def _read_more(self, want: int) -> bool:
        try:
            chunk = await self.stream.read(max(_READ_CHUNK, want))
        except Exception as exc:  # libp2p raises several EOF/reset types
            raise StreamClosed(f"stream ended: {type(exc).__name__}") from None
        if not chunk:
            return False
        self.chunks.append(chunk)
        self.buffered += len(chunk)
        return True

    async def read_exactly(self, n: int) -> bytes:
        """Exactly `n` bytes (b"" for 0), or `StreamClosed` if the stream ends first."""
        parts = await self.read_parts(n)
        if len(parts) == 1:
            return bytes(parts[0])  # a whole chunk is returned as is, a slice is copied once
        return b"".join(parts)

    async def read_parts(self, n: int) -> list[bytes | memoryview]:
        """Exactly `n` bytes as the pieces they arrived in, without copying them ([] for 0).

        `StreamClosed` if the stream ends first. The pieces are views of read chunks (whole
        chunks as they are), so a block can be hashed and written piece by piece.
        """
        while self.buffered < n:
            if not await self._read_more(n - self.buffered):
                raise StreamClosed("stream ended")
        self.buffered -= n
        parts: list[bytes | memoryview] = []
        need = n
        while need:
            first = self.chunks[0]
            available = len(first) - self.head
            if self.head == 0 and available <= need:
                parts.append(first)
                self.chunks.popleft()
                need -= available
                continue
            take = min(available, need)
            parts.append(memoryview(first)[self.head : self.head + take])
            self.head += take
            need -= take
            if self.head == len(first):
                self.chunks.popleft()
                self.head = 0
        return parts

    async def at_eof(self) -> bool:
        """True if the peer closed its side with nothing more buffered."""
        if self.buffered:
            return False
        try:
            return not await self._read_more(0)
        except StreamClosed:
            return True


def encode_request(cids: Sequence[CID]) -> bytes:
    """One WANT frame for 1..64 CIDs."""
    if not 1 <= len(cids) <= BLOCKS_MAX_CIDS_PER_REQUEST:
        raise ValueError(f"a request carries 1..{BLOCKS_MAX_CIDS_PER_REQUEST} CIDs")
    return _REQUEST_HEADER.pack(MSG_WANT, len(cids)) + b"".join(c.to_bytes() for c in cids)


async def read_request(reader: FrameReader) -> list[CID]:
    """Parse one WANT frame; `InvalidMessage` if malformed."""
    kind, count = _REQUEST_HEADER.unpack(await reader.read_exactly(_REQUEST_HEADER.size))
    if kind != MSG_WANT:
        raise InvalidMessage("bad-frame", f"unknown block request kind 0x{kind:02x}")
    if not 1 <= count <= BLOCKS_MAX_CIDS_PER_REQUEST:
        raise InvalidMessage(
            "bad-frame", f"request for {count} CIDs (1..{BLOCKS_MAX_CIDS_PER_REQUEST})"
        )
    raw = await reader.read_exactly(count * CID_BYTES_SIZE)
    return [CID.parse(raw[i : i + CID_BYTES_SIZE]) for i in range(0, len(raw), CID_BYTES_SIZE)]


def peer_of(stream: Any) -> str:
    """The remote peer ID (base58) of a libp2p stream."""
    return str(stream.muxed_conn.peer_id)


class _AnswerBuffer:
    """A holder's outgoing bytes for one stream, in one buffer allocated once.

    Blocks are copied in once and handed to the stream as views (the muxer copies each frame
    into its Noise message anyway); the buffer is never resized, so a view still referenced
    somewhere can never see it move.
    """

    # Flushed once _ANSWER_FLUSH_BYTES are in, so at most one block (and header) more fits.
    CAPACITY = _ANSWER_FLUSH_BYTES + _BLOCK_HEADER.size + MAX_BLOCK_SIZE

    def __init__(self) -> None:
        self.buffer = bytearray(self.CAPACITY)
        self.size = 0
        self.writing = False  # a write of a view of it is under way (or was cut short)

    def append_status(self, status: int) -> None:
        self.buffer[self.size] = status
        self.size += 1

    def append_block(self, block: bytes) -> None:
        _BLOCK_HEADER.pack_into(self.buffer, self.size, STATUS_HAVE, len(block))
        start = self.size + _BLOCK_HEADER.size
        self.buffer[start : start + len(block)] = block  # same length: a copy, no resize
        self.size = start + len(block)

    def whole_frames(self) -> memoryview:
        """The buffered bytes that fill whole yamux frames."""
        return memoryview(self.buffer)[: self.size - self.size % FRAME_PAYLOAD_BYTES]

    def keep_partial_frame(self) -> None:
        """Drop what `whole_frames` returned; the rest moves to the front."""
        rest = self.size % FRAME_PAYLOAD_BYTES
        self.buffer[:rest] = self.buffer[self.size - rest : self.size]
        self.size = rest

    def view(self) -> memoryview:
        return memoryview(self.buffer)[: self.size]

    def clear(self) -> None:
        self.size = 0


# Answer buffers are reused across streams, process-wide (a simulator's shard hosts 50
# nodes): allocating and zeroing a fresh 3 MiB buffer for every block stream, most of which
# serve one model or delta of a few hundred KB, was 15% of a 100-node shard's interpreter
# time (py-spy) while every node fetched the round's model. A buffer is taken when a stream
# asks for its first blocks and given back when the stream ends: each write is awaited
# before the buffer changes (see `_answer`), so no view of it outlives its stream; one whose
# write was cut short (an error, a cancellation) is dropped, not reused. Up to 32 are kept:
# with 8, the model fetches of a round start (93 nodes asking 7 members at once) still
# allocated a buffer per stream, 2.2% of a shard's loop (py-spy); a kept buffer holds only
# the pages its answers touched (a model of 400 KB touches 400 KB of its 3 MiB).
_ANSWER_BUFFERS: list[_AnswerBuffer] = []
_ANSWER_BUFFERS_KEPT = 32


def _take_answer_buffer() -> _AnswerBuffer:
    return _ANSWER_BUFFERS.pop() if _ANSWER_BUFFERS else _AnswerBuffer()


def _give_back(buffer: _AnswerBuffer) -> None:
    if buffer.writing:  # cancelled or failed mid-write: the muxer may still hold a view
        return
    buffer.clear()
    if len(_ANSWER_BUFFERS) < _ANSWER_BUFFERS_KEPT:
        _ANSWER_BUFFERS.append(buffer)


class BlockExchange:
    """Serves blocks from a `BlockStore` and fetches blobs from providers.

    `open_stream(peer_id, protocol)` opens a libp2p stream (the host's `new_stream`); it is
    injected so the exchange can be driven by tests with any stream pair.
    """

    def __init__(
        self,
        store: BlockStore,
        config: NetConfig,
        peers: PeerBook,
        metrics: Metrics,
        open_stream: Callable[[str, str], Awaitable[Any]],
    ) -> None:
        self.store = store
        self.config = config
        self.peers = peers
        self.metrics = metrics
        self.open_stream = open_stream

    # --- serving ------------------------------------------------------------------------

    async def handle_stream(self, stream: Any) -> None:
        """Stream handler for BLOCKS_PROTOCOL: answer WANT frames until the peer closes."""
        peer = peer_of(stream)
        answer: _AnswerBuffer | None = None
        try:
            if self.peers.is_banned(peer):
                self.metrics.inc("blocks-refused-banned")
                return
            reader = FrameReader(stream)
            while True:
                with trio.move_on_after(SERVE_IDLE_TIMEOUT_S):
                    if await reader.at_eof():
                        return
                    cids = await read_request(reader)
                    if not self.peers.allow(peer, "requests"):
                        return
                    if answer is None:
                        answer = _take_answer_buffer()
                    await self._answer(stream, cids, answer)
                    continue
                return  # idle timeout
        except InvalidMessage as exc:
            self.peers.offence(peer, Offence.MALFORMED_FRAME, "blocks-" + exc.reason)
            await _reset(stream)
        except StreamClosed:
            pass
        except Exception as exc:  # a broken connection must not take the node down
            log.debug("block stream from %s ended: %r", peer, exc)
        finally:
            await _close(stream)
            if answer is not None:
                _give_back(answer)

    async def _answer(self, stream: Any, cids: list[CID], out: _AnswerBuffer) -> None:
        # Answers are written in runs of whole yamux frames rather than one write per block:
        # a 256 KiB block plus its 5-byte header is 4 full frames and a 121-byte one, and
        # every frame costs a Noise message and a syscall on both ends.
        for cid in cids:
            try:
                # The fetcher verifies every block; hashing it here too would halve throughput.
                block = self.store.get(cid, verify=False)
            except (BlockNotFound, InvalidBlock):
                out.append_status(STATUS_DONT_HAVE)
                self.metrics.inc("blocks-dont-have")
            else:
                out.append_block(block)
                self.metrics.inc("blocks-served")
                self.metrics.inc("bytes-served", len(block))
            if out.size >= _ANSWER_FLUSH_BYTES:
                out.writing = True
                await stream.write(out.whole_frames())
                out.writing = False
                out.keep_partial_frame()
        if out.size:
            out.writing = True
            await stream.write(out.view())
            out.writing = False
            out.clear()

    # --- fetching -----------------------------------------------------------------------

    async def fetch_blob(
        self,
        root: CID,
        providers: Sequence[str],
        *,
        timeout_s: float = BLOB_FETCH_TIMEOUT_S,
    ) -> None:
        """Make every block of the blob under `root` present in the store.

        Fetches from up to `config.blocks_max_providers` of `providers` in parallel; resumes
        from whatever is already stored. Raises `FetchError` if some block is held by none of
        them or the deadline passes, `InvalidBlock` if the DAG itself is malformed.
        """
        excluded: set[str] = set()  # providers that sent invalid data during this fetch
        with trio.move_on_after(timeout_s) as scope:
            corrupt_retries = 3
            while True:
                try:
                    frontier = self.store.missing(root)
                except InvalidBlock:
                    # A stored block was corrupt and has been deleted; walk again.
                    corrupt_retries -= 1
                    if corrupt_retries < 0:
                        raise
                    continue
                if not frontier:
                    return
                await self.fetch_blocks(
                    frontier, [p for p in providers if p not in excluded], excluded, descend=True
                )
        if scope.cancelled_caught:
            raise FetchError(f"fetching {root} took over {timeout_s:.0f} s")

    async def fetch_blob_striped(
        self,
        root: CID,
        seeders: Sequence[str],
        group: Sequence[str],
        me: str,
        *,
        patience_s: float = STRIPE_PATIENCE_S,
        timeout_s: float = BLOB_FETCH_TIMEOUT_S,
    ) -> None:
        """Fetch a blob together with a group (e.g. a committee) so the seeders upload it ~once.

        `group` is the same ordered list of peer IDs on every member (including `me`). At each
        level of the DAG, block number n of the frontier is member (n mod len(group))'s
        stripe: a member fetches its own stripe from the `seeders` and every other stripe from
        the member it belongs to, who is fetching it at the same moment. A member that does
        not have a block yet is asked again until `patience_s` has passed; then the block comes
        from the seeders after all, so a slow or absent member costs upload, never the blob.
        """
        if me not in group:
            raise ValueError("me must be a member of group")
        index, size = list(group).index(me), len(group)
        with trio.move_on_after(timeout_s) as scope:
            while frontier := self.store.missing(root):
                async with trio.open_nursery() as nursery:
                    for j, member in enumerate(group):
                        stripe = frontier[j::size]
                        if not stripe:
                            continue
                        if j == index:
                            nursery.start_soon(self.fetch_blocks, stripe, list(seeders))
                        else:
                            nursery.start_soon(
                                self._fetch_patiently, stripe, member, seeders, patience_s
                            )
        if scope.cancelled_caught:
            raise FetchError(f"fetching {root} with a group of {size} took over {timeout_s:.0f} s")

    async def _fetch_patiently(
        self, cids: list[CID], member: str, seeders: Sequence[str], patience_s: float
    ) -> None:
        with trio.move_on_after(patience_s):
            while True:
                try:
                    await self.fetch_blocks(cids, [member])
                    return
                except FetchError:
                    await trio.sleep(STRIPE_RETRY_S)
        self.metrics.inc("blocks-stripe-fallbacks")
        await self.fetch_blocks(cids, [*seeders, member])

    async def fetch_blocks(
        self,
        cids: Sequence[CID],
        providers: Sequence[str],
        excluded: set[str] | None = None,
        *,
        descend: bool = False,
    ) -> None:
        """Fetch `cids` (not already stored) from `providers`; `FetchError` on failure.

        The first provider starts alone; the next ones (up to `config.blocks_max_providers`,
        in their order) join as `_FetchJob.needs_provider` says (a provider that has not
        answered within `config.blocks_first_answer_s` gives its blocks back, so the next
        one joins). With `descend`, every block linked from a fetched dag-pb
        node that the store lacks is fetched too, in the same session (same streams, no wait
        for a level to finish), down to MAX_DAG_DEPTH levels below `cids`. Providers that
        send invalid data are added to `excluded` (if given).
        """
        usable = [p for p in dict.fromkeys(providers) if not self.peers.is_banned(p)]
        if not usable:
            raise FetchError("no provider to fetch from (none given, or all banned)")
        usable = usable[: self.config.blocks_max_providers]
        job = _FetchJob(
            [c for c in dict.fromkeys(cids) if not self.store.has(c)], usable, descend=descend
        )
        if not job.pending:
            return
        async with trio.open_nursery() as nursery:
            waiting = deque(usable)

            def add_provider() -> None:
                provider = waiting.popleft()
                job.running.add(provider)
                nursery.start_soon(self._worker, job, provider)

            add_provider()
            while waiting and not job.finished():
                if job.needs_provider():
                    add_provider()
                else:
                    await job.changed.wait()
        if excluded is not None:
            excluded.update(job.bad)
        if job.pending or job.unavailable:
            missing = list(job.pending) + list(job.unavailable)
            detail = f"; provider errors: {'; '.join(job.errors[:3])}" if job.errors else ""
            raise FetchError(
                f"{len(missing)} block(s) held by none of {len(usable)} provider(s), e.g. "
                f"{missing[0]}{detail}"
            )

    async def _worker(self, job: _FetchJob, provider: str) -> None:
        # Per provider, one task keeps requests in flight and reads the answers, verifying and
        # storing every few blocks as they arrive. Inline on purpose: handing the blocks to
        # worker threads cost more CPU in GIL hand-offs than the hashing it moved (measured on
        # 2 cores: 240 vs 190 ms of fetcher CPU per 50 MiB, 220 vs 185 ms wall), and the
        # requests already in flight keep the provider sending while a group is stored.
        requested: deque[list[CID]] = deque()  # asked for, not all answered yet (oldest first)
        stream = None
        first_answer_by = trio.current_time() + self.config.blocks_first_answer_s
        try:
            try:
                with trio.fail_at(first_answer_by):
                    # A provider still being dialled when the others have fetched everything
                    # is dropped (a dial to a peer behind a NAT can hang until the timeout).
                    with job.dialling() as dial:
                        stream = await self.open_stream(provider, BLOCKS_PROTOCOL)
                    if dial.cancelled_caught:
                        return
                    await grow_receive_window(stream, self.config.blocks_receive_window_bytes)
            except trio.TooSlowError:
                raise _SlowProvider from None
            await self._request_and_read(stream, requested, job, provider, first_answer_by)
        except _SlowProvider:
            # Not an offence: a loaded peer is slow, not hostile. Its blocks go to the next.
            self.metrics.inc("blocks-slow-providers")
            job.errors.append(f"{provider}: no answer in {self.config.blocks_first_answer_s} s")
        except trio.TooSlowError:
            self.peers.offence(provider, Offence.TIMEOUT, "blocks-timeout")
            job.errors.append(f"{provider}: timed out")
        except _BadProvider:
            job.bad.add(provider)
            job.errors.append(f"{provider}: sent invalid data")
        except Exception as exc:
            self.metrics.inc("blocks-provider-errors")
            job.errors.append(f"{provider}: {type(exc).__name__} {exc}")
            log.debug("fetch from %s stopped: %r", provider, exc)
        finally:
            for batch in requested:  # what is left of each is unanswered or unstored
                job.give_back(batch, provider)
            job.worker_done(provider)
            if stream is not None:
                await _close(stream)

    async def _request_and_read(
        self,
        stream: Any,
        requested: deque[list[CID]],
        job: _FetchJob,
        provider: str,
        first_answer_by: float,
    ) -> None:
        """Keep requests in flight and read their answers until the job has no more for this
        provider; the first answer must begin by `first_answer_by` or within
        `blocks_first_answer_s` of our first request, whichever is later (else
        `_SlowProvider`), each later one within the batch timeout."""
        reader = FrameReader(stream)
        answered = False
        while True:
            while len(requested) < BLOCKS_PIPELINE_DEPTH:
                batch = job.take_batch(provider)
                if not batch:
                    break
                if not answered and not requested:  # our first request: (waiting is not slow)
                    first_answer_by = max(
                        first_answer_by, trio.current_time() + self.config.blocks_first_answer_s
                    )
                requested.append(batch)
                await stream.write(encode_request(batch))
            if not requested:
                if not await job.wait_for_work(provider):
                    return
                continue
            if not answered:
                try:
                    with trio.fail_at(first_answer_by):
                        await reader.at_eof()  # (waits for the answer's first bytes)
                except trio.TooSlowError:
                    raise _SlowProvider from None
                answered = True
            with trio.fail_after(self.config.blocks_batch_timeout_s):
                await self._read_answer(reader, requested[0], job, provider)
            requested.popleft()  # answered: every CID stored or refused

    async def _read_answer(
        self, reader: FrameReader, batch: list[CID], job: _FetchJob, provider: str
    ) -> None:
        """Read the answer to `batch`, storing its blocks every _STORE_GROUP_BLOCKS (so hashing
        starts before the whole answer is in); stored and refused CIDs leave `batch`."""
        group: list[_ReadBlock] = []
        for cid in list(batch):
            status = (await reader.read_exactly(1))[0]
            if status == STATUS_DONT_HAVE:
                job.dont_have(cid, provider)
                batch.remove(cid)
                continue
            if status != STATUS_HAVE:
                self.peers.offence(provider, Offence.MALFORMED_FRAME, "blocks-bad-status")
                raise _BadProvider
            (length,) = _LENGTH.unpack(await reader.read_exactly(_LENGTH.size))
            if length > self.config.max_block_bytes:
                self.peers.offence(provider, Offence.OVERSIZED, "blocks-oversized")
                raise _BadProvider
            group.append((cid, await reader.read_parts(length)))
            if len(group) >= _STORE_GROUP_BLOCKS:
                self._store_group(batch, group, job, provider)
                group = []
        if group:
            self._store_group(batch, group, job, provider)

    def _store_group(
        self, batch: list[CID], blocks: list[_ReadBlock], job: _FetchJob, provider: str
    ) -> None:
        """Verify and store `blocks` (sha256 and the pack append release the GIL); each stored
        CID leaves `batch` and is done in `job`. `_BadProvider` at a block that does not hash
        to its CID (it and the rest of the group are not stored)."""
        stored, bad = _store_blocks(self.store, blocks, job.descend)
        for (cid, parts), (was_new, links) in zip(blocks, stored, strict=False):
            batch.remove(cid)
            job.done(cid, links)
            self.peers.reward(provider)
            if was_new:
                self.metrics.inc("blocks-fetched")
                self.metrics.inc("bytes-fetched", sum(len(part) for part in parts))
        if bad:
            self.peers.offence(provider, Offence.BAD_BLOCK, "blocks-bad-block")
            raise _BadProvider


# One block as read off a stream: its CID and the pieces it arrived in.
_ReadBlock = tuple[CID, list[bytes | memoryview]]


def _store_blocks(
    store: BlockStore, blocks: list[_ReadBlock], descend: bool
) -> tuple[list[tuple[bool, list[CID]]], bool]:
    """Verify and store `blocks` in order.

    Returns, up to the first block that does not hash to its CID, whether each block was new
    and (with `descend`) the CIDs a dag-pb block links to that the store lacks; and whether
    there was such a bad block (it and those after it are not stored).
    """
    stored: list[tuple[bool, list[CID]]] = []
    for cid, parts in blocks:
        try:
            was_new = store.put_parts(cid, parts)
        except InvalidBlock:
            return stored, True
        links: list[CID] = []
        if descend and cid.codec == CODEC_DAG_PB:
            try:
                node = decode_dag_pb(b"".join(parts))
            except InvalidBlock:
                pass  # hashes right but is no valid node: the DAG walk after the fetch says so
            else:
                links = [link.cid for link in node.links if not store.has(link.cid)]
        stored.append((was_new, links))
    return stored, False


class _SlowProvider(Exception):
    """A provider that did not begin to answer in time (BLOCKS_FIRST_ANSWER_S)."""


class _BadProvider(Exception):
    """Internal: stop fetching from this provider (already scored)."""


class _FetchJob:
    """Shared state of one parallel fetch: which CIDs are pending, in flight, unavailable."""

    def __init__(self, cids: list[CID], providers: list[str], *, descend: bool = False) -> None:
        self.pending: deque[CID] = deque(cids)
        self.descend = descend
        # With `descend`: every CID ever queued (a DAG may link a block many times) and how
        # far below the requested CIDs each one is.
        self.seen: set[CID] = set(cids)
        self.depth: dict[CID, int] = {}
        self.providers = providers
        self.refused: dict[CID, set[str]] = {}
        self.unavailable: set[CID] = set()
        self.errors: list[str] = []
        self.bad: set[str] = set()
        self.in_flight = 0
        self.running: set[str] = set()  # providers whose worker is running
        self.changed = trio.Event()
        self._dials: set[trio.CancelScope] = set()

    @contextlib.contextmanager
    def dialling(self) -> Iterator[trio.CancelScope]:
        """A scope around opening a provider's stream, cancelled once nothing is left to
        fetch or in flight."""
        with trio.CancelScope() as scope:
            self._dials.add(scope)
            try:
                if self.finished():
                    scope.cancel()
                yield scope
            finally:
                self._dials.discard(scope)

    def finished(self) -> bool:
        """Every block is stored or known to be unavailable: no worker has more to do."""
        return not self.pending and self.in_flight == 0

    def _notify(self) -> None:
        self.changed.set()
        self.changed = trio.Event()
        if self.finished():
            for scope in self._dials:
                scope.cancel()

    def needs_provider(self) -> bool:
        """Whether another provider should join: some pending block is one no provider
        still working can serve (each refused it, failed or gave up; or none is working),
        or more than BLOCKS_PER_PROVIDER blocks wait per provider working (a large blob)."""
        if any(self.running <= self.refused.get(c, set()) for c in self.pending):
            return True
        return len(self.pending) > BLOCKS_PER_PROVIDER * max(1, self.workers)

    def take_batch(self, provider: str) -> list[CID]:
        """Up to BLOCKS_BATCH_CIDS pending CIDs this provider has not refused, split fairly."""
        share = max(1, math.ceil(len(self.pending) / max(1, self.workers)))
        limit = min(BLOCKS_BATCH_CIDS, share)
        batch: list[CID] = []
        skipped: list[CID] = []
        while self.pending and len(batch) < limit:
            cid = self.pending.popleft()
            if provider in self.refused.get(cid, ()):
                skipped.append(cid)
            else:
                batch.append(cid)
        self.pending.extendleft(reversed(skipped))
        self.in_flight += len(batch)
        return batch

    def give_back(self, batch: list[CID], provider: str) -> None:
        """A provider failed: its unanswered CIDs go back to the others."""
        self.in_flight -= len(batch)
        for cid in batch:
            self.refused.setdefault(cid, set()).add(provider)
            self._requeue(cid)
        self._notify()

    def dont_have(self, cid: CID, provider: str) -> None:
        self.in_flight -= 1
        self.refused.setdefault(cid, set()).add(provider)
        self._requeue(cid)
        self._notify()

    def _requeue(self, cid: CID) -> None:
        if self.refused[cid].issuperset(self.providers):
            self.unavailable.add(cid)
        else:
            self.pending.append(cid)

    def done(self, cid: CID, links: Sequence[CID] = ()) -> None:
        """`cid` is stored; with `descend`, queue the absent blocks it links to."""
        self.in_flight -= 1
        depth = self.depth.pop(cid, 0) + 1
        if self.descend and depth <= MAX_DAG_DEPTH:
            for child in links:
                if child not in self.seen:
                    self.seen.add(child)
                    self.depth[child] = depth
                    self.pending.append(child)
        self._notify()

    @property
    def workers(self) -> int:
        """Workers running (one per provider: providers are distinct)."""
        return len(self.running)

    def worker_done(self, provider: str) -> None:
        self.running.discard(provider)
        self._notify()

    async def wait_for_work(self, provider: str) -> bool:
        """Wait until there is something this provider could fetch; False when all is done."""
        while True:
            if any(provider not in self.refused.get(c, ()) for c in self.pending):
                return True
            if self.in_flight == 0:
                return False
            await self.changed.wait()


async def _close(stream: Any) -> None:
    try:
        await stream.close()
    except Exception:
        pass


async def _reset(stream: Any) -> None:
    try:
        await stream.reset()
    except Exception:
        pass
