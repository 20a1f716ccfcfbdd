"""A private task on real nodes (libp2p hosts on 127.0.0.1, the contracts on eth-tester,
the stand-in trainer of tests/realnodes.py): the nodes get the task model key from
on-chain wraps, train and commit sealed models; an outsider fetches the committed model's
blocks but cannot read them, buys access, a participant's node posts its wrap, and
`p2pfl model get --manifest` (the library call behind it) writes the plaintext model.
Key holders still audit the rounds."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path

import numpy as np
import pytest
import trio
from eth_account import Account

import p2pfl.chain.providers
import p2pfl.cli.chain
from p2pfl.chain.access import KeyGranter, model_key_for
from p2pfl.chain.client import ChainClient
from p2pfl.chain.devnet import ETHER
from p2pfl.chain.providers import fund
from p2pfl.cli.audit import audit_task, store_reader
from p2pfl.cli.chain import buy_access_command
from p2pfl.cli.launch import grant_keys
from p2pfl.cli.node import ModelAccess, get_model
from p2pfl.core.cid import CID, digest_to_cid
from p2pfl.core.tensors import decode_tensors, encode_tensors
from p2pfl.errors import ChainError, P2PFLError
from p2pfl.keystore import generate_identity, save_keystore
from p2pfl.net.blockstore import BlockStore
from p2pfl.sealing import new_key
from p2pfl.task_access import AccessError, ModelKey, seal_model
from tests.realnodes import make_nodes, open_task, start_hosts

N_NODES = 4
COMMITTEE = 3
ROUNDS = 2
SIZE = 256
PRICE = ETHER // 50
PASSWORD = "buyer"


async def test_outsider_reads_the_models_only_after_buying(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    genesis = encode_tensors({"w": np.zeros(SIZE, np.float32)})
    key = new_key()
    sealed_genesis = seal_model(key, genesis)  # the manifest names the sealed genesis
    devnet, identities, manifest = open_task(
        sealed_genesis, n_nodes=N_NODES, committee=COMMITTEE, rounds=ROUNDS, seed=7,
        name="private", private=(PRICE, key),
    )  # fmt: skip
    task = manifest.task_id
    model_key = ModelKey(task, key)
    w3 = devnet.w3
    monkeypatch.setattr(p2pfl.chain.providers, "rpc_web3", lambda url: w3)
    monkeypatch.setattr(p2pfl.cli.chain, "rpc_web3", lambda url: w3)

    # The creator posts the key, wrapped, to every registered node; each node unwraps it.
    posted = KeyGranter(devnet.admin, model_key, is_creator=True).step()
    assert sorted(posted) == sorted(c.address for c in devnet.clients)
    clients = [ChainClient(w3, devnet.deployment, i.private_key) for i in identities]
    keys = [
        model_key_for(c, task, i.x25519_private_key, tmp_path / f"keys{n}")
        for n, (c, i) in enumerate(zip(clients, identities))
    ]
    assert all(k == model_key for k in keys)

    # An outsider with a keystore and funds, not registered.
    buyer = generate_identity()
    keystore = tmp_path / "buyer.json"
    save_keystore(buyer, keystore, PASSWORD, kdf="pbkdf2")
    fund(w3, buyer.checksum_address, ETHER)
    manifest_path = manifest.save(tmp_path / "task.json")
    access = ModelAccess(manifest_path, "embedded", keystore, PASSWORD)
    outsider_dir = tmp_path / "outsider"

    async with AsyncExitStack() as stack:
        nets = await start_hosts(stack, identities, tmp_path, sealed_genesis)
        nodes = make_nodes(devnet, identities, nets, manifest, tmp_path, model_keys=keys)
        bootstrap = [str(nets[0].listen_addrs[0])]
        genesis_cid = manifest.initial_model
        # Before paying: no wrap for the buyer, so no key.
        with pytest.raises(AccessError, match="no key wrap posted"):
            await get_model(genesis_cid, tmp_path / "g.safetensors", outsider_dir, bootstrap,
                            access=access)  # fmt: skip
        # A wrong price is refused with the contract's reason; then the buyer pays.
        with pytest.raises(ChainError, match=f"WrongPrice\\(price={PRICE}, sent={PRICE - 1}\\)"):
            buy_access_command("embedded", manifest_path, keystore, PASSWORD, PRICE - 1)
        with trio.fail_after(150):
            async with trio.open_nursery() as nursery:
                for node in nodes:
                    nursery.start_soon(node.run, ROUNDS)
                # Node 1 (not the creator) watches for buyers without a wrap.
                watcher = trio.CancelScope()

                async def watch() -> None:
                    with watcher:
                        await grant_keys(nodes[1], clients[1], keys[1], every_s=0.3,
                                         fallback_s=0.0)  # fmt: skip

                nursery.start_soon(watch)
                await trio.to_thread.run_sync(
                    buy_access_command, "embedded", manifest_path, keystore, PASSWORD, PRICE
                )
                for node in nodes:
                    await node.finished.wait()
                while not devnet.admin.key_wraps(task, buyer.address):
                    await trio.sleep(0.2)
                watcher.cancel()
        assert nodes[1].counters.get("key-wraps-posted") == 1

        info = devnet.admin.task_info(task)
        assert info.last_round >= ROUNDS
        final = digest_to_cid(info.last_result, CID.parse(genesis_cid).codec)
        # The nodes' stores hold the committed model sealed; it opens under the key.
        stored = nets[0].store.read_blob(final)
        plain = model_key.open(stored)
        assert decode_tensors(plain)["w"].shape == (SIZE,)
        assert plain not in stored
        # Without the key: the outsider fetches every block, and reads no model.
        with pytest.raises(P2PFLError, match="is not a model"):
            await get_model(str(final), tmp_path / "x.safetensors", outsider_dir, bootstrap)
        assert BlockStore(outsider_dir / "blocks").read_blob(final) == stored
        # After paying (and node 1's wrap): the plaintext model.
        out = await get_model(str(final), tmp_path / "final.safetensors", outsider_dir, bootstrap,
                              access=access)  # fmt: skip
        assert out.read_bytes() == plain

    # The payment joined the escrow the rounds pay out of, through the reward claims.
    reward = ETHER // 100  # tests/realnodes.open_task's, escrowed for ROUNDS rounds
    assert info.escrow == ROUNDS * reward + PRICE - info.last_round * reward
    # Key holders audit the sealed rounds: each round from the data of a node that sat on
    # its committee (sealed updates, the default: only members hold the deltas' keys;
    # protocol/spec/sealing.md, "audit"); the others say they cannot open the deltas (or,
    # a follower whose gossip lagged the commit, that it lacks an update).
    held: set[int] = set()
    for i in range(N_NODES):
        verdicts = audit_task(
            manifest,
            ChainClient(w3, devnet.deployment),
            tmp_path / f"state{i}",
            store_reader(BlockStore(tmp_path / f"net{i}" / "blocks")),
            last_round=ROUNDS - 1,
            model_key=model_key,
        )
        closed = ("holds no key", "no signed update")
        assert verdicts and all(v.holds or any(c in v.line() for c in closed) for v in verdicts), [
            v.line() for v in verdicts
        ]
        held |= {v.round for v in verdicts if v.holds}
    assert held == set(range(1, ROUNDS))


def test_buying_a_public_task_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    genesis = encode_tensors({"w": np.zeros(SIZE, np.float32)})
    devnet, _, manifest = open_task(
        genesis, n_nodes=2, committee=1, rounds=1, seed=8, name="public"
    )
    monkeypatch.setattr(p2pfl.cli.chain, "rpc_web3", lambda url: devnet.w3)
    buyer = generate_identity()
    keystore = tmp_path / "buyer.json"
    save_keystore(buyer, keystore, PASSWORD, kdf="pbkdf2")
    fund(devnet.w3, Account.from_key(buyer.private_key).address, ETHER)
    path = manifest.save(tmp_path / "task.json")
    with pytest.raises(ChainError, match="NotPrivate"):
        buy_access_command("embedded", path, keystore, PASSWORD, PRICE)


def test_task_create_private_seals_the_genesis_and_wraps_the_key_to_every_node(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`p2pfl task create --private PRICE`: the genesis in the creator's store is sealed,
    the key is kept in its data dir, and each registered node can unwrap it from the chain."""
    from p2pfl.chain.devnet import DevNet
    from p2pfl.chain.providers import embedded_web3
    from p2pfl.cli.app import main
    from p2pfl.manifest import TaskManifest
    from p2pfl.task_access import load_model_key

    devnet = DevNet.create(embedded_web3(), 3, seed=9)
    monkeypatch.setattr(p2pfl.chain.providers, "rpc_web3", lambda url: devnet.w3)
    creator = generate_identity()
    save_keystore(creator, tmp_path / "creator.json", PASSWORD, kdf="pbkdf2")
    fund(devnet.w3, creator.checksum_address, 10 * ETHER)
    devnet.deployment.save(tmp_path / "deployment.json")
    (tmp_path / "pw").write_text(PASSWORD)
    args = [
        "task", "create", "--deployment", str(tmp_path / "deployment.json"),
        "--keystore", str(tmp_path / "creator.json"), "--password-file", str(tmp_path / "pw"),
        "--model", "mlp", "--committee-size", "3", "--reward-per-round", "0.01",
        "--rounds-budget", "2", "--data-dir", str(tmp_path / "creator"),
        "--out", str(tmp_path / "task.json"), "--private", "0.02",
    ]  # fmt: skip
    assert main(args) == 0
    assert "private:       access 0.02 ETH" in capsys.readouterr().out
    manifest = TaskManifest.load(tmp_path / "task.json")
    task = manifest.task_id
    assert devnet.admin.access_price(task) == ETHER // 50
    monkeypatch.setattr(p2pfl.cli.chain, "rpc_web3", lambda url: devnet.w3)
    status = p2pfl.cli.chain.status_command("embedded", tmp_path / "deployment.json", task=task)
    assert status["task"]["access_price_wei"] == ETHER // 50
    kept = load_model_key(tmp_path / "creator", task, devnet.admin.model_key_digest(task))
    assert kept is not None
    stored = BlockStore(tmp_path / "creator" / "blocks").read_blob(
        CID.parse(manifest.initial_model)
    )
    with pytest.raises(P2PFLError):
        decode_tensors(stored)  # sealed
    assert decode_tensors(kept.open(stored))
    # One wrap per registered node, to the X25519 key it registered (DevNet's are stand-ins
    # nobody can open; the real-nodes test above unwraps real ones).
    for c in devnet.clients:
        (wrap,) = devnet.admin.key_wraps(task, c.address)
        assert wrap.enc_key == devnet.admin.node_info(c.address).enc_key
