"""`p2pfl audit`: recompute a task's committed rounds and say which hold.

For each RoundCommitted event of the task (in chain order), from the chain:
- the votes: the `signatures` of its commitRound transaction, valid over the commit's
  VOTE statement, by distinct members of the committee drawn for its (round, attempt)
  from the registry snapshot the round drew from (the stakes at the end of the block
  before the previous commit, or before the task's creation for round 1: the registry's
  checkpoints answer for any past block, no archive node needed), at least the quorum;
and from a node's data directory (`--data-dir`, the one `p2pfl node start` used):
- the round's record (`state/rounds/round-NNNNNN.msgpack`): the proposal the commit
  names and the signed updates it aggregated, kept by the node from the gossip as the
  round committed (p2pfl.node.committed). The chain holds digests only, and gossip is
  not replayed to newcomers, so a round's proposal and updates exist only where a node
  saw them: an auditor audits with the records of a node it runs (or the files another
  node hands over: every message in them is signed, and checked again here);
- the deltas (inline in their updates, else blocks) and the base model, from the node's
  block store (`blocks/`), or from peers (`--bootstrap`) for blocks it lacks; every
  block is verified against its CID;
then filter + rule are run over those updates on the base model with the committee's
own code (p2pfl.core.round_result.compute_aggregate): the filter's decisions must equal
the proposal's, the new model's CID the chain's result, and the reward tree rebuilt from
the proposal (committed_reward_tree) the chain's contributors root. The leader's own
rejections (an equivocating author, a delta nobody could fetch) are taken as the proposal
states them: the committee does not recompute those either.

A round that cannot be recomputed (no record, a missing or corrupt block) does not hold:
the reason says what is missing. One line per round (`round N: holds` or
`round N: FAILS: <reason>`), or `--json`; the exit status is 1 if any round fails.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from p2pfl.cli.progress import Progress, progress_printer
from p2pfl.errors import ChainError, P2PFLError

# A blob the auditor reads: a model or a delta (verified against its CID), or an error.
ReadBlob = Callable[[Any], bytes]


@dataclass
class RoundAudit:
    """One committed round's verdict."""

    round: int
    attempt: int
    tx_hash: str
    reasons: list[str] = field(default_factory=list)

    @property
    def holds(self) -> bool:
        return not self.reasons

    def line(self) -> str:
        if self.holds:
            return f"round {self.round}: holds"
        return f"round {self.round}: FAILS: {'; '.join(self.reasons)}"

    def to_json(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "attempt": self.attempt,
            "tx": self.tx_hash,
            "holds": self.holds,
            "reasons": self.reasons,
        }


def audit_task(
    manifest: Any,  # p2pfl.manifest.TaskManifest
    chain: Any,  # p2pfl.chain.client.ChainClient
    state_dir: Path,
    read_blob: ReadBlob,
    first_round: int = 1,
    last_round: int | None = None,
    model_key: Any = None,
) -> list[RoundAudit]:
    """Audit the task's committed rounds in [first_round, last_round] (blocking).

    `state_dir`: the node's round records; `read_blob(cid)`: a blob's bytes, verified
    against `cid` (P2PFLError or OSError if it cannot be had). A private task's models
    are sealed: `model_key` (p2pfl.task_access.ModelKey) opens them, and by default it is
    the key kept in the node's data directory (state_dir's parent)."""
    from p2pfl.chain.client import RoundCommitted
    from p2pfl.chain.follower import DEFAULT_CHUNK_BLOCKS
    from p2pfl.core.audit import Commit

    task = manifest.task_id
    info = chain.task_info(task)
    if not info.exists:
        raise P2PFLError(f"task 0x{task.hex()} is not on this chain (check --rpc and --task)")
    if model_key is None:
        from p2pfl.chain.access import kept_model_key

        model_key = kept_model_key(chain, task, state_dir.parent)
    created = chain.task_created_block(task)
    if created is None:
        raise ChainError(f"no TaskCreated event for task 0x{task.hex()} on this chain")
    head = chain.block_number()
    events: list[RoundCommitted] = []
    for start in range(created, head + 1, DEFAULT_CHUNK_BLOCKS):  # providers cap log ranges
        events += chain.commits(start, min(head, start + DEFAULT_CHUNK_BLOCKS - 1), task)
    nodes = chain.registered_nodes()
    proposals: dict[int, Any] = {}  # round -> committed proposal (for probation records)
    out: list[RoundAudit] = []
    previous_block = created
    for event in events:
        in_range = first_round <= event.round and (last_round is None or event.round <= last_round)
        snapshot = previous_block - 1
        previous_block = event.block_number
        if not in_range:
            _remember_proposal(state_dir, event, proposals)
            continue
        verdict = RoundAudit(event.round, event.attempt, "0x" + event.tx_hash.hex())
        out.append(verdict)
        try:
            signatures = chain.commit_signatures(event.tx_hash)
        except ChainError as exc:
            verdict.reasons.append(f"cannot read the votes: {exc}")
            continue
        commit = Commit(
            task,
            event.round,
            event.attempt,
            event.view,
            event.base,
            event.result,
            event.contributors_root,
            signatures,
        )
        _, stakes = chain.stakes_at(snapshot, nodes)
        verdict.reasons.extend(
            _audit_round(
                manifest, chain, info, commit, stakes, state_dir, read_blob, proposals, model_key
            )
        )
    return out


def _remember_proposal(state_dir: Path, event: Any, proposals: dict[int, Any]) -> None:
    """Keep the proposal of a round outside the audited range for the probation record."""
    from p2pfl.core.audit import decode_round_record
    from p2pfl.core.cid import CID
    from p2pfl.node.committed import round_record_path

    try:
        proposal, _ = decode_round_record(round_record_path(state_dir, event.round).read_bytes())
    except (OSError, P2PFLError):
        return
    if CID.parse(proposal.result).digest == event.result:
        proposals[event.round] = proposal


def _audit_round(
    manifest: Any,
    chain: Any,
    info: Any,
    commit: Any,
    stakes: dict[bytes, int],
    state_dir: Path,
    read_blob: ReadBlob,
    proposals: dict[int, Any],
    model_key: Any = None,
) -> list[str]:
    from p2pfl.core import audit
    from p2pfl.core.cid import CID, digest_to_cid
    from p2pfl.core.tensors import decode_tensors
    from p2pfl.node.committed import round_record_path

    domain = chain.domain()
    committee = audit.committee_of(commit, stakes, info.committee_size)
    reasons = audit.check_votes(domain, commit, committee, info.quorum)
    path = round_record_path(state_dir, commit.round)
    try:
        data = path.read_bytes()
        proposal, recorded = audit.decode_round_record(data)
        keys = audit.round_record_keys(data)
    except FileNotFoundError:
        return [*reasons, f"no record of the round in {path.parent} (the node did not see it)"]
    except (OSError, P2PFLError) as exc:
        return [*reasons, f"unreadable round record {path}: {exc}"]
    wrong = audit.check_proposal(domain, proposal, commit, committee)
    if wrong:
        return reasons + wrong
    proposals[commit.round] = proposal
    updates, missing = audit.aggregated_updates(domain, proposal, recorded)
    if missing:
        return reasons + missing
    spec = manifest.rule_spec()
    if proposal.rule != spec.name:
        return [*reasons, f"the proposal's rule {proposal.rule!r} is not the task's {spec.name!r}"]
    record, unknown = audit.probation_record(spec, commit.round, proposals)
    if unknown:
        return [*reasons, f"no record of rounds {unknown} for the probation history"]
    genesis = CID.parse(manifest.initial_model)
    base_cid = genesis if commit.round == 1 else digest_to_cid(commit.base, genesis.codec)
    try:
        stored = read_blob(base_cid)
        base = decode_tensors(model_key.open(stored) if model_key is not None else stored)
    except (OSError, P2PFLError) as exc:
        return [*reasons, f"base model {base_cid}: {exc}"]
    blobs = []
    for u in updates:
        blob = audit.inline_blob(u)
        if blob is None:
            try:
                blob = read_blob(CID.parse(u.delta))
            except (OSError, P2PFLError) as exc:
                return [*reasons, f"delta {CID.parse(u.delta)} of 0x{u.signer.hex()}: {exc}"]
        if u.wraps:
            opened = _open_sealed_delta(u, blob, keys)
            if isinstance(opened, str):
                return [*reasons, opened]
            blob = opened
        blobs.append(blob)
    return reasons + audit.check_aggregate(
        spec,
        proposal,
        updates,
        blobs,
        base,
        commit,
        committee,
        stakes,
        info.committee_size,
        manifest.reward_per_round_wei,
        record,
        seal=model_key.seal if model_key is not None else None,
    )


def _open_sealed_delta(update: Any, sealed: bytes, keys: dict[Any, bytes]) -> bytes | str:
    """A sealed delta's plaintext with the content key the node's round record kept, or why
    not (spec sealing.md, "audit": only a member of the round's committee holds keys)."""
    from p2pfl.core.cid import CID
    from p2pfl.core.sealed import delta_aad
    from p2pfl.core.tensors import InvalidTensors
    from p2pfl.sealing import SealError, open_delta

    who = f"0x{update.signer.hex()}"
    key = keys.get((update.signer, update.delta))
    if key is None:
        return (
            f"the sealed delta {CID.parse(update.delta)} of {who} cannot be opened: this node "
            "holds no key for it (only the round's committee members do; audit from one)"
        )
    try:
        return open_delta(key, sealed, delta_aad(update.task, update.round, update.signer))
    except SealError as exc:
        return f"the sealed delta of {who} does not open with the recorded key ({exc})"
    except InvalidTensors as exc:
        return f"the sealed delta of {who} opens to a bad float16 packing ({exc})"


def store_reader(store: Any) -> ReadBlob:
    """`read_blob` from a block store alone."""
    from p2pfl.net.blockstore import BlockNotFound

    def read(cid: Any) -> bytes:
        try:
            return bytes(store.read_blob(cid))
        except BlockNotFound as exc:
            raise P2PFLError(f"not in the block store ({exc}); pass --bootstrap ADDR") from None

    return read


async def audit(
    manifest_path: str | Path,
    rpc_url: str,
    data_dir: str | Path,
    bootstrap: tuple[str, ...] = (),
    first_round: int = 1,
    last_round: int | None = None,
    progress: Progress | None = None,
) -> list[RoundAudit]:
    """`p2pfl audit`'s work: the chain at `rpc_url`, a node's `data_dir`, and peers for
    the blocks the store lacks (`progress`: lines while they are fetched)."""
    import trio

    from p2pfl.chain.client import ChainClient, Deployment
    from p2pfl.chain.providers import rpc_web3
    from p2pfl.keystore import generate_identity
    from p2pfl.manifest import TaskManifest
    from p2pfl.net.blockstore import BlockStore
    from p2pfl.net.config import NetConfig
    from p2pfl.net.host import open_node_host
    from p2pfl.node.models import fetch_reporting

    manifest = TaskManifest.load(manifest_path)
    data = Path(data_dir)
    state_dir = data / "state"
    if not data.is_dir():
        raise P2PFLError(f"no data directory {data}: pass the --data-dir of a node of the task")
    deployment = Deployment(manifest.chain_id, manifest.registry, manifest.ledger, 0)
    chain = ChainClient(rpc_web3(rpc_url), deployment)

    def run(read: ReadBlob) -> list[RoundAudit]:
        return audit_task(manifest, chain, state_dir, read, first_round, last_round)

    if not bootstrap:
        return await trio.to_thread.run_sync(run, store_reader(BlockStore(data / "blocks")))
    config = NetConfig(
        data_dir=data / "audit-net",
        listen="/ip4/127.0.0.1/tcp/0",
        bootstrap=bootstrap,
        require_peers=True,
    )
    async with open_node_host(config, generate_identity().private_key) as net:
        local = BlockStore(data / "blocks")

        def read(cid: Any) -> bytes:
            if local.has_blob(cid):
                return bytes(local.read_blob(cid))
            # Verified block by block as it arrives.
            trio.from_thread.run(fetch_reporting, net, cid, None, progress, "blob")
            return bytes(net.store.read_blob(cid))

        return await trio.to_thread.run_sync(run, read)


def add_audit_command(sub: argparse._SubParsersAction) -> None:
    from p2pfl.cli.common import DEFAULT_RPC, default_rpc

    parser = sub.add_parser(
        "audit",
        help="recompute a task's committed rounds and report which hold",
        description=(__doc__ or "").split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--task", "--manifest", dest="manifest", required=True, help="task manifest"
    )
    parser.add_argument(
        "--rpc", default=default_rpc(), help=f"JSON-RPC URL (default $P2PFL_RPC or {DEFAULT_RPC})"
    )
    parser.add_argument(
        "--data-dir",
        default="p2pfl-data",
        help="a node's data directory (round records and block store)",
    )
    parser.add_argument(
        "--bootstrap", action="append", default=[], help="peer to fetch missing blocks from"
    )
    parser.add_argument("--from-round", type=int, default=1, help="first round to audit")
    parser.add_argument("--to-round", type=int, default=None, help="last round to audit")
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    parser.set_defaults(handler=_cmd_audit)


def _cmd_audit(args: argparse.Namespace) -> int:
    import trio

    if args.from_round < 1 or (args.to_round is not None and args.to_round < args.from_round):
        raise P2PFLError("--from-round must be >= 1 and --to-round >= --from-round")
    verdicts = trio.run(
        audit,
        args.manifest,
        args.rpc,
        args.data_dir,
        tuple(args.bootstrap),
        args.from_round,
        args.to_round,
        progress_printer(args.quiet),
    )
    if args.json:
        json.dump({"rounds": [v.to_json() for v in verdicts]}, sys.stdout, indent=1)
        print()
    else:
        for v in verdicts:
            print(v.line())
        if not verdicts:
            print("no committed round to audit")
    return 0 if all(v.holds for v in verdicts) else 1
