"""The block path's parts: reading blocks as pieces, storing pieces, answer framing, and a
whole fetch over in-memory streams (one session for every level of a DAG)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from p2pfl.core.cid import CHUNK_SIZE, MAX_DAG_DEPTH, MAX_LINKS, blob_blocks, raw_cid
from p2pfl.errors import InvalidBlock
from p2pfl.net.blocks import (
    STATUS_HAVE,
    BlockExchange,
    FrameReader,
    _AnswerBuffer,
    _FetchJob,
)
from p2pfl.net.blockstore import BlockStore
from p2pfl.net.config import NetConfig
from p2pfl.net.limits import Metrics, PeerBook
from p2pfl.net.yamux_tuning import FRAME_PAYLOAD_BYTES
from tests.net.conftest import HashCount


class _Pieces:
    """A stream that returns its data in fixed pieces, whatever size is asked for."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = list(pieces)

    async def read(self, n: int) -> bytes:
        return self.pieces.pop(0) if self.pieces else b""


async def test_read_parts_returns_the_bytes_as_read_without_copying_whole_chunks() -> None:
    data = os.urandom(5000)
    pieces = [data[:1000], data[1000:3000], data[3000:3001], data[3001:]]
    reader = FrameReader(_Pieces(pieces))
    assert await reader.read_exactly(10) == data[:10]
    parts = await reader.read_parts(2991)  # rest of piece 0, all of 1 and 2
    assert b"".join(parts) == data[10:3001]
    assert any(part is pieces[1] for part in parts)  # a whole chunk is handed on as is
    assert b"".join(await reader.read_parts(1999)) == data[3001:]
    assert await reader.at_eof()


def test_put_parts_hashes_and_writes_pieces_and_rejects_a_wrong_block(tmp_path: Path) -> None:
    store = BlockStore(tmp_path)
    block = os.urandom(3 * 4096 + 7)
    cid = raw_cid(block)
    view = memoryview(block)
    assert store.put_parts(cid, [view[:100], block[100:5000], view[5000:]]) is True
    assert store.get(cid) == block
    assert store.put_parts(cid, [block]) is False
    # Pieces that do not hash to the CID: nothing is stored, the pack holds the one record.
    other = raw_cid(b"other")
    with pytest.raises(InvalidBlock):
        store.put_parts(other, [block[:10], block[10:]])
    assert not store.has(other)
    (pack,) = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert pack.stat().st_size == 1 + 36 + 2 + len(block)  # varint, CID, varint, data
    # More pieces than one writev takes.
    many = [bytes([i % 251]) for i in range(3000)]
    assert store.put_parts(raw_cid(b"".join(many)), many) is True
    assert store.get(raw_cid(b"".join(many))) == b"".join(many)


def test_answer_buffer_writes_whole_frames_and_keeps_the_rest() -> None:
    blocks = [os.urandom(CHUNK_SIZE), os.urandom(CHUNK_SIZE), b"small"]
    expected = b"".join(
        STATUS_HAVE.to_bytes(1, "big") + len(b).to_bytes(4, "big") + b for b in blocks
    )
    out = _AnswerBuffer()
    written = bytearray()
    for block in blocks:
        out.append_block(block)
        frames = out.whole_frames()
        assert len(frames) % FRAME_PAYLOAD_BYTES == 0
        written += frames
        out.keep_partial_frame()
    written += out.view()
    assert bytes(written) == expected


def test_descending_job_queues_links_once_and_stops_below_the_depth_limit() -> None:
    cids = [raw_cid(bytes([i])) for i in range(MAX_DAG_DEPTH + 3)]
    job = _FetchJob([cids[0]], ["p"], descend=True)
    job.take_batch("p")
    job.done(cids[0], [cids[1], cids[1]])
    assert list(job.pending) == [cids[1]]  # linked twice, queued once
    for depth in range(1, MAX_DAG_DEPTH + 1):  # a chain, one level deeper each time
        assert job.take_batch("p") == [cids[depth]]
        job.done(cids[depth], [cids[depth + 1]])
    assert cids[MAX_DAG_DEPTH + 1] not in job.pending  # over the limit: not fetched
    assert job.in_flight == 0


class _Stream:
    """One end of an in-memory byte stream, with the libp2p stream methods the exchange uses."""

    def __init__(self, stream: Any, peer_id: str) -> None:
        self.stream = stream
        self.muxed_conn = type("Conn", (), {"peer_id": peer_id})()

    async def read(self, n: int) -> bytes:
        return await self.stream.receive_some(n)

    async def write(self, data: Any) -> None:
        await self.stream.send_all(bytes(data))

    async def close(self) -> None:
        await self.stream.send_stream.aclose()

    async def reset(self) -> None:
        await self.stream.aclose()


async def test_a_two_level_dag_is_fetched_over_one_stream_per_provider(tmp_path: Path) -> None:
    # MAX_LINKS + 1 leaves need a root over two inner nodes; equal chunks keep the blob cheap.
    data = bytes(CHUNK_SIZE * MAX_LINKS + 1)
    root, blocks = blob_blocks(data)
    config = NetConfig(data_dir=tmp_path)
    server_store, client_store = BlockStore(tmp_path / "server"), BlockStore(tmp_path / "client")
    server_store.put_blob(data)
    server = BlockExchange(server_store, config, _peers(), Metrics(), _no_streams)
    opened: list[str] = []

    async with trio.open_nursery() as nursery:

        async def open_stream(peer: str, protocol: str) -> _Stream:
            opened.append(peer)
            ours, theirs = trio.testing.memory_stream_pair()
            nursery.start_soon(server.handle_stream, _Stream(theirs, "client"))
            return _Stream(ours, peer)

        metrics = Metrics()
        client = BlockExchange(client_store, config, _peers(), metrics, open_stream)
        await client.fetch_blob(root, ["server"])

    assert opened == ["server"]  # root, inner nodes and leaves in one session
    assert client_store.read_blob(root) == data
    # root, two inner nodes, the full leaf (linked 174 times) and the 1-byte leaf, each once
    assert metrics.snapshot()["blocks-fetched"] == len({cid for cid, _ in blocks}) == 5


async def test_a_fetched_delta_is_hashed_once_from_arrival_to_aggregation(
    tmp_path: Path, hashed: HashCount
) -> None:
    # What a node does with a 10 MiB delta: fetch it (verified on arrival), check it is whole,
    # read it to decode it, read it again to aggregate. Each block is hashed once in all
    # (it was ~5 times: arrival, get, assemble, and get + assemble again).
    data = os.urandom(10 * 1024 * 1024)
    root, blocks = blob_blocks(data)
    distinct = {cid: block for cid, block in blocks}
    config = NetConfig(data_dir=tmp_path)
    server_store, client_store = BlockStore(tmp_path / "server"), BlockStore(tmp_path / "client")
    server_store.put_blob(data)
    server = BlockExchange(server_store, config, _peers(), Metrics(), _no_streams)
    hashed.reset()
    async with trio.open_nursery() as nursery:

        async def open_stream(peer: str, protocol: str) -> _Stream:
            ours, theirs = trio.testing.memory_stream_pair()
            nursery.start_soon(server.handle_stream, _Stream(theirs, "client"))
            return _Stream(ours, peer)

        client = BlockExchange(client_store, config, _peers(), Metrics(), open_stream)
        await client.fetch_blob(root, ["server"])
    assert client_store.has_blob(root)
    assert client_store.read_blob(root) == data
    assert client_store.read_blob(root) == data
    assert (hashed.calls, hashed.bytes) == (len(distinct), sum(len(b) for b in distinct.values()))


def _peers() -> PeerBook:
    return PeerBook(
        ban_threshold=-100, ban_s=60, rates={"requests": (1000, 1000)}, metrics=Metrics()
    )


async def _no_streams(peer: str, protocol: str) -> Any:
    raise AssertionError("the serving side opens no streams")


async def test_read_exactly_zero_bytes_and_across_chunks() -> None:
    # 0 bytes on an empty buffer is b"" (a sync frame with an empty have-list reads 0
    # bytes: this once failed and a node with nothing on a topic could never sync).
    data = os.urandom(300)
    pieces = [data[:100], data[100:200], data[200:]]
    reader = FrameReader(_Pieces(pieces))
    assert await reader.read_exactly(0) == b""
    whole = await reader.read_exactly(100)
    assert whole is pieces[0]  # a whole chunk is handed on as is
    assert await reader.read_exactly(150) == data[100:250]  # across two chunks
    assert type(await reader.read_exactly(50)) is bytes  # a slice comes back as bytes
    assert await reader.read_exactly(0) == b""
    assert await reader.at_eof()


def test_answer_buffers_are_reused_unless_a_write_was_cut_short() -> None:
    """A served stream's 3 MiB answer buffer goes back to a small pool (allocating and zeroing
    one per stream was 15% of a 100-node shard's time); one whose write was cut short may
    still be referenced by the muxer and is dropped."""
    from p2pfl.net import blocks

    blocks._ANSWER_BUFFERS.clear()
    first = blocks._take_answer_buffer()
    first.append_status(1)
    blocks._give_back(first)
    assert blocks._take_answer_buffer() is first and first.size == 0
    first.writing = True
    blocks._give_back(first)
    assert blocks._take_answer_buffer() is not first
    for _ in range(2 * blocks._ANSWER_BUFFERS_KEPT):
        blocks._give_back(blocks._AnswerBuffer())
    assert len(blocks._ANSWER_BUFFERS) == blocks._ANSWER_BUFFERS_KEPT
    blocks._ANSWER_BUFFERS.clear()


async def _fetch_from(
    tmp_path: Path, data: bytes, holders: dict[str, bool], silent: set[str] = frozenset()
) -> tuple[list[str], Metrics, BlockStore, Any]:
    """Fetch `data`'s blob from the providers of `holders` (in order; True: holds it), the
    ones in `silent` answering nothing; returns the providers whose stream was opened."""
    root, _ = blob_blocks(data)
    config = NetConfig(data_dir=tmp_path, blocks_first_answer_s=0.2)
    servers = {}
    for name, holds in holders.items():
        store = BlockStore(tmp_path / name)
        if holds:
            store.put_blob(data)
        servers[name] = BlockExchange(store, config, _peers(), Metrics(), _no_streams)
    client_store = BlockStore(tmp_path / "client")
    opened: list[str] = []
    metrics = Metrics()
    async with trio.open_nursery() as nursery:

        async def open_stream(peer: str, protocol: str) -> _Stream:
            opened.append(peer)
            ours, theirs = trio.testing.memory_stream_pair()
            if peer not in silent:
                nursery.start_soon(servers[peer].handle_stream, _Stream(theirs, "client"))
            return _Stream(ours, peer)

        client = BlockExchange(client_store, config, _peers(), metrics, open_stream)
        await client.fetch_blob(root, list(holders))
        nursery.cancel_scope.cancel()
    return opened, metrics, client_store, root


async def test_a_small_blob_is_fetched_from_the_first_provider_alone(tmp_path: Path) -> None:
    data = os.urandom(CHUNK_SIZE + 1000)  # a delta-sized blob: a root and two leaves
    opened, metrics, store, root = await _fetch_from(
        tmp_path, data, {"a": True, "b": True, "c": True, "d": True}
    )
    assert opened == ["a"]  # one stream, not one to each of four providers
    assert store.read_blob(root) == data


async def test_a_provider_that_lacks_a_block_brings_in_the_next(tmp_path: Path) -> None:
    data = os.urandom(CHUNK_SIZE + 1000)
    opened, _, store, root = await _fetch_from(tmp_path, data, {"a": False, "b": True, "c": True})
    assert opened == ["a", "b"]
    assert store.read_blob(root) == data


async def test_a_silent_provider_gives_way_to_the_next_after_the_first_answer_time(
    tmp_path: Path,
) -> None:
    data = os.urandom(CHUNK_SIZE + 1000)
    opened, metrics, store, root = await _fetch_from(
        tmp_path, data, {"a": True, "b": True, "c": True}, silent={"a"}
    )
    assert opened == ["a", "b"]
    assert metrics.snapshot()["blocks-slow-providers"] == 1
    assert store.read_blob(root) == data


async def test_a_large_blob_brings_in_more_providers(tmp_path: Path) -> None:
    data = os.urandom(CHUNK_SIZE * 100)  # 25 MiB: more than one provider's share
    opened, _, store, root = await _fetch_from(
        tmp_path, data, {"a": True, "b": True, "c": True, "d": True}
    )
    assert len(opened) > 1
    assert store.read_blob(root) == data
