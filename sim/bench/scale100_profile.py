"""Where the shards' loop time goes at 10 and at 100 nodes (issue #13 item 5): the network
stack against our own code, and the loops' budget a node-round that the target leaves.

    python -m sim.bench scale100_profile    # py-spy attaches to the shards: root, or ptrace allowed

Runs `sim.bench scale100`'s comparison (`sim/scenarios/scale100.toml`, 10 and 100 nodes,
`--shards 2`) with py-spy (`py-spy record --nonblocking --format raw`, a pinned dev
dependency) sampling each shard process from the first commit to the end: the rounds that
the CPU figures cover. A sample counts for the network stack (py-libp2p, trio, Noise,
protobuf, multiaddr and our `p2pfl/net/*_tuning.py` patches of them) or for our own code
(p2pfl, sim) by its innermost frame in either; frames of the standard library, numpy, torch
and the hashing, signature and sealing libraries count for their caller; idle samples (an
epoll wait, an idle worker thread) are dropped. Prints for each size the shares and what they
come to a node-round (the share x the loops' CPU a node-round), then the target's budget: the
loops' CPU a node-round the 100-node run could spend for its median round to be
`TARGET_RATIO` x the 10-node median on the machine's cores, its training apart; and the
stack's share at 100 nodes over that budget (above 1: the stack alone does not fit, whatever
our own code costs). py-spy takes CPU of its own beside the shards: the medians run somewhat
slower than in `sim.bench scale100`, which makes the 10-node median and so the budget larger.

Measured 2026-12-07 (load 0.14 before, 3.5 after): 10 nodes 5/5, median 1.73 s, the loops
139 ms a node-round over rounds 2-5 -- the stack 62.6% of their busy samples (87 ms), our code
35.0% (49 ms), the rest 2.4%; 100 nodes 5/5, median 23.3 s (12.9 s without py-spy an hour
earlier), the loops 215 ms a node-round -- the stack 59.0% (127 ms), ours 39.5% (85 ms), the
rest 1.5%; training 2.48 core-s a round at 100 nodes. The budget: (2 x 2 cores x 1.73 s - 2.48
core-s) / 100 = **44 ms a node-round**; the stack alone takes **2.9x** that at 100 nodes and
**2.0x** at its 10-node cost. So the target needs py-libp2p's work for a node's round to cost
half of what it costs in the 10-node run, with all of our own code free besides.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from sim.bench import BenchError, figure
from sim.bench.scale100 import (
    CORES,
    DEFAULT_SHARDS,
    NODE_COUNTS,
    SCENARIO,
    SHARDS_ENV,
    TARGET_RATIO,
    _run,
)

PREFIX = "scale100_profile"
# Samples a second per shard process: ~7,000 over a 100-node run's rounds 2-5.
RATE_HZ = 50
# How long py-spy has to write its samples once its shard is gone, before it is interrupted.
FINISH_TIMEOUT_S = 30.0
# Packages of the network stack (paths as py-spy prints them, relative to site-packages).
STACK_PACKAGES = (
    "libp2p/",
    "trio/",
    "multiaddr/",
    "google/protobuf/",
    "cryptography/",
    "noise/",
    "multiformats/",
    "outcome/",
    "sniffio/",
    "anyio/",
    "base58/",
    "varint/",
    "exceptiongroup/",
    "async_service/",
    "multihash/",
    "netaddr/",
)
# Our patches of the stack's code count for the stack.
STACK_PATCHES = re.compile(r"^p2pfl/net/\w+_tuning\.py$")
OUR_PACKAGES = ("p2pfl/", "sim/")
# Leaves of a thread with nothing to do: the loop's epoll wait, an idle worker thread.
IDLE_LEAVES = (
    "EpollIOManager.get_events (trio/_core/_io_epoll.py:",
    "WorkerThread._work (trio/_core/_thread_cache.py:211)",
)
KINDS = ("stack", "ours", "other")
_FRAME_PATH = re.compile(r"\(([^():]+):\d+\)$")


def classify(stack: str) -> str | None:
    """ "stack", "ours" or "other" for one py-spy raw sample (frames root first, `;` between
    them), by its innermost frame in a known package; None for an idle sample."""
    frames = [f for f in stack.split(";") if f and not f.startswith("process ")]
    if not frames or frames[-1].startswith(IDLE_LEAVES):
        return None
    for frame in reversed(frames):
        found = _FRAME_PATH.search(frame)
        if found is None:
            continue
        path = found.group(1)
        if STACK_PATCHES.match(path) or path.startswith(STACK_PACKAGES):
            return "stack"
        if path.startswith(OUR_PACKAGES):
            return "ours"
    return "other"


def split_samples(lines: Iterable[str]) -> Counter[str]:
    """Samples by kind (`classify`) over py-spy raw lines (`STACK COUNT`); idle ones left out."""
    out: Counter[str] = Counter()
    for line in lines:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if not stack:
            continue
        kind = classify(stack)
        if kind is not None:
            out[kind] += int(count)
    return out


def py_spy() -> str:
    """The py-spy executable: the environment's, else one on PATH; BenchError without."""
    here = Path(sys.executable).parent / "py-spy"
    found = str(here) if here.exists() else shutil.which("py-spy")
    if found is None:
        raise BenchError("py-spy not found: `make setup` installs it (a dev dependency)")
    return found


class Profiler:
    """py-spy on each shard process from `attach` until the process ends."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.exe = py_spy()
        self.running: list[tuple[subprocess.Popen[bytes], Path, Path]] = []

    def attach(self, pids: list[int]) -> None:
        for pid in pids:
            out, log = self.folder / f"{pid}.txt", self.folder / f"{pid}.log"
            with log.open("wb") as log_file:
                process = subprocess.Popen(
                    [self.exe, "record", "--pid", str(pid), "--nonblocking"]
                    + ["--rate", str(RATE_HZ), "--format", "raw", "--output", str(out)],
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                )
            self.running.append((process, out, log))

    def finish(self) -> Counter[str]:
        """Once the shards are gone: the samples by kind over all of them."""
        if not self.running:
            raise BenchError("no commit was seen: py-spy never attached")
        total: Counter[str] = Counter()
        for process, out, log in self.running:
            try:
                process.wait(timeout=FINISH_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.send_signal(signal.SIGINT)  # py-spy writes what it has, then exits
                process.wait(timeout=FINISH_TIMEOUT_S)
            if not out.exists():
                said = log.read_text(errors="replace")[-1000:]
                raise BenchError(f"py-spy wrote no samples (exit {process.returncode}): {said}")
            with out.open() as lines:
                total += split_samples(lines)
        return total


def run() -> None:
    shards = int(os.environ.get(SHARDS_ENV) or DEFAULT_SHARDS)
    py_spy()  # before the runs: no tool, no bench
    figure(f"{PREFIX}-load-before", os.getloadavg()[0], f"(1-minute load average, {CORES} cores)")
    stack_ms: dict[int, float] = {}
    medians: dict[int, float] = {}
    training: dict[int, float] = {}
    for nodes in NODE_COUNTS:
        with tempfile.TemporaryDirectory(prefix="p2pfl-profile-") as folder:
            profiler = Profiler(Path(folder))
            got = _run(PREFIX, SCENARIO, nodes, shards, on_first_commit=profiler.attach)
            samples = profiler.finish()
        if got["cpu"] is None or got["median"] is None:
            raise BenchError(f"{nodes} nodes: no CPU figures or no rounds")
        total_cpu, loops_cpu = got["cpu"]
        medians[nodes] = got["median"]
        training[nodes] = total_cpu - loops_cpu
        per_node_ms = loops_cpu / nodes * 1000
        counted = sum(samples.values())
        if not counted:
            raise BenchError(f"{nodes} nodes: py-spy took no busy samples")
        name = f"{PREFIX}-n{nodes}"
        for kind in KINDS:
            share = samples[kind] / counted
            figure(
                f"{name}-{kind}-share",
                share,
                f"of the loops' busy samples ({counted}; {share * per_node_ms:.0f} ms of the "
                f"loops' {per_node_ms:.0f} ms a node-round)",
            )
        stack_ms[nodes] = samples["stack"] / counted * per_node_ms
    small, large = NODE_COUNTS
    budget_ms = (TARGET_RATIO * CORES * medians[small] - training[large]) / large * 1000
    figure(
        f"{PREFIX}-budget-per-node-round",
        budget_ms,
        f"ms of the loops a node-round at {large} nodes for a median round of "
        f"{TARGET_RATIO:g} x the {small}-node one ({medians[small]:.2f} s) on {CORES} cores, "
        f"the {large}-node run's training ({training[large]:.2f} core-s a round) apart",
    )
    figure(
        f"{PREFIX}-stack-over-budget",
        stack_ms[large] / budget_ms,
        f"(the network stack's {stack_ms[large]:.0f} ms a node-round at {large} nodes over "
        f"the budget; {stack_ms[small] / budget_ms:.2f} with its cost at {small} nodes: "
        f"above 1, the stack alone does not fit whatever our own code costs)",
    )
    figure(f"{PREFIX}-load-after", os.getloadavg()[0], "(1-minute load average)")
