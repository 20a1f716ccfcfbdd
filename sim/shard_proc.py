"""Several simulated nodes in one OS process (`--shards K` mode): `sim.processes` forks K
shard processes from its fork server, each running one trio loop that hosts its share of
the nodes with the very code a node process runs (`sim.node_proc.run_node`, the same
arguments, data dir and files: partition, status.json, rounds.jsonl, final.json).

Why: one interpreter cannot host 100 nodes fast enough (every host's crypto and streams
share its lock: issue #13), and 100 node processes do not fit two cores' memory and
scheduling; K interpreters, one per core, use both cores with the per-process cost paid K
times instead of 100. The nodes of a shard share one training slot (a trio
CapacityLimiter of 1: their training and aggregation threads take turns on the shard's
core), the registry's peer IDs (read once per shard, not once per node), the chain polls
for commits (`p2pfl.chain.follower.SharedCommitReads`: one head read serves them all) and their
process's stdout/stderr (the shard's log). The keys arrive as the
process's arguments through the fork server's pipe, never on a command line.
"""

from __future__ import annotations

import gc
import os
import sys
import time
import warnings
from typing import Any

from sim import GC_THRESHOLDS
from sim.node_proc import (
    PROFILE_ENV,
    cancel_on_signal,
    parse_args,
    run_node,
    set_process_name,
    tune_malloc,
)

# A forked shard process's name (/proc/<pid>/comm): "p2pfl-shard<K>".
SHARD_PROCESS_PREFIX = "p2pfl-shard"
# Training and aggregation threads running at once in a shard: one core's worth.
SHARD_CPU_SLOTS = 1


async def run_shard(nodes: list[tuple[Any, bytes]]) -> None:
    """Every (arguments, key) node of the shard in one nursery until SIGINT/SIGTERM."""
    import trio

    from p2pfl.chain.follower import SharedCommitReads
    from p2pfl.node.peers import SharedRegistryReads

    cpu = trio.CapacityLimiter(SHARD_CPU_SLOTS)
    peer_reads = SharedRegistryReads()  # one task, one registry: read once for the shard
    commit_reads = SharedCommitReads()  # one chain: its head and commits read once too
    async with trio.open_nursery() as nursery:
        nursery.start_soon(cancel_on_signal, nursery.cancel_scope)
        for args, key in nodes:
            nursery.start_soon(run_node, args, key, cpu, peer_reads, commit_reads)


def forked_shard_main(shard: int, argvs: list[list[str]], keys: list[str], log_path: str) -> None:
    """A shard process forked from `sim.processes`' fork server: output to `log_path`, then
    the nodes of `argvs` (`sim.node_proc`'s arguments) with their hex `keys`, in one loop."""
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    warnings.simplefilter("ignore")  # as `python -W ignore` would
    tune_malloc()
    set_process_name(f"{SHARD_PROCESS_PREFIX}{shard}")
    import trio

    from p2pfl.logs import setup_logging

    setup_logging()
    gc.set_threshold(*GC_THRESHOLDS)
    nodes = [(parse_args(argv), bytes.fromhex(key)) for argv, key in zip(argvs, keys)]
    profile_to = os.environ.get(PROFILE_ENV)
    try:
        if not profile_to:
            trio.run(run_shard, nodes)
        else:
            import cProfile

            profiler = cProfile.Profile(time.process_time)
            try:
                profiler.runcall(trio.run, run_shard, nodes)
            finally:
                profiler.dump_stats(f"{log_path}.prof")
    except KeyboardInterrupt:
        pass
    sys.exit(0)
