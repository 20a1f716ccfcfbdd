"""One simulated node in its own OS process (`--processes` mode): `sim.processes` forks it
from a fork server that preloaded its imports (`forked_main`); by hand it runs as

    P2PFL_SIM_NODE_KEY=<hex> python -m sim.node_proc --index I --manifest manifest.json \\
        --rpc URL --data-dir DIR --listen ADDR [--bootstrap ADDR ...]

The node is the laptop's `p2pfl.node.Node` on a real libp2p host; its data is partition I of
the scenario, cut by the parent exactly as the in-process simulation cuts it
(`sim.data.load_data`) and written to DIR (`sim.data.save_partition`): the child
memory-maps that file and never loads the whole dataset. The private key comes from the
environment, never argv (argv is visible to every local user).

Files in DIR (kept across restarts, like a laptop's data dir): the partition
(`partition-x.npy`, `partition-y.npy`), `blocks/` and `state/`
(block store, follower cursor), `status.json` (as `p2pfl node start` writes it),
`rounds.jsonl` (one RoundLog per committed round, appended) and, when the node has seen
its last round, `final.json` (counters, bytes sent). The process then keeps serving blocks
to late fetchers until the parent stops it (SIGINT).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

KEY_ENV = "P2PFL_SIM_NODE_KEY"
ROUNDS_FILE = "rounds.jsonl"
FINAL_FILE = "final.json"
READY_FILE = "ready"
# A forked node process's name (/proc/<pid>/comm): "p2pfl-node<I>".
PROCESS_NAME_PREFIX = "p2pfl-node"
# How long a child waits for its bootstrap peers' ports to open: its elders start in
# parallel and need a few seconds of imports and data loading first.
BOOTSTRAP_WAIT_S = 120.0
# How often a node reads the chain for commits: a tiny scenario's round lasts about a
# second (sim.processes slows it down for many nodes).
DEFAULT_FOLLOW_POLL_S = 0.2


def roundlog_to_dict(entry: Any) -> dict[str, Any]:
    """A RoundLog as JSON-able data (bytes as hex)."""
    out = dataclasses.asdict(entry)
    out["committee"] = [a.hex() for a in entry.committee]
    out["included"] = [a.hex() for a in entry.included]
    out["rejected"] = [[a.hex(), why] for a, why in entry.rejected]
    return out


def roundlog_from_dict(raw: dict[str, Any]) -> Any:
    """Inverse of `roundlog_to_dict`."""
    from p2pfl.node import RoundLog

    return RoundLog(
        **{
            **raw,
            "committee": tuple(bytes.fromhex(a) for a in raw["committee"]),
            "included": tuple(bytes.fromhex(a) for a in raw["included"]),
            "rejected": tuple((bytes.fromhex(a), why) for a, why in raw["rejected"]),
        }
    )


def read_round_logs(data_dir: Path) -> dict[int, Any]:
    """round -> RoundLog from a child's `rounds.jsonl` (a restarted node's later line wins)."""
    path = Path(data_dir) / ROUNDS_FILE
    logs: dict[int, Any] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                entry = roundlog_from_dict(json.loads(line))
                logs[entry.round] = entry
    return logs


async def _wait_for_ports(addrs: list[str], timeout_s: float) -> None:
    """Until every bootstrap multiaddr's TCP port accepts connections (or time out).

    Awaited, not blocking: a shard process (`sim.shard_proc`) starts many nodes in one
    event loop, and a node waiting for a peer of another shard must not keep the others
    of its own shard from opening their ports (two shards would wait for each other)."""
    import trio

    with trio.move_on_after(timeout_s):
        for addr in addrs:
            parts = addr.split("/")
            host, port = parts[2], int(parts[4])
            while True:
                try:
                    stream = await trio.open_tcp_stream(host, port)
                except OSError:
                    await trio.sleep(0.2)
                    continue
                await stream.aclose()
                break


async def run_child(args: argparse.Namespace, key: bytes) -> None:
    """Run the node until the parent's SIGINT/SIGTERM, then close the host cleanly."""
    import trio

    async with trio.open_nursery() as nursery:
        nursery.start_soon(cancel_on_signal, nursery.cancel_scope)
        await run_node(args, key)


async def cancel_on_signal(scope: Any) -> None:
    import trio

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            scope.cancel()
            return


def gossip_degrees(degree: int) -> dict[str, Any]:
    """NetConfig's options for gossipsub mesh degree `degree`: D_low ceil(2D/3) and D_high
    2D (go-libp2p's 6/4/12 for 6)."""
    return {"degree": degree, "degree_low": -(-2 * degree // 3), "degree_high": 2 * degree}


async def run_node(
    args: argparse.Namespace,
    key: bytes,
    cpu_limiter: Any = None,
    peer_reads: Any = None,
    commit_reads: Any = None,
    trainer: Any = None,
) -> None:
    """One node (`main`'s arguments) until cancelled. The nodes of one shard process
    (`sim.shard_proc`) share `cpu_limiter` (a trio.CapacityLimiter: their aggregation
    threads take turns on the shard's core), `peer_reads` (a SharedRegistryReads: the
    registry's peer IDs, read once for all), `commit_reads` (a SharedCommitReads: the chain
    polls for commits) and a training process (`trainer`: a Node trainer that runs this
    node's training there); None: the node's own."""
    import trio

    from p2pfl.cli.launch import Launch, launch_node
    from p2pfl.core.identity import NodeIdentity
    from p2pfl.files import write_text_atomic
    from p2pfl.manifest import TaskManifest
    from sim.data import load_partition

    data_dir = Path(args.data_dir)
    data = load_partition(data_dir)
    import p2pfl.train.trainer  # noqa: F401 - torch's import (seconds) before round 1, not inside it

    await _wait_for_ports(args.bootstrap, BOOTSTRAP_WAIT_S)
    rounds_file = (data_dir / ROUNDS_FILE).open("a")

    def on_round(entry: Any) -> None:
        rounds_file.write(json.dumps(roundlog_to_dict(entry)) + "\n")
        rounds_file.flush()
        trim_malloc()

    async def before_join(net: Any) -> None:
        (data_dir / READY_FILE).write_text(str(os.getpid()))
        # Round 1 starts when every node is up (the parent's go file), as in the in-process
        # mode, so that it measures the protocol rather than staggered start-ups.
        while args.go_file and not Path(args.go_file).exists():
            await trio.sleep(0.1)

    async def after_run(node: Any, net: Any) -> None:
        rounds_file.close()
        final = {
            "round": node.machine.round,
            "counters": {**dict(node.machine.counters), **node.counters},
            "bytes_sent": int(net.metrics().get("bytes_sent", 0) or 0),
            "net": net.metrics(),
        }
        write_text_atomic(data_dir / FINAL_FILE, json.dumps(final))
        print(f"finished round {node.machine.round}", flush=True)
        await trio.sleep_forever()  # keep serving blocks until the parent stops us

    manifest = TaskManifest.load(args.manifest)
    await launch_node(
        Launch(
            identity=NodeIdentity(key),
            manifest=manifest,
            rpc_url=args.rpc,
            data=data,
            data_dir=data_dir,
            listen=args.listen,
            bootstrap=tuple(args.bootstrap),
            rounds=args.rounds,
            dht=False,
            client_index=args.index,
            **({"status_every_s": args.status_every_s} if args.status_every_s else {}),
            node_options={
                "follow_poll_s": args.follow_poll_s,
                **({"cpu_limiter": cpu_limiter} if cpu_limiter is not None else {}),
                **({"peer_reads": peer_reads} if peer_reads is not None else {}),
                **({"commit_reads": commit_reads} if commit_reads is not None else {}),
                # Its own training (no shard's trainer) under the training's allocator
                # settings, not the node's.
                **({"trainer": trainer} if trainer is not None else {}),
                **({"train_context": malloc_for_training} if trainer is None else {}),
                **_heartbeat_options(args.heartbeat_interval_s),
            },
            net_options={
                **({"sync_interval_s": args.sync_interval_s} if args.sync_interval_s else {}),
                **({"heartbeat_s": args.gossip_heartbeat_s} if args.gossip_heartbeat_s else {}),
                **(gossip_degrees(args.gossip_degree) if args.gossip_degree else {}),
                **({"known_peers": _address_book(args.address_book)} if args.address_book else {}),
            },
            check_registration=False,
            on_round=on_round,
            before_join=before_join,
            after_run=after_run,
        )
    )


@functools.cache
def _address_book(path: str) -> tuple[str, ...]:
    """The run's address book (read once per process: a shard's nodes share it)."""
    return tuple(json.loads(Path(path).read_text()))


def _heartbeat_options(interval_s: float) -> dict[str, Any]:
    """Node options for a heartbeat every `interval_s` (0: the node's defaults): the live
    window stays as many beats long as the default's."""
    from p2pfl.core.round import RoundConfig
    from p2pfl.node.heartbeat import HEARTBEAT_INTERVAL_S

    if not interval_s:
        return {}
    beats = RoundConfig.live_window_s / HEARTBEAT_INTERVAL_S
    return {
        "heartbeat_interval_s": interval_s,
        "round_overrides": {"live_window_s": beats * interval_s},
    }


def set_process_name(name: str) -> None:
    """Name this process in /proc/self/comm (what ps and `sim.bench footprint` show): a
    forked node otherwise carries its fork server's command line."""
    try:
        Path("/proc/self/comm").write_text(name[:15])  # the kernel keeps 15 bytes
    except OSError:
        pass  # not Linux: only the name is lost


# Set (to anything) in the parent's environment: every forked node process runs under
# cProfile (CPU time, main thread) and leaves `<its log>.prof` (pstats reads it).
PROFILE_ENV = "P2PFL_SIM_PROFILE"


# glibc's mallopt parameters (malloc.h): the number of malloc arenas; the size from which
# an allocation gets its own mapping (returned to the system when freed); the free space
# at the heap's top above which it is given back.
M_ARENA_MAX = -8
M_MMAP_THRESHOLD = -3
M_TRIM_THRESHOLD = -1
# glibc's default threshold, held fixed: glibc otherwise raises it (up to 32 MiB) each time
# a mapped block is freed, after which the node's freed models and messages stay in its
# heap (tens of MiB of a committee member's private memory by round 2, measured).
MMAP_THRESHOLD_BYTES = 128 * 1024
# glibc's default trim threshold, which it also stops adjusting once the one above is set;
# named so that `tune_malloc` can put it back after `malloc_for_training`.
TRIM_THRESHOLD_BYTES = 128 * 1024


@functools.cache
def glibc() -> Any:
    """The C library, loaded once (each training sets and resets malloc's settings)."""
    import ctypes

    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None  # not glibc: the tuning below is skipped


def tune_malloc() -> None:
    """Make glibc serve every thread from one malloc arena (the node trains in worker
    threads, and each would otherwise keep an arena of its own holding the freed tensors
    of earlier rounds: 20-40 MiB of private memory per arena, measured), and keep large
    blocks in their own mappings (`MMAP_THRESHOLD_BYTES`). No-op elsewhere."""
    libc = glibc()
    if libc is not None:
        libc.mallopt(M_ARENA_MAX, 1)
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
        libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)


# A process that only trains (a shard's training process): large blocks from the heap, and
# the heap's free top kept. Under the node's fixed 128 KiB threshold every activation
# buffer of a convolution's batch is a fresh mapping, zero-filled page by page, and the
# heap's top is given back whenever 128 KiB of it is free (glibc's trim threshold, which
# stops adjusting too once either threshold is set): LeNet-5 on 6,000 images took
# 1.3-1.4 s a call there against 0.55-0.7 s with these (one thread, this machine).
TRAINING_MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024  # glibc's own ceiling for its adjustment
TRAINING_TRIM_THRESHOLD_BYTES = 256 * 1024 * 1024


def tune_malloc_for_training() -> None:
    """Set a training-only process's malloc (see TRAINING_MMAP_THRESHOLD_BYTES): its
    buffers are reused from one batch to the next instead of mapped and faulted in anew.
    Its heap then holds about a training's peak working set. No-op elsewhere."""
    libc = glibc()
    if libc is not None:
        libc.mallopt(M_MMAP_THRESHOLD, TRAINING_MMAP_THRESHOLD_BYTES)
        libc.mallopt(M_TRIM_THRESHOLD, TRAINING_TRIM_THRESHOLD_BYTES)


@contextlib.contextmanager
def malloc_for_training() -> Iterator[None]:
    """Within: `tune_malloc_for_training`'s settings; after: the node's again
    (`tune_malloc`), and the heap's free pages given back. For a node process that trains in
    a worker thread beside its loop (glibc's settings are the whole process's): its batch
    buffers are reused instead of mapped anew, its footprint between trainings unchanged."""
    tune_malloc_for_training()
    try:
        yield
    finally:
        tune_malloc()
        trim_malloc()


def trim_malloc() -> None:
    """Give the heap's free pages back to the system (glibc's malloc_trim): once a round,
    after its training, aggregation and model fetches freed their buffers."""
    libc = glibc()
    if libc is not None:
        libc.malloc_trim(0)


def forked_main(argv: list[str], env: dict[str, str], log_path: str, netns: str = "") -> None:
    """A node process forked from `sim.processes`' fork server (`sim.node_preload` already
    imported): into network namespace `netns` if given (before any socket is opened),
    output to `log_path`, `env` (the key) added to the environment, then `main`."""
    import warnings

    if netns:
        from sim.netns import enter_netns

        enter_netns(netns)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os.environ.update(env)
    warnings.simplefilter("ignore")  # as `python -W ignore` would
    tune_malloc()
    set_process_name(f"{PROCESS_NAME_PREFIX}{argv[argv.index('--index') + 1]}")
    profile_to = os.environ.get(PROFILE_ENV)
    if not profile_to:
        sys.exit(main(argv))
    import cProfile

    profiler = cProfile.Profile(time.process_time)  # CPU time: a starved node's waits are not work
    try:
        sys.exit(profiler.runcall(main, argv))
    finally:
        profiler.dump_stats(f"{log_path}.prof")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """`main`'s arguments (also each node's in a shard process)."""
    parser = argparse.ArgumentParser(prog="python -m sim.node_proc", description=__doc__)
    parser.add_argument("--index", type=int, required=True, help="node index: its training seed")
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--rpc", required=True)
    parser.add_argument(
        "--data-dir", required=True, help="node data dir, holding its partition (save_partition)"
    )
    parser.add_argument("--listen", required=True)
    parser.add_argument("--bootstrap", action="append", default=[])
    parser.add_argument(
        "--address-book",
        default="",
        help="a JSON list of every node's full multiaddr, remembered and not dialled (the "
        "simulation has no DHT: this is what the DHT would answer)",
    )
    parser.add_argument("--rounds", type=int, required=True)
    parser.add_argument(
        "--follow-poll-s",
        type=float,
        default=DEFAULT_FOLLOW_POLL_S,
        help="how often the node reads the chain for commits (seconds)",
    )
    parser.add_argument(
        "--status-every-s",
        type=float,
        default=None,
        help="how often the node rewrites its status.json (seconds; default: the node's)",
    )
    parser.add_argument(
        "--sync-interval-s",
        type=float,
        default=0.0,
        help="anti-entropy sync interval (seconds; 0: the node's default)",
    )
    parser.add_argument(
        "--gossip-heartbeat-s",
        type=int,
        default=0,
        help="gossipsub heartbeat (whole seconds; 0: the node's default)",
    )
    parser.add_argument(
        "--gossip-degree",
        type=int,
        default=0,
        help="gossipsub mesh degree D, D_low and D_high following it (0: the node's default)",
    )
    parser.add_argument(
        "--heartbeat-interval-s",
        type=float,
        default=0.0,
        help="seconds between heartbeats, the live window scaled alike (0: the node's default)",
    )
    parser.add_argument(
        "--go-file", default="", help="wait until this file exists before joining the task"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    key_hex = os.environ.pop(KEY_ENV, "")
    if not key_hex:
        print(f"sim.node_proc: error: no key in ${KEY_ENV}", file=sys.stderr)
        return 2
    import trio

    from p2pfl.logs import setup_logging

    setup_logging()
    try:
        trio.run(run_child, args, bytes.fromhex(key_hex))
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
