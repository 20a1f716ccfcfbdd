"""Trio access to the blocking chain client.

    chain = TrioChain(ChainClient(w3, deployment, key))
    receipt = await chain.commit_round(task, ...)     # any ChainClient method, awaited

Each call runs in a worker thread (`trio.to_thread.run_sync`) under one
`trio.CapacityLimiter(1)` per provider, so at most one thread touches eth-tester at
a time and the trio loop never blocks. Cancellation waits for the call in flight to
finish (a transaction cannot be half-sent), then raises Cancelled.

An RPC outage is ridden out: a call that found the endpoint down (`ChainUnreachable`,
after the client's quick retries) is repeated with backoff, logging what is retried and
for how long, for up to `OUTAGE_TOLERANCE_S` before the error reaches the caller. A
repeated transaction is estimated again first, so one that landed before the outage (or
another member's) reverts with the contract's reason instead of landing twice.
"""

from __future__ import annotations

import functools
import logging
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from p2pfl.chain.client import ChainClient, ChainUnreachable
from p2pfl.errors import ChainError

log = logging.getLogger(__name__)

# How long a node waits for an unreachable chain before giving up on a call (and, for
# the node's main tasks, exiting with the error): a restarting RPC node or a network blip
# lasts seconds to minutes; a chain gone for longer is one the operator must look at.
OUTAGE_TOLERANCE_S = 600.0
# Pause between repeats of an unreachable call, doubling up to the cap: with the client's
# own quick retries (about 6 s in all) a node notices the chain is back within seconds.
OUTAGE_RETRY_S = 0.5
OUTAGE_RETRY_MAX_S = 2.0

_limiters: weakref.WeakKeyDictionary[object, trio.CapacityLimiter] = weakref.WeakKeyDictionary()


def provider_limiter(client: Any) -> trio.CapacityLimiter:
    """One worker thread per provider (shared by every client of that provider); another
    chain backend (p2pfl.node.ports.ChainPort) gets one per client object."""
    key = client.w3.provider if isinstance(client, ChainClient) else client
    limiter = _limiters.get(key)
    if limiter is None:
        limiter = trio.CapacityLimiter(1)
        _limiters[key] = limiter
    return limiter


async def run_chain(
    client: Any,
    fn: Callable[..., Any],
    *args: Any,
    tolerate_s: float = OUTAGE_TOLERANCE_S,
) -> Any:
    """Run a blocking chain call `fn(*args)` in the provider's worker thread; repeat it
    while the chain is unreachable, for up to `tolerate_s` (0: never repeat)."""
    name = getattr(fn, "__name__", type(fn).__name__)
    down_since: float | None = None
    delay = OUTAGE_RETRY_S
    while True:
        try:
            result = await trio.to_thread.run_sync(
                functools.partial(fn, *args), limiter=provider_limiter(client)
            )
        except ChainUnreachable as exc:
            now = trio.current_time()
            if down_since is None:
                down_since = now
                log.warning(
                    "chain unreachable in %s (retrying for up to %.0f s): %s", name, tolerate_s, exc
                )
            down = now - down_since
            if down >= tolerate_s:
                raise
            sent = f", tx 0x{exc.tx_hash.hex()} sent" if exc.tx_hash else ""
            log.warning(
                "chain unreachable for %.0f s since %s first failed (at %s%s); retrying %s in "
                "%.1f s",
                down,
                name,
                exc.what,
                sent,
                name,
                delay,
            )
            await trio.sleep(delay)
            delay = min(delay * 2, OUTAGE_RETRY_MAX_S)
            continue
        except ChainError as exc:
            if down_since is not None:  # e.g. a commit that another member landed meanwhile
                log.warning(
                    "chain reachable again: %s answered after %.0f s with %s",
                    name,
                    trio.current_time() - down_since,
                    exc.revert_reason or exc,
                )
            raise
        if down_since is not None:
            log.warning(
                "chain reachable again: %s went through after %.0f s",
                name,
                trio.current_time() - down_since,
            )
        return result


class TrioChain:
    """Awaitable mirror of a ChainClient: `await TrioChain(c).name(...)` == `c.name(...)`."""

    def __init__(self, client: ChainClient) -> None:
        self.client = client

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        method = getattr(self.client, name)
        if not callable(method):
            raise AttributeError(f"{name} is not a ChainClient method")  # noqa: TRY004

        async def call(*args: Any, **kwargs: Any) -> Any:
            return await run_chain(self.client, functools.partial(method, **kwargs), *args)

        call.__name__ = name
        return call
