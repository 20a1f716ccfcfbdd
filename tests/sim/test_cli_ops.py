"""The operator's commands as a person runs them, against a real anvil chain and real node
processes: `node start --metrics-port` scraped over HTTP while rounds commit (refused once
the node stopped), and `p2pfl serve` answering predictions from the latest committed model,
fetched from a peer into an empty store. Every process is started here and stopped by PID."""

import json
import os
import subprocess
import urllib.error
import urllib.request

import numpy as np
import pytest

from p2pfl.chain.providers import Anvil, free_loopback_port
from tests.sim.test_cli import P2PFL, AliceAndBob, open_task, wait_for_line


def get(url, data=None):
    """(status, JSON body) of one request; 4xx/5xx answers are returned, not raised."""
    try:
        with urllib.request.urlopen(url, data=data, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def metric(text, name):
    for line in text.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no {name} in:\n{text.decode()[:2000]}")


def test_cli_metrics_and_serve(tmp_path):
    with Anvil() as chain:
        rpc = ["--rpc", chain.url]
        open_task(tmp_path, rpc, ("alice", "bob"), name="ops-demo", epochs=1)
        logs = {"serve": tmp_path / "serve.log"}
        metrics_port = free_loopback_port()
        metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        with AliceAndBob(tmp_path, rpc, "--metrics-port", str(metrics_port)) as nodes:
            addr = nodes.addr
            nodes.wait_alice(r"metrics   http://127\.0\.0\.1:\d+/metrics")
            status, before = get(metrics_url)
            assert status == 200 and metric(before, "p2pfl_rounds_committed_total") == 0
            nodes.run_bob(rounds=2)
            nodes.wait_alice(r"round 2 committed")
            status, after = get(metrics_url)
            assert status == 200
            assert metric(after, "p2pfl_rounds_committed_total") >= 2
            assert metric(after, "p2pfl_round") >= 3
            assert metric(after, 'p2pfl_sent_bytes_total{protocol="gossip"}') > 0

            # `p2pfl serve` from an empty store: the committed model comes from alice.
            port = free_loopback_port()
            env = {**os.environ}
            server = subprocess.Popen(
                [*P2PFL, "serve", "--task", "manifest.json", *rpc, "--data-dir", "serve-data",
                 "--bootstrap", addr, "--port", str(port), "--poll", "0.5"],
                cwd=tmp_path, env=env, stdout=logs["serve"].open("w"), stderr=subprocess.STDOUT,
            )  # fmt: skip
            nodes.also_stop(server)
            wait_for_line(logs["serve"], r"serving   http://127\.0\.0\.1:\d+", server)
            wait_for_line(logs["serve"], r"serving round [2-9]\d* model", server)
            status, body = get(f"http://127.0.0.1:{port}/model")
            info = json.loads(body)
            assert status == 200 and info["round"] >= 2, info
            x = np.random.default_rng(0).random((3, 1, 8, 8)).round(3).tolist()
            status, body = get(f"http://127.0.0.1:{port}/predict",
                               json.dumps({"inputs": x}).encode())  # fmt: skip
            answer = json.loads(body)
            assert status == 200, answer
            assert len(answer["predictions"]) == 3 and answer["model"] == info["model"]
            assert all(isinstance(p, int) and 0 <= p < 10 for p in answer["predictions"])
            status, body = get(f"http://127.0.0.1:{port}/predict", b'{"inputs": [[1, 2]]}')
            assert status == 400 and "the model takes [N, 1, 8, 8]" in json.loads(body)["error"]
            assert server.poll() is None, logs["serve"].read_text()
        assert nodes.alice.returncode is not None
        with pytest.raises(urllib.error.URLError):
            get(metrics_url)
