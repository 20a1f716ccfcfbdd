"""Unit tests of the network layer's pure parts: block store, limits, frames, yamux patch."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import trio
import trio.testing

from p2pfl.core.cid import CHUNK_SIZE, blob_blocks, blob_cid, raw_cid
from p2pfl.errors import ConfigError, InvalidBlock, InvalidMessage
from p2pfl.net import yamux_tuning
from p2pfl.net.blocks import FrameReader, encode_request, read_request
from p2pfl.net.blockstore import BlockNotFound, BlockStore
from p2pfl.net.config import NetConfig, topic_name
from p2pfl.net.limits import Metrics, Offence, PeerBook, TokenBucket


def test_store_put_get_and_verify(tmp_path: Path) -> None:
    store = BlockStore(tmp_path)
    block = b"hello block"
    cid = raw_cid(block)
    assert store.put(cid, block) is True
    assert store.put(cid, block) is False  # already there
    assert store.get(cid) == block
    assert list(store) == [cid]
    with pytest.raises(InvalidBlock):
        store.put(raw_cid(b"other"), block)
    assert not store.has(raw_cid(b"other"))
    with pytest.raises(BlockNotFound):
        store.get(raw_cid(b"absent"))


def test_blob_roundtrip_matches_core_cids(tmp_path: Path) -> None:
    store = BlockStore(tmp_path)
    data = os.urandom(3 * CHUNK_SIZE + 123)
    root = store.put_blob(data)
    assert root == blob_cid(data)
    _, blocks = blob_blocks(data)
    assert all(store.has(c) for c, _ in blocks)
    assert store.read_blob(root) == data
    assert store.missing(root) == []


def test_missing_gives_the_frontier(tmp_path: Path) -> None:
    source, store = BlockStore(tmp_path / "a"), BlockStore(tmp_path / "b")
    data = os.urandom(3 * CHUNK_SIZE)
    root = source.put_blob(data)
    assert store.missing(root) == [root]
    store.put(root, source.get(root))
    leaves = store.missing(root)
    assert len(leaves) == 3 and root not in leaves
    store.put(leaves[0], source.get(leaves[0]))
    assert store.missing(root) == leaves[1:]


async def test_request_frame_roundtrip() -> None:
    cids = [raw_cid(bytes([i])) for i in range(5)]

    class FakeStream:
        def __init__(self, data: bytes) -> None:
            self.data = data

        async def read(self, n: int) -> bytes:
            out, self.data = self.data[:n], self.data[n:]
            return out

    assert await read_request(FrameReader(FakeStream(encode_request(cids)))) == cids
    with pytest.raises(InvalidMessage):
        await read_request(FrameReader(FakeStream(b"\x07\x00\x01" + cids[0].to_bytes())))
    with pytest.raises(InvalidMessage):
        await read_request(FrameReader(FakeStream(b"\x01\x00\x00")))
    with pytest.raises(ValueError):
        encode_request([])


def test_token_bucket() -> None:
    bucket = TokenBucket(rate=2.0, burst=3.0, now=0.0)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.delay_for(0.0) == pytest.approx(0.5)
    assert bucket.take(0.5) is True
    assert bucket.take(0.5) is False


def test_peer_book_bans_at_threshold_and_lifts_later() -> None:
    now = [0.0]
    banned: list[str] = []
    metrics = Metrics()
    book = PeerBook(
        ban_threshold=-100, ban_s=60, rates={"r": (1.0, 1.0)}, metrics=metrics, clock=lambda: now[0]
    )
    book.on_ban = banned.append
    assert book.offence("p", Offence.BAD_BLOCK) is False
    assert book.offence("p", Offence.BAD_BLOCK) is True
    assert banned == ["p"] and book.is_banned("p")
    now[0] = 61.0
    assert not book.is_banned("p")
    assert book.allow("q", "r") and not book.allow("q", "r")
    snap = metrics.snapshot()
    assert snap["rejections_by_reason"] == {"bad-block": 2, "rate-limited-r": 1}
    assert snap["rejections_by_peer"] == {"p": 2, "q": 1}
    assert snap["peers-banned"] == 1


def test_config_validation(tmp_path: Path) -> None:
    assert topic_name("abc", "updates") == "/p2pfl/1/abc/updates"
    with pytest.raises(ConfigError):
        topic_name("abc", "other")
    with pytest.raises(ConfigError):
        NetConfig(data_dir=tmp_path, listen="/ip4/127.0.0.1/udp/1")
    with pytest.raises(ConfigError):
        NetConfig(data_dir=tmp_path, bootstrap=("/ip4/127.0.0.1/tcp/1",))
    with pytest.raises(ConfigError):
        NetConfig(data_dir=tmp_path, max_message_bytes=2 * 1024 * 1024)


def test_yamux_frames_fit_one_noise_message() -> None:
    assert yamux_tuning.FRAME_PAYLOAD_BYTES + yamux_tuning.YAMUX_HEADER_SIZE == 65535 - 16
    assert yamux_tuning.apply() is True  # libp2p 0.8.1 is pinned
    from libp2p.stream_muxer.yamux import yamux

    assert yamux.YamuxStream.__name__ == "TunedYamuxStream"
    assert yamux.RTT_MEASURE_INTERVAL == yamux_tuning.RTT_MEASURE_INTERVAL_S  # (fix 6)


class _ChunkedStream:
    """A stream that returns its data in fixed pieces, whatever size is asked for."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = list(pieces)

    async def read(self, n: int) -> bytes:
        return self.pieces.pop(0) if self.pieces else b""


async def test_frame_reader_joins_and_splits_chunks() -> None:
    from p2pfl.net.blocks import StreamClosed

    data = bytes(range(256)) * 40
    # Reads inside one chunk, exactly one chunk, and spanning three chunks.
    reader = FrameReader(
        _ChunkedStream([data[:1000], data[1000:2000], data[2000:2500], data[2500:]])
    )
    assert await reader.read_exactly(10) == data[:10]
    assert await reader.read_exactly(990) == data[10:1000]
    assert await reader.read_exactly(1000) == data[1000:2000]
    assert await reader.read_exactly(1) == data[2000:2001]
    assert await reader.read_exactly(7000) == data[2001:9001]
    assert not await reader.at_eof()
    assert await reader.read_exactly(len(data) - 9001) == data[9001:]
    assert await reader.at_eof()
    with pytest.raises(StreamClosed):
        await FrameReader(_ChunkedStream([b"abc"])).read_exactly(4)


async def test_tcp_read_ahead_never_returns_more_than_asked() -> None:
    import trio

    class FakeTCP:
        def __init__(self, data: bytes) -> None:
            self.data = data
            self.read_lock = trio.Lock()
            self.socket_reads = 0

        async def read(self, n: int | None = None) -> bytes:
            self.socket_reads += 1
            size = len(self.data) if n is None else n
            out, self.data = self.data[:size], self.data[size:]
            return out

    yamux_tuning._buffer_tcp_reads(FakeTCP)
    data = os.urandom(3 * yamux_tuning.TCP_READ_AHEAD_BYTES + 5)
    stream = FakeTCP(data)
    got = bytearray()
    sizes = [2, 65535, 1, 12, 200_000, 7]
    while len(got) < len(data):
        n = sizes[len(got) % len(sizes)]
        chunk = await stream.read(n)
        assert 0 < len(chunk) <= n
        got += chunk
    assert bytes(got) == data
    assert await stream.read(10) == b""  # EOF passes through
    assert stream.socket_reads <= 6  # 4 buffered socket reads and the EOF, not one per call


def test_signed_record_check_is_skipped_only_for_the_same_bytes_from_the_same_peer() -> None:
    from p2pfl.net import pubsub_tuning

    calls: list[tuple[bytes, str]] = []

    def check(msg, host, peer_id):  # type: ignore[no-untyped-def]
        calls.append((msg.senderRecord, peer_id))
        return msg.senderRecord != b"forged"

    class Rpc:
        def __init__(self, record: bytes | None) -> None:
            self.senderRecord = record

        def HasField(self, name: str) -> bool:
            return self.senderRecord is not None

    cached = pubsub_tuning.make_cached(check)
    assert cached(Rpc(b"rec-a"), None, "A") and cached(Rpc(b"rec-a"), None, "A")
    assert calls == [(b"rec-a", "A")]  # the repeat was not verified again
    assert cached(Rpc(b"rec-a"), None, "B")  # same bytes, other peer: verified
    assert not cached(Rpc(b"forged"), None, "A") and not cached(Rpc(b"forged"), None, "A")
    assert len(calls) == 4  # rejected records are never remembered
    assert cached(Rpc(None), None, "C") and len(calls) == 4  # no record: nothing to check
    assert pubsub_tuning.apply() is True
    from libp2p.pubsub import gossipsub, pubsub, utils

    for module in (gossipsub, pubsub):  # the callers now use the memoised check
        assert module.maybe_consume_signed_record is not utils.maybe_consume_signed_record


def test_own_record_is_reused_for_a_while_then_checked_again() -> None:
    from p2pfl.net import pubsub_tuning

    now = [100.0]
    built: list[object] = []

    def build(host):  # type: ignore[no-untyped-def]
        built.append(host)
        return f"record-{len(built)}".encode(), True

    class Host:
        pass

    a, b = Host(), Host()
    reused = pubsub_tuning.make_reused_record(build, lambda: now[0], reuse_s=10.0)
    assert reused(a) == (b"record-1", True)
    now[0] += 9.9
    assert reused(a) == (b"record-1", False) and built == [a]  # reused, not rebuilt
    assert reused(b) == (b"record-2", True)  # another host has its own record
    now[0] += 0.2
    assert reused(a) == (b"record-3", True) and built == [a, b, a]  # checked again
    assert pubsub_tuning.apply() is True
    from libp2p.peer import peerstore
    from libp2p.pubsub import gossipsub, pubsub

    for module in (gossipsub, pubsub):  # the senders now reuse the record
        assert module.env_to_send_in_RPC is not peerstore.env_to_send_in_RPC


async def test_copies_of_a_message_in_validation_are_dropped_on_arrival() -> None:
    from p2pfl.net import pubsub_tuning

    release = trio.Event()
    processed: list[tuple[str, bytes]] = []

    async def push_msg(self, forwarder, msg):  # type: ignore[no-untyped-def]
        processed.append((forwarder, msg))
        if msg == b"slow":
            await release.wait()  # the signature check and validator, awaited

    class Pubsub:
        _msg_id_constructor = staticmethod(lambda msg: b"id:" + msg)

    pubsub = Pubsub()
    once = pubsub_tuning.make_single_flight(push_msg)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(once, pubsub, "A", b"slow")
        await trio.sleep(0.01)
        await once(pubsub, "B", b"slow")  # same message, still in validation: dropped
        await once(pubsub, "B", b"other")  # another message goes through
        release.set()
    await once(pubsub, "C", b"slow")  # validated: the library's seen-cache decides now
    assert processed == [("A", b"slow"), ("B", b"other"), ("C", b"slow")]
    assert pubsub_tuning.apply() is True
    from libp2p.pubsub.pubsub import Pubsub as LibPubsub

    assert LibPubsub.push_msg.__name__ == "push_msg_once"  # installed on the library's class


async def test_task_parents_are_remembered_and_match_the_library_walk(monkeypatch) -> None:
    """`service_tuning`: a task's parent is looked up once per calling trio task, and the
    answer is the library's own walk's, also after the parent task has finished."""
    import trio
    from libp2p.tools.anyio_service import Service, background_trio_service
    from libp2p.tools.anyio_service.trio_manager import TrioManager

    from p2pfl.net.service_tuning import make_remembered

    library = getattr(TrioManager._find_parent_task, "__wrapped__", TrioManager._find_parent_task)
    walks: list[object] = []

    def walk(manager: object, trio_task: object) -> object:
        walks.append(trio_task)
        return library(manager, trio_task)

    monkeypatch.setattr(TrioManager, "_find_parent_task", make_remembered(walk))
    parents: list[tuple[object, object]] = []
    done = trio.Event()

    class Spawner(Service):
        async def run(self) -> None:
            self.manager.run_task(self.parent)
            await done.wait()

        async def parent(self) -> None:
            me = trio.lowlevel.current_task()
            for _ in range(20):
                parents.append((self.manager._find_parent_task(me), library(self.manager, me)))
                self.manager.run_task(trio.sleep, 0)
            await trio.sleep(0.1)

    async with background_trio_service(Spawner()) as manager:
        with trio.fail_after(10):
            while len(parents) < 20:
                await trio.sleep(0.01)
            await trio.sleep(0.3)  # the parent task and its children have finished
        found = [p for p, _ in parents]
        assert found[0] is not None and all(p is found[0] for p in found)
        assert all(p is q for p, q in parents)
        parent_walks = len([w for w in walks if w is walks[0]])
        assert parent_walks == 1  # 20 lookups from the parent task, 1 walk
        assert found[0].is_done
        # A finished task is never handed out again: the walk decides (no parent here).
        assert manager._find_parent_task(trio.lowlevel.current_task()) is None
        done.set()


class _Pipe:
    """One end of an in-memory byte stream pair (what multiselect reads and writes)."""

    def __init__(self, send: trio.MemorySendChannel, receive: trio.MemoryReceiveChannel) -> None:
        self.send, self.receive, self.buffer = send, receive, b""
        self.writes: list[bytes] = []

    async def write(self, data: bytes) -> None:
        self.writes.append(data)
        await self.send.send(data)

    async def read(self, n: int | None = None) -> bytes:
        while not self.buffer:
            self.buffer = await self.receive.receive()
        n = len(self.buffer) if n is None else n
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    async def close(self) -> None:
        pass


def _pipe_pair() -> tuple[_Pipe, _Pipe]:
    a_send, b_receive = trio.open_memory_channel[bytes](16)
    b_send, a_receive = trio.open_memory_channel[bytes](16)
    return _Pipe(a_send, a_receive), _Pipe(b_send, b_receive)


async def test_stream_negotiation_sends_header_and_protocol_at_once() -> None:
    """`multiselect_tuning`: the dialer writes the multistream header and its one proposal
    in one write, before reading anything; the library's listener answers both and hands
    over the stream; `na` and a wrong header still fail the open."""
    from libp2p.protocol_muxer.exceptions import MultiselectClientError
    from libp2p.protocol_muxer.multiselect import Multiselect
    from libp2p.protocol_muxer.multiselect_client import MultiselectClient
    from libp2p.protocol_muxer.multiselect_communicator import MultiselectCommunicator
    from libp2p.utils import encode_delim

    from p2pfl.net.multiselect_tuning import make_pipelined

    library = getattr(
        MultiselectClient.select_one_of, "__wrapped__", MultiselectClient.select_one_of
    )
    select = make_pipelined(library)
    client = MultiselectClient()

    async def handler(stream: object) -> None:
        pass

    listener = Multiselect({"/p2pfl/sync/1.0.0": handler})  # type: ignore[dict-item]
    dialer, answerer = _pipe_pair()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            got: list[object] = []

            async def listen() -> None:
                got.append(await listener.negotiate(MultiselectCommunicator(answerer)))

            nursery.start_soon(listen)
            chosen = await select(client, ["/p2pfl/sync/1.0.0"], MultiselectCommunicator(dialer))
    assert chosen == "/p2pfl/sync/1.0.0"
    assert got == [("/p2pfl/sync/1.0.0", handler)]
    assert len(dialer.writes) == 1  # header and proposal in one write: one round trip
    assert (
        b"/multistream/1.0.0\n" in dialer.writes[0] and b"/p2pfl/sync/1.0.0\n" in dialer.writes[0]
    )

    dialer, answerer = _pipe_pair()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:

            async def refuse() -> None:
                with pytest.raises(Exception):
                    await listener.negotiate(MultiselectCommunicator(answerer), 1)

            nursery.start_soon(refuse)
            with pytest.raises(MultiselectClientError, match="not supported"):
                await select(client, ["/other/1.0.0"], MultiselectCommunicator(dialer))

    dialer, answerer = _pipe_pair()
    await answerer.write(encode_delim(b"/not-multistream") + encode_delim(b"na"))
    with trio.fail_after(5), pytest.raises(MultiselectClientError, match="mismatch"):
        await select(client, ["/p2pfl/sync/1.0.0"], MultiselectCommunicator(dialer))


async def test_stream_notifications_skip_the_library_no_ops_and_call_others_inline(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """notify_tuning: a stream opened or closed is not fanned out to the library's notifees
    whose stream handlers do nothing (a task each, per stream, on both ends); any other
    notifee is still called, in turn, its exception logged and not raised; connection
    events keep the library's fan-out."""
    from libp2p.host.basic_host import _IdentifyNotifee
    from libp2p.network.swarm import Swarm
    from libp2p.network.tag_store import TagStoreNotifee
    from libp2p.pubsub.pubsub_notifee import PubsubNotifee

    from p2pfl.net import notify_tuning

    no_ops = notify_tuning.no_op_stream_handlers()
    for cls in (TagStoreNotifee, _IdentifyNotifee, PubsubNotifee):
        assert {cls.opened_stream, cls.closed_stream} <= no_ops, cls  # (a library change)
    assert notify_tuning.apply() is True
    calls: list[tuple[str, object]] = []

    class Recording:
        async def opened_stream(self, network: object, stream: object) -> None:
            calls.append(("opened", stream))

        async def connected(self, network: object, conn: object) -> None:
            calls.append(("connected", conn))

    class Raising:
        async def opened_stream(self, network: object, stream: object) -> None:
            raise RuntimeError("a broken notifee")

        async def connected(self, network: object, conn: object) -> None:
            pass

    class Quiet(PubsubNotifee):  # the library's no-op handlers, inherited
        def __init__(self) -> None:
            pass

        async def connected(self, network: object, conn: object) -> None:
            calls.append(("quiet connected", conn))

    class Spawns(trio.abc.Instrument):
        count = 0

        def task_spawned(self, task: object) -> None:
            self.count += 1

    swarm = SimpleNamespace(notifees=[Quiet(), Raising(), Recording()])
    spawns = Spawns()
    trio.lowlevel.add_instrument(spawns)
    try:
        await Swarm._notify(swarm, "opened_stream", "s1")
        assert spawns.count == 0  # (the library: a task per notifee)
        await Swarm._notify(swarm, "connected", "c0")
        assert spawns.count == 3
    finally:
        trio.lowlevel.remove_instrument(spawns)
    assert calls[0] == ("opened", "s1")
    del calls[1:]
    assert "a broken notifee" in caplog.text
    await Swarm._notify(swarm, "connected", "c1")
    assert sorted(calls[1:]) == [("connected", "c1"), ("quiet connected", "c1")]


class _Rescheduled(trio.abc.Instrument):
    """Counts the schedule points one task passes (each time it is put back in the queue)."""

    def __init__(self, task: object) -> None:
        self.task, self.count = task, 0

    def task_scheduled(self, task: object) -> None:
        self.count += task is self.task


async def test_a_free_prompt_lock_is_taken_without_a_schedule_point_and_in_turn_when_held() -> None:
    """yamux_tuning fix 7: `Prompt` takes a free lock at once (trio's own passes a schedule
    point, which on a loaded loop waits for every other runnable task); a held one is
    waited for, the waiters served in the order they came."""
    lock = yamux_tuning.Prompt(trio.Lock())
    counter = _Rescheduled(trio.lowlevel.current_task())
    trio.lowlevel.add_instrument(counter)
    try:
        async with lock:
            pass
        assert counter.count == 0
        async with trio.Lock():
            pass
        assert counter.count == 1  # (the library's lock)
    finally:
        trio.lowlevel.remove_instrument(counter)
    order: list[int] = []

    async def take(i: int) -> None:
        async with lock:
            order.append(i)
            await trio.sleep(0.01)

    async with lock:
        async with trio.open_nursery() as nursery:
            for i in range(3):
                nursery.start_soon(take, i)
                await trio.testing.wait_all_tasks_blocked()
            assert order == []  # all three wait while we hold it
            lock.release()
            await trio.sleep(0.1)
            await lock.acquire()  # (for the `async with` to release)
    assert order == [0, 1, 2]


async def test_reading_bytes_already_buffered_on_a_stream_passes_no_schedule_point(
    tmp_path: Path,
) -> None:
    """yamux_tuning fix 7, on real hosts: once a peer's bytes are in the stream's buffer,
    reading them (here a byte at a time, as multistream and pubsub read varints) takes them
    at once; the library's read passed ~3 schedule points each (state, stream and window
    locks). The bytes arrive whole and in order, and the end of the stream still reads as
    EOF."""
    from libp2p.custom_types import TProtocol
    from libp2p.network.stream.exceptions import StreamEOF
    from libp2p.peer.id import ID

    from tests.net.conftest import nodes

    protocol = TProtocol("/p2pfl-test/bytes/1.0.0")
    payload = bytes(range(200))
    got = bytearray()
    counts: list[int] = []
    done = trio.Event()

    async def handler(stream: Any) -> None:
        first = await stream.read(1)
        await trio.sleep(0.3)  # the rest arrives meanwhile
        counter = _Rescheduled(trio.lowlevel.current_task())
        trio.lowlevel.add_instrument(counter)
        try:
            rest = [await stream.read(1) for _ in range(len(payload) - 1)]
        finally:
            trio.lowlevel.remove_instrument(counter)
        counts.append(counter.count)
        got.extend(first + b"".join(rest))
        with pytest.raises(StreamEOF):
            await stream.read(1)
        done.set()

    async with nodes(tmp_path, 2) as (a, b):
        b.host.set_stream_handler(protocol, handler)
        stream = await a.host.new_stream(ID.from_base58(b.peer_id), [protocol])
        await stream.write(payload)
        await stream.close()
        with trio.fail_after(10):
            await done.wait()
    assert bytes(got) == payload
    assert counts == [0]
