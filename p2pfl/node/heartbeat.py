"""The node's heartbeat: a signed `Heartbeat` on the consensus topic every few seconds,
so its peers' round machines count it live (spec round.md "Timers / live quorum").

The consensus topic, not a topic of its own: every node reads it (followers tally votes
there too, unless proposals and votes go to the committee directly), its messages are
small and latency-sensitive, unlike the updates topic whose messages carry deltas, and one
more topic would cost every node another mesh to keep.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import trio

from p2pfl.core.messages import Heartbeat
from p2pfl.core.round import RoundMachine
from p2pfl.errors import P2PFLError

log = logging.getLogger("p2pfl.node")

# A beat every 5 s: the machine's live window (RoundConfig.live_window_s, 20 s) is four
# beats, so one or two delayed by a loaded loop or a slow hop do not mark a node dead,
# and a dead one leaves the collect quorum within 20 s. The cost is one ~170-byte message
# per node per 5 s: for 100 nodes, 20 messages/s on the topic, 10% of one forwarder's
# gossip allowance (p2pfl.net.config.PEER_GOSSIP_PER_S).
HEARTBEAT_INTERVAL_S = 5.0


def heartbeat_of(machine: RoundMachine, private_key: bytes, now_s: float) -> Heartbeat:
    """Our signed heartbeat: the round and phase the machine is in, the clock in ms."""
    beat = Heartbeat(
        task=machine.config.task,
        round=max(machine.round, 0),
        time_ms=max(int(now_s * 1000), 0),
        phase=machine.phase.value,
        signer=machine.address,
    )
    return beat.signed(private_key, machine.domain)  # type: ignore[return-value]


async def send_heartbeats(
    machine: RoundMachine,
    private_key: bytes,
    publish: Callable[[bytes], Awaitable[None]],
    clock: Callable[[], float],
    interval_s: float = HEARTBEAT_INTERVAL_S,
    last_signed: Callable[[], float] | None = None,
) -> None:
    """Publish a heartbeat every `interval_s` until cancelled (a node-nursery task).

    With `last_signed()` (when the node last published a signed message: its update, a
    vote, a proposal, a beat), a beat is skipped while the node has published within
    `interval_s`: any signed message tells every peer it is alive just as a beat would
    (round.md, *live quorum*), so a node taking part in rounds shorter than the interval
    sends few beats. With 100 nodes on 2 cores, beats were most of the gossip between
    updates (~430 of the messages each shard forwarded per second). Until one beat of a
    running round (round >= 1) has gone out, none is skipped: peers start judging silence
    only after hearing such a beat, and must not start later than before."""
    beat_in_a_round = False
    while True:
        if last_signed is not None and beat_in_a_round:
            quiet = clock() - last_signed()
            if quiet < interval_s:
                await trio.sleep(interval_s - quiet)
                continue
        beat = heartbeat_of(machine, private_key, clock())
        try:
            await publish(beat.encode())
            beat_in_a_round = beat_in_a_round or beat.round >= 1
        except P2PFLError as exc:  # no peers yet, a closing host: the next beat retries
            log.debug("heartbeat not published: %s", exc)
        await trio.sleep(interval_s)
