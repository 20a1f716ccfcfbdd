"""A committee member's aggregation as the node runs it (p2pfl.node.workers): the deltas
are not read or hashed again (their bytes were verified once, on arrival) and the new
model is hashed once, to name it, then stored as is."""

from __future__ import annotations

import hashlib
from types import SimpleNamespace
from typing import Any

import numpy as np
import trio

from p2pfl.core import aggregate as agg
from p2pfl.core import round_events as ev
from p2pfl.core.cid import CID, blob_cid
from p2pfl.core.messages import Update
from p2pfl.core.tensors import encode_tensors
from p2pfl.net.blockstore import BlockStore
from p2pfl.node.workers import RoundWorkers

SIZE = 1 << 19  # float32: a 2 MiB model, 8 chunks of the block layout


async def test_a_member_hashes_the_new_model_once_and_the_deltas_not_again(
    tmp_path: Any, monkeypatch: Any
) -> None:
    rng = np.random.default_rng(1)
    base = {"w": np.zeros(SIZE, np.float32)}
    base_cid = blob_cid(encode_tensors(base)).to_bytes()
    common = rng.standard_normal(SIZE).astype(np.float32)
    authors = [bytes([i + 1]) * 20 for i in range(4)]
    updates, kept = [], {}
    for a in authors:
        blob = encode_tensors({"w": (common + 0.1 * rng.standard_normal(SIZE)).astype(np.float32)})
        u = Update(b"\x07" * 32, 1, base_cid, blob_cid(blob).to_bytes(), 10, 1.0, b"", a)
        updates.append(u)
        kept[(a, u.delta)] = blob  # as a fetch keeps them, verified on arrival
    request = ev.ComputeAggregate(1, 0, base_cid, "fedavg", tuple(authors[:3]), tuple(updates))

    answers: list[Any] = []

    async def ensure(cid: bytes) -> dict[str, np.ndarray]:
        return base

    async def put(event: Any) -> None:
        answers.append(event)

    store = BlockStore(tmp_path / "blocks")
    node = SimpleNamespace(
        clock=trio.current_time,
        models=SimpleNamespace(ensure=ensure),
        round_record=lambda r: {},
        spec=agg.RuleSpec.default(),
        manifest=SimpleNamespace(reward_per_round_wei=10**18),
        cpu=trio.CapacityLimiter(1),
        net=SimpleNamespace(store=store),
        rounds={},
        queue=SimpleNamespace(put=put),
        model_key=None,  # a public task: the new model is named in the clear
    )
    workers = RoundWorkers(node)  # type: ignore[arg-type]
    workers._deltas[1] = kept

    hashed = {"bytes": 0}
    real = hashlib.sha256

    class Counting:
        def __init__(self, data: Any = b"") -> None:
            hashed["bytes"] += len(data)
            self.inner = real(data)

        def update(self, data: Any) -> None:
            hashed["bytes"] += len(data)
            self.inner.update(data)

        def digest(self) -> bytes:
            return self.inner.digest()

    monkeypatch.setattr(hashlib, "sha256", Counting)
    await workers.compute(request)
    hashed_bytes = hashed["bytes"]

    (answer,) = answers
    assert not answer.error
    model_cid = CID.parse(answer.result)
    assert store.has_blob(model_cid)  # stored for others to fetch
    model_bytes = len(store.read_blob(model_cid))
    # Once over the model (its leaves, plus the small root node); nothing over the deltas.
    assert model_bytes <= hashed_bytes < model_bytes + 4096, (hashed_bytes, model_bytes)


async def test_an_update_past_the_privacy_budget_is_withheld_and_training_stops(
    tmp_path: Any,
) -> None:
    """DP-SGD rounds are recorded as their updates go out; the update that would pass the
    budget is not published, the ledger closes (on disk), and later rounds do not train."""
    from p2pfl.node.roundlog import Behaviour, RoundLog
    from p2pfl.train.privacy import DPSteps, PrivacyLedger, epsilon

    steps = DPSteps(1.0, 0.05, 20)
    budget = (epsilon([steps], 1e-5) + epsilon([steps] * 2, 1e-5)) / 2  # one round fits
    ledger = PrivacyLedger(tmp_path / "privacy.json", 1e-5, budget)
    published: list[Any] = []
    trained: list[int] = []
    counters: dict[str, int] = {}

    async def ensure(cid: bytes) -> dict[str, np.ndarray]:
        return {"w": np.zeros(8, np.float32)}

    async def trainer(base: Any, cfg: Any, seed: int) -> Any:
        trained.append(seed)
        return SimpleNamespace(
            delta={"w": np.ones(8, np.float32)}, n_samples=10, train_loss=0.0, seconds=0.0,
            dp=steps,
        )  # fmt: skip

    async def put(event: Any) -> None:
        published.append(event)

    node = SimpleNamespace(
        behaviour=Behaviour(),
        privacy=ledger,
        models=SimpleNamespace(ensure=ensure),
        manifest=SimpleNamespace(train={}, seed=1),
        client_index=0,
        trainer=trainer,
        net=SimpleNamespace(store=BlockStore(tmp_path / "blocks")),
        address=b"\x01" * 20,
        rounds={1: RoundLog(1, 0.0), 2: RoundLog(2, 0.0)},
        queue=SimpleNamespace(put=put),
        count=lambda name, n=1: counters.update({name: counters.get(name, 0) + n}),
    )
    workers = RoundWorkers(node)  # type: ignore[arg-type]
    await workers.train(1, b"")
    assert [type(e).__name__ for e in published] == ["LocalUpdateReady"]
    assert node.rounds[1].epsilon == ledger.epsilon() <= budget
    await workers.train(2, b"")  # trains, but the update would pass the budget
    assert len(published) == 1 and len(trained) == 2
    assert counters == {"dp-budget-spent": 1} and ledger.exhausted
    assert PrivacyLedger(tmp_path / "privacy.json", 1e-5, budget).exhausted  # on disk
    await workers.train(3, b"")  # no more training at all
    assert len(trained) == 2 and counters["dp-budget-spent:no-training"] == 1


def test_a_delta_dag_that_expands_past_the_model_size_is_refused_before_the_walk(
    tmp_path: Any,
) -> None:
    """A delta whose few distinct blocks link the same child 100 times at each of 3 levels
    claims 100^3 leaves (262 GB): the fuzz campaign's hang in `assemble`. The node reads a
    delta with the model's size as its limit, so it is refused at the root, at once."""
    import time

    import pytest

    from p2pfl.core.cid import CHUNK_SIZE, CODEC_DAG_PB, CODEC_RAW, Link, _encode_node, block_cid
    from p2pfl.errors import InvalidBlock
    from p2pfl.node.workers import _read_delta

    store = BlockStore(tmp_path / "blocks")
    leaf = bytes(CHUNK_SIZE)
    child, size, tsize = block_cid(CODEC_RAW, leaf), CHUNK_SIZE, CHUNK_SIZE
    store.put(child, leaf)
    for _ in range(3):
        block = _encode_node([Link(child, tsize)] * 100, [size] * 100, CID.to_bytes)
        child, size, tsize = block_cid(CODEC_DAG_PB, block), size * 100, tsize * 100 + len(block)
        store.put(child, block)
    model_size = len(encode_tensors({"w": np.zeros(1000, np.float32)}))
    started = time.perf_counter()
    with pytest.raises(InvalidBlock, match="over"):
        _read_delta(store, child, model_size)
    assert time.perf_counter() - started < 1.0


async def test_delta_fetches_share_a_few_slots_and_a_failing_one_waits_without_one() -> None:
    """`fetch_with_retries(..., slots)`: at most `slots` fetches run at once, and a fetch
    that failed waits for its retry without holding a slot, so an author who has gone
    cannot starve the other fetches."""
    import trio

    from p2pfl.errors import P2PFLError
    from p2pfl.node.models import fetch_with_retries

    running, peak, done = 0, 0, []

    class _Net:
        async def fetch_blob(self, cid: object, providers: object) -> None:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            try:
                await trio.sleep(0.01)
                if cid == "gone":
                    raise P2PFLError("nobody holds it")
            finally:
                running -= 1
            done.append(cid)

    slots = trio.CapacityLimiter(3)
    counts: list[str] = []
    with trio.move_on_after(5):
        async with trio.open_nursery() as nursery:
            for name in ["gone"] * 3:  # three dead authors: as many as there are slots
                nursery.start_soon(
                    fetch_with_retries, _Net(), name, list, lambda: True, counts.append, slots
                )
            for i in range(20):
                nursery.start_soon(
                    fetch_with_retries, _Net(), i, list, lambda: True, counts.append, slots
                )
            with trio.fail_after(4):
                while len(done) < 20:
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
    assert sorted(done) == list(range(20))  # the dead authors' retries never blocked them
    assert peak == 3
    assert counts and set(counts) == {"fetch-retries"}
