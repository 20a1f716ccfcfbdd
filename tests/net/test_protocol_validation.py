"""The node's real gossip checks (p2pfl.core.validation) on real hosts: forged, replayed,
wrong-task, unregistered and malformed messages are dropped at the first honest hop and
counted; valid signed updates get through."""

from dataclasses import replace
from pathlib import Path

import trio

from p2pfl.core.cid import blob_cid
from p2pfl.core.identity import NodeIdentity
from p2pfl.core.messages import Heartbeat, Update
from p2pfl.core.signing import Domain
from p2pfl.core.validation import check_gossip
from p2pfl.net import ValidationResult
from tests.net.conftest import accept_all, collect, nodes, rejections_of

TOPIC = "/p2pfl/1/validation-test/updates"
DOMAIN = Domain(chain_id=31337, contract=b"\x42" * 20)
TASK = b"\x07" * 32
HONEST = NodeIdentity.from_seed(b"honest author")
STRANGER = NodeIdentity.from_seed(b"not registered")
CURRENT_ROUND = 5


def update(
    author: NodeIdentity, round_: int = CURRENT_ROUND, task: bytes = TASK, n: int = 100
) -> bytes:
    u = Update(
        task=task,
        round=round_,
        base=blob_cid(b"base").to_bytes(),
        delta=blob_cid(bytes([round_, n])).to_bytes(),
        n_samples=n,
        norm=1.0,
        inline=b"",
        signer=author.address,
    )
    return u.signed(author.private_key, DOMAIN).encode()


def node_validator(topic: str, data: bytes, peer: str) -> ValidationResult:
    return ValidationResult.of(
        check_gossip(
            data, task=TASK, domain=DOMAIN, registered={HONEST.address}, current_round=CURRENT_ROUND
        )
    )


async def test_protocol_checks_drop_bad_messages_at_the_first_honest_hop(tmp_path: Path) -> None:
    valid = update(HONEST)
    # A valid signature over other content = forged.
    good = Update(
        task=TASK,
        round=CURRENT_ROUND,
        base=blob_cid(b"base").to_bytes(),
        delta=blob_cid(b"x").to_bytes(),
        n_samples=1,
        norm=0.5,
        inline=b"",
        signer=HONEST.address,
    )
    tampered = replace(good.signed(HONEST.private_key, DOMAIN), n_samples=10**6).encode()
    attacks = {
        "bad-signature": tampered,
        "replayed-round": update(HONEST, round_=1),
        "wrong-task": update(HONEST, task=b"\x08" * 32),
        "unregistered-signer": update(STRANGER),
        "malformed": b"\x93garbage",
    }
    seen_by_c: list[bytes] = []

    def c_validator(topic: str, data: bytes, peer: str) -> ValidationResult:
        seen_by_c.append(data)
        return node_validator(topic, data, peer)

    async with nodes(tmp_path, 3, links=[(1, 0), (2, 1)]) as (a, b, c):
        await a.join(TOPIC, accept_all)  # a is the attacker
        b_in = await b.join(TOPIC, node_validator)
        c_in = await c.join(TOPIC, c_validator)
        await trio.sleep(1.5)
        for data in attacks.values():
            await a.publish(TOPIC, data)
        await a.publish(TOPIC, valid)
        assert await collect(c_in, 1, timeout_s=10) == [valid]
        assert await collect(b_in, 1, timeout_s=2) == [valid]
        await trio.sleep(2.5)  # sync rounds too must not carry the rejected messages
        assert not set(attacks.values()) & set(seen_by_c)
        metrics = b.metrics()
        for reason in attacks:  # once each, by gossip or by sync, whichever reached b first
            assert sum(rejections_of(metrics, reason).values()) == 1, metrics[
                "rejections_by_reason"
            ]


async def test_old_rounds_are_dropped_without_blaming_the_peer(tmp_path: Path) -> None:
    """Messages of a finished round are dropped and counted but do not lower the sender's
    score: honest sync logs keep them for minutes (a node that missed a round is offered it
    again two rounds later by every peer). Thirty of them -- past the twenty rejected messages
    that ban a peer -- leave the peer unbanned; an unregistered signer still costs it."""
    stale = [update(HONEST, round_=CURRENT_ROUND - 2, n=n) for n in range(1, 31)]
    async with nodes(tmp_path, 2, links=[(1, 0)]) as (a, b):
        await a.join(TOPIC, accept_all)
        b_in = await b.join(TOPIC, node_validator)
        await trio.sleep(1.5)
        for data in stale:
            await a.publish(TOPIC, data)
        await a.publish(TOPIC, update(HONEST))
        assert len(await collect(b_in, 2, timeout_s=10)) == 1  # the current round's only
        deadline = trio.current_time() + 10
        while sum(rejections_of(b.metrics(), "replayed-round").values()) < len(stale):
            assert trio.current_time() < deadline, b.metrics()["rejections_by_reason"]
            await trio.sleep(0.1)
        assert b.peers.score(a.peer_id) == 0.0 and not b.peers.is_banned(a.peer_id)
        await a.publish(TOPIC, update(STRANGER))
        deadline = trio.current_time() + 10
        while not rejections_of(b.metrics(), "unregistered-signer"):
            assert trio.current_time() < deadline, b.metrics()["rejections_by_reason"]
            await trio.sleep(0.1)
        assert b.peers.score(a.peer_id) < 0.0


async def test_heartbeats_are_forwarded_but_never_offered_by_sync(tmp_path: Path) -> None:
    """A heartbeat reaches the peers gossip reaches, but no sync log keeps it (the signer's
    next beat supersedes it): a node that syncs later gets the update, not the beat."""
    beat = Heartbeat(
        task=TASK, round=CURRENT_ROUND, time_ms=1, phase="collecting", signer=HONEST.address
    )
    beat = beat.signed(HONEST.private_key, DOMAIN).encode()  # type: ignore[assignment]
    async with nodes(tmp_path, 3, links=[(1, 0)], sync_interval_s=3600.0) as (a, b, c):
        await a.join(TOPIC, node_validator)
        b_in = await b.join(TOPIC, node_validator)
        c_in = await c.join(TOPIC, node_validator)
        await trio.sleep(1.5)
        await a.publish(TOPIC, beat, synced=False)
        await a.publish(TOPIC, update(HONEST))
        assert sorted(await collect(b_in, 2, timeout_s=10)) == sorted([beat, update(HONEST)])
        for node in (a, b):  # the publisher's log and the receiver's hold the update only
            assert [m.data for m in node.gossip.messages(TOPIC)] == [update(HONEST)]
        # c connects now: nothing is replayed to a new peer (pubsub_tuning), only sync gives.
        await c.connect(b.listen_addrs[0])
        assert await c.gossip.sync_with(b.peer_id, TOPIC) == 1
        assert await collect(c_in, 2, timeout_s=3) == [update(HONEST)]
