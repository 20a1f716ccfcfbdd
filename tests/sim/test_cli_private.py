"""A private task through the CLI, as new users run it: real anvil, real node processes.
Alice creates the task `--private 0.05`; alice and bob train two rounds on sealed models;
carol (no stake) fetches the committed model's blocks but reads nothing, buys access
(a wrong price is refused with its reason), alice's node posts her wrap, and `model get
--manifest` writes the plaintext model. Bob audits the sealed rounds. Every process is
started here and stopped by PID."""

import os
import re
import subprocess
import time

from p2pfl.chain.providers import Anvil, fund, rpc_web3
from p2pfl.core.tensors import decode_tensors
from p2pfl.keystore import load_keystore
from tests.sim.test_cli import P2PFL, AliceAndBob, open_task, p2pfl

PASSWORD = "correct horse"


def p2pfl_fails(*args, cwd, timeout=120):
    """Run a command expected to fail; its stderr."""
    env = {**os.environ, "P2PFL_PASSWORD": PASSWORD}
    out = subprocess.run(
        [*P2PFL, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert out.returncode != 0, f"p2pfl {' '.join(args)} succeeded:\n{out.stdout}"
    return out.stderr


def test_private_task_journey(tmp_path):
    with Anvil() as chain:
        rpc = ["--rpc", chain.url]
        out = open_task(tmp_path, rpc, ("alice", "bob"), name="private", epochs=1,
                        extra=("--private", "0.05"))  # fmt: skip
        assert "private:       access 0.05 ETH" in out
        with AliceAndBob(tmp_path, rpc) as nodes:
            nodes.run_bob(rounds=2)
            bob_log = nodes.logs["bob"].read_text()
            model = re.findall(r"round 2 committed: model (\S+)", bob_log)[0]
            get = ("model", "get", model, "--data-dir", "carol-data", "--bootstrap", nodes.addr)

            p2pfl("keygen", "-o", "carol.json", cwd=tmp_path)
            carol = load_keystore(tmp_path / "carol.json", PASSWORD)
            fund(rpc_web3(chain.url), carol.checksum_address, 10**18)
            # Without paying: the blocks come, the model does not open.
            err = p2pfl_fails(*get, "-o", "sealed.safetensors", cwd=tmp_path)
            assert "is not a model" in err and "private task" in err, err
            err = p2pfl_fails("buy-access", *rpc, "--manifest", "manifest.json", "--price",
                              "0.04", "--keystore", "carol.json", cwd=tmp_path)  # fmt: skip
            assert "WrongPrice(price=50000000000000000, sent=40000000000000000)" in err, err
            out = p2pfl("buy-access", *rpc, "--manifest", "manifest.json", "--price", "0.05",
                        "--keystore", "carol.json", cwd=tmp_path)  # fmt: skip
            assert "access bought: 0.05 ETH" in out
            # Alice's node (the creator's) posts carol's wrap within its next pass.
            deadline = time.monotonic() + 60
            while True:
                env = {**os.environ, "P2PFL_PASSWORD": PASSWORD}
                done = subprocess.run(
                    [*P2PFL, *get, "-o", "model.safetensors", "--manifest", "manifest.json",
                     "--keystore", "carol.json", *rpc],
                    cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
                )  # fmt: skip
                if done.returncode == 0:
                    break
                assert "no key wrap posted" in done.stderr, done.stderr
                assert time.monotonic() < deadline, "no wrap for carol within 60 s"
                time.sleep(2)
            assert decode_tensors((tmp_path / "model.safetensors").read_bytes())
            audit = p2pfl("audit", "--task", "manifest.json", "--data-dir", "bob-data",
                          "--to-round", "1", *rpc, cwd=tmp_path)  # fmt: skip
            assert "round 1: holds" in audit, audit
