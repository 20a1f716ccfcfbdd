"""Stream notifications without a task per notifee (py-libp2p 0.8.1's `Swarm._notify`),
measured on our simulations.

**What it was.** Every stream opened or closed, on both ends, fans out to every registered
notifee (`Swarm.notify_opened_stream`, `notify_closed_stream`): a nursery is opened, one
task started per notifee, and the caller waits for them all. The notifees a node registers
(the swarm's tag store, the host's identify notifee, pubsub's) do nothing on stream events:
two return at once, pubsub's only passes a checkpoint. So each push, pull, sync or block
request paid four nurseries, ~12 task spawns and as many trips through the scheduler before
and after its bytes; on a loaded loop (100 simulated nodes on 2 cores) each trip waits for
every other runnable task.

**The fix.** For stream events only, notifees are awaited in turn on the caller's task (as
go-libp2p calls them, inline on the event path), and those whose handler for the event is
one of the library's own no-ops (those of `NO_OP_STREAM_NOTIFEES`) are skipped. Any other
notifee (e.g. an application's) is still called, its exception logged and not raised, as
before.
Connection and listen events keep the library's fan-out.

Version-guarded like `yamux_tuning`: installed only on a libp2p version this was read
against.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from p2pfl.net.yamux_tuning import install_once

log = logging.getLogger(__name__)

STREAM_EVENTS = ("opened_stream", "closed_stream")
# (module, class) of the library's notifees whose stream handlers do nothing (read against
# libp2p 0.8.1: `return None`, a docstring, or `await trio.lowlevel.checkpoint()`).
NO_OP_STREAM_NOTIFEES = (
    ("libp2p.network.tag_store", "TagStoreNotifee"),
    ("libp2p.host.basic_host", "_IdentifyNotifee"),
    ("libp2p.pubsub.pubsub_notifee", "PubsubNotifee"),
    ("libp2p.bitswap.client", "BitswapClient"),
)


def no_op_stream_handlers() -> frozenset[Any]:
    """The library's no-op stream handler functions (those of NO_OP_STREAM_NOTIFEES)."""
    import importlib

    found: set[Any] = set()
    for module_name, class_name in NO_OP_STREAM_NOTIFEES:
        try:
            cls = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError):
            continue
        found.update(getattr(cls, event) for event in STREAM_EVENTS if hasattr(cls, event))
    return frozenset(found)


def make_inline(notify: Any, no_ops: frozenset[Any]) -> Any:
    """Wrap `Swarm._notify(self, method, *args)`: stream events inline, no-ops skipped."""

    @functools.wraps(notify)
    async def _notify(self: Any, method: str, *args: Any) -> None:
        if method not in STREAM_EVENTS:
            await notify(self, method, *args)
            return
        for notifee in list(self.notifees):
            if getattr(type(notifee), method, None) in no_ops:
                continue
            try:
                await getattr(notifee, method)(self, *args)
            except Exception:
                log.exception("notifee %s.%s raised", type(notifee).__name__, method)

    return _notify


def apply() -> bool:
    """Install the fix once per process; False if this libp2p is untested."""
    return install_once(__name__, "every stream open and close starts a task per notifee", _install)


def _install() -> None:
    from libp2p.network.swarm import Swarm

    Swarm._notify = make_inline(Swarm._notify, no_op_stream_handlers())  # type: ignore[method-assign]
