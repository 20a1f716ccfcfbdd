"""Trio access to the blocking chain client.

    chain = TrioChain(ChainClient(w3, deployment, key))
    receipt = await chain.commit_round(task, ...)     # any ChainClient method, awaited

Each call runs in a worker thread (`trio.to_thread.run_sync`) under one
`trio.CapacityLimiter(1)` per provider, so at most one thread touches eth-tester at
a time and the trio loop never blocks. Cancellation waits for the call in flight to
finish (a transaction cannot be half-sent), then raises Cancelled.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from p2pfl.chain.client import ChainClient

_limiters: weakref.WeakKeyDictionary[object, trio.CapacityLimiter] = weakref.WeakKeyDictionary()


def provider_limiter(client: ChainClient) -> trio.CapacityLimiter:
    """One worker thread per provider (shared by every client of that provider)."""
    limiter = _limiters.get(client.w3.provider)
    if limiter is None:
        limiter = trio.CapacityLimiter(1)
        _limiters[client.w3.provider] = limiter
    return limiter


async def run_chain(client: ChainClient, fn: Callable[..., Any], *args: Any) -> Any:
    """Run a blocking chain call `fn(*args)` in the provider's worker thread."""
    return await trio.to_thread.run_sync(
        functools.partial(fn, *args), limiter=provider_limiter(client)
    )


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
