"""`p2pfl.core.round_result.compute_aggregate`: the aggregate a member computes and the
reward tree it commits to -- which rejections are strikes (REJECTED leaves) and which are not."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from p2pfl.core import aggregate as agg
from p2pfl.core import round_events as ev
from p2pfl.core.cid import CID, blob_cid
from p2pfl.core.merkle import ROLE_REJECTED, RewardTree, round_reward_leaves
from p2pfl.core.messages import Proposal, Update
from p2pfl.core.round_result import committed_reward_tree, compute_aggregate
from p2pfl.core.sortition import committee_for, round_seed
from p2pfl.core.tensors import decode_tensors, encode_tensors

REWARD = 10**18


def _request(
    deltas: dict[bytes, np.ndarray], committee: tuple[bytes, ...]
) -> tuple[ev.ComputeAggregate, list[bytes]]:
    base_cid = blob_cid(encode_tensors({"w": np.zeros(64, np.float32)})).to_bytes()
    updates, blobs = [], []
    for author in sorted(deltas):
        blob = encode_tensors({"w": deltas[author]})
        updates.append(
            Update(b"\x07" * 32, 1, base_cid, blob_cid(blob).to_bytes(), 10, 1.0, b"", author)
        )
        blobs.append(blob)
    return ev.ComputeAggregate(
        1, 0, base_cid, agg.RuleSpec.default().name, committee, tuple(updates)
    ), blobs


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
    answer, model = compute_aggregate(
        agg.RuleSpec.default(), request, base, blobs, REWARD, record={author[7]: 2}
    )
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
    assert model is not None
    assert blob_cid(model.blob).to_bytes() == model.cid.to_bytes() == answer.result
    assert decode_tensors(model.blob)["w"].shape == (64,)


def test_every_node_rebuilds_the_committed_tree_from_the_proposal():
    """`committed_reward_tree` (any node, from the proposal and the updates it holds)
    gives the root the member computed; without one of the included updates, no tree."""
    rng = np.random.default_rng(5)
    common = rng.standard_normal(64).astype(np.float32)
    author = [bytes([i + 1]) * 20 for i in range(6)]
    deltas = {a: (common + 0.3 * rng.standard_normal(64)).astype(np.float32) for a in author[:5]}
    deltas[author[5]] = (-common).astype(np.float32)  # a strike: its REJECTED leaf is in the tree
    stakes = {a: 100 for a in author}
    task = b"\x07" * 32
    request, blobs = _request(deltas, ())
    base_digest = CID.parse(request.base).digest
    committee = tuple(committee_for(round_seed(task, 1, base_digest, 0), stakes, 3))
    request = replace(request, committee=committee)
    answer, _ = compute_aggregate(
        agg.RuleSpec.default(), request, {"w": np.zeros(64, np.float32)}, blobs, REWARD
    )
    proposal = Proposal(
        task,
        1,
        0,
        0,
        request.base,
        answer.included,
        answer.rejected,
        request.rule,
        answer.result,
        answer.contributors_root,
        committee[0],
    )
    held = {(u.signer, u.delta): u for u in request.updates}
    kwargs = dict(
        task=task,
        attempt=0,
        base_digest=base_digest,
        stakes=stakes,
        committee_size=3,
        reward_per_round_wei=REWARD,
    )
    tree = committed_reward_tree(proposal, held, **kwargs)
    assert tree is not None and tree.root == answer.contributors_root
    missing = dict(held)
    del missing[answer.included[0]]
    assert committed_reward_tree(proposal, missing, **kwargs) is None
