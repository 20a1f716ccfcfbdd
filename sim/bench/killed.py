"""Round times with 30% of the nodes killed, with the live collect quorum on and off.

Ten nodes in this process (sim/scenarios/tiny.toml's digits and MLP, committee of 7, so a
run takes a minute or two), four rounds; 1 s into round 2, `[faults] kill_fraction = 0.3`
closes 3 nodes' hosts and cancels their tasks (what a closed laptop does). The same run
twice, seeded alike, with `committee.live_quorum` on and off:

- off: the first round without the dead nodes' updates still expects them (they sent the
  previous round's update), so 80% of 10 = 8 updates never arrive and collection waits
  out the deadline; the round after expects only the nodes heard.
- on: the dead nodes' heartbeats stop, and `live_window_s` (20 s) after the last one they
  leave E: that round closes at the live quorum (80% of 7).

Digits train in well under a second, so the nodes killed 1 s into round 2 may already have
sent round 2's update: the round that misses them is then round 3 (off: E = 10 from round
2's history, the deadline; on: the live quorum).

Figures (seconds, from the previous commit to this round's commit, sim/report.py):
`killed-round-1-live-{on,off}` (before the kill), `killed-round-{2,3,4}-live-{on,off}`,
`killed-rounds-2-4-live-{on,off}` (their sum), counters summed over the nodes that say
where the time went (collections closed at the deadline / at the quorum, view changes,
re-draws), `killed-collect-deadline` (the scenario's), and the headline
`killed-after-kill-speedup`: rounds 2-4 with the live quorum off / on.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

from sim.bench import ROOT_DIR, BenchError, figure

NODES = 10
ROUNDS = 4
KILL_ROUND = 2
# Long enough that waiting it out stands clear of the live window (20 s) plus a round's
# training and agreement; short enough that the bench stays a few minutes.
COLLECT_DEADLINE_S = 60.0
OVERRIDES: dict[str, Any] = {
    "name": "killed",
    "nodes": NODES,
    "rounds": ROUNDS,
    "committee.size": 7,
    "committee.collect_deadline_s": COLLECT_DEADLINE_S,
    "committee.view_timeout_s": 10.0,
    "faults.kill_fraction": 0.3,
    "faults.kill_round": KILL_ROUND,
}


# Counters summed over the nodes (summary.json) that say where a run's time went.
COUNTERS = ("collect-closed:deadline", "collect-closed:quorum", "view-changes", "redraws")


def run_once(live_quorum: bool, runs_root: Path) -> tuple[dict[int, float], dict[str, int]]:
    """Run the scenario once: round -> seconds from the previous commit to its commit, and
    the nodes' summed counters."""
    from sim.run import run_scenario
    from sim.scenario import load_scenario

    scenario = load_scenario(
        ROOT_DIR / "sim" / "scenarios" / "tiny.toml",
        {**OVERRIDES, "committee.live_quorum": live_quorum},
    )
    run_dir = run_scenario(scenario, runs_root, quiet=True)
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    walls = {int(r["round"]): float(r["wall_s"]) for r in map(json.loads, lines)}
    if len(walls) < ROUNDS:
        raise BenchError(f"only rounds {sorted(walls)} of {ROUNDS} committed ({run_dir})")
    counters = json.loads((run_dir / "summary.json").read_text()).get("counters", {})
    return walls, counters


def run() -> None:
    logging.getLogger("p2pfl").setLevel(logging.WARNING)
    walls: dict[str, dict[int, float]] = {}
    counters: dict[str, dict[str, int]] = {}
    with tempfile.TemporaryDirectory(prefix="p2pfl-bench-killed-") as tmp:
        for live, name in ((True, "on"), (False, "off")):
            walls[name], counters[name] = run_once(live, Path(tmp))
    figure("killed-collect-deadline", COLLECT_DEADLINE_S, "s")
    after: dict[str, float] = {}
    for name in ("on", "off"):
        for r in range(1, ROUNDS + 1):
            figure(f"killed-round-{r}-live-{name}", walls[name][r], "s")
        for counter in COUNTERS:
            figure(
                f"killed-{counter.replace(':', '-')}-live-{name}",
                counters[name].get(counter, 0),
                "(all nodes)",
            )
        after[name] = sum(walls[name][r] for r in range(KILL_ROUND, ROUNDS + 1))
        figure(f"killed-rounds-{KILL_ROUND}-{ROUNDS}-live-{name}", after[name], "s")
    figure(
        "killed-after-kill-speedup",
        after["off"] / after["on"],
        f"x (rounds {KILL_ROUND}-{ROUNDS}: live quorum off / on)",
    )
