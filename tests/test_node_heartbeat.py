"""The node's heartbeat task: a beat only after `interval_s` of silence, since any signed
message the node publishes tells its peers as much (round.md, *live quorum*)."""

from types import SimpleNamespace
from typing import Any

import trio

from p2pfl.core.identity import NodeIdentity
from p2pfl.core.messages import Heartbeat, decode_message
from p2pfl.core.round import Phase
from p2pfl.core.signing import Domain
from p2pfl.errors import P2PFLError
from p2pfl.node.heartbeat import send_heartbeats

ME = NodeIdentity.from_seed(b"beating node")
DOMAIN = Domain(chain_id=1, contract=b"\x01" * 20)
MACHINE: Any = SimpleNamespace(
    config=SimpleNamespace(task=b"\x02" * 32),
    round=3,
    phase=Phase.COLLECTING,
    address=ME.address,
    domain=DOMAIN,
)


async def test_beats_pause_while_other_signed_messages_go_out(autojump_clock: Any) -> None:
    beats: list[float] = []
    last = [-1e9]

    async def publish(data: bytes) -> None:
        beat = decode_message(data)
        assert isinstance(beat, Heartbeat) and beat.verify(DOMAIN) == ME.address
        beats.append(trio.current_time())
        last[0] = trio.current_time()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            send_heartbeats,
            MACHINE,
            ME.private_key,
            publish,
            trio.current_time,
            5.0,
            lambda: last[0],
        )
        await trio.sleep(12)  # silent: beats at 0, 5 and 10
        assert beats == [0.0, 5.0, 10.0]
        for _ in range(6):  # an update, a vote...: one signed message every 3 s
            last[0] = trio.current_time()
            await trio.sleep(3)
        assert beats == [0.0, 5.0, 10.0]  # heard all along: no beat
        await trio.sleep(6)  # silent again: a beat 5 s after the last message
        assert beats == [0.0, 5.0, 10.0, 32.0]  # the last message went out at 27
        nursery.cancel_scope.cancel()


async def test_no_beat_is_skipped_before_one_of_a_running_round(autojump_clock: Any) -> None:
    """Peers judge silence only after a beat of round >= 1 (round.md): until the node has
    sent one, it beats every interval however much else it publishes."""
    beats: list[int] = []
    machine: Any = SimpleNamespace(**{**vars(MACHINE), "round": -1})

    async def publish(data: bytes) -> None:
        beat = decode_message(data)
        assert isinstance(beat, Heartbeat)
        beats.append(beat.round)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            send_heartbeats,
            machine,
            ME.private_key,
            publish,
            trio.current_time,
            5.0,
            trio.current_time,  # always "just published"
        )
        await trio.sleep(11)
        machine.round = 1
        await trio.sleep(15)
        nursery.cancel_scope.cancel()
    assert beats == [0, 0, 0, 1]  # at 0, 5, 10 before round 1; at 15 the first of round 1


async def test_without_a_last_message_clock_a_beat_every_interval_even_if_one_fails(
    autojump_clock: Any,
) -> None:
    beats: list[float] = []

    async def publish(data: bytes) -> None:
        beats.append(trio.current_time())
        if len(beats) == 2:
            raise P2PFLError("no peers yet")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            send_heartbeats, MACHINE, ME.private_key, publish, trio.current_time, 5.0
        )
        await trio.sleep(16)
        nursery.cancel_scope.cancel()
    assert beats == [0.0, 5.0, 10.0, 15.0]
