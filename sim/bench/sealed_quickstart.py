"""Sealed updates against plain ones on the quickstart: `python -m sim.bench sealed_quickstart`.

Runs `sim/scenarios/quickstart.toml` (10 nodes, Fashion-MNIST IID, small CNN, committee of
7) in-process twice, `privacy.sealed = true` (the default) then `false`, and prints for
each the mean round wall time (commit to commit, the run's metrics), the mean bytes a node
sent and received per round, the final accuracy, and the sealed/plain ratios (target:
<= 1.05 wall time). SEAL_BENCH_ROUNDS=n shortens both runs (default: the quickstart's 10).
The machine's load moves wall times by more than sealing does; read the ratio with that.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

from sim.bench import ROOT_DIR, BenchError, figure

SCENARIO = ROOT_DIR / "sim" / "scenarios" / "quickstart.toml"


def _run(sealed: bool, rounds: int, runs: Path) -> dict[str, float]:
    from sim.run import run_scenario
    from sim.scenario import load_scenario

    overrides: dict[str, Any] = {"privacy.sealed": sealed}
    if rounds:
        overrides["rounds"] = rounds
    run_dir = run_scenario(load_scenario(str(SCENARIO), overrides), runs, quiet=True)
    summary = json.loads((run_dir / "summary.json").read_text())
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    if summary["rounds_committed"] < summary["rounds_planned"] or not records:
        raise BenchError(f"sealed={sealed}: {summary['rounds_committed']} rounds committed")
    per_node = [
        (s or 0) + (r or 0)
        for rec in records
        for s, r in zip(rec["bytes_sent"], rec["bytes_received"])
    ]
    return {
        "round_s": statistics.mean(r["wall_s"] for r in records),
        "bytes_per_node_round": statistics.mean(per_node),
        "sent_per_node_round": statistics.mean(
            s or 0 for rec in records for s in rec["bytes_sent"]
        ),
        "accuracy": summary["final_accuracy"],
        "rounds_wall_s": summary["rounds_wall_s"],
    }


def run() -> None:
    rounds = int(os.environ.get("SEAL_BENCH_ROUNDS", "0"))
    results = {}
    with tempfile.TemporaryDirectory(prefix="p2pfl-seal-bench-") as tmp:
        for sealed in (True, False):
            name = "sealed" if sealed else "plain"
            out = results[name] = _run(sealed, rounds, Path(tmp))
            figure(f"quickstart-{name}-round-wall", out["round_s"], "s")
            figure(f"quickstart-{name}-bytes-per-node-round", out["bytes_per_node_round"], "bytes")
            figure(f"quickstart-{name}-sent-per-node-round", out["sent_per_node_round"], "bytes")
            figure(f"quickstart-{name}-accuracy", out["accuracy"], "accuracy")
    s, p = results["sealed"], results["plain"]
    figure(
        "quickstart-sealed-bytes-ratio",
        s["bytes_per_node_round"] / p["bytes_per_node_round"],
        "x plain",
    )
    figure("quickstart-sealed-round-wall-ratio", s["round_s"] / p["round_s"], "x plain")
