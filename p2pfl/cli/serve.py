"""`p2pfl serve`: predictions from a task's latest committed model over HTTP/JSON.

    POST /predict  {"inputs": [[...], ...]}  -> {"predictions": [...], "round": N, "model": CID}
    GET  /model                              -> {"task": ..., "round": N, "model": CID}

The model is the one the chain names: the task's latest committed digest (the genesis
model before round 1), read from the local block store or fetched from peers
(`--bootstrap`), as `p2pfl model get` does. The block store verifies every block it
reads against its CID, and the CID is built from the on-chain digest, so a model that is
served is the committed one, bit for bit. The chain is polled; a new commit loads the
new model beside the old one, which keeps answering until the swap.

Bad input never reaches the model: the body is bounded (`MAX_BODY_BYTES`), parsed as
strict JSON (no NaN/Infinity), checked to be a non-empty rectangular batch of finite
numbers of the model's input shape (`MAX_BATCH` rows at most), and refused with a 4xx
status and a JSON `{"error": ...}` that says what was wrong.

Threads: the HTTP server is the standard library's (one thread per connection); the
chain poll and model fetches run on trio. A loaded model is an immutable `ServedModel`
swapped in one assignment, and forward passes take a lock (one at a time: the model's
own torch threads parallelise a batch).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np

from p2pfl.cli.progress import Progress, progress_printer
from p2pfl.errors import P2PFLError

log = logging.getLogger("p2pfl.serve")

DEFAULT_SERVE_HOST = "127.0.0.1"  # loopback: exposing a model is the operator's choice
DEFAULT_SERVE_PORT = 8600
# A request body above this is refused unread (413): 1 MiB of JSON holds a batch of about
# a hundred 28x28 images, plenty for an API call; bulk scoring belongs offline.
MAX_BODY_BYTES = 1 << 20
# Rows per request: bounds the forward pass's memory whatever the input shape.
MAX_BATCH = 1024
# JSON nesting refused before parsing: a batch of images needs 5 levels (object, batch,
# channels, rows, columns). The limit matters: web3's py_ecc raises the process's
# recursion limit to 100,000, so a body of nested brackets would overflow the C stack
# in the JSON decoder and kill the process instead of raising RecursionError.
MAX_JSON_DEPTH = 16
# How often the chain is read for a new commit: rounds take tens of seconds at least.
DEFAULT_POLL_S = 2.0
# A client that stalls mid-request loses its connection after this (frees its thread).
REQUEST_TIMEOUT_S = 30.0


class RequestError(P2PFLError):
    """A request we refuse: `status` is its HTTP status, the message says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ServedModel:
    """A committed model, loaded and ready to predict."""

    round: int
    cid: str
    net: Any  # torch.nn.Module in eval mode
    input_shape: tuple[int, ...] | None  # per row, from the manifest's model_kwargs
    # The task's input preprocessing as its trainers apply it (tensor -> tensor), if any.
    prepare: Callable[[Any], Any] | None = None


class PredictionService:
    """What the HTTP handlers call: the current model and the checks on a request."""

    def __init__(self, task: bytes) -> None:
        self.task = task
        self.current: ServedModel | None = None
        self._forward = threading.Lock()

    def model_info(self) -> dict[str, Any]:
        model = self._model()
        return {"task": "0x" + self.task.hex(), "round": model.round, "model": model.cid}

    def predict(self, body: bytes) -> dict[str, Any]:
        """`{"inputs": [...]}` -> predictions of the current model; RequestError if bad."""
        model = self._model()  # one model for the whole request, even across a swap
        x = parse_inputs(body, model.input_shape)
        import torch

        with self._forward, torch.inference_mode():
            xt = torch.from_numpy(x)
            if model.prepare is not None:
                xt = model.prepare(xt)
            try:
                logits = model.net(xt)
            except RuntimeError as exc:  # a shape the model cannot take (no input_shape known)
                raise RequestError(
                    400, f"inputs of shape {list(x.shape)} do not fit the model: {exc}"
                ) from None
        return {
            "predictions": logits.argmax(dim=1).tolist(),
            "round": model.round,
            "model": model.cid,
        }

    def _model(self) -> ServedModel:
        model = self.current
        if model is None:
            raise RequestError(503, "no committed model loaded yet; retry shortly")
        return model


def _refuse_constant(name: str) -> float:
    raise RequestError(400, f"inputs must be finite numbers, got {name}")


def json_depth(body: bytes) -> int:
    """Deepest bracket nesting in `body` (brackets inside strings count too: an upper bound)."""
    data = np.frombuffer(body, np.uint8)
    opens = (data == ord("[")) | (data == ord("{"))
    closes = (data == ord("]")) | (data == ord("}"))
    steps = opens.astype(np.int32)
    steps -= closes
    return int(np.cumsum(steps, dtype=np.int32).max(initial=0))


def parse_inputs(body: bytes, input_shape: tuple[int, ...] | None) -> np.ndarray:
    """The request's batch as float32 (rows, *input_shape), or RequestError saying why not."""
    if json_depth(body) > MAX_JSON_DEPTH:
        raise RequestError(400, f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        request = json.loads(body, parse_constant=_refuse_constant)
    except RequestError:
        raise
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise RequestError(400, f"body is not JSON: {exc}") from None
    if not isinstance(request, dict) or "inputs" not in request:
        raise RequestError(400, 'expected a JSON object {"inputs": [...]}')
    extra = sorted(set(request) - {"inputs"})
    if extra:
        raise RequestError(400, f"unknown fields {extra}; expected only 'inputs'")
    inputs = request["inputs"]
    if not isinstance(inputs, list) or not inputs:
        raise RequestError(400, "'inputs' must be a non-empty list of rows")
    if len(inputs) > MAX_BATCH:
        raise RequestError(400, f"{len(inputs)} rows; at most {MAX_BATCH} per request")
    try:
        array = np.asarray(inputs)
    except (ValueError, OverflowError):  # ragged nesting
        raise RequestError(400, "'inputs' must be a rectangular array of numbers") from None
    if array.dtype.kind not in "iuf":  # bools, strings, nulls, objects, huge ints
        raise RequestError(400, "'inputs' must hold numbers only")
    with np.errstate(over="ignore"):
        x = array.astype(np.float32)
    if not np.isfinite(x).all():
        raise RequestError(400, "inputs must be finite float32 numbers")
    if input_shape is not None and tuple(x.shape[1:]) != input_shape:
        expected = ", ".join(str(n) for n in ("N", *input_shape))
        raise RequestError(400, f"inputs have shape {list(x.shape)}; the model takes [{expected}]")
    return np.ascontiguousarray(x)


# ---------------------------------------------------------------- the committed model


def model_cid(manifest: Any, round_: int, digest: bytes) -> Any:
    """The CID of the model round `round_` committed (the genesis model for round 0).

    The chain stores bare digests; every model of a task has the genesis model's size,
    hence its codec (raw or dag-pb)."""
    from p2pfl.core.cid import CID, digest_to_cid

    genesis = CID.parse(manifest.initial_model)
    return genesis if round_ == 0 else digest_to_cid(digest, genesis.codec)


def load_model(manifest: Any, round_: int, blob: bytes, cid: str) -> ServedModel:
    """Decode a verified model blob into the manifest's architecture (blocking)."""
    from p2pfl.core.tensors import decode_tensors
    from p2pfl.train.models import build_model, load_numpy

    net = build_model(manifest.model, **manifest.model_kwargs)
    load_numpy(net, decode_tensors(blob))
    net.eval()
    shape = manifest.model_kwargs.get("input_shape")
    return ServedModel(
        round=round_,
        cid=cid,
        net=net,
        input_shape=tuple(int(v) for v in shape) if shape is not None else None,
        prepare=_preprocessing(manifest),
    )


def _preprocessing(manifest: Any) -> Callable[[Any], Any] | None:
    """What the task's trainers do to inputs before the model (None: nothing)."""
    from p2pfl.train.config import TrainConfig

    # A manifest the trainers would refuse is refused.
    norm = TrainConfig.from_dict(manifest.train).input_norm
    if norm is None:
        return None
    from p2pfl.train.trainer import standardise

    def prepare(x: Any) -> Any:
        if x.ndim == 4:  # [N, C, H, W], as the trainers see it
            return standardise(x, norm)
        if len(norm.mean) == 1:  # one channel: the same whatever the layout
            return (x - norm.mean[0]) / norm.std[0]
        return x  # a layout the model will refuse anyway

    return prepare


async def follow_commits(
    service: PredictionService,
    manifest: Any,
    chain: Any,  # p2pfl.chain.client.ChainClient (task_info)
    store: Any,  # p2pfl.net.blockstore.BlockStore
    net: Any = None,  # p2pfl.net.host.NodeNet to fetch missing models from peers
    poll_s: float = DEFAULT_POLL_S,
    *,
    task_status: Any = None,
    progress: Progress | None = None,
    model_key: Any = None,  # p2pfl.task_access.ModelKey: a private task's models are sealed
) -> None:
    """Keep `service.current` at the task's latest committed model, until cancelled.

    A model that cannot be had (not stored and no peer has it, a corrupt block) is logged
    and tried again at the next poll; the previous model keeps answering meanwhile.
    `task_status.started()` is called after the first attempt."""
    import trio

    from p2pfl.chain.trio_client import run_chain

    while True:
        try:
            info = await run_chain(chain, chain.task_info, manifest.task_id)
            if not info.exists:
                raise P2PFLError(
                    f"task 0x{manifest.task_id.hex()} is not on this chain (check --rpc)"
                )
            current = service.current
            if current is None or info.last_round != current.round:
                service.current = await _load_round(
                    manifest, info.last_round, info.last_result, store, net, progress, model_key
                )
                print(f"serving round {info.last_round} model {service.current.cid}", flush=True)
        except P2PFLError as exc:
            log.warning("latest committed model not loaded (%s); retrying in %.0f s", exc, poll_s)
        if task_status is not None:
            task_status.started()
            task_status = None
        await trio.sleep(poll_s)


async def _load_round(
    manifest: Any,
    round_: int,
    digest: bytes,
    store: Any,
    net: Any,
    progress: Progress | None = None,
    model_key: Any = None,
) -> ServedModel:
    import trio

    from p2pfl.node.models import fetch_reporting

    cid = model_cid(manifest, round_, digest)
    if not await trio.to_thread.run_sync(store.has_blob, cid):
        if net is None:
            raise P2PFLError(
                f"round {round_} model {cid} is not in the block store; "
                "pass --bootstrap ADDR of a peer that has it"
            )
        await fetch_reporting(net, cid, None, progress)  # verified block by block
    blob = await trio.to_thread.run_sync(store.read_blob, cid)  # verified against the CID
    if model_key is not None:
        blob = await trio.to_thread.run_sync(model_key.open, blob)  # SealError: a P2PFLError
    return await trio.to_thread.run_sync(load_model, manifest, round_, blob, str(cid))


# ---------------------------------------------------------------- HTTP


class _Handler(BaseHTTPRequestHandler):
    server_version = "p2pfl-serve"
    protocol_version = "HTTP/1.1"  # keep-alive: a client reuses its connection
    timeout = REQUEST_TIMEOUT_S
    # The status line and headers, then the body, go out in two writes: with Nagle's
    # algorithm the second waits for the client's delayed ACK (40 ms on Linux).
    disable_nagle_algorithm = True
    service: PredictionService  # set on the subclass `serve_http` makes

    body_read = False  # this request's body consumed (else the connection must close)

    def do_GET(self) -> None:
        self.body_read = False
        if self.path.split("?", 1)[0] != "/model":
            self._error(404, f"no {self.path}; try GET /model or POST /predict")
            return
        self._answer(self.service.model_info)

    def do_POST(self) -> None:
        self.body_read = False
        if self.path.split("?", 1)[0] != "/predict":
            self._error(404, f"no {self.path}; try POST /predict")
            return
        try:
            body = self._body()
        except RequestError as exc:
            self.close_connection = True  # what is left of the body must not be read as a request
            self._error(exc.status, str(exc))
            return
        self._answer(lambda: self.service.predict(body))

    def _body(self) -> bytes:
        length_text = self.headers.get("Content-Length")
        if length_text is None:
            raise RequestError(411, "Content-Length required")
        try:
            length = int(length_text)
        except ValueError:
            raise RequestError(400, f"bad Content-Length {length_text!r}") from None
        if length < 0:
            raise RequestError(400, f"bad Content-Length {length_text!r}")
        if length > MAX_BODY_BYTES:
            raise RequestError(413, f"body of {length} bytes; at most {MAX_BODY_BYTES}")
        body = self.rfile.read(length)
        self.body_read = True
        if len(body) != length:
            raise RequestError(400, f"body ended after {len(body)} of {length} bytes")
        return body

    def _answer(self, make: Any) -> None:
        try:
            self._send(200, make())
        except RequestError as exc:
            self._error(exc.status, str(exc))
        except Exception:  # a bug must not kill the server: say so, log it
            log.exception("serve: %s %s failed", self.command, self.path)
            self._error(500, "internal error (logged by the server)")

    def _error(self, status: int, message: str) -> None:
        self._send(status, {"error": message})

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The standard library's own refusals (bad request line, headers), in JSON."""
        self.close_connection = True
        # A malformed request line leaves the version at HTTP/0.9, answered with a bare
        # body: give the client a status line, so it sees what went wrong.
        self.request_version = "HTTP/1.0"
        self._send(code, {"error": message or self.responses.get(code, ("error",))[0]})

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        headers = getattr(self, "headers", None)
        if headers is not None and not self.body_read:
            # An unread body would be taken for the next request on this connection.
            if headers.get("Content-Length", "0") != "0" or "Transfer-Encoding" in headers:
                self.close_connection = True
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a stalled client's thread never holds up shutdown

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up mid-answer is routine; anything else is logged in full
        (the standard library would print it to stderr). The server goes on either way."""
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            log.debug("serve: client %s went away (%s)", client_address, exc)
        else:
            log.exception("serve: request from %s failed", client_address)


@contextmanager
def serve_http(
    service: PredictionService, host: str = DEFAULT_SERVE_HOST, port: int = DEFAULT_SERVE_PORT
) -> Iterator[tuple[str, int]]:
    """Answer HTTP requests for `service` while the block runs (in a thread, shut down on
    exit); yields the bound (host, port) (`port` 0: a free one)."""
    handler = type("Handler", (_Handler,), {"service": service})
    try:
        httpd = _Server((host, port), handler)
    except OSError as exc:
        raise P2PFLError(f"cannot listen on {host}:{port} ({exc}); choose another --port") from None
    thread = threading.Thread(target=httpd.serve_forever, name="p2pfl-serve", daemon=True)
    thread.start()
    try:
        yield host, httpd.server_address[1]
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


# ---------------------------------------------------------------- the command


async def serve(
    manifest_path: str | Path,
    rpc_url: str,
    data_dir: str | Path,
    bootstrap: Sequence[str] = (),
    host: str = DEFAULT_SERVE_HOST,
    port: int = DEFAULT_SERVE_PORT,
    poll_s: float = DEFAULT_POLL_S,
    progress: Progress | None = None,
) -> None:
    """`p2pfl serve`: answer predictions until interrupted (`progress`: model fetches)."""
    from p2pfl.chain.access import kept_model_key
    from p2pfl.chain.client import ChainClient, Deployment
    from p2pfl.chain.providers import rpc_web3
    from p2pfl.cli.common import fetch_only_host
    from p2pfl.manifest import TaskManifest
    from p2pfl.net.blockstore import BlockStore

    manifest = TaskManifest.load(manifest_path)
    deployment = Deployment(manifest.chain_id, manifest.registry, manifest.ledger, 0)
    chain = ChainClient(rpc_web3(rpc_url), deployment)
    service = PredictionService(manifest.task_id)
    # A private task: serve with the model key kept in the node's (or buyer's) data dir.
    model_key = kept_model_key(chain, manifest.task_id, data_dir)

    async def run(store: Any, net: Any) -> None:
        with serve_http(service, host, port) as (bound_host, bound_port):
            print(
                f"serving   http://{bound_host}:{bound_port} (POST /predict, GET /model)",
                flush=True,
            )
            await follow_commits(
                service,
                manifest,
                chain,
                store,
                net,
                poll_s,
                progress=progress,
                model_key=model_key,
            )

    if not bootstrap:
        await run(BlockStore(Path(data_dir) / "blocks"), None)
        return
    async with fetch_only_host(data_dir, bootstrap) as net:
        await run(net.store, net)


def add_serve_command(sub: argparse._SubParsersAction) -> None:
    from p2pfl.cli.common import DEFAULT_RPC, default_rpc

    parser = sub.add_parser(
        "serve", help="predictions from the task's latest committed model over HTTP/JSON"
    )
    parser.add_argument(
        "--task", "--manifest", dest="manifest", required=True, help="task manifest"
    )
    parser.add_argument(
        "--rpc", default=default_rpc(), help=f"JSON-RPC URL (default $P2PFL_RPC or {DEFAULT_RPC})"
    )
    parser.add_argument("--data-dir", default="p2pfl-data", help="block store to read models from")
    parser.add_argument(
        "--bootstrap", action="append", default=[], help="peer to fetch models from (repeatable)"
    )
    parser.add_argument("--host", default=DEFAULT_SERVE_HOST, help="listen address (loopback)")
    parser.add_argument("--port", type=int, default=DEFAULT_SERVE_PORT, help="listen port")
    parser.add_argument(
        "--poll", type=float, default=DEFAULT_POLL_S, help="seconds between chain reads"
    )
    parser.set_defaults(handler=_cmd_serve)


def _cmd_serve(args: argparse.Namespace) -> int:
    import trio

    if not math.isfinite(args.poll) or args.poll <= 0:
        raise P2PFLError(f"--poll {args.poll}: expected a positive number of seconds")
    try:
        trio.run(
            serve,
            args.manifest,
            args.rpc,
            args.data_dir,
            args.bootstrap,
            args.host,
            args.port,
            args.poll,
            progress_printer(args.quiet),
        )
    except KeyboardInterrupt:
        pass
    return 0
