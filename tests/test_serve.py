"""`p2pfl serve` (p2pfl.cli.serve): predictions from a task's latest committed model.

Real nodes (libp2p hosts, the contracts on the embedded EVM, a stand-in trainer) commit
rounds of a real MLP; the service follows the chain from the genesis model to the last
commit, answers over HTTP on 127.0.0.1 with the committed model's predictions, and
refuses malformed requests with a 4xx JSON error while it keeps serving."""

from __future__ import annotations

import http.client
import json
import socket
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import trio

from p2pfl.chain.client import ChainClient
from p2pfl.chain.devnet import ETHER
from p2pfl.cli.serve import (
    MAX_BATCH,
    MAX_BODY_BYTES,
    PredictionService,
    RequestError,
    _load_round,
    follow_commits,
    load_model,
    parse_inputs,
    serve_http,
)
from p2pfl.core.cid import CID, blob_cid
from p2pfl.core.tensors import decode_tensors, encode_tensors
from p2pfl.errors import P2PFLError
from p2pfl.manifest import TaskManifest
from p2pfl.net.blockstore import BlockStore
from p2pfl.train.models import init_weights
from tests.realnodes import make_nodes, open_task, start_hosts, trainer_for

N_NODES = 3
ROUNDS = 2
STAKE = ETHER
MODEL_KWARGS = {"input_shape": [1, 8, 8], "hidden": [16]}


def request(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def predict(port: int, inputs: Any) -> tuple[int, dict[str, Any]]:
    return request(port, "POST", "/predict", json.dumps({"inputs": inputs}).encode())


def raw(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def expected_predictions(store: BlockStore, cid: str, x: np.ndarray) -> list[int]:
    from p2pfl.train.models import build_model, load_numpy

    net = build_model("mlp", **MODEL_KWARGS)
    load_numpy(net, decode_tensors(store.read_blob(CID.parse(cid))))
    with torch.inference_mode():
        return net(torch.from_numpy(x)).argmax(dim=1).tolist()


async def test_serve_follows_commits_and_refuses_bad_requests(tmp_path: Path) -> None:
    genesis_blob = encode_tensors(init_weights("mlp", MODEL_KWARGS, 7))
    devnet, identities, manifest = open_task(
        genesis_blob, n_nodes=N_NODES, committee=N_NODES, rounds=ROUNDS, seed=7, name="serve",
        model_kwargs=MODEL_KWARGS,
    )  # fmt: skip
    x = np.random.default_rng(0).random((5, 1, 8, 8), dtype=np.float32)
    seen: list[dict[str, Any]] = []
    async with AsyncExitStack() as stack:
        nets = await start_hosts(stack, identities, tmp_path, genesis_blob)
        nodes = make_nodes(
            devnet, identities, nets, manifest, tmp_path, lambda i: trainer_for(i, scale=0.05)
        )
        reader = ChainClient(devnet.admin.w3, devnet.deployment)  # read-only
        service = PredictionService(manifest.task_id)
        store = nets[0].store  # the task creator's store: every committed model lands there
        with trio.fail_after(150):
            async with trio.open_nursery() as nursery:
                with serve_http(service, "127.0.0.1", 0) as (_, port):
                    # Before the first model is loaded: a clear 503, not a crash.
                    status, body = await trio.to_thread.run_sync(request, port, "GET", "/model")
                    assert status == 503 and "no committed model" in body["error"]
                    await nursery.start(follow_commits, service, manifest, reader, store, None, 0.2)
                    status, body = await trio.to_thread.run_sync(predict, port, x.tolist())
                    assert status == 200 and body["round"] == 0, body
                    assert body["model"] == manifest.initial_model
                    async with trio.open_nursery() as running:
                        for node in nodes:
                            running.start_soon(node.run, ROUNDS)

                        async def watch() -> None:
                            while True:
                                seen.append(
                                    (await trio.to_thread.run_sync(request, port, "GET", "/model"))[
                                        1
                                    ]
                                )
                                await trio.sleep(0.2)

                        running.start_soon(watch)
                        for node in nodes:
                            await node.finished.wait()
                        while service.current is None or service.current.round < ROUNDS:
                            await trio.sleep(0.1)
                        running.cancel_scope.cancel()
                    seen.append((await trio.to_thread.run_sync(request, port, "GET", "/model"))[1])

                    # The last commit's model, as the chain names it, answers.
                    info = reader.task_info(manifest.task_id)
                    status, body = await trio.to_thread.run_sync(predict, port, x.tolist())
                    assert status == 200, body
                    assert body["round"] == info.last_round == ROUNDS
                    cid = CID.parse(body["model"])
                    assert cid.digest == info.last_result
                    assert body["predictions"] == expected_predictions(store, body["model"], x)
                    assert body["model"] == nodes[0].rounds[ROUNDS].result

                    await trio.to_thread.run_sync(bad_requests_are_refused, port)
                    # ...and the server still answers.
                    status, body = await trio.to_thread.run_sync(predict, port, x[:1].tolist())
                    assert status == 200 and len(body["predictions"]) == 1
                nursery.cancel_scope.cancel()
    rounds_seen = [s["round"] for s in seen if "round" in s]
    assert rounds_seen == sorted(rounds_seen) and rounds_seen[-1] == ROUNDS
    assert set(range(ROUNDS + 1)) <= set(rounds_seen) | {ROUNDS - 1}  # reloaded as rounds came


def bad_requests_are_refused(port: int) -> None:
    def refused(status: int, body: dict[str, Any], expected: int, words: str) -> None:
        assert status == expected, (status, body)
        assert words in body["error"], body

    row = np.zeros((1, 8, 8)).tolist()
    refused(*request(port, "POST", "/predict", b"{not json"), 400, "not JSON")
    refused(*request(port, "POST", "/predict", b"\xff\xfe"), 400, "not JSON")
    refused(*request(port, "POST", "/predict", b"[1, 2]"), 400, '{"inputs"')
    refused(*request(port, "POST", "/predict", b'{"inputs": [], "x": 1}'), 400, "unknown fields")
    refused(*predict(port, []), 400, "non-empty")
    refused(*predict(port, "abc"), 400, "non-empty")
    refused(*request(port, "POST", "/predict", b'{"inputs": [[NaN]]}'), 400, "finite")
    refused(*request(port, "POST", "/predict", b'{"inputs": [[Infinity]]}'), 400, "finite")
    refused(*predict(port, [[[1e39] * 8] * 8]), 400, "finite")  # overflows float32
    refused(*predict(port, [[1, 2, 3]]), 400, "the model takes [N, 1, 8, 8]")
    refused(*predict(port, [[1, 2], [3]]), 400, "rectangular")
    refused(*predict(port, [["a"] * 3]), 400, "numbers only")
    refused(*predict(port, [[True, False]]), 400, "numbers only")
    refused(*predict(port, [[None]]), 400, "numbers only")
    refused(*predict(port, [[10**400]]), 400, "numbers only")
    refused(*predict(port, [row] * (MAX_BATCH + 1)), 400, f"at most {MAX_BATCH}")
    deep = b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    refused(*request(port, "POST", "/predict", deep), 400, "nested deeper")
    big = {"Content-Length": str(MAX_BODY_BYTES + 1)}
    refused(*request(port, "POST", "/predict", b"{}", big), 413, f"at most {MAX_BODY_BYTES}")
    refused(
        *request(port, "POST", "/predict", b"{}", {"Content-Length": "x"}), 400, "Content-Length"
    )
    refused(*request(port, "GET", "/nothing"), 404, "GET /model")
    refused(*request(port, "POST", "/model", b"{}"), 404, "POST /predict")
    refused(*request(port, "DELETE", "/predict"), 501, "")
    # A refused request's unread body is not taken for the next request: the server
    # closes that connection (http.client then opens a new one).
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for _ in range(2):
        conn.request("POST", "/model", body=b"GET /model HTTP/1.1\r\n\r\n")
        response = conn.getresponse()
        assert response.status == 404 and response.getheader("Connection") == "close"
        response.read()
    conn.close()
    # No Content-Length, and a request line that is not HTTP: JSON errors too.
    answer = raw(port, b"POST /predict HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 411") and b'"error"' in answer, answer
    answer = raw(port, b"GET /model HTTP/x.y\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400") and b"Bad request version" in answer, answer
    answer = raw(port, b"\x00\x01 garbage\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400") and b"Bad HTTP/0.9 request type" in answer, answer
    # A body shorter than its Content-Length (the client hung up).
    answer = raw(port, b"POST /predict HTTP/1.1\r\nContent-Length: 50\r\n\r\n{}")
    assert answer.startswith(b"HTTP/1.1 400") and b"ended after 2 of 50" in answer, answer


def test_parse_inputs_gives_the_batch_as_float32() -> None:
    x = parse_inputs(b'{"inputs": [[1, 2.5], [3, 4]]}', (2,))
    assert x.dtype == np.float32 and x.tolist() == [[1, 2.5], [3, 4]]
    with pytest.raises(RequestError) as info:
        parse_inputs(b'{"inputs": [[1, 2, 3]]}', (2,))
    assert info.value.status == 400


async def test_a_corrupt_model_is_not_served(tmp_path: Path) -> None:
    """A block store whose model bytes do not match the on-chain digest: refused, and the
    model served before keeps answering."""
    blob = encode_tensors(init_weights("mlp", MODEL_KWARGS, 1))
    store = BlockStore(tmp_path / "blocks")
    cid = store.put_blob(blob)
    manifest = TaskManifest(
        name="t", model="mlp", model_kwargs=MODEL_KWARGS, initial_model=str(cid), chain_id=1,
        registry="0x" + "11" * 20, ledger="0x" + "22" * 20,
    )  # fmt: skip
    good = await _load_round(manifest, 0, b"", store, None)
    assert good.cid == str(cid)
    for path in (tmp_path / "blocks").rglob("*"):
        if path.is_file() and path.stat().st_size > 1000:
            data = bytearray(path.read_bytes())
            data[-1] ^= 1
            path.write_bytes(bytes(data))
    fresh = BlockStore(tmp_path / "blocks")  # a new process: nothing verified yet
    with pytest.raises(P2PFLError):
        await _load_round(manifest, 0, b"", fresh, None)
    with pytest.raises(P2PFLError, match="not in the block store"):
        await _load_round(manifest, 1, b"\x33" * 32, fresh, None)
    assert load_model(manifest, 0, blob, str(cid)).input_shape == (1, 8, 8)


def test_served_inputs_are_standardised_as_the_trainers_do() -> None:
    """A task whose manifest standardises inputs: the served model sees what the trainers
    and evaluators saw, so its predictions are `evaluate`'s."""
    import torch

    from p2pfl.train.config import TrainConfig
    from p2pfl.train.trainer import standardise

    blob = encode_tensors(init_weights("mlp", MODEL_KWARGS, 1))
    train = {"input_mean": [0.3053], "input_std": [0.3760]}
    manifest = TaskManifest(
        name="t", model="mlp", model_kwargs=MODEL_KWARGS, train=train,
        initial_model=str(blob_cid(blob)), chain_id=1,
        registry="0x" + "11" * 20, ledger="0x" + "22" * 20,
    )  # fmt: skip
    served = load_model(manifest, 0, blob, "x")
    assert served.prepare is not None
    x = torch.rand(3, 1, 8, 8)
    norm = TrainConfig.from_dict(train).input_norm
    assert torch.equal(served.prepare(x), standardise(x, norm))
    plain = TaskManifest(**{**manifest.__dict__, "train": {}})
    assert load_model(plain, 0, blob, "x").prepare is None
