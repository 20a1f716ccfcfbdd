"""`sim.bench scale100`'s comparison on Flower's quickstart model and training.

    python -m sim.bench scale100_lenet     # P2PFL_SCALE100_SHARDS=K

Runs `sim/scenarios/scale100_lenet.toml` (LeNet-5 as in `flower.toml`, Fashion-MNIST split
IID, committee 7, updates to the committee, 5 rounds) with 100 nodes (600 images each), then
with 10 (6,000 each), in `--shards 2` mode, and prints the same figures as `scale100`
under `scale100_lenet-...` names: each round, the phases' medians, each shard's CPU, the
median rounds' ratio. Issue #13 item 5 names an MLP (`scale100`); this shows how the ratio
depends on how much of a round is the nodes' own training.

Measured 2026-12-07 (direct runs of the scenario, before this bench existed; load ~1):
10 nodes 9.1, 7.8, 8.7, 8.4, 8.7 s, median 8.7 s (train 6.5, disseminate 1.4), accuracy
0.839; 100 nodes 16.3, 21.1, 14.8, 14.5, 20.9 s, median 16.3 s (train 10.4, disseminate 3.5,
aggregate 0.6, agree 1.3, commit 0.5), all 100 updates in every round, accuracy 0.627 (its
centralised reference 0.627): ratio 1.87. The same model with updates gossiped to every node
(flower.toml's default): 100-node median 48.3 s (disseminate 24-36 s) against 7.7 s.
"""

from __future__ import annotations

from sim.bench import ROOT_DIR
from sim.bench.scale100 import compare

SCENARIO = ROOT_DIR / "sim" / "scenarios" / "scale100_lenet.toml"


def run() -> None:
    compare("scale100_lenet", SCENARIO)
