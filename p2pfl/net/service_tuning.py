"""A fix to py-libp2p 0.8.1's task manager (`libp2p.tools.anyio_service`), measured on our
simulations.

**A task's parent found by lookup, not by walking the whole task tree.** Every
`manager.run_task(...)` looks for the `FunctionTask` that is calling it
(`TrioManager._find_parent_task`) by iterating over *every* task the service holds, its
children and theirs, comparing trio tasks. Gossipsub calls `run_task` for every RPC it reads
(`Pubsub.continuously_read_stream`), and a pubsub service holds one long-lived task per
peer stream and more: the walk is O(tasks) per message. With 50 nodes in one process (a
100-node simulation in two shards) it was 10% of the shard's CPU (py-spy).

Fix: remember, per manager, the `FunctionTask` found for a trio task (weakly: a finished
trio task's entry goes with it). A remembered task is used only while it has not finished
and still names that same trio task, which is exactly when the walk would find it (a trio
task runs one `FunctionTask`; a `FunctionTask` leaves the tree when it finishes). Otherwise
the library's walk runs, as before, and its answer is remembered.

Version-guarded like `yamux_tuning`: replaced only for a libp2p version this was read
against.
"""

from __future__ import annotations

import functools
import weakref
from typing import Any

from p2pfl.net.yamux_tuning import install_once


def make_remembered(find: Any) -> Any:
    """Wrap `TrioManager._find_parent_task(self, trio_task)` with the per-manager memo."""

    @functools.wraps(find)
    def _find_parent_task(self: Any, trio_task: Any) -> Any:
        memo = self.__dict__.get("_p2pfl_parents")
        if memo is None:
            memo = self.__dict__["_p2pfl_parents"] = weakref.WeakKeyDictionary()
        task = memo.get(trio_task)
        if task is not None and not task.is_done and task.trio_task is trio_task:
            return task
        task = find(self, trio_task)
        if task is not None:
            memo[trio_task] = task
        return task

    return _find_parent_task


def apply() -> bool:
    """Install the fix once per process; False if this libp2p is untested."""
    return install_once(
        __name__, "every task started walks the service's whole task tree", _install
    )


def _install() -> None:
    from libp2p.tools.anyio_service.trio_manager import TrioManager

    TrioManager._find_parent_task = make_remembered(  # type: ignore[method-assign]
        TrioManager._find_parent_task
    )
