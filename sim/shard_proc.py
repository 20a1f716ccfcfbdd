"""Several simulated nodes in one OS process (`--shards K` mode): `sim.processes` forks K
shard processes from its fork server, each running one trio loop that hosts its share of
the nodes with the very code a node process runs (`sim.node_proc.run_node`, the same
arguments, data dir and files: partition, status.json, rounds.jsonl, final.json).

Why: one interpreter cannot host 100 nodes fast enough (every host's crypto and streams
share its lock: issue #13), and 100 node processes do not fit two cores' memory and
scheduling; K interpreters, one per core, use both cores with the per-process cost paid K
times instead of 100. The nodes of a shard share one training process (forked by the shard
before its loop starts; it maps each node's partition file as the node would and runs
`train_local` on it, one node at a time: torch's Python work does not hold the loop's
interpreter lock, as threads would -- 600 images took ~60 ms in a thread beside the loop,
13.5 ms alone), one slot for aggregation (a trio CapacityLimiter of 1), the registry's peer
IDs (read once per shard, not once per node), the chain polls for commits
(`p2pfl.chain.follower.SharedCommitReads`: one head read serves them all) and their
process's stdout/stderr (the shard's log). The keys arrive as the
process's arguments through the fork server's pipe, never on a command line.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
import warnings
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from sim import GC_THRESHOLDS
from sim.node_proc import (
    PROFILE_ENV,
    cancel_on_signal,
    glibc,
    parse_args,
    run_node,
    set_process_name,
    tune_malloc,
    tune_malloc_for_training,
)

log = logging.getLogger("sim.shard")

# A forked shard process's name (/proc/<pid>/comm): "p2pfl-shard<K>"; its training
# process's: "p2pfl-train<K>".
SHARD_PROCESS_PREFIX = "p2pfl-shard"
TRAIN_PROCESS_PREFIX = "p2pfl-train"
# Aggregation threads running at once in a shard: one core's worth.
SHARD_CPU_SLOTS = 1
# linux/prctl.h: deliver a signal to this process when its parent dies.
PR_SET_PDEATHSIG = 1

# The training process's partitions (data dir -> Dataset), mapped on a node's first round.
_PARTITIONS: dict[str, Any] = {}


def _init_training_process(name: str, shard_pid: int) -> None:
    """The training process: named, killed with its shard (a shard killed outright leaves
    no orphan behind), deaf to the terminal's SIGINT (its shard stops it)."""
    set_process_name(name)
    tune_malloc_for_training()  # (forked from the shard: its node-sized settings inherited)
    libc = glibc()
    if libc is not None:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != shard_pid:  # the shard died before prctl took effect
        os._exit(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    warnings.simplefilter("ignore")
    import p2pfl.train.trainer  # noqa: F401 - torch's import, before round 1


def _ready() -> int:
    return os.getpid()


def _train_node(
    data_dir: str, model: str, model_kwargs: dict[str, Any], base: Any, cfg: Any, seed: int
) -> Any:
    """Node `data_dir`'s local training (`train_local`, one thread) in the training process."""
    from p2pfl.train.trainer import train_local
    from sim.data import load_partition

    data = _PARTITIONS.get(data_dir)
    if data is None:
        data = _PARTITIONS[data_dir] = load_partition(data_dir)
    return train_local(model, base, data, cfg, seed, model_kwargs=model_kwargs, num_threads=1)


class TrainingProcess:
    """The shard's training process (`ProcessPoolExecutor` of one worker), forked and
    warmed up (torch imported) when constructed: construct it before the shard's loop
    runs (no thread yet: the fork is safe, torch's import shared). One that died (killed,
    out of memory) is replaced on the next training that finds it broken, by spawn (the
    shard has threads by then), and that training runs again there, once."""

    def __init__(self, shard: int) -> None:
        self.shard = shard
        self.restarts = 0
        self._restarting = threading.Lock()  # (trainings that found it dead, at once)
        self.pool = self._start("fork")

    def _start(self, method: str) -> ProcessPoolExecutor:
        pool = ProcessPoolExecutor(
            max_workers=1,
            mp_context=multiprocessing.get_context(method),
            initializer=_init_training_process,
            initargs=(f"{TRAIN_PROCESS_PREFIX}{self.shard}", os.getpid()),
        )
        pool.submit(_ready).result()  # (warmed up: torch imported)
        return pool

    def pid(self) -> int:
        """The live training process's PID."""
        return int(self.pool.submit(_ready).result())

    def restart(self, broken: ProcessPoolExecutor) -> None:
        """Replace `broken` (unless another training did already); blocking."""
        with self._restarting:
            if self.pool is broken:
                broken.shutdown(wait=False, cancel_futures=True)
                self.restarts += 1
                log.warning("shard %d: training process died; starting another", self.shard)
                self.pool = self._start("spawn")

    def shutdown(self, wait: bool = False) -> None:
        self.pool.shutdown(wait=wait, cancel_futures=True)


async def wait_for(future: Future) -> Any:
    """`future`'s result, the waiting trio task woken by the future's callback (no thread
    waits on it). Cancelled, a future not started yet never runs (a running one ends
    unread)."""
    import trio

    token = trio.lowlevel.current_trio_token()
    done = trio.Event()

    def wake(_: Future) -> None:
        try:
            token.run_sync_soon(done.set)
        except trio.RunFinishedError:
            pass  # the loop is stopping: nobody waits any more

    future.add_done_callback(wake)
    try:
        await done.wait()
    except BaseException:
        future.cancel()
        raise
    return future.result()  # the job's own exception, if it raised


def shard_trainer(process: TrainingProcess, data_dir: str, model: str, kwargs: dict) -> Any:
    """A Node trainer (`p2pfl.node.roundlog.Trainer`) running `data_dir`'s training in the
    shard's training process: only the base weights go there and the result comes back
    (`wait_for`). A training the process died under runs again in its replacement, once."""
    import trio

    async def train(base: Any, cfg: Any, seed: int) -> Any:
        pool = process.pool
        args = (data_dir, model, kwargs, base, cfg, seed)
        try:
            return await wait_for(pool.submit(_train_node, *args))
        except BrokenProcessPool:
            await trio.to_thread.run_sync(process.restart, pool)
            return await wait_for(process.pool.submit(_train_node, *args))

    return train


async def run_shard(nodes: list[tuple[Any, bytes]], training: TrainingProcess) -> None:
    """Every (arguments, key) node of the shard in one nursery until SIGINT/SIGTERM; their
    training in the shard's `training` process."""
    import trio

    from p2pfl.chain.follower import SharedCommitReads
    from p2pfl.manifest import TaskManifest
    from p2pfl.node.peers import SharedRegistryReads

    cpu = trio.CapacityLimiter(SHARD_CPU_SLOTS)
    peer_reads = SharedRegistryReads()  # one task, one registry: read once for the shard
    commit_reads = SharedCommitReads()  # one chain: its head and commits read once too
    manifests: dict[str, Any] = {}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(cancel_on_signal, nursery.cancel_scope)
        for args, key in nodes:
            if args.manifest not in manifests:
                manifests[args.manifest] = TaskManifest.load(args.manifest)
            manifest = manifests[args.manifest]
            trainer = shard_trainer(
                training, str(args.data_dir), manifest.model, dict(manifest.model_kwargs)
            )
            nursery.start_soon(run_node, args, key, cpu, peer_reads, commit_reads, trainer)


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
    training = TrainingProcess(shard)
    profile_to = os.environ.get(PROFILE_ENV)
    try:
        if not profile_to:
            trio.run(run_shard, nodes, training)
        else:
            import cProfile

            profiler = cProfile.Profile(time.process_time)
            try:
                profiler.runcall(trio.run, run_shard, nodes, training)
            finally:
                profiler.dump_stats(f"{log_path}.prof")
    except KeyboardInterrupt:
        pass
    finally:
        # Joined, not just told to stop: once the shard is gone, so is its training process
        # (a training under way ends first; one stuck dies with the shard: PDEATHSIG).
        training.shutdown(wait=True)
    sys.exit(0)
