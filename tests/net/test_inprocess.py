"""Several real hosts in one trio run, on 127.0.0.1: identity, gossip, validation, blocks, "
"discovery."""

from __future__ import annotations

import os
from contextlib import AsyncExitStack
from dataclasses import replace
from functools import partial
from pathlib import Path

import pytest
import trio

from p2pfl.core.cid import CHUNK_SIZE, blob_cid
from p2pfl.core.identity import NodeIdentity
from p2pfl.errors import InvalidMessage, P2PFLError
from p2pfl.net import (
    FetchError,
    NetConfig,
    NoPeersError,
    ValidationResult,
    open_node_host,
    topic_name,
)
from p2pfl.net.gossip import message_id
from tests.net.conftest import accept_all, collect, key, nodes, rejections_of

TOPIC = topic_name("task0", "updates")


async def test_identity_and_noise_only(tmp_path: Path) -> None:
    async with nodes(tmp_path, 2) as (a, b):
        assert a.peer_id == NodeIdentity(key(0)).peer_id  # same key as the Ethereum address
        assert b.connected_peers() == [a.peer_id]
        transports = a.host.get_network().upgrader.security_multistream.transports
        assert list(transports) == ["/noise"]  # no plaintext, TLS or SECIO offered
        assert all(addr.startswith("/ip4/127.0.0.1/tcp/") for addr in a.listen_addrs)
        # Streams wait for a loaded peer's answer for our timeout, not the library's 10 s.
        limits = a.host.get_network().connection_config
        assert limits.outbound_stream_protocol_negotiation_timeout == 30.0
        assert limits.inbound_stream_protocol_negotiation_timeout == 30.0


async def test_gossip_burst_reaches_everyone(tmp_path: Path) -> None:
    """8 nodes publish 12 messages each at once (96 total); every node gets all of them."""
    count, per_node = 8, 12
    links = [(i, (i - 1) // 2) for i in range(1, count)]  # a tree: some messages need 3 hops
    async with nodes(tmp_path, count, links=links) as net:
        channels = [await n.join(TOPIC, accept_all) for n in net]
        await trio.sleep(1.5)  # subscriptions propagate, meshes form
        async with trio.open_nursery() as nursery:
            for i, n in enumerate(net):
                for j in range(per_node):
                    nursery.start_soon(n.publish, TOPIC, f"update {i} {j}".encode())
        expected = {f"update {i} {j}".encode() for i in range(count) for j in range(per_node)}
        for i, channel in enumerate(channels):
            got = await collect(channel, len(expected), timeout_s=20)
            assert set(got) == expected, f"node {i} got {len(set(got))}/{len(expected)}"
        assert sum(n.metrics().get("admitted-gossip", 0) for n in net) > 0


async def test_invalid_message_dropped_at_first_honest_hop(tmp_path: Path) -> None:
    """a - b - c in a line: b rejects what a publishes as 'forged', so c never even sees it."""
    seen_by_c: list[bytes] = []

    def honest(topic: str, data: bytes, peer: str) -> ValidationResult:
        return (
            ValidationResult.reject("forged")
            if data.startswith(b"forged")
            else ValidationResult.accept()
        )

    def c_validator(topic: str, data: bytes, peer: str) -> ValidationResult:
        seen_by_c.append(data)
        return honest(topic, data, peer)

    async with nodes(tmp_path, 3, links=[(1, 0), (2, 1)]) as (a, b, c):
        await a.join(TOPIC, accept_all)  # a is the attacker: accepts anything
        b_in = await b.join(TOPIC, honest)
        c_in = await c.join(TOPIC, c_validator)
        await trio.sleep(1.5)
        await a.publish(TOPIC, b"forged vote")
        await a.publish(TOPIC, b"valid update")
        assert await collect(c_in, 1, timeout_s=10) == [b"valid update"]
        assert await collect(b_in, 1, timeout_s=2) == [b"valid update"]
        await trio.sleep(
            2.5
        )  # a few sync rounds: the rejected message must not travel by sync either
        assert b"forged vote" not in seen_by_c
        metrics = b.metrics()
        assert (
            sum(rejections_of(metrics, "forged").values()) == 1
        )  # judged once, by whichever path came first
        assert set(metrics["rejections_by_reason"]) <= {"gossip-forged", "sync-forged"}
        assert metrics["rejections_by_peer"] == {a.peer_id: 1}


async def test_oversized_messages_rejected(tmp_path: Path) -> None:
    async with nodes(tmp_path, 2, max_message_bytes=100_000) as (a, b):
        a.gossip.config = replace(a.config, max_message_bytes=1_000_000)  # a is the attacker
        await a.join(TOPIC, accept_all)
        b_in = await b.join(TOPIC, accept_all)
        await trio.sleep(1.5)
        with pytest.raises(InvalidMessage):
            await b.publish(TOPIC, b"x" * 100_001)  # refused locally
        await a.publish(TOPIC, b"y" * 200_000)
        await a.publish(TOPIC, b"small")
        assert await collect(b_in, 2, timeout_s=3) == [b"small"]
        # Gossip always brings (and rejects) it. A sync round that ran before gossip arrived was
        # cut off at the length prefix, before the id could be known: counted once more then.
        metrics = b.metrics()
        assert rejections_of(metrics, "oversized").get("gossip") == 1
        assert rejections_of(metrics, "oversized").get("sync", 0) <= 1
        assert set(metrics["rejections_by_reason"]) <= {"gossip-oversized", "sync-oversized"}


async def test_blob_from_a_holder_that_is_not_the_author(tmp_path: Path) -> None:
    data = os.urandom(6 * CHUNK_SIZE + 1000)
    async with nodes(tmp_path, 3, links=[(1, 0), (2, 1)]) as (author, holder, fetcher):
        root = author.put_blob(data)
        assert root == blob_cid(data)
        await holder.fetch_blob(root, [author.peer_id])
        await author.disconnect(holder.peer_id)
        assert await fetcher.get_blob(root, [holder.peer_id]) == data
        assert fetcher.metrics()["blocks-fetched"] == 8  # root + 7 leaves, each once
        assert holder.metrics()["blocks-served"] == 8  # all of them from the holder...
        assert author.metrics()["blocks-served"] == 8  # ...the author served the holder only


async def test_an_unconnected_author_is_dialled_from_the_address_book(tmp_path: Path) -> None:
    """An address book (`NetConfig.known_peers`, no DHT): a peer never connected to is dialled
    for a fetch at the address the book gives; and a provider whose dial hangs (a port that
    accepts and never speaks), asked first, gives way to the next one after
    BLOCKS_FIRST_ANSWER_S (5 s) instead of holding the fetch up for the dial's 30 s."""
    data = os.urandom(3 * CHUNK_SIZE + 10)
    silent_listener = trio.socket.socket()
    await silent_listener.bind(("127.0.0.1", 0))
    silent_listener.listen(8)
    silent_port = silent_listener.getsockname()[1]
    silent = NodeIdentity.from_seed(b"accepts and never speaks").peer_id
    async with nodes(tmp_path, 2, links=[], dht=False) as (author, fetcher):
        root = author.put_blob(data)
        fetcher.remember_peers(
            [author.listen_addrs[0], f"/ip4/127.0.0.1/tcp/{silent_port}/p2p/{silent}"]
        )
        assert author.peer_id not in fetcher.connected_peers()
        with trio.fail_after(10):  # the hanging dial's own deadline is 30 s; ours 5
            assert await fetcher.get_blob(root, [silent, author.peer_id]) == data
    silent_listener.close()


async def test_bad_provider_scored_down_and_fetch_completes(tmp_path: Path) -> None:
    data = os.urandom(4 * CHUNK_SIZE)
    async with nodes(tmp_path, 3, links=[(2, 0), (2, 1)], ban_threshold=-60) as (
        good,
        bad,
        fetcher,
    ):
        root = good.put_blob(data)
        bad.put_blob(data)

        class LyingStore:  # serves the right sizes with the wrong bytes
            def get(self, cid: object, verify: bool = True) -> bytes:
                return os.urandom(CHUNK_SIZE)

        bad.blocks.store = LyingStore()  # type: ignore[assignment]
        assert await fetcher.get_blob(root, [bad.peer_id, good.peer_id]) == data
        assert fetcher.metrics()["rejections_by_reason"].get("blocks-bad-block") == 1
        assert fetcher.peers.score(bad.peer_id) < 0
        # A second offence bans and disconnects the liar.
        other = os.urandom(2 * CHUNK_SIZE)
        other_root = good.put_blob(other)
        bad.put_blob(other)
        assert await fetcher.get_blob(other_root, [bad.peer_id, good.peer_id]) == other
        with trio.fail_after(5):
            while bad.peer_id in fetcher.connected_peers():
                await trio.sleep(0.05)
        assert fetcher.peers.is_banned(bad.peer_id)
        with pytest.raises(FetchError):
            await fetcher.fetch_blob(good.put_blob(b"only on good"), [bad.peer_id])


async def test_fetch_error_when_nobody_has_the_blob(tmp_path: Path) -> None:
    async with nodes(tmp_path, 2) as (a, b):
        root = blob_cid(b"nobody stored this")
        with pytest.raises(FetchError, match="held by none"):
            await b.fetch_blob(root, [a.peer_id], timeout_s=10)


async def test_dht_finds_the_holder(tmp_path: Path) -> None:
    async with nodes(tmp_path, 3, links=[(1, 0), (2, 1)]) as (author, middle, seeker):
        data = os.urandom(CHUNK_SIZE + 5)
        root = author.put_blob(data)
        await author.provide(root)
        found: list[str] = []
        with trio.move_on_after(15):
            while author.peer_id not in found:
                found = await seeker.find_providers(root, timeout_s=5)
                await trio.sleep(0.2)
        assert author.peer_id in found
        assert await seeker.get_blob(root) == data  # providers from the DHT


async def test_no_peers_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(NoPeersError, match="no bootstrap peers"):
        async with open_node_host(NetConfig(data_dir=tmp_path / "a", require_peers=True), key(0)):
            pass
    unreachable = f"/ip4/127.0.0.1/tcp/9/p2p/{NodeIdentity(key(1)).peer_id}"
    config = NetConfig(
        data_dir=tmp_path / "b", bootstrap=(unreachable,), require_peers=True, bootstrap_timeout_s=3
    )
    with pytest.raises(NoPeersError, match="could not reach"):
        async with open_node_host(config, key(0)):
            pass


async def test_group_fetch_uploads_about_once_and_survives_an_absent_member(tmp_path: Path) -> None:
    data = os.urandom(12 * CHUNK_SIZE)
    absent = NodeIdentity(key(9)).peer_id  # a committee member that never shows up
    links = [(1, 0), (2, 0), (3, 0), (2, 1), (3, 1), (3, 2)]
    async with nodes(tmp_path, 4, links=links) as (author, m1, m2, m3):
        root = author.put_blob(data)
        group = [m1.peer_id, m2.peer_id, absent, m3.peer_id]
        async with trio.open_nursery() as nursery:
            for m in (m1, m2, m3):
                nursery.start_soon(
                    partial(m.fetch_blob_with_group, root, [author.peer_id], group, patience_s=1.0)
                )
        for m in (m1, m2, m3):
            assert m.read_blob(root) == data
        served = author.metrics()["bytes-served"]
        # Three present members' stripes once, plus the absent member's stripe once per member.
        assert served < 2 * len(data)
        assert sum(m.metrics().get("blocks-stripe-fallbacks", 0) for m in (m1, m2, m3)) == 3


async def test_undecodable_pubsub_rpc_is_counted_and_does_not_crash_the_host(
    tmp_path: Path,
) -> None:
    """Bytes that are not a pubsub RPC on a pubsub stream (py-libp2p raises protobuf's
    DecodeError for them, which used to escape and kill the host) cost the sender a
    malformed-frame offence; the receiving host keeps gossiping with everyone."""
    from libp2p.custom_types import TProtocol
    from libp2p.utils import encode_varint_prefixed

    async with nodes(tmp_path, 3) as (hub, attacker, friend):
        channels = [await n.join(TOPIC, accept_all) for n in (hub, attacker, friend)]
        await trio.sleep(1.0)
        protocol = TProtocol(next(iter(hub.pubsub.router.get_protocols())))
        stream = await attacker.host.new_stream(hub.host.get_id(), [protocol])
        await stream.write(encode_varint_prefixed(b"\xff\xff\xff\xff not a protobuf RPC"))
        await trio.sleep(1.0)
        assert hub.metrics()["rejections_by_reason"] == {"pubsub-undecodable-rpc": 1}
        await friend.publish(TOPIC, b"still alive")
        assert await collect(channels[0], 1, timeout_s=10) == [b"still alive"]


async def test_idontwant_only_for_large_messages(tmp_path: Path) -> None:
    """a - b - c: what b forwards costs IDONTWANTs to its mesh peers only for large messages
    (p2pfl.net.pubsub_tuning: 16 KiB; an update without an inline delta is ~1-2 KiB and
    gets none), and both sizes still arrive."""
    from p2pfl.net.pubsub_tuning import IDONTWANT_MIN_BYTES

    async with nodes(tmp_path, 3, links=[(1, 0), (2, 1)]) as (a, b, c):
        received: list[int] = []  # message ids per IDONTWANT that reached a or c
        for peer in (a, c):
            router = peer.pubsub.router
            handle = router.handle_idontwant

            async def counting(msg, sender, handle=handle):  # type: ignore[no-untyped-def]
                received.append(len(msg.messageIDs))
                await handle(msg, sender)

            router.handle_idontwant = counting
        await a.join(TOPIC, accept_all)
        await b.join(TOPIC, accept_all)
        c_in = await c.join(TOPIC, accept_all)
        await trio.sleep(1.5)
        small = [bytes([i]) * 2048 for i in range(5)]  # update-sized
        for data in small:
            await a.publish(TOPIC, data)
        assert set(await collect(c_in, len(small), timeout_s=10)) == set(small)
        await trio.sleep(0.5)
        assert received == []  # nobody announced IDONTWANT for 2 KiB messages
        large = b"x" * IDONTWANT_MIN_BYTES
        await a.publish(TOPIC, large)
        assert await collect(c_in, 1, timeout_s=10) == [large]
        with trio.fail_after(5):
            while not received:
                await trio.sleep(0.05)
        assert sum(received) >= 1  # b (or c) told its mesh peers it holds the large one


async def test_a_new_peer_gets_missed_messages_from_sync_not_a_replay(tmp_path: Path) -> None:
    """py-libp2p hands every newly subscribed peer its whole gossip window; ours does not
    (p2pfl.net.pubsub_tuning, fix 4): a peer that connects just after messages went out gets
    them from an anti-entropy sync, which sends only what it lacks."""
    async with nodes(tmp_path, 2, links=[], sync_interval_s=3600.0) as (a, c):
        await a.join(TOPIC, accept_all)
        sent = [f"before c {i}".encode() for i in range(5)]
        for data in sent:
            await a.publish(TOPIC, data)
        c_in = await c.join(TOPIC, accept_all)
        await c.connect(a.listen_addrs[0])
        assert await collect(c_in, 5, timeout_s=3) == []  # no replay within the window
        assert await c.gossip.sync_with(a.peer_id, TOPIC) == 5
        assert sorted(await collect(c_in, 5, timeout_s=3)) == sorted(sent)
        # ...and gossipsub counts them seen: an IHAVE for them will not fetch them again.
        assert all(c.pubsub.seen_messages.has(message_id(data)) for data in sent)


async def test_gossip_advertises_the_ids_it_dedups_by(tmp_path: Path) -> None:
    """The message cache keys messages by our content-addressed id (pubsub_tuning, fix 5):
    an IHAVE for a message the peer holds asks for nothing; py-libp2p's own keys (sender +
    sequence number) never matched the seen-cache, so every advertised message came back."""
    from libp2p.peer.id import ID
    from libp2p.pubsub.pb import rpc_pb2

    async with nodes(tmp_path, 2) as (a, b):
        await a.join(TOPIC, accept_all)
        b_in = await b.join(TOPIC, accept_all)
        await trio.sleep(1.5)
        await a.publish(TOPIC, b"held by both")
        assert await collect(b_in, 1, timeout_s=10) == [b"held by both"]
        advertised = a.pubsub.router.mcache.window(TOPIC)
        assert advertised == [message_id(b"held by both")]
        with trio.fail_after(5):  # gossipsub marks it seen just after our gate delivered it
            while not b.pubsub.seen_messages.has(advertised[0]):
                await trio.sleep(0.05)
        wanted: list[list[bytes]] = []
        router = b.pubsub.router

        async def record(msg_ids, to_peer):  # type: ignore[no-untyped-def]
            wanted.append(list(msg_ids))

        router.emit_iwant = record
        sender = ID.from_base58(a.peer_id)
        await router.handle_ihave(
            rpc_pb2.ControlIHave(topicID=TOPIC, messageIDs=advertised), sender
        )
        assert wanted == []  # b has it: nothing asked for
        unknown = message_id(b"held by a only")
        await router.handle_ihave(rpc_pb2.ControlIHave(topicID=TOPIC, messageIDs=[unknown]), sender)
        assert wanted == [[unknown]]


async def test_a_pushed_message_reaches_its_peer_alone_and_is_not_resynced(
    tmp_path: Path,
) -> None:
    """`push` (a task's updates to its committee): the chosen peer judges the message at the
    same gate and answers its verdict; nobody else gets it, by gossip or by sync, and a
    second push of the same bytes is answered from memory."""
    verdicts: list[bytes] = []

    def judge(topic: str, data: bytes, peer: str) -> ValidationResult:
        verdicts.append(data)
        if data.startswith(b"forged"):
            return ValidationResult.reject("forged")
        if data.startswith(b"later"):
            return ValidationResult.ignore("future-round")
        return ValidationResult.accept()

    async with nodes(tmp_path, 3, sync_interval_s=0.5) as (a, b, c):
        await a.join(TOPIC, accept_all)
        b_in = await b.join(TOPIC, judge)
        c_in = await c.join(TOPIC, accept_all)
        await trio.sleep(1.5)
        assert await a.push(b.peer_id, TOPIC, b"for b only", b"its delta") == "accept"
        (pushed,) = await _take(b_in, 1, timeout_s=5)
        assert (pushed.data, pushed.attachment, pushed.via) == (b"for b only", b"its delta", "push")
        assert await a.push(b.peer_id, TOPIC, b"for b only") == "accept"  # held already
        assert await a.push(b.peer_id, TOPIC, b"forged update") == "reject"
        assert await a.push(b.peer_id, TOPIC, b"later update") == "ignore"
        assert await a.push(b.peer_id, TOPIC, b"later update") == "ignore"  # judged again
        assert verdicts == [b"for b only", b"forged update", b"later update", b"later update"]
        assert b.metrics()["rejections_by_peer"] == {a.peer_id: 1}
        await trio.sleep(2.0)  # several sync rounds
        assert await collect(c_in, 1, timeout_s=1) == []  # not gossiped, not offered by sync
        assert not b.gossip.messages(TOPIC) and not a.gossip.messages(TOPIC)
        # A pull brings what was pushed to b and not to the puller, unjudged.
        await c.connect(b.listen_addrs[0])
        assert await c.pull(b.peer_id, TOPIC) == [b"for b only"]
        await a.push(c.peer_id, TOPIC, b"for b only")
        assert await c.pull(b.peer_id, TOPIC) == []  # c holds it now: nothing to send
        with pytest.raises(InvalidMessage):
            await a.push(b.peer_id, TOPIC, b"x" * (a.config.max_message_bytes + 1))
        with pytest.raises(P2PFLError):
            await a.push(NodeIdentity.from_seed(b"\x07" * 32).peer_id, TOPIC, b"to nobody")


async def test_pull_and_admit_judges_what_another_peer_was_pushed(tmp_path: Path) -> None:
    """A committee member pulls from another what was pushed to it: each message passes the
    puller's gate, is delivered as `pull` with the bytes it was pushed with and held like a
    pushed one (served to the next puller, attachment and all, never asked for again); a
    rejected one is not delivered nor fetched again. A plain `pull` carries no attachment.
    A topic joined with `sync=False` takes no part in the sync rounds; with `gossip=False`
    it is not joined on gossipsub (no mesh), and pushes and pulls work all the same."""

    def judge(topic: str, data: bytes, peer: str) -> ValidationResult:
        return (
            ValidationResult.reject("forged")
            if data.startswith(b"forged")
            else (ValidationResult.accept())
        )

    async with nodes(tmp_path, 3, sync_interval_s=0.3) as (a, b, c):
        a_in = await a.join(TOPIC, accept_all, sync=False)
        await b.join(TOPIC, accept_all, sync=False, gossip=False)  # pushed and pulled only
        c_in = await c.join(TOPIC, judge, sync=False)
        assert TOPIC not in b.pubsub.topic_ids and TOPIC in a.pubsub.topic_ids
        with pytest.raises(ValueError, match="pushes and pulls only"):
            await b.publish(TOPIC, b"gossiped")
        await c.connect(b.listen_addrs[0])
        await trio.sleep(1.0)
        assert await a.push(b.peer_id, TOPIC, b"update one", b"its delta") == "accept"
        assert await a.push(b.peer_id, TOPIC, b"forged update") == "accept"  # b's gate
        assert await c.pull_and_admit(b.peer_id, TOPIC) == 1
        (got,) = await _take(c_in, 1, timeout_s=5)
        assert (got.data, got.via, got.attachment) == (b"update one", "pull", b"its delta")
        assert await c.pull_and_admit(b.peer_id, TOPIC) == 0  # held and rejected: not again
        await a.connect(c.listen_addrs[0])
        assert await a.pull(c.peer_id, TOPIC) == [b"update one"]  # c serves what it pulled
        assert await a.pull_and_admit(c.peer_id, TOPIC) == 1  # and its attachment with it
        (relayed,) = await _take(a_in, 1, timeout_s=5)
        assert (relayed.data, relayed.attachment) == (b"update one", b"its delta")
        assert b.metrics().get("pull-attachments-served") == 1
        assert c.metrics().get("pull-attachments-served") == 1
        await trio.sleep(1.0)  # several sync intervals
        for host in (a, b, c):
            assert host.metrics().get("sync-rounds", 0) == 0
            assert host.metrics().get("sync-served", 0) == 0


async def test_a_pull_takes_only_the_pushed_messages_tagged_since_its_round(
    tmp_path: Path,
) -> None:
    """A pull names the lowest tag it wants (the node's messages: their round): what the
    responder was pushed in earlier rounds is neither sent nor asked about (a member's relay
    pull once brought every earlier round's deltas a member still held, oldest first)."""

    def by_round(topic: str, data: bytes, peer: str) -> ValidationResult:
        return ValidationResult.accept(tag=int(data.split(b":")[0]))

    async with nodes(tmp_path, 3, sync_interval_s=0.3) as (a, b, c):
        await a.join(TOPIC, by_round, sync=False)
        await b.join(TOPIC, by_round, sync=False)
        c_in = await c.join(TOPIC, by_round, sync=False)
        await c.connect(b.listen_addrs[0])
        await trio.sleep(1.0)
        for data in (b"3:old update", b"4:an update", b"5:a next-round update"):
            assert await a.push(b.peer_id, TOPIC, data, b"delta of " + data) == "accept"
        assert sorted(await c.pull(b.peer_id, TOPIC, since=4)) == [
            b"4:an update",
            b"5:a next-round update",
        ]
        assert await c.pull_and_admit(b.peer_id, TOPIC, since=5) == 1
        (got,) = await _take(c_in, 1, timeout_s=5)
        assert (got.data, got.attachment) == (
            b"5:a next-round update",
            b"delta of 5:a next-round update",
        )
        assert b.metrics().get("pull-attachments-served") == 1  # the older ones: not sent
        assert await c.pull_and_admit(b.peer_id, TOPIC, since=4) == 1  # round 4's alone
        assert await c.pull_and_admit(b.peer_id, TOPIC) == 1  # everything: round 3's left


async def _take(channel, count: int, timeout_s: float) -> list:  # type: ignore[no-untyped-def]
    """Up to `count` admitted messages (whole GossipMessages) within `timeout_s`."""
    got = []
    with trio.move_on_after(timeout_s):
        while len(got) < count:
            got.append(await channel.receive())
    return got


async def test_a_node_below_min_peers_dials_known_peers_up_to_min_and_no_more(
    tmp_path: Path,
) -> None:
    """py-libp2p's AutoConnector (it dialled every peer in the peerstore while a node had
    under 200 connections) is stopped; the maintenance loop dials known peers only while a
    node has fewer than `min_peers` connections."""
    async with AsyncExitStack() as stack:
        hosts = []
        for i in range(4):
            config = NetConfig(
                data_dir=tmp_path / f"n{i}",
                listen="/ip4/127.0.0.1/tcp/0",
                mdns=False,
                min_peers=2 if i == 0 else 0,
            )
            hosts.append(await stack.enter_async_context(open_node_host(config, key(i))))
        hub = hosts[0]
        assert not hub.host.get_network().auto_connector._started
        for other in hosts[1:]:
            await other.connect(hub.listen_addrs[0])
        with trio.fail_after(10):
            while len(hub.connected_peers()) < 3:
                await trio.sleep(0.05)
        for other in hosts[1:]:
            await hub.disconnect(other.peer_id)
        with trio.fail_after(10):  # maintenance every 2 s: two of the three known peers
            while len(hub.connected_peers()) < 2:
                await trio.sleep(0.1)
        await trio.sleep(5)  # two more passes: still two
        assert len(hub.connected_peers()) == 2


async def test_a_bulk_push_between_small_ones_arrives_whole_and_in_order(tmp_path: Path) -> None:
    """A 3 MiB delta pushed between two small messages, read through the stream fast path
    (yamux_tuning fix 7: buffered bytes taken without locks, the window re-credited when
    due): every byte arrives, in order, and the connection carries the streams before and
    after it."""
    delta = os.urandom(3 * 1024 * 1024 + 5)
    async with nodes(tmp_path, 2) as (a, b):
        await a.join(TOPIC, accept_all, sync=False, gossip=False)
        b_in = await b.join(TOPIC, accept_all, sync=False, gossip=False)
        assert await a.push(b.peer_id, TOPIC, b"small first", b"x") == "accept"
        assert await a.push(b.peer_id, TOPIC, b"the update", delta) == "accept"
        assert await a.push(b.peer_id, TOPIC, b"small after", b"y") == "accept"
        got = await _take(b_in, 3, timeout_s=10)
    assert [(m.data, m.attachment) for m in got] == [
        (b"small first", b"x"),
        (b"the update", delta),
        (b"small after", b"y"),
    ]


async def test_a_pull_from_a_peer_that_never_answers_gives_up_at_its_timeout(
    tmp_path: Path,
) -> None:
    """A relay pull names its own bound (`timeout_s`: the node's MEMBER_PULL_TIMEOUT_S): a
    member that takes the request and never answers costs that long, not a push's 60 s,
    and the failure is counted."""
    from libp2p.custom_types import TProtocol

    from p2pfl.net.config import SYNC_PROTOCOL

    async def never_answers(stream: object) -> None:
        await trio.sleep_forever()

    async with nodes(tmp_path, 2) as (a, b):
        await a.join(TOPIC, accept_all, sync=False, gossip=False)
        await b.join(TOPIC, accept_all, sync=False, gossip=False)
        b.host.set_stream_handler(TProtocol(SYNC_PROTOCOL), never_answers)
        started = trio.current_time()
        with pytest.raises(P2PFLError, match="timed out"):
            await a.pull_and_admit(b.peer_id, TOPIC, since=1, timeout_s=0.5)
        assert trio.current_time() - started < 5
        assert a.metrics().get("pull-timeouts") == 1
