"""The node's event queue: everything the round machine hears passes through it.

Back-pressure rule. The queue is bounded (`EVENT_QUEUE_SIZE`) and nothing is dropped
here: every producer *awaits* its slot, and the event loop is its only consumer.

- The node's own outcomes (training done, delta fetched, aggregate computed, round
  started, chain commit seen, ticks) are never lost: their task waits until the loop
  takes the event. A worker of a round the node has left is cancelled with the round's
  nursery while it waits: the machine would drop that event as stale anyway.
- Network intake waits the same way, so when the loop falls behind the intake tasks
  stop reading their gossip channels. Gossip's delivery buffer then fills and gossip
  stops admitting (p2pfl.net.gossip.DELIVERY_BUFFER, counted `delivery-overflow`): the
  message is not marked seen, so anti-entropy sync offers it again later. Losses are
  repaired there, not silently made here.
- The event loop never puts into the queue it reads (actions start tasks; tasks put),
  so a full queue cannot deadlock it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import trio

from p2pfl.core.round_events import Event

# Events waiting for the loop. Handling one is a few microseconds of pure Python, so the
# queue only absorbs bursts (a round's updates and votes arriving together: hundreds);
# sustained overload is the network's to shed, where the gossip buffer (4096) sits.
EVENT_QUEUE_SIZE = 1024


class EventQueue:
    """Bounded, lossless: `await put(event)`; the event loop iterates it."""

    def __init__(self, size: int = EVENT_QUEUE_SIZE) -> None:
        self._send, self._receive = trio.open_memory_channel[Event](size)

    async def put(self, event: Event) -> None:
        """Queue `event`, waiting while the queue is full."""
        await self._send.send(event)

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._receive.__aiter__()

    def pending(self) -> int:
        """Events waiting (for status and tests)."""
        return self._receive.statistics().current_buffer_used
