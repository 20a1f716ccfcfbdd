"""`p2pfl serve` latency and throughput: the default task model (the small CNN on 28x28
images) answering `POST /predict` over HTTP on loopback.

The server is a child process (`python -m sim.bench.serve --child`) running the command's
own request path: the model stored in a block store, read back verified and loaded as
`p2pfl serve` loads a committed one (`p2pfl.cli.serve._load_round`), answered by
`serve_http`. The chain poll is off the request path, so no chain is started. Clients
are threads of this process, each on one keep-alive connection.
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from sim.bench import BenchError, ChildProcess, figure

MODEL = "cnn"
MODEL_KWARGS = {"input_shape": [1, 28, 28]}
WARMUP_REQUESTS = 100
SINGLE_REQUESTS = 2000  # one client, one image per request: the latency figures
CLIENTS = 4
CONCURRENT_REQUESTS = 500  # per client
BATCH = 32
BATCH_REQUESTS = 200


def _body(rows: int, seed: int = 0) -> bytes:
    x = np.random.default_rng(seed).random((rows, *MODEL_KWARGS["input_shape"]), np.float32)
    return json.dumps({"inputs": np.round(x, 4).tolist()}).encode()


def _requests(port: int, body: bytes, n: int, latencies: list[float]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.connect()
    # As HTTP client libraries do (urllib3, curl): http.client sends the headers and the
    # body in two writes, and Nagle's algorithm would hold the body for a delayed ACK.
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    headers = {"Content-Type": "application/json"}
    try:
        for _ in range(n):
            start = time.perf_counter()
            conn.request("POST", "/predict", body=body, headers=headers)
            response = conn.getresponse()
            answer = response.read()
            latencies.append(time.perf_counter() - start)
            if response.status != 200:
                raise BenchError(f"HTTP {response.status}: {answer[:200]!r}")
    finally:
        conn.close()


def _percentile_ms(latencies: list[float], q: float) -> float:
    return float(np.percentile(np.array(latencies), q) * 1e3)


def run() -> None:
    child = ChildProcess("sim.bench.serve")
    try:
        port = int(child.wait_for("port"))
        body = _body(1)
        _requests(port, body, WARMUP_REQUESTS, [])

        single: list[float] = []
        start = time.perf_counter()
        _requests(port, body, SINGLE_REQUESTS, single)
        single_s = time.perf_counter() - start

        per_client: list[list[float]] = [[] for _ in range(CLIENTS)]
        threads = [
            threading.Thread(target=_requests, args=(port, body, CONCURRENT_REQUESTS, lat))
            for lat in per_client
        ]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        concurrent_s = time.perf_counter() - start
        done = sum(len(lat) for lat in per_client)
        if done != CLIENTS * CONCURRENT_REQUESTS:
            raise BenchError(f"{done} of {CLIENTS * CONCURRENT_REQUESTS} concurrent requests done")

        batched: list[float] = []
        start = time.perf_counter()
        _requests(port, _body(BATCH), BATCH_REQUESTS, batched)
        batched_s = time.perf_counter() - start
    finally:
        child.stop()
    figure("serve-latency-p50-1-image", _percentile_ms(single, 50), "ms")
    figure("serve-latency-p90-1-image", _percentile_ms(single, 90), "ms")
    figure("serve-latency-p99-1-image", _percentile_ms(single, 99), "ms")
    figure(f"serve-latency-p50-{BATCH}-images", _percentile_ms(batched, 50), "ms")
    figure(f"serve-images-per-s-batch-{BATCH}", BATCH * BATCH_REQUESTS / batched_s, "images/s")
    figure(f"serve-throughput-{CLIENTS}-clients", done / concurrent_s, "requests/s")
    figure("serve-throughput-1-client", SINGLE_REQUESTS / single_s, "requests/s")


def _child() -> None:
    import trio

    from p2pfl.cli.serve import PredictionService, _load_round, serve_http
    from p2pfl.core.tensors import encode_tensors
    from p2pfl.manifest import TaskManifest
    from p2pfl.net.blockstore import BlockStore
    from p2pfl.train.models import init_weights

    with tempfile.TemporaryDirectory() as tmp:
        store = BlockStore(Path(tmp) / "blocks")
        cid = store.put_blob(encode_tensors(init_weights(MODEL, MODEL_KWARGS, 0)))
        manifest = TaskManifest(
            name="bench",
            model=MODEL,
            model_kwargs=MODEL_KWARGS,
            initial_model=str(cid),
            chain_id=1,
            registry="0x" + "11" * 20,
            ledger="0x" + "22" * 20,
        )
        service = PredictionService(manifest.task_id)
        service.current = trio.run(_load_round, manifest, 0, b"", BlockStore(store.root), None)
        with serve_http(service, "127.0.0.1", 0) as (_, port):
            print(f"port {port}", flush=True)
            threading.Event().wait()  # until the parent kills us


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", action="store_true", required=True)
    parser.parse_args(sys.argv[1:])
    _child()
