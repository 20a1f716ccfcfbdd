"""`python -m sim.des.calibrate [--model-bytes N] [--tensors K]`: the DES's aggregation
cost model, measured on this machine. Prints the `[train]` keys a scenario sets.

A member's aggregate phase is the node's `p2pfl.node.workers.compute`: in a worker thread,
`compute_aggregate` over the candidates' deltas (decode, filter, rule, then the new model:
add to the base, encode, hash its blocks), then, in another, the model's blocks into the
block store. Both parts are linear in the model's size, the first also in the number of
updates, so the DES charges

    model MB x (aggregate_model_s_per_mb + updates x aggregate_s_per_mb)

(sim.des.engine.Engine.aggregate). This times that path as the node runs it (the real
`compute_aggregate` with the default pipeline and the node's `threaded` map, both
`trio.to_thread` hops, a real `BlockStore`) on synthetic float32 deltas of the model's size
and layout, for a few update counts, best of REPEATS each, and fits the two constants by
least squares. Not included: what else the node's process does meanwhile (in the
in-process quickstart, nine other hosts share its event loop and interpreter).
"""

from __future__ import annotations

import argparse
import functools
import tempfile
import time
from pathlib import Path

import numpy as np
import trio

from p2pfl.core import aggregate as agg
from p2pfl.core import round_events as ev
from p2pfl.core.cid import blob_cid
from p2pfl.core.messages import Update
from p2pfl.core.round_result import compute_aggregate
from p2pfl.core.tensors import encode_tensors
from p2pfl.net.blockstore import BlockStore
from p2pfl.parallel import threaded
from sim.des.scenario import TrainSection

UPDATE_COUNTS = (2, 5, 10, 20)
REPEATS = 15  # best of 15: the machine is shared, the minimum is the least disturbed run
TASK = b"\x07" * 32
# The quickstart's SmallCNN (p2pfl.train.models): 4 layers, a weight and a bias each. The
# filter and the codec do some work per tensor.
SMALL_CNN_TENSORS = 8


def _tensors(vector: np.ndarray, count: int) -> dict[str, np.ndarray]:
    """`vector` cut into `count` named tensors (a model's layers)."""
    return {f"t{i:02d}": part for i, part in enumerate(np.array_split(vector, count))}


def _request(
    n: int, params: int, tensors: int, seed: int
) -> tuple[ev.ComputeAggregate, list[bytes]]:
    """n updates of honest-looking deltas (a common direction plus personal noise)."""
    rng = np.random.default_rng(seed)
    base = blob_cid(encode_tensors(_tensors(np.zeros(params, np.float32), tensors))).to_bytes()
    common = rng.normal(0.001, 0.01, params)
    updates, blobs = [], []
    for i in range(n):
        delta = (common + rng.normal(0, 0.005, params)).astype(np.float32)
        blob = encode_tensors(_tensors(delta, tensors))
        cid = blob_cid(blob).to_bytes()
        norm = float(np.linalg.norm(delta))
        updates.append(Update(TASK, 1, base, cid, 6000, norm, b"", bytes([i + 1]) * 20))
        blobs.append(blob)
    committee = tuple(bytes([i + 1]) * 20 for i in range(min(n, 7)))
    spec = agg.RuleSpec.default().name
    return ev.ComputeAggregate(1, 0, base, spec, committee, tuple(updates)), blobs


def worker_seconds(counts: tuple[int, ...], model_bytes: int, tensors: int) -> dict[int, float]:
    """Best time of the node's aggregate path over n deltas of `model_bytes`, for each n
    in `counts`; the counts are timed in turn, so a burst of load hits them alike."""
    params = max(tensors, model_bytes // 4)
    base = _tensors(np.zeros(params, np.float32), tensors)
    spec = agg.RuleSpec.default()
    requests = {n: _request(n, params, tensors, seed=n) for n in counts}
    best = dict.fromkeys(counts, float("inf"))

    async def measure(store: BlockStore) -> None:
        cpu = trio.CapacityLimiter(1)
        for _ in range(REPEATS):
            for n, (request, blobs) in requests.items():
                job = functools.partial(
                    compute_aggregate, spec, request, base, blobs, 10**16, parallel=threaded
                )
                t = time.perf_counter()
                _, model = await trio.to_thread.run_sync(job, limiter=cpu)
                assert model is not None
                await trio.to_thread.run_sync(store.put_dag, model.cid, model.blocks)
                best[n] = min(best[n], time.perf_counter() - t)

    with tempfile.TemporaryDirectory() as folder:
        trio.run(measure, BlockStore(Path(folder) / "blocks"))
    return best


def calibrate(model_bytes: int, tensors: int) -> tuple[float, float, dict[int, float]]:
    """(aggregate_s_per_mb, aggregate_model_s_per_mb, measured seconds by update count)."""
    measured = worker_seconds(UPDATE_COUNTS, model_bytes, tensors)
    slope, intercept = np.polyfit(list(measured), list(measured.values()), 1)
    mb = model_bytes / 1e6
    return max(float(slope), 0.0) / mb, max(float(intercept), 0.0) / mb, measured


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sim.des.calibrate", description=__doc__)
    parser.add_argument("--model-bytes", type=int, default=TrainSection.model_bytes)
    parser.add_argument(
        "--tensors", type=int, default=SMALL_CNN_TENSORS, help="tensors the model has"
    )
    args = parser.parse_args(argv)
    per_update, per_model, measured = calibrate(args.model_bytes, args.tensors)
    for n, seconds in measured.items():
        print(f"# node's aggregate path, {n} deltas of {args.model_bytes} bytes: {seconds:.4f} s")
    print(f"aggregate_s_per_mb = {per_update:.3g}")
    print(f"aggregate_model_s_per_mb = {per_model:.3g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
