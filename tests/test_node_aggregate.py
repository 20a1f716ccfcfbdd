"""`p2pfl.node.compute_aggregate`: the aggregate a member computes and the reward tree it
commits to -- which rejections are strikes (REJECTED leaves) and which are not."""

from __future__ import annotations

import numpy as np

from p2pfl.core import aggregate as agg
from p2pfl.core import round_events as ev
from p2pfl.core.cid import blob_cid
from p2pfl.core.merkle import ROLE_REJECTED, RewardTree, round_reward_leaves
from p2pfl.core.messages import Update
from p2pfl.core.tensors import decode_tensors, encode_tensors
from p2pfl.node import compute_aggregate

REWARD = 10**18


def _request(deltas: dict[bytes, np.ndarray], committee: tuple[bytes, ...]) -> tuple[ev.ComputeAggregate, list[bytes]]:
    base_cid = blob_cid(encode_tensors({"w": np.zeros(64, np.float32)})).to_bytes()
    updates, blobs = [], []
    for author in sorted(deltas):
        blob = encode_tensors({"w": deltas[author]})
        updates.append(Update(b"\x07" * 32, 1, base_cid, blob_cid(blob).to_bytes(), 10, 1.0, b"", author))
        blobs.append(blob)
    return ev.ComputeAggregate(1, 0, base_cid, agg.RuleSpec.default().name, committee, tuple(updates)), blobs


def test_only_failed_checks_are_rejected_leaves():
    rng = np.random.default_rng(3)
    common = rng.standard_normal(64).astype(np.float32)
    author = [bytes([i + 1]) * 20 for i in range(8)]
    deltas = {a: (common + 0.3 * rng.standard_normal(64)).astype(np.float32) for a in author[:5]}
    deltas[author[5]] = (-common).astype(np.float32)  # sign flip: low-cosine, a strike
    deltas[author[6]] = deltas[author[0]].copy()  # a copy: one of the two is a duplicate
    deltas[author[7]] = (common + 0.3 * rng.standard_normal(64)).astype(np.float32)  # on probation
    committee = (author[0], author[1], author[2])
    request, blobs = _request(deltas, committee)
    base = {"w": np.zeros(64, np.float32)}
    answer, model = compute_aggregate(agg.RuleSpec.default(), request, base, blobs, REWARD, record={author[7]: 2})
    reasons = dict(answer.rejected)
    assert reasons[author[5]] == agg.REASON_COSINE
    assert reasons[author[7]] == agg.REASON_PROBATION
    assert sorted(reasons.values()).count(agg.REASON_DUPLICATE) == 1
    # The committed tree has a REJECTED leaf for the strike only.
    weights = {a: 10 for a, _ in answer.included}
    want = RewardTree.build(round_reward_leaves(REWARD, weights, committee, [author[5]]))
    assert answer.contributors_root == want.root
    assert [lf.account for lf in want.leaves if lf.role == ROLE_REJECTED] == [author[5]]
    # The model named by the answer is base + the aggregate.
    assert blob_cid(model).to_bytes() == answer.result
    assert decode_tensors(model)["w"].shape == (64,)
