"""`p2pfl audit` as a person runs it, against a real anvil chain and real node processes:
a node's data directory audits every round as holding; a copy of its round records with
no blocks holds too, fetching them from a running peer (`--bootstrap`); a flipped byte in
its block store makes the round built on that model fail. Every process is started here
and stopped by PID."""

import json
import os
import shutil
import subprocess

from p2pfl.chain.providers import Anvil
from p2pfl.core.audit import decode_round_record
from p2pfl.core.cid import CID
from p2pfl.net.blockstore import BlockStore
from p2pfl.node.committed import round_record_path
from tests.sim.test_cli import P2PFL, AliceAndBob, open_task


def audit(tmp_path, *args, quiet=False):
    """(exit status, stdout, stderr) of one `p2pfl audit`."""
    out = subprocess.run(
        [*P2PFL, *(["-q"] if quiet else []), "audit", "--task", "manifest.json", *args],
        cwd=tmp_path, env={**os.environ}, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    return out.returncode, out.stdout, out.stderr


def test_cli_audit(tmp_path, monkeypatch):
    monkeypatch.setenv("P2PFL_PROGRESS", "1")  # progress lines in the logs (not a terminal)
    with Anvil() as chain:
        rpc = ["--rpc", chain.url]
        open_task(tmp_path, rpc, ("alice", "bob"), name="audit-demo", epochs=1)
        with AliceAndBob(tmp_path, rpc) as nodes:
            addr = nodes.addr
            nodes.run_bob(rounds=2)
            assert "round 1: training epoch 1/1, loss " in nodes.logs["bob"].read_text()

            code, out, err = audit(tmp_path, *rpc, "--data-dir", "bob-data", "--to-round", "2")
            assert (code, out) == (0, "round 1: holds\nround 2: holds\n"), err

            # Bob's records alone: every block comes from alice, verified on arrival.
            shutil.copytree(tmp_path / "bob-data" / "state" / "rounds",
                            tmp_path / "auditor" / "state" / "rounds")  # fmt: skip
            code, out, err = audit(tmp_path, *rpc, "--data-dir", "auditor", "--to-round", "2",
                                   "--bootstrap", addr, "--json")  # fmt: skip
            assert code == 0, out + err
            assert [r["holds"] for r in json.loads(out)["rounds"]] == [True, True]
            assert "fetched blob " in err, err  # progress lines, on stderr
            shutil.rmtree(tmp_path / "auditor" / "audit-net")
            code, out, err = audit(tmp_path, *rpc, "--data-dir", "auditor", "--to-round", "2",
                                   "--bootstrap", addr, quiet=True)  # fmt: skip
            assert code == 0 and "fetch" not in err, out + err

        # A flipped byte in bob's copy of round 1's model: round 2, built on it, fails.
        blocks = tmp_path / "bob-data" / "blocks"
        proposal, _ = decode_round_record(
            round_record_path(tmp_path / "bob-data" / "state", 2).read_bytes()
        )
        model = CID.parse(proposal.base)
        blob = BlockStore(blocks).read_blob(model)
        flipped = 0
        for pack in blocks.rglob("*.pack"):
            data = bytearray(pack.read_bytes())
            at = data.find(blob[: 1 << 12])
            if at >= 0:
                data[at + 100] ^= 0x01
                pack.write_bytes(bytes(data))
                flipped += 1
        assert flipped
        code, out, err = audit(tmp_path, *rpc, "--data-dir", "bob-data", "--to-round", "2")
        assert code == 1, out + err
        first, second = out.splitlines()
        assert first == "round 1: holds"
        assert second.startswith(f"round 2: FAILS: base model {model}"), second

        code, out, err = audit(tmp_path, *rpc, "--data-dir", "nobody-data")
        assert code == 1 and "no data directory" in err
