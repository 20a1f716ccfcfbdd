"""`p2pfl audit` against commits the chain accepted: an honest round holds; a colluding
quorum's wrong aggregate, and its wrong reward root, fail with their reasons (the contract
checks only who signed, so such commits are what a forgery the chain accepts looks like).

The rounds are built by hand on the embedded EVM (p2pfl.chain.devnet): signed updates
with inline deltas, the leader's signed proposal, the committee's votes, commitRound, and
the round records a node would have kept.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import trio
from eth_utils import keccak

from p2pfl.chain.client import ChainClient
from p2pfl.chain.devnet import DEFAULT_GAS_FUNDS, ETHER, DevNet
from p2pfl.chain.providers import embedded_web3, fund
from p2pfl.cli.app import main
from p2pfl.cli.audit import audit_task, store_reader
from p2pfl.core import round_events as ev
from p2pfl.core.audit import encode_round_record
from p2pfl.core.cid import CID, blob_cid, digest_to_cid
from p2pfl.core.identity import NodeIdentity
from p2pfl.core.messages import Proposal, Update
from p2pfl.core.round_result import compute_aggregate
from p2pfl.core.sortition import committee_for, round_seed
from p2pfl.core.tensors import decode_tensors, encode_tensors
from p2pfl.errors import P2PFLError
from p2pfl.manifest import TaskManifest
from p2pfl.net.blockstore import BlockStore
from p2pfl.node.committed import round_record_path
from tests.realnodes import make_nodes, open_task, start_hosts

N = 4
K = 3
SIZE = 64
# The real-hosts run: as tests/test_node_inprocess.py.
N_NODES = 5
ROUNDS = 3
REWARD = ETHER // 100


class Task:
    """A task on a devnet, its genesis model in a node's block store, and round records."""

    def __init__(self, tmp_path: Path) -> None:
        self.devnet = DevNet.create(embedded_web3(), n_nodes=N, seed=11)
        dep = self.devnet.deployment
        self.genesis = encode_tensors({"w": np.zeros(SIZE, np.float32)})
        self.manifest = TaskManifest(
            name="audit",
            model="mlp",
            initial_model=str(blob_cid(self.genesis)),
            chain_id=dep.chain_id,
            registry=dep.registry,
            ledger=dep.ledger,
            committee_size=K,
            reward_per_round_wei=REWARD,
        )
        admin = self.devnet.admin
        fund(self.devnet.w3, admin.account.address, 10 * REWARD + DEFAULT_GAS_FUNDS)
        admin.create_task(
            self.manifest.task_id, blob_cid(self.genesis).digest, K, 0, REWARD, 10 * REWARD, 0
        )
        self.data = tmp_path / "node"
        self.store = BlockStore(self.data / "blocks")
        self.store.put_blob(self.genesis)
        self.base = blob_cid(self.genesis)
        self.round = 1

    def chain(self) -> ChainClient:
        return ChainClient(self.devnet.w3, self.devnet.deployment)

    def audit(self) -> list:  # type: ignore[type-arg]
        return audit_task(
            self.manifest, self.chain(), self.data / "state", store_reader(self.store)
        )

    def commit(self, wrong_model: bool = False, wrong_root: bool = False) -> None:
        """One round: every node trains, the committee agrees on (maybe forged) values."""
        task, dv, r = self.manifest.task_id, self.devnet, self.round
        base_model = decode_tensors(self.store.read_blob(self.base))
        _, stakes = dv.admin.committee_stakes(task)
        committee = committee_for(round_seed(task, r, self.base.digest, 0), stakes, K)
        assert len(committee) >= 2, "draw too small for the test"
        updates = []
        for i, key in enumerate(dv.keys):
            delta = encode_tensors({"w": np.full(SIZE, 0.01 * (i + 1), np.float32)})
            u = Update(
                task, r, self.base.to_bytes(), blob_cid(delta).to_bytes(), 10 + i,
                0.0, delta, dv.clients[i].address,
            )  # fmt: skip
            updates.append(u.signed(key, dv.deployment.domain()))
        updates.sort(key=lambda u: u.signer)
        spec = self.manifest.rule_spec()
        request = ev.ComputeAggregate(
            r, 0, self.base.to_bytes(), spec.name, tuple(committee), tuple(updates)
        )
        answer, model = compute_aggregate(
            spec, request, base_model, [u.inline for u in updates], REWARD, {}
        )
        assert model is not None
        result, root, blob = model.cid, answer.contributors_root, model.blob
        if wrong_model:  # the colluders shift the model and keep it for themselves
            w = decode_tensors(blob)["w"] + np.float32(1.0)
            blob = encode_tensors({"w": w})
            result = blob_cid(blob)
        if wrong_root:  # the colluders commit to a reward tree of their own (any root will do)
            root = keccak(b"a reward tree that pays the colluders")
        leader = committee[0]
        proposal = Proposal(
            task, r, 0, 0, self.base.to_bytes(), answer.included, answer.rejected,
            spec.name, result.to_bytes(), root, leader,
        ).signed(dv.key_of(leader), dv.deployment.domain())  # fmt: skip
        votes = dv.votes(committee, task, r, 0, 0, self.base.digest, result.digest, root)
        dv.clients[0].commit_round(
            task, r, 0, 0, self.base.digest, result.digest, root,
            [(a, v) for a, v in zip(committee, votes)],
        )  # fmt: skip
        path = round_record_path(self.data / "state", r)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode_round_record(proposal, updates))
        self.store.put_blob(blob)
        self.base = result
        self.round += 1


def test_honest_rounds_hold_and_a_colluding_quorum_fails(tmp_path: Path) -> None:
    t = Task(tmp_path)
    t.commit()
    t.commit(wrong_model=True)
    t.commit(wrong_root=True)
    t.commit()
    verdicts = t.audit()
    assert [v.round for v in verdicts] == [1, 2, 3, 4]
    assert verdicts[0].holds, verdicts[0].line()
    assert not verdicts[1].holds
    assert "the aggregate differs" in verdicts[1].line()
    assert "reward root" not in verdicts[1].line()
    assert not verdicts[2].holds
    assert verdicts[2].reasons == [verdicts[2].reasons[0]]
    assert "the reward root differs" in verdicts[2].line()
    # Round 4 is honest on top of the forged model: it holds (it is audited as it was built).
    assert verdicts[3].holds, verdicts[3].line()


def test_a_missing_record_and_a_tampered_update_fail(tmp_path: Path) -> None:
    t = Task(tmp_path)
    t.commit()
    t.commit()
    path1 = round_record_path(t.data / "state", 1)
    path2 = round_record_path(t.data / "state", 2)
    data = bytearray(path2.read_bytes())
    data[-200] ^= 0x01  # inside the last update's inline delta
    path2.write_bytes(bytes(data))
    path1.unlink()
    first, second = t.audit()
    assert "no record of the round" in first.line()
    assert "has an invalid signature" in second.line(), second.line()


def test_unknown_task_missing_data_dir_and_unreachable_rpc_are_clear_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    t = Task(tmp_path)
    other = replace(t.manifest, name="not-created")
    with pytest.raises(P2PFLError, match="not on this chain"):
        audit_task(other, t.chain(), t.data / "state", store_reader(t.store))
    manifest = str(t.manifest.save(tmp_path / "task.json"))
    assert main(["audit", "--task", manifest, "--data-dir", str(tmp_path / "nowhere")]) == 1
    assert "no data directory" in capsys.readouterr().err
    args = ["audit", "--task", manifest, "--data-dir", str(t.data), "--rpc", "http://127.0.0.1:9"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "p2pfl: error:" in err and "127.0.0.1:9" in err, err


async def run_nodes(tmp_path: Path) -> tuple[DevNet, TaskManifest]:
    """ROUNDS rounds of N_NODES nodes on real hosts (as tests/test_node_inprocess.py);
    node i keeps its state in tmp_path/state{i} and its blocks in tmp_path/net{i}."""
    genesis_blob = encode_tensors({"w": np.zeros(256, np.float32)})
    devnet, identities, manifest = open_task(
        genesis_blob, n_nodes=N_NODES, committee=3, rounds=ROUNDS, seed=5, name="audit"
    )
    async with AsyncExitStack() as stack:
        nets = await start_hosts(stack, identities, tmp_path, genesis_blob)
        nodes = make_nodes(devnet, identities, nets, manifest, tmp_path)
        with trio.fail_after(150):
            async with trio.open_nursery() as nursery:
                for node in nodes:
                    nursery.start_soon(node.run, ROUNDS)
    return devnet, manifest


async def test_a_real_run_holds_and_a_tampered_block_store_fails(tmp_path: Path) -> None:
    """Real libp2p hosts and nodes (tests/test_node_inprocess.py's set-up), sealed updates
    (the default): a member of a round's committee holds the keys of the deltas it opened
    and its data audits every round it saw commit; a node off the committee cannot open
    the sealed deltas and says so. A model block flipped on disk makes the round built on
    that model fail, naming the block."""
    from p2pfl.core.audit import committee_of

    devnet, manifest = await run_nodes(tmp_path)
    chain = ChainClient(devnet.w3, devnet.deployment)
    commits = chain.commits(0, chain.block_number(), manifest.task_id)
    _, stakes = chain.committee_stakes(manifest.task_id)
    addresses = [ident.address for ident in (NodeIdentity(k) for k in devnet.keys)]
    closed = 0
    for i in range(N_NODES):
        verdicts = audit_task(
            manifest,
            chain,
            tmp_path / f"state{i}",
            store_reader(BlockStore(tmp_path / f"net{i}" / "blocks")),
            last_round=ROUNDS - 1,  # the last round's record may be written after the stop
        )
        assert [v.round for v in verdicts] == list(range(1, ROUNDS)), i
        for v in verdicts:
            commit = next(c for c in commits if c.round == v.round)
            member = addresses[i] in committee_of(commit, stakes, 3)
            if member:
                assert v.holds, v.line()
            else:  # (a member of an earlier attempt of the round may hold the keys too; a
                # follower whose gossip lagged the commit may lack an update)
                assert v.holds or "holds no key" in v.line() or "no signed update" in v.line(), (
                    v.line()
                )
                closed += not v.holds
    assert closed, "some node off a committee should have been unable to open the deltas"

    (round_1,) = commits[:1]
    member = next(i for i in range(N_NODES) if addresses[i] in committee_of(round_1, stakes, 3))
    blocks = tmp_path / f"net{member}" / "blocks"
    info = chain.task_info(manifest.task_id)
    model = digest_to_cid(round_1.result, CID.parse(manifest.initial_model).codec)
    blob = BlockStore(blocks).read_blob(model)
    flipped = 0
    for pack in blocks.rglob("*.pack"):
        data = bytearray(pack.read_bytes())
        at = data.find(blob)
        if at >= 0:
            data[at + len(blob) // 2] ^= 0x01
            pack.write_bytes(bytes(data))
            flipped += 1
    assert flipped and info.last_round >= 2
    verdicts = audit_task(
        manifest,
        chain,
        tmp_path / f"state{member}",
        store_reader(BlockStore(blocks)),
        last_round=2,
    )
    assert verdicts[0].holds, verdicts[0].line()
    assert not verdicts[1].holds
    assert f"base model {model}" in verdicts[1].line(), verdicts[1].line()


def test_the_command_prints_one_line_per_round_or_json_and_fails_with_a_round(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    import p2pfl.chain.providers

    t = Task(tmp_path)
    t.commit()
    t.commit(wrong_model=True)
    monkeypatch.setattr(p2pfl.chain.providers, "rpc_web3", lambda url: t.devnet.w3)
    manifest = str(t.manifest.save(tmp_path / "task.json"))
    args = ["audit", "--task", manifest, "--data-dir", str(t.data)]
    assert main([*args, "--to-round", "1"]) == 0
    assert capsys.readouterr().out == "round 1: holds\n"
    assert main(args) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "round 1: holds" and out[1].startswith("round 2: FAILS: the aggregate")
    assert main([*args, "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert [(r["round"], r["holds"]) for r in doc["rounds"]] == [(1, True), (2, False)]
    assert doc["rounds"][1]["reasons"][0].startswith("the aggregate differs")
