"""Memory of the Flower experiment as OS processes: per-node and process-tree RSS / PSS.

    python -m sim.bench footprint          # P2PFL_FOOTPRINT_ROUNDS=N to change the 3 rounds

Runs `sim/scenarios/flower.toml` in `--processes` mode (10 node processes, anvil, this
process as the parent) for a few rounds, sampling every process of the tree from /proc
each `SAMPLE_S`: VmHWM (peak RSS, kept by the kernel) and PSS (smaps_rollup: shared pages
are split between the processes mapping them, so a tree's PSS sums to what it really
occupies; its RSS counts shared libraries once per process). Prints `figure: value unit`
lines; the issue's targets (#13) are <= 400 MiB peak RSS per node, <= 1.5 GB tree PSS.

The parent holds neither the data nor torch: the data is cut, and each round's model
evaluated and the centralised reference trained, in helpers (roles "data", "evaluate")
forked before the nodes start and after they stopped (`sim.processes.in_helper`).

Measured (2 cores, 3 rounds): before node processes mapped their own partition, forked
from a preloading server and dropped torch.optim, 757 MiB mean / 797 MiB max node peak
RSS and 7.3 GB tree PSS; after, 359 / 377 MiB and 2.15 GB, of which the ten nodes 1.50 GB
and the parent (the whole dataset's decode, torch, the reference) 662 MiB. Then with the
parent orchestrating only (its peak PSS 107 MiB: web3, numpy; no torch), training
copying one batch at a time out of the partition map and unmapping its pages after each
batch, and glibc's mmap threshold held fixed with a malloc_trim per round (machine load
7-12): node peak RSS 325 MiB mean / 337 max, nodes' PSS 1.12 GB, tree PSS 1.34 GB.
2026-12-07: 320 / 323 MiB, nodes' PSS 1,148 MiB, tree PSS 1.429 GB; then, with each training
under malloc settings of its own (`sim.node_proc.malloc_for_training`: a fixed 128 KiB mmap
threshold made every conv batch buffer a fresh mapping, and LeNet-5 trained ~2x slower;
restored, the heap trimmed, after each training): 322 / 327 MiB, nodes' PSS 1,160 MiB, tree PSS
1.443 GB, and the experiment's rounds 5.3-7.5 s against 9.0-11.8 s (two runs of 3 rounds
each way, the same deltas).
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from pathlib import Path

from sim.bench import ROOT_DIR, BenchError, figure

SCENARIO = ROOT_DIR / "sim" / "scenarios" / "flower.toml"
ROUNDS_ENV = "P2PFL_FOOTPRINT_ROUNDS"
# Three rounds: start-up, a first and a steady-state round (training, aggregation and
# the model fetches all peak within a round); about three minutes on 2 cores.
DEFAULT_ROUNDS = 3
# PSS is a snapshot, not a peak: sampled this often (smaps_rollup of 12 processes is cheap).
SAMPLE_S = 0.5
KIB = 1024
MIB = 1024 * 1024


def _descendants(root: int) -> list[int]:
    """Every live process under `root` (by parent pid, read from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def _pss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def _role(pid: int) -> str:
    """ "node<I>" for a node process, "forkserver" for the server they fork from, "data" /
    "evaluate" for the parent's helpers (`sim.processes.in_helper`), else the program's
    name (anvil, ...)."""
    from sim.node_proc import PROCESS_NAME_PREFIX
    from sim.processes import HELPER_NAME_PREFIX

    comm = Path(f"/proc/{pid}/comm").read_text().strip()
    if comm.startswith(PROCESS_NAME_PREFIX):
        return "node" + comm[len(PROCESS_NAME_PREFIX) :]
    if comm.startswith(HELPER_NAME_PREFIX):
        return comm[len(HELPER_NAME_PREFIX) :]
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    words = [a.decode(errors="replace") for a in argv if a]
    if "sim.node_proc" in words and "--index" in words:  # started as `python -m sim.node_proc`
        return f"node{words[words.index('--index') + 1]}"
    if any("forkserver" in w for w in words):
        return "forkserver"
    return Path(words[0]).name if words else f"pid{pid}"


class Sampler(threading.Thread):
    """Samples the tree under this process until stopped: per-process peak RSS (VmHWM) and
    the peak over samples of the summed PSS and RSS (this process included)."""

    def __init__(self) -> None:
        super().__init__(daemon=True, name="footprint-sampler")
        self.stop_event = threading.Event()
        self.peak_rss_kib: dict[str, int] = {}  # role -> max VmHWM over its incarnations
        self.peak_pss_kib: dict[str, int] = {}  # role -> max sampled PSS
        self.tree_pss_kib = 0
        self.tree_rss_kib = 0
        self.nodes_pss_kib = 0
        self.samples = 0

    def run(self) -> None:
        me = os.getpid()
        while not self.stop_event.wait(SAMPLE_S):
            pss_sum = rss_sum = nodes_pss = 0
            for pid in [me, *_descendants(me)]:
                try:
                    role = "parent" if pid == me else _role(pid)
                    hwm, rss, pss = (
                        _status_kib(pid, "VmHWM"),
                        _status_kib(pid, "VmRSS"),
                        _pss_kib(pid),
                    )
                except (OSError, ValueError, IndexError):
                    continue  # the process ended between listing and reading
                self.peak_rss_kib[role] = max(self.peak_rss_kib.get(role, 0), hwm)
                self.peak_pss_kib[role] = max(self.peak_pss_kib.get(role, 0), pss)
                pss_sum += pss
                rss_sum += rss
                if role.startswith("node"):
                    nodes_pss += pss
            self.tree_pss_kib = max(self.tree_pss_kib, pss_sum)
            self.tree_rss_kib = max(self.tree_rss_kib, rss_sum)
            self.nodes_pss_kib = max(self.nodes_pss_kib, nodes_pss)
            self.samples += 1


def run() -> None:
    from sim.processes import run_processes
    from sim.scenario import load_scenario

    rounds = int(os.environ.get(ROUNDS_ENV) or DEFAULT_ROUNDS)
    scenario = load_scenario(SCENARIO, {"rounds": rounds})
    sampler = Sampler()
    sampler.start()
    try:
        with tempfile.TemporaryDirectory(prefix="p2pfl-footprint-") as runs:
            run_dir = run_processes(scenario, runs, quiet=True)
            summary = json.loads((run_dir / "summary.json").read_text())
    finally:
        sampler.stop_event.set()
        sampler.join()
    nodes = sorted(
        (r for r in sampler.peak_rss_kib if r.startswith("node")), key=lambda r: int(r[4:])
    )
    if not nodes:
        raise BenchError("no node process was sampled")
    for role in nodes:
        figure(f"footprint-{role}-peak-rss", sampler.peak_rss_kib[role] / KIB, "MiB")
    for role in sorted(set(sampler.peak_rss_kib) - set(nodes)):
        figure(f"footprint-{role}-peak-rss", sampler.peak_rss_kib[role] / KIB, "MiB")
        figure(f"footprint-{role}-peak-pss", sampler.peak_pss_kib[role] / KIB, "MiB")
    node_peaks = [sampler.peak_rss_kib[r] for r in nodes]
    node_pss = [sampler.peak_pss_kib[r] for r in nodes]
    figure("footprint-rounds", rounds, "rounds")
    figure("footprint-rounds-committed", summary["rounds_committed"], f"of {rounds}")
    figure("footprint-accuracy", summary["final_accuracy"], "(test set, last round)")
    figure("footprint-reference-accuracy", summary["reference_accuracy"], "(centralised)")
    figure("footprint-parent-imported-torch", int(summary["parent_imported_torch"]), "(0: no)")
    figure("footprint-samples", sampler.samples, f"samples every {SAMPLE_S} s")
    figure("footprint-node-peak-pss-max", max(node_pss) / KIB, "MiB")
    figure("footprint-nodes-pss-peak", sampler.nodes_pss_kib / KIB, "MiB (10 nodes, summed)")
    figure("footprint-tree-rss-peak", sampler.tree_rss_kib * KIB / 1e9, "GB (summed RSS)")
    figure("footprint-tree-pss-peak", sampler.tree_pss_kib * KIB / 1e9, "GB (target <= 1.5)")
    figure("footprint-node-peak-rss-mean", sum(node_peaks) / len(node_peaks) / KIB, "MiB")
    figure("footprint-node-peak-rss-max", max(node_peaks) / KIB, "MiB (target <= 400)")
