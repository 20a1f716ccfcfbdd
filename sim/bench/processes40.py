"""40 nodes as OS processes on this machine: round times and the process tree's memory.

    python -m sim.bench processes40     # P2PFL_PROCESSES40_ROUNDS=N to change the 5 rounds

Runs `sim/scenarios/processes40.toml` in `--processes` mode (40 node processes forked from
one preloading server, anvil, this process as the parent) and samples the tree as
`sim.bench footprint` does (its `Sampler`: per-process VmHWM, summed PSS and RSS every
`SAMPLE_S`). Prints the rounds committed, each round's wall time and the median, per-node
peak RSS (mean, max), the nodes' and the tree's peak PSS (issue #13 item 6); the memory
figures also when the rounds did not all commit (then it exits with an error).

Measured 2026-12-05, 2 cores, nothing else running (the 40 nodes alone put the load at
20-35): **5/5 rounds committed** in 873 s, rounds 377.9 s (round 1: all 40 train at once
from start-up), 73.0, 92.5, 137.5, 104.8 s (median 104.8), 34-38 of 40 updates included;
accuracy 0.8093 (its centralised reference 0.8114). Memory: node peak RSS 379 MiB mean,
566 max; node PSS max 370 MiB; the 40 nodes' PSS 4.61 GB; tree PSS 4.85 GB (parent 141 MiB,
fork server 248, anvil 35, data cutter 491, evaluator 195); summed RSS 13.1 GB.

The run before that fix: 4/5 (rounds 371.5, 189.3, 113.0, 133.5 s), round 5 never closed:
seven nodes had missed messages of round 2, were offered them again two rounds later by
every peer's sync log, rejected them as `replayed-round` with a penalty of 5 each, banned
all their peers and, with no one left to fetch round 4's model from, stopped. Messages of
a finished round are now dropped without blaming the sender (p2pfl.core.validation).
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
from pathlib import Path

from sim.bench import ROOT_DIR, BenchError, figure
from sim.bench.footprint import KIB, Sampler

SCENARIO = ROOT_DIR / "sim" / "scenarios" / "processes40.toml"
ROUNDS_ENV = "P2PFL_PROCESSES40_ROUNDS"


def run() -> None:
    from sim.processes import run_processes
    from sim.scenario import load_scenario

    overrides = {"rounds": int(os.environ[ROUNDS_ENV])} if os.environ.get(ROUNDS_ENV) else {}
    scenario = load_scenario(SCENARIO, overrides)
    sampler = Sampler()
    sampler.start()
    try:
        with tempfile.TemporaryDirectory(prefix="p2pfl-processes40-") as runs:
            run_dir = Path(run_processes(scenario, runs, quiet=True))
            summary = json.loads((run_dir / "summary.json").read_text())
            records = [json.loads(line) for line in (run_dir / "metrics.jsonl").open()]
    finally:
        sampler.stop_event.set()
        sampler.join()
    nodes = [r for r in sampler.peak_rss_kib if r.startswith("node")]
    if not nodes:
        raise BenchError("no node process sampled")
    # The memory figures hold even when rounds did not all commit: printed either way.
    for r in records:
        figure(
            f"processes40-round{r['round']}",
            r["wall_s"],
            f"s (included {len(r['included'])}, committee {len(r['committee'])})",
        )
    node_peaks = [sampler.peak_rss_kib[r] for r in nodes]
    figure("processes40-nodes", len(nodes), "node processes sampled")
    if records:
        figure("processes40-accuracy", summary["final_accuracy"], "")
        figure("processes40-reference-accuracy", summary["reference_accuracy"], "")
    figure("processes40-wall", summary["wall_s"], "s (start-up to the last commit and after)")
    for role in ("parent", "forkserver", "anvil", "data", "evaluate"):
        if role in sampler.peak_rss_kib:
            figure(f"processes40-{role}-peak-pss", sampler.peak_pss_kib[role] / KIB, "MiB")
    figure(
        "processes40-node-peak-pss-max", max(sampler.peak_pss_kib[r] for r in nodes) / KIB, "MiB"
    )
    figure("processes40-node-peak-rss-mean", sum(node_peaks) / len(node_peaks) / KIB, "MiB")
    figure("processes40-node-peak-rss-max", max(node_peaks) / KIB, "MiB")
    figure("processes40-nodes-pss-peak", sampler.nodes_pss_kib * KIB / 1e9, "GB (40 nodes, summed)")
    figure("processes40-tree-rss-peak", sampler.tree_rss_kib * KIB / 1e9, "GB (summed RSS)")
    figure("processes40-tree-pss-peak", sampler.tree_pss_kib * KIB / 1e9, "GB")
    figure(
        "processes40-rounds-committed",
        f"{summary['rounds_committed']}/{summary['rounds_planned']}",
        "rounds" + (" (the run's deadline passed first)" if summary["timed_out"] else ""),
    )
    if records:
        figure("processes40-round-median", statistics.median(r["wall_s"] for r in records), "s")
    if summary["rounds_committed"] < summary["rounds_planned"]:
        raise BenchError(
            f"{summary['rounds_committed']}/{summary['rounds_planned']} rounds committed"
        )
