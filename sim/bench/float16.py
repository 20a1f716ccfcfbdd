"""Float16 deltas on shaped links: round times and bytes with and without `delta_float16`.

    python -m sim.bench float16        # as root; P2PFL_FLOAT16_RATE=Mbit/s (default 20)

Runs `sim/scenarios/shaped.toml` (10 node processes, each in its own network namespace
behind a tbf-shaped link, an MLP of 407,050 parameters: a 1.6 MB model) twice at the same
rate, alternately: deltas as trained (float32), then each rounded to float16 with error
feedback (`[train] delta_float16 = true`, spec training.md), which the updates' sealed
plaintext then carries as its float16 packing (tensors.md): half the bytes per delta.
Prints, for each: every round's wall time, the median of rounds 2.. (round 1 carries the
genesis fetch), the busiest node's MB per round (payload, the busier direction), the final
accuracy and the committees' sizes (the draws follow the model's digest, so they differ
between the two runs: round time grows with the committee); then the ratios float32 /
float16 of the median rounds and of the busiest node's bytes, and the accuracy gap.

Measured 2026-12-07 (20 Mbit/s; the same runs by `python -m sim sim/scenarios/shaped.toml
--processes --set train.delta_float16=...`, alternating, twice): float32 rounds 10.7, 10.9,
10.8 and 10.7, 9.9, 10.9 s, 16.3-19.5 MB through the busiest node a round; float16 7.3, 7.4,
6.6 and 8.5, 7.7, 5.9 s, 9.0-10.6 MB (round 1: 16-18 MB, the genesis model), accuracy
0.7615 against 0.7610: rounds 2-3 ~1.5x faster on the link, for the same accuracy. Not
faster where the link is not the limit: 100 nodes in one simulation on 2 cores
(`scale100`, sealed updates to the committee) sent ~35% fewer bytes a round (88 against
140 MB) with median rounds 12.8 and 14.5 s against 10.9 and 12.6 s (alternating runs; the
committees differed: 14, 8, 11, 9, 6 members against 5, 7, 11, 9, 7).
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

from sim.bench import BenchError, figure
from sim.bench.shaped import MB, SCENARIO, busiest_bytes

RATE_ENV = "P2PFL_FLOAT16_RATE"
DEFAULT_RATE_MBIT = 20.0


def run_one(rate_mbit: float, float16: bool, runs: str) -> tuple[list[dict[str, Any]], float]:
    from sim.processes import run_processes
    from sim.scenario import load_scenario

    scenario = load_scenario(
        SCENARIO, {"network.rate_mbit": rate_mbit, "train.delta_float16": float16}
    )
    run_dir = Path(run_processes(scenario, runs, quiet=True))
    summary = json.loads((run_dir / "summary.json").read_text())
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").open()]
    if summary["rounds_committed"] < summary["rounds_planned"] or not records:
        raise BenchError(
            f"float16={float16}: {summary['rounds_committed']}/{summary['rounds_planned']} "
            "rounds committed"
        )
    return records, float(summary["final_accuracy"])


def report(tag: str, records: list[dict[str, Any]], accuracy: float) -> tuple[float, float]:
    """Print one run's figures; (median round, median busiest MB) of rounds 2.."""
    steady = records[1:] or records
    for r in records:
        figure(
            f"{tag}-round{r['round']}",
            r["wall_s"],
            f"s (busiest node {busiest_bytes(r) / MB:.2f} MB, {len(r['committee'])} members)",
        )
    median_round = statistics.median(r["wall_s"] for r in steady)
    busiest = statistics.median(busiest_bytes(r) for r in steady) / MB
    figure(f"{tag}-round-median", median_round, f"s (rounds 2-{len(records)})")
    figure(f"{tag}-busiest-median", busiest, "MB a round")
    figure(f"{tag}-accuracy", accuracy, "")
    return median_round, busiest


def run() -> None:
    from p2pfl.errors import ConfigError
    from sim.netns import require_root_and_tools

    try:
        require_root_and_tools()
    except ConfigError as exc:
        raise BenchError(str(exc)) from None
    rate = float(os.environ.get(RATE_ENV) or DEFAULT_RATE_MBIT)
    figure("float16-rate", rate, "Mbit/s (tbf, each node's link, both directions)")
    results = {}
    with tempfile.TemporaryDirectory(prefix="p2pfl-float16-") as runs:
        for float16 in (False, True):
            tag = "float16" if float16 else "float32"
            records, accuracy = run_one(rate, float16, runs)
            results[float16] = (*report(tag, records, accuracy), accuracy)
    (r32, b32, a32), (r16, b16, a16) = results[False], results[True]
    figure("float16-round-speedup", r32 / r16, "x (float32 median round / float16's)")
    figure("float16-bytes-ratio", b32 / b16, "x (float32 busiest MB / float16's)")
    figure("float16-accuracy-gap", (a32 - a16) * 100, "points (float32 - float16)")
