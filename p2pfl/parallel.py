"""A small thread pool for the aggregation kernels' per-coordinate passes.

`p2pfl.core` is pure and has no threads: its kernels take a `Parallel` map
(`p2pfl.core.aggregate.kernels.Parallel`) and default to running in the calling thread.
This module provides the map that the node, the simulator and the benchmarks pass in:
`threaded` (thread count by vector size and usable CPUs) or `ThreadPoolMap(threads=k)`.

A pass over p coordinates is cut into disjoint contiguous ranges (boundaries on
multiples of kernels.BLOCK) that the calling thread and k - 1 pool workers take in
turn; numpy ufuncs release the GIL. Each coordinate is computed by the same operations
whichever thread takes it, so the output bytes do not depend on the thread count.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from p2pfl.core.aggregate.kernels import BLOCK
from p2pfl.errors import AggregationError

# Most threads a per-coordinate pass uses (further capped by the CPUs this process may
# run on). One thread is bound by its own L2 bandwidth (FedAvg's widen/multiply/add
# passes), so more cores help until the shared memory bus is the limit, a few cores on
# a laptop; and a committee member should leave cores to everything else.
MAX_THREADS = 4

# Fewest coordinates per thread before a pass is split. A pool hand-off costs tens of
# microseconds; FedAvg spends ~0.5 ms per input vector on 512 Ki coordinates, so only
# large models split, and small vectors (every test vector) stay on the caller.
PARALLEL_MIN_PER_THREAD = 1 << 19

# Ranges per thread in a split pass, handed out in turn: on a loaded machine a thread
# that loses its core takes fewer ranges instead of holding up the pass. 8 keeps each
# range >= 64 Ki coordinates (many blocks) at the smallest split size.
SHARES_PER_THREAD = 8

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def forget_pool() -> None:
    """After fork(): the inherited pool has no threads and the lock may be held."""
    global _pool, _pool_lock
    _pool = None
    _pool_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=forget_pool)


def usable_cpus() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def get_pool() -> ThreadPoolExecutor:
    """The process-wide pool (MAX_THREADS - 1 workers, started lazily)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            # The calling thread works too, so MAX_THREADS - 1 workers.
            _pool = ThreadPoolExecutor(
                max_workers=MAX_THREADS - 1, thread_name_prefix="p2pfl-aggregate"
            )
        return _pool


def thread_count(p: int, threads: int | None) -> int:
    """Threads for a pass over p coordinates: `threads` if given, else by size and CPUs."""
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise AggregationError(f"threads must be an integer >= 1 or None, got {threads!r}")
        return max(1, min(threads, -(-p // BLOCK)))
    return max(1, min(MAX_THREADS, usable_cpus(), p // PARALLEL_MIN_PER_THREAD))


def split(p: int, k: int) -> list[tuple[int, int]]:
    """k disjoint contiguous ranges covering [0, p), boundaries on multiples of BLOCK."""
    blocks = -(-p // BLOCK)
    cuts = [min(p, (blocks * i // k) * BLOCK) for i in range(k + 1)]
    return [(a, b) for a, b in itertools.pairwise(cuts) if a < b]


class ThreadPoolMap:
    """A `Parallel` map on the module's pool: `threads` threads (None: by size and CPUs)."""

    def __init__(self, threads: int | None = None) -> None:
        if threads is not None:
            thread_count(BLOCK, threads)  # validate now, not in the middle of a round
        self.threads = threads

    def __repr__(self) -> str:
        return f"ThreadPoolMap(threads={self.threads!r})"

    def __call__(self, p: int, kernel: Callable[[int, int], None]) -> None:
        """Run `kernel(lo, hi)` over disjoint ranges covering [0, p), in parallel if worth it.

        The coordinates are cut into SHARES_PER_THREAD ranges per thread that the calling
        thread and k - 1 pool workers take in turn, so a thread slowed by other processes
        takes fewer of them.
        """
        k = thread_count(p, self.threads)
        if k == 1:
            kernel(0, p)
            return
        ranges = iter(split(p, k * SHARES_PER_THREAD))
        lock = threading.Lock()

        def work() -> None:
            while True:
                with lock:
                    r = next(ranges, None)
                if r is None:
                    return
                kernel(*r)

        pool = get_pool()
        futures: list[Future[None]] = [pool.submit(work) for _ in range(k - 1)]
        try:
            work()
        finally:
            for f in futures:  # wait for all (they write into the caller's output) ...
                f.exception()
        for f in futures:  # ... then re-raise the first failure, if any
            f.result()


# The map to pass to p2pfl.core.aggregate: threads by vector size and usable CPUs.
threaded = ThreadPoolMap()
