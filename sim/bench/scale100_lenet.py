"""`sim.bench scale100`'s comparison on Flower's quickstart model and training.

    python -m sim.bench scale100_lenet     # P2PFL_SCALE100_SHARDS=K

Runs `sim/scenarios/scale100_lenet.toml` (LeNet-5 as in `flower.toml`, Fashion-MNIST split
IID, committee 7, updates to the committee, 5 rounds) with 100 nodes (600 images each), then
with 10 (6,000 each), in `--shards 2` mode, and prints the same figures as `scale100`
under `scale100_lenet-...` names: each round, the phases' medians, each shard's CPU, the
median rounds' ratio. Issue #13 item 5 names an MLP (`scale100`); this shows how the ratio
depends on how much of a round is the nodes' own training.

Measured 2026-12-07. Direct runs of the scenario first (load ~1): 10 nodes 9.1, 7.8, 8.7,
8.4, 8.7 s, median 8.7 s (train 6.5, disseminate 1.4), accuracy 0.839; 100 nodes 16.3, 21.1,
14.8, 14.5, 20.9 s, median 16.3 s (train 10.4, disseminate 3.5, aggregate 0.6, agree 1.3,
commit 0.5), all 100 updates in every round, accuracy 0.627 (its centralised reference
0.627): ratio 1.87. The same model with updates gossiped to every node (flower.toml's
default): 100-node median 48.3 s (disseminate 24-36 s) against 7.7 s. The bench then (load
0.46 before, 1.96 after): 10 nodes median 7.38 s, 100 nodes 15.6, 17.5, 17.4, 17.1, 19.8 s,
median 17.4 s (train 10.9, disseminate 4.3): ratio 2.35. Each node's training took 2-2.5x
its time alone (1.5 s for 6,000 images against 0.6-0.7 s): the shard's training process had
inherited the node-sized malloc settings (every batch's activation buffers mapped and
faulted in anew); with its own (`sim.node_proc.tune_malloc_for_training`, the deltas bit for
bit the same: accuracies unchanged) the bench gave (load 0.64 before, 2.0 after): 10 nodes
4.75, 4.62, 4.15, 4.61, 4.64 s, median **4.62 s** (train 3.4, disseminate 0.7); 100 nodes
13.9, 16.5, 13.7, 12.9, 14.4 s, median **13.9 s** (train 7.5, disseminate 4.4, aggregate 0.9,
agree 1.1, commit 0.5): **ratio 3.0**. Faster training shortened the 10-node round by 37%
and the 100-node one by 20%: whatever the two share makes the ratio worse, whatever is per
node makes it better. At 100 nodes the train phase is still 7.5 s (each shard's training
process trains its 50 nodes one after another while the loops serve the new model and the
first pushes), the protocol's part (disseminate to commit) ~6.5 s against ~1 s at 10 nodes.
"""

from __future__ import annotations

from sim.bench import ROOT_DIR
from sim.bench.scale100 import compare

SCENARIO = ROOT_DIR / "sim" / "scenarios" / "scale100_lenet.toml"


def run() -> None:
    compare("scale100_lenet", SCENARIO)
