"""A round's result, computed and checked: pure CPU work on decoded bytes.

- `compute_aggregate`: what a committee member answers to `ComputeAggregate` -- filter +
  aggregate exactly the request's updates on top of the base model, the new model's
  canonical bytes and CID, and the reward tree it commits to.
- `committed_reward_tree`: the reward tree of a committed round, rebuilt from the
  proposal the chain's (result, contributors root) names, for every node to check against
  the on-chain root and to claim from.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from p2pfl.core import aggregate as agg
from p2pfl.core import round_events as ev
from p2pfl.core.cid import CID, blob_blocks
from p2pfl.core.merkle import RewardTree, round_reward_leaves
from p2pfl.core.messages import Proposal, Update
from p2pfl.core.sortition import draw
from p2pfl.core.tensors import (
    decode_tensors,
    encode_tensors,
    flatten,
    layout_size,
    tensor_sizes,
    unflatten,
)
from p2pfl.errors import AggregationError, InvalidMessage


@dataclass(frozen=True)
class NewModel:
    """An aggregate's model: its canonical bytes and their DAG, hashed once (`blocks`, as
    `p2pfl.core.cid.blob_blocks` gives them, root last: a block store takes them as is).
    In a private task the DAG holds the sealed bytes (the CID names the ciphertext) and
    `blob` stays the plaintext."""

    blob: bytes
    blocks: tuple[tuple[CID, bytes], ...]

    @property
    def cid(self) -> CID:
        return self.blocks[-1][0]


def compute_aggregate(
    spec: agg.RuleSpec,
    request: ev.ComputeAggregate,
    base: dict[str, np.ndarray],
    delta_blobs: Sequence[bytes],
    reward_per_round_wei: int,
    record: Mapping[bytes, int] | None = None,
    *,
    parallel: agg.Parallel = agg.serial,
    seal: Callable[[bytes], bytes] | None = None,
) -> tuple[ev.AggregateComputed, NewModel | None]:
    """Filter + aggregate exactly `request.updates` on top of `base`.

    `delta_blobs[i]` holds the bytes of `request.updates[i].delta` (verified against its
    CID by whoever stored them). The new model is `base + aggregate(deltas)` in float32;
    its canonical safetensors bytes name it (`answer.result`) and are returned beside the
    answer with their DAG, hashed here once (None when the rule could not aggregate). The
    reward tree pays contributors by (capped) sample weight and the committee its share;
    authors whose update failed a check (a strike, `agg.STRIKE_REASONS`) get zero-amount
    REJECTED leaves. `record`: the authors' strike
    points for probation. `parallel`: the map for the per-coordinate passes (the node
    passes `p2pfl.parallel.threaded`); it does not change the result. `seal`: a private
    task's model sealing (`p2pfl.task_access.ModelKey.seal`, deterministic), applied to
    the canonical bytes before they are named.
    """
    base_vector, layout = flatten(base)
    size = layout_size(layout)
    contributions = []
    undecodable: list[tuple[bytes, str]] = []
    for update, blob in zip(request.updates, delta_blobs):
        try:
            vector, delta_layout = flatten(decode_tensors(blob))
        except InvalidMessage:
            undecodable.append((update.signer, agg.REASON_BAD_TENSORS))
            continue
        if delta_layout != layout:
            undecodable.append((update.signer, agg.REASON_WRONG_SIZE))
            continue
        contributions.append(agg.Contribution(update.signer, update.n_samples, vector))
    try:
        result = agg.aggregate(
            spec,
            contributions,
            expected_size=size,
            segments=tensor_sizes(layout),
            record=record,
            parallel=parallel,
        )
    except AggregationError as exc:
        failed = ev.AggregateComputed(
            request.round, request.attempt, request.candidates, error=str(exc) or "nothing"
        )
        return failed, None
    new_vector = np.add(base_vector, result.delta, dtype=np.float32)
    blob = encode_tensors(unflatten(new_vector, layout))
    cid, blocks = blob_blocks(seal(blob) if seal is not None else blob)
    by_author = {u.signer: u for u in request.updates}
    included = tuple((a, by_author[a].delta) for a in result.accepted)
    rejected = tuple(sorted(list(result.rejected) + undecodable))
    weights = {a: by_author[a].n_samples for a in result.accepted}
    leaves = round_reward_leaves(
        reward_per_round_wei, weights, request.committee, agg.struck_authors(rejected)
    )
    root = RewardTree.build(leaves).root
    answer = ev.AggregateComputed(
        request.round,
        request.attempt,
        request.candidates,
        included=included,
        rejected=rejected,
        result=cid.to_bytes(),
        contributors_root=root,
    )
    return answer, NewModel(blob, tuple(blocks))


def committed_reward_tree(
    proposal: Proposal,
    updates: Mapping[ev.UpdateKey, Update],
    *,
    task: bytes,
    attempt: int,
    base_digest: bytes,
    stakes: Mapping[bytes, int],
    committee_size: int,
    reward_per_round_wei: int,
) -> RewardTree | None:
    """The reward tree of `proposal`'s round as committed at `attempt` on `base_digest`.

    `updates`: the updates we hold, by (author, delta CID); None when one the proposal
    includes is missing (no weights, so no tree). `stakes`: the
    registry snapshot the round drew its committee from. The tree lists the rejections
    that are strikes; the others are in the proposal only. The caller compares its root
    with the chain's.
    """
    weights = {}
    for key in proposal.included:
        update = updates.get(key)
        if update is None:
            return None
        weights[key[0]] = update.n_samples
    committee = draw(task, proposal.round, base_digest, attempt, stakes, committee_size)
    struck = agg.struck_authors(proposal.rejected)
    return RewardTree.build(round_reward_leaves(reward_per_round_wei, weights, committee, struck))
