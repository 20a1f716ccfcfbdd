"""Auditing a committed round: the checks anyone can redo from the chain and the round's
gossip (pure; `p2pfl audit` gathers the inputs, see p2pfl/cli/audit.py).

A commit holds when
1. its votes are valid VOTE signatures over the commit's statement (`vote_digest`), by
   distinct members of the committee drawn for its (round, attempt) from the registry
   snapshot the round drew from, at least the task's quorum (`check_votes`);
2. the proposal it names (the leader's signed gossip: same round, attempt, view, base,
   result and contributors root, signed by the view's leader) lists the updates the
   committee aggregated (`check_proposal`);
3. filter + rule over those updates on the committed base model (`compute_aggregate`, the
   committee's own code path) keeps and rejects exactly what the proposal says and gives
   the committed model, bit for bit (its CID's digest equals the chain's result), and the
   reward tree rebuilt from the proposal (`committed_reward_tree`) has the chain's
   contributors root (`check_aggregate`).

Every check returns the reasons it failed (empty: it holds), phrased for a person.

The round record: what a node keeps of a committed round for an audit, its proposal and
the signed updates the committee aggregated (included, and the filter's rejections), as
the gossip carried them. `encode_round_record` / `decode_round_record`: a msgpack list of
canonical message encodings, proposal first; each message is checked again on decoding.
A member of a sealed round's committee also keeps the content keys it opened the deltas
with, as a last item `[[author, delta CID, key], ...]` (`round_record_keys`): with them
its record is auditable; without (a node off the committee) sealed deltas stay closed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import msgpack
import numpy as np

from p2pfl.core import aggregate as agg
from p2pfl.core import round_events as ev
from p2pfl.core.cid import CID, blob_cid
from p2pfl.core.messages import Proposal, Update, decode_message
from p2pfl.core.round import DISCRETION_REASONS
from p2pfl.core.round_result import committed_reward_tree, compute_aggregate
from p2pfl.core.signing import SIGNATURE_SIZE, Domain, recover_signer, vote_digest
from p2pfl.core.sortition import draw, leader_of
from p2pfl.errors import InvalidMessage, InvalidSignature

# A round record holds one proposal and at most one update per registered author; the
# message codec bounds each message, this bounds their count (a hostile file cannot make
# the decoder allocate much).
MAX_RECORD_MESSAGES = 100_000


@dataclass(frozen=True)
class Commit:
    """A RoundCommitted event with the signatures of its transaction (digests, not CIDs)."""

    task: bytes
    round: int
    attempt: int
    view: int
    base: bytes
    result: bytes
    contributors_root: bytes
    signatures: bytes  # commitRound's concatenated 65-byte records

    def statement(self) -> tuple[bytes, int, int, int, bytes, bytes, bytes]:
        """What the committee signed: (task, round, attempt, view, base, result, root)."""
        return (
            self.task,
            self.round,
            self.attempt,
            self.view,
            self.base,
            self.result,
            self.contributors_root,
        )


def committee_of(commit: Commit, stakes: Mapping[bytes, int], committee_size: int) -> list[bytes]:
    """The committee drawn for the commit's (round, attempt), in leader order; `stakes`:
    the registry snapshot the round drew from (chain.md, snapshot rule)."""
    return draw(commit.task, commit.round, commit.base, commit.attempt, stakes, committee_size)


def check_votes(
    domain: Domain, commit: Commit, committee: Sequence[bytes], quorum: int
) -> list[str]:
    """The commit's signatures: valid, by distinct committee members, at least `quorum`."""
    sigs = commit.signatures
    if len(sigs) % SIGNATURE_SIZE:
        return [f"votes are {len(sigs)} bytes, not a multiple of {SIGNATURE_SIZE}"]
    digest = vote_digest(domain, *commit.statement())
    members = set(committee)
    reasons: list[str] = []
    signers: set[bytes] = set()
    for i in range(0, len(sigs), SIGNATURE_SIZE):
        try:
            signer = recover_signer(digest, sigs[i : i + SIGNATURE_SIZE])
        except InvalidSignature as exc:
            reasons.append(f"vote {i // SIGNATURE_SIZE} is not a valid signature ({exc})")
            continue
        if signer in signers:
            reasons.append(f"0x{signer.hex()} voted twice")
        elif signer not in members:
            reasons.append(f"vote by 0x{signer.hex()}, who is not on the round's committee")
        signers.add(signer)
    good = len(signers & members)
    if good < quorum:
        reasons.append(f"{good} valid votes by committee members, below the quorum of {quorum}")
    return reasons


def check_proposal(
    domain: Domain, proposal: Proposal, commit: Commit, committee: Sequence[bytes]
) -> list[str]:
    """The recorded proposal is the one the commit names, signed by the view's leader."""
    try:
        proposal.verify(domain)
    except InvalidSignature as exc:
        return [f"the recorded proposal's signature is invalid ({exc})"]
    ours = (
        proposal.task,
        proposal.round,
        proposal.attempt,
        proposal.view,
        CID.parse(proposal.base).digest,
        CID.parse(proposal.result).digest,
        proposal.contributors_root,
    )
    if ours != commit.statement():
        return ["the recorded proposal is not the one the commit names"]
    if not committee or leader_of(list(committee), commit.view) != proposal.signer:
        return [f"the proposal's signer 0x{proposal.signer.hex()} is not the view's leader"]
    return []


def aggregated_updates(
    domain: Domain, proposal: Proposal, updates: Sequence[Update]
) -> tuple[list[Update], list[str]]:
    """The updates the committee aggregated for `proposal` (included, then the filter's
    rejections: one update per author, as a member verifies a proposal), sorted by
    author, from the recorded `updates`; and the reasons some cannot be had."""
    reasons: list[str] = []
    valid: list[Update] = []
    for u in updates:
        try:
            u.verify(domain)
        except InvalidSignature:
            reasons.append(f"the recorded update by 0x{u.signer.hex()} has an invalid signature")
            continue
        if u.task == proposal.task and u.round == proposal.round and u.base == proposal.base:
            valid.append(u)
    by_key = {(u.signer, u.delta): u for u in valid}
    chosen: list[Update] = []
    for key in proposal.included:
        if key in by_key:
            chosen.append(by_key[key])
        else:
            reasons.append(f"no signed update by 0x{key[0].hex()} with delta {CID.parse(key[1])}")
    for author, reason in proposal.rejected:
        if reason in DISCRETION_REASONS:
            continue
        versions = [u for u in valid if u.signer == author]
        if len(versions) == 1:
            chosen.append(versions[0])
        elif not versions:
            reasons.append(f"no signed update by rejected author 0x{author.hex()}")
        else:
            reasons.append(f"rejected author 0x{author.hex()} signed {len(versions)} updates")
    chosen.sort(key=lambda u: u.signer)
    return chosen, reasons


def inline_blob(update: Update) -> bytes | None:
    """The update's inline delta bytes when they are its delta (else None: fetch them)."""
    if update.inline and blob_cid(update.inline).to_bytes() == update.delta:
        return update.inline
    return None


def check_aggregate(
    spec: agg.RuleSpec,
    proposal: Proposal,
    updates: Sequence[Update],
    delta_blobs: Sequence[bytes],
    base: dict[str, np.ndarray],
    commit: Commit,
    committee: Sequence[bytes],
    stakes: Mapping[bytes, int],
    committee_size: int,
    reward_per_round_wei: int,
    record: Mapping[bytes, int],
    seal: Callable[[bytes], bytes] | None = None,
) -> list[str]:
    """Recompute the round as its committee did and compare with the proposal and the chain.

    `updates` / `delta_blobs`: `aggregated_updates` and their deltas' bytes (verified
    against their CIDs); `base`: the committed base model; `record`: the authors' strike
    points over the probation window before the round (empty without probation); `seal`:
    a private task's model sealing (the chain names the sealed model).
    """
    request = ev.ComputeAggregate(
        commit.round, commit.attempt, proposal.base, proposal.rule, tuple(committee), tuple(updates)
    )
    answer, model = compute_aggregate(
        spec, request, base, delta_blobs, reward_per_round_wei, record, seal=seal
    )
    if model is None:
        return [f"the rule does not aggregate these updates ({answer.error})"]
    reasons: list[str] = []
    filter_rejected = tuple((a, r) for a, r in proposal.rejected if r not in DISCRETION_REASONS)
    if answer.included != proposal.included or answer.rejected != filter_rejected:
        reasons.append(
            "the filter's decisions differ: recomputed "
            f"{_decisions(answer.included, answer.rejected)}, the proposal says "
            f"{_decisions(proposal.included, filter_rejected)}"
        )
    if model.cid.digest != commit.result:
        reasons.append(
            f"the aggregate differs: recomputed model {model.cid}, the chain names "
            f"{CID.parse(proposal.result)}"
        )
    tree = committed_reward_tree(
        proposal,
        {(u.signer, u.delta): u for u in updates},
        task=commit.task,
        attempt=commit.attempt,
        base_digest=commit.base,
        stakes=stakes,
        committee_size=committee_size,
        reward_per_round_wei=reward_per_round_wei,
    )
    if tree is None or tree.root != commit.contributors_root:
        rebuilt = "none" if tree is None else "0x" + tree.root.hex()
        reasons.append(
            f"the reward root differs: rebuilt {rebuilt}, "
            f"the chain's 0x{commit.contributors_root.hex()}"
        )
    return reasons


def _decisions(
    included: Sequence[tuple[bytes, bytes]], rejected: Sequence[tuple[bytes, str]]
) -> str:
    kept = ",".join("0x" + a.hex()[:8] for a, _ in included) or "-"
    dropped = ",".join(f"0x{a.hex()[:8]}:{r}" for a, r in rejected) or "-"
    return f"kept [{kept}] rejected [{dropped}]"


def probation_record(
    spec: agg.RuleSpec, round_: int, proposals: Mapping[int, Proposal]
) -> tuple[dict[bytes, int], list[int]]:
    """The strike points the committee of `round_` used, rebuilt from the committed
    proposals of its probation window; and the window's rounds with no proposal."""
    rule = spec.probation
    if rule is None:
        return {}, []
    missing = [r for r in rule.rounds(round_) if r not in proposals]
    history = {
        r: agg.strike_points(proposals[r].rejected, rule)
        for r in rule.rounds(round_)
        if r in proposals
    }
    return rule.record(round_, history), missing


def encode_round_record(
    proposal: Proposal,
    updates: Sequence[Update],
    keys: Mapping[ev.UpdateKey, bytes] | None = None,
) -> bytes:
    """A committed round's record: its proposal and the updates it names, and the content
    keys of those updates' sealed deltas that this node holds (if any)."""
    items: list[object] = [proposal.encode(), *(u.encode() for u in updates)]
    named = {(u.signer, u.delta) for u in updates}
    held = sorted((a, d, k) for (a, d), k in (keys or {}).items() if (a, d) in named)
    if held:
        items.append([list(entry) for entry in held])
    return msgpack.packb(items, use_bin_type=True)


def decode_round_record(data: bytes) -> tuple[Proposal, list[Update]]:
    """Inverse of `encode_round_record` (its keys: `round_record_keys`); InvalidMessage
    for anything else."""
    proposal, updates, _ = _decode_round_record(data)
    return proposal, updates


def round_record_keys(data: bytes) -> dict[ev.UpdateKey, bytes]:
    """The content keys a round record holds: (author, delta CID) -> key."""
    return _decode_round_record(data)[2]


def _decode_round_record(data: bytes) -> tuple[Proposal, list[Update], dict[ev.UpdateKey, bytes]]:
    try:
        items = msgpack.unpackb(
            data, raw=False, max_array_len=MAX_RECORD_MESSAGES, max_map_len=0, max_ext_len=0
        )
    except Exception as exc:  # msgpack raises many types for bad bytes; all mean one thing
        raise InvalidMessage("malformed", f"round record is not msgpack: {type(exc).__name__}")
    if type(items) is not list or not items:
        raise InvalidMessage("malformed", "round record must be a list of messages")
    keys: dict[ev.UpdateKey, bytes] = {}
    if len(items) > 1 and type(items[-1]) is list:
        keys = _record_keys(items.pop())
    if not all(type(i) is bytes for i in items):
        raise InvalidMessage("malformed", "round record must be a list of messages")
    proposal = decode_message(items[0])
    updates = [decode_message(i) for i in items[1:]]
    if not isinstance(proposal, Proposal) or not all(isinstance(u, Update) for u in updates):
        raise InvalidMessage("malformed", "round record: a proposal, then updates")
    return proposal, updates, keys  # type: ignore[return-value]


def _record_keys(entries: list[object]) -> dict[ev.UpdateKey, bytes]:
    keys: dict[ev.UpdateKey, bytes] = {}
    for entry in entries:
        if (
            type(entry) is not list
            or len(entry) != 3
            or not all(type(part) is bytes for part in entry)
            or len(entry[0]) != 20
            or len(entry[2]) != 32
        ):
            raise InvalidMessage("malformed", "round record keys: [author, delta CID, key]")
        keys[(entry[0], entry[1])] = entry[2]
    return keys
