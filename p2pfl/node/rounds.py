"""One nursery per round: the round's workers (training, delta fetches, aggregation) run
in it, and it is cancelled as a whole when the node advances past the round -- no
worker checks which round the node is in."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import trio


class RoundNurseries:
    """Open round nurseries, each held by a task in the node's nursery."""

    def __init__(self) -> None:
        self._open: dict[int, tuple[trio.CancelScope, trio.Nursery]] = {}

    async def open(self, parent: trio.Nursery, round_: int) -> None:
        """Open round `round_`'s nursery (before the machine hears `RoundStarted(round_)`,
        so that the round's first action finds it)."""
        if round_ not in self._open:
            self._open[round_] = await parent.start(self._hold)

    @staticmethod
    async def _hold(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                task_status.started((scope, nursery))
                await trio.sleep_forever()

    def start_soon(self, round_: int, worker: Callable[..., Awaitable[Any]], *args: Any) -> bool:
        """Run `worker(*args)` in round `round_`'s nursery; False (not started) if that
        round is over or not open."""
        held = self._open.get(round_)
        if held is None:
            return False
        held[1].start_soon(worker, *args)
        return True

    def close_before(self, round_: int) -> None:
        """Cancel every round before `round_`: its workers' results could only be stale."""
        for r in [r for r in self._open if r < round_]:
            self._open.pop(r)[0].cancel()

    def rounds(self) -> list[int]:
        """The rounds whose nurseries are open."""
        return sorted(self._open)
