"""`sim.bench scale100`'s comparison deployed: 100 laptops against 10, in virtual time.

    python -m sim.bench scale100_des

Runs `sim/des/scenarios/scale100.toml` (the discrete-event simulator: every node's own round
machine, each node with a CPU and a link of its own) with 100 nodes of 600 images and with
10 of 6,000 (the same 60,000 images trained a round: 10x the training time a node), at 20,
100 and 1,000 Mbit/s a node. Prints, for each rate and size, the median round and the
medians of its phases, then the ratio of the median rounds (issue #13 item 5's target on 2
shared cores: <= 2). A model, not a measurement: its links, chain and training are the
scenario's figures, and networking costs link time (and a fixed check a gossip hop), not the
Python CPU the 2-core simulation spends most of (`sim.bench scale100`). What it isolates is
the protocol's own shape: every committee member takes in every delta, so a member's link
carries 10x the bytes at 100 nodes.

Measured 2026-12-07 (seeded: the same figures every run): 20 Mbit/s, 10 nodes 2.32 s, 100
nodes 19.05 s (disseminate 14.8 s: 100 x 407 KB into each member), **ratio 8.2**; 100
Mbit/s 1.03 / 4.62 s (disseminate 0.42 / 3.30 s), **ratio 4.5**; 1,000 Mbit/s 0.93 / 1.53 s,
**ratio 1.65**. Deployed, the target holds only where a member takes in 40 MB a round in
well under a second. Later the same day, with a draw below quorum left at once (round.md
"Timers / attempt"): 20 Mbit/s 2.32 / 18.11 s, ratio 7.8 (a round whose first draw was
small no longer waits `small_redraw_delay_s`); 100 and 1,000 Mbit/s unchanged.
"""

from __future__ import annotations

import statistics
from typing import Any

from sim.bench import ROOT_DIR, BenchError, figure
from sim.bench.scale100 import NODE_COUNTS, TARGET_RATIO

SCENARIO = ROOT_DIR / "sim" / "des" / "scenarios" / "scale100.toml"
# A node's link, up and down: home broadband, a good office link, a data centre's.
RATES_MBIT = (20.0, 100.0, 1000.0)


def overrides(nodes: int, rate_mbit: float) -> dict[str, Any]:
    """The scenario's keys for `nodes` nodes holding its total data, on `rate_mbit` links:
    each node trains its share of the images, in proportionally more time."""
    from sim.des.scenario import load_des_scenario

    base = load_des_scenario(SCENARIO)
    scale = base.nodes / nodes  # each node holds this many times the scenario's images
    return {
        "nodes": nodes,
        "network.bandwidth_mbit": rate_mbit,
        "train.median_s": base.train.median_s * scale,
        "train.n_samples": round(base.train.n_samples * scale),
    }


def _median_round(nodes: int, rate_mbit: float) -> float:
    """Run the scenario with `nodes` nodes on `rate_mbit` links; print its figures and
    return its median round (virtual seconds)."""
    from sim.des.engine import Engine
    from sim.des.report import PHASES, round_records
    from sim.des.scenario import load_des_scenario

    engine = Engine(load_des_scenario(SCENARIO, overrides(nodes, rate_mbit)), progress=None)
    engine.run()
    records = round_records(engine)
    if len(records) < engine.rounds:
        raise BenchError(f"{nodes} nodes at {rate_mbit:g} Mbit/s: {len(records)} rounds committed")
    name = f"scale100-des-{rate_mbit:g}mbit-n{nodes}"
    phases = ", ".join(
        f"{p} {statistics.median(r['phases_s'][p] for r in records):.2f}" for p in PHASES
    )
    median = statistics.median(r["wall_s"] for r in records)
    figure(f"{name}-round-median", median, f"s virtual ({phases})")
    return median


def run() -> None:
    for rate in RATES_MBIT:
        small, large = (_median_round(n, rate) for n in NODE_COUNTS)
        figure(
            f"scale100-des-{rate:g}mbit-ratio",
            large / small,
            f"(median round, 100 nodes / 10 nodes, a link of {rate:g} Mbit/s a node; "
            f"the 2-core target <= {TARGET_RATIO:g})",
        )
