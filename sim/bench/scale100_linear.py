"""`sim.bench scale100`'s comparison with 13x fewer bytes a round.

    python -m sim.bench scale100_linear     # P2PFL_SCALE100_SHARDS=K

Runs `sim/scenarios/scale100_linear.toml` (scale100.toml with a linear model: 7,850
parameters, 31 KB deltas and models against the MLP's 407 KB; data, committee, updates to the
committee and rounds the same) with 100 nodes (600 images each), then with 10 (6,000 each),
in `--shards 2` mode, and prints the same figures as `scale100` under `scale100_linear-...`
names. What it separates (issue #13 item 5: where the time goes): a member still takes in
100 updates, a node still pushes, fetches, pulls and follows the chain as often, but every
delta and model is 13x smaller, so what is left of a round is the protocol's per-node,
per-message work with the deltas' size nearly out of it.

Measured 2026-12-07 beside `sim.bench scale100` (load 1.3 before, 1.9 after): 10 nodes 1.23,
1.03, 1.03, 1.02, 1.21 s, median **1.03 s**, 1.73 core-s a round, accuracy 0.839; 100 nodes
6.8, 7.8, 7.9, 8.4, 9.5 s, median **7.94 s** (train 2.6, disseminate 4.3, agree 0.7), all 5
committed, **21.5 core-s a round** (204 ms of the loops a node-round), accuracy 0.794: ratio
7.7. `sim.bench scale100` right after: 1.55 / 13.9 s, 2.97 / 27.4 core-s, ratio 9.0. 13x
fewer bytes took 22% off the 100-node round's CPU; its median stays 5.1x the MLP's 10-node
one (issue #13 item 5's target: 2).

After a draw below quorum is left at once (the same day; load 2.9 before, 2.2 after): 10
nodes 1.09, 1.02, 1.28, 1.33, 1.39 s, median **1.28 s**; 100 nodes 6.9, 7.5, 6.3, 6.6, 7.4
s, median **6.90 s** (train 2.2, disseminate 3.4, agree 0.6), 20.5 core-s a round: ratio
5.4. (`sim/bench/scale100.py`'s docstring has the side-by-side runs of the change.)
"""

from __future__ import annotations

from sim.bench import ROOT_DIR
from sim.bench.scale100 import compare

SCENARIO = ROOT_DIR / "sim" / "scenarios" / "scale100_linear.toml"


def run() -> None:
    compare("scale100_linear", SCENARIO)
