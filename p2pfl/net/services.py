"""Two helpers for py-libp2p's services, shared by the host and NAT traversal."""

from __future__ import annotations

import logging
from typing import Any

import trio

log = logging.getLogger("p2pfl.net")


async def run_service(service: Any, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Run a py-libp2p service (DHT, DCUtR, ...) in the caller's nursery until cancelled."""
    from libp2p.tools.anyio_service import background_trio_service

    async with background_trio_service(service):
        task_status.started()
        await trio.sleep_forever()


async def quietly(awaitable: Any, what: str = "") -> None:
    """Await a best-effort step (closing, stopping): its failure is logged at debug only."""
    try:
        await awaitable
    except Exception as exc:
        log.debug("%s%r", f"{what}: " if what else "", exc)
