"""The one way a node process is started.

`p2pfl node start` and the simulator's node processes (`sim.node_proc`) both call
`launch_node`: open the libp2p host, build the `Node`, keep `status.json` fresh, run the
rounds, write the final status. What differs between them (where the key and data come
from, a start signal, what to do after the last round) is passed in, not copied.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from p2pfl.cli.status_page import DEFAULT_STATUS_HOST, round_history, serve_status_page
from p2pfl.errors import P2PFLError
from p2pfl.files import write_text_atomic

log = logging.getLogger("p2pfl.cli")

STATUS_FILE = "status.json"
# After the last round of `--rounds`, the node serves blocks until none was asked for this
# long (its peers have the final model), and at most this long.
LINGER_IDLE_S = 5.0
LINGER_MAX_S = 30.0
LINGER_POLL_S = 0.25
# How often the running node rewrites its status file (what `p2pfl status` shows).
STATUS_EVERY_S = 1.0
# A private task's node waits for its key wrap this often, saying so every KEY_WAIT_SAY_S;
# once running, a key holder looks for buyers and nodes without a wrap every KEY_GRANT_S.
KEY_WAIT_POLL_S = 2.0
KEY_WAIT_SAY_S = 30.0
KEY_GRANT_S = 5.0
# Metrics listen on loopback unless the operator says otherwise: they tell anyone who can
# reach them the node's stake, peers and traffic.
DEFAULT_METRICS_HOST = "127.0.0.1"


@dataclass
class Launch:
    """Everything a node process needs, however it was started."""

    identity: Any  # p2pfl.core.identity.NodeIdentity
    manifest: Any  # p2pfl.manifest.TaskManifest
    rpc_url: str
    data: Any  # p2pfl.train.data.Dataset: the node's private training data
    data_dir: Path
    listen: str
    bootstrap: Sequence[str] = ()
    rounds: int | None = None  # stop once this round is committed (None: run until stopped)
    dht: bool = True
    num_threads: int = 1
    client_index: int | bytes | None = None
    node_options: dict[str, Any] = field(default_factory=dict)  # more `Node` keyword arguments
    # More `NetConfig` keyword arguments: NAT traversal (relay_service, relays, autonat,
    # hole_punching; see p2pfl.net.nat).
    net_options: dict[str, Any] = field(default_factory=dict)
    # A laptop checks it is registered before it starts; the simulator registered it itself.
    check_registration: bool = True
    held_out: Any = None  # Dataset: report the accuracy of each committed model on it
    on_round: Callable[[Any], None] | None = None  # every committed RoundLog
    before_join: Callable[[Any], Awaitable[None]] | None = None  # (net) once the host listens
    after_run: Callable[[Any, Any], Awaitable[None]] | None = None  # (node, net) host still open
    # Serve Prometheus metrics on http://metrics_host:metrics_port/metrics while the node
    # runs (None: no metrics server; 0: a free port, printed).
    metrics_port: int | None = None
    metrics_host: str = DEFAULT_METRICS_HOST
    # Serve the live status page on http://status_host:status_port/ (None: none; 0: a free
    # port, printed). See p2pfl.cli.status_page.
    status_port: int | None = None
    status_host: str = DEFAULT_STATUS_HOST
    # How often `status.json` is rewritten (a simulation of many nodes on one machine
    # writes each less often; the last one is written when the node stops).
    status_every_s: float = STATUS_EVERY_S


async def launch_node(launch: Launch) -> Any:
    """Run one node to the end of `launch.rounds` (or until cancelled); return the `Node`."""
    import trio

    from p2pfl.chain.client import ChainClient, Deployment
    from p2pfl.chain.providers import rpc_web3
    from p2pfl.net.config import NetConfig
    from p2pfl.net.host import open_node_host
    from p2pfl.node import Node

    manifest, identity = launch.manifest, launch.identity
    deployment = Deployment(manifest.chain_id, manifest.registry, manifest.ledger, 0)
    chain = ChainClient(rpc_web3(launch.rpc_url), deployment, identity.private_key)
    if launch.check_registration:
        check_registered(chain, identity)
    data_dir = Path(launch.data_dir)
    model_key = await wait_for_model_key(chain, manifest.task_id, identity, data_dir)
    status_path = data_dir / STATUS_FILE
    config = NetConfig(
        data_dir=data_dir,
        listen=launch.listen,
        bootstrap=tuple(launch.bootstrap),
        dht=launch.dht,
        **launch.net_options,
    )
    async with open_node_host(config, identity.private_key) as net:
        print(f"peer id:  {net.peer_id}", flush=True)
        for addr in net.listen_addrs:
            print(f"listening {addr}", flush=True)
        if launch.before_join is not None:
            await launch.before_join(net)
        scores: dict[int, tuple[float, float]] = {}  # round -> held-out (loss, accuracy)
        async with trio.open_nursery() as nursery:

            def on_round(entry: Any) -> None:
                if launch.on_round is not None:
                    launch.on_round(entry)
                if launch.held_out is not None and len(launch.held_out) > 0 and entry.result:
                    nursery.start_soon(_evaluate, node, entry, launch.held_out, scores)

            node = Node(
                identity,
                manifest,
                chain,
                net,
                launch.data,
                data_dir / "state",
                client_index=launch.client_index,
                num_threads=launch.num_threads,
                on_round=on_round,
                model_key=model_key,
                **launch.node_options,
            )
            nursery.start_soon(_keep_status, node, net, status_path, scores, launch.status_every_s)
            if model_key is not None:
                nursery.start_soon(grant_keys, node, chain, model_key)
            with ExitStack() as stack:
                if launch.metrics_port is not None:
                    host, port = stack.enter_context(
                        serve_metrics(node, nursery, launch.metrics_host, launch.metrics_port)
                    )
                    print(f"metrics   http://{host}:{port}/metrics", flush=True)
                if launch.status_port is not None:

                    def page_status() -> dict[str, Any]:
                        return {
                            **node_status(node, net, scores),
                            "rounds": round_history(node.rounds, scores),
                        }

                    host, port = stack.enter_context(
                        serve_status_page(page_status, launch.status_host, launch.status_port)
                    )
                    shown = f"[{host}]" if ":" in host else host  # an IPv6 literal
                    print(f"status    http://{shown}:{port}/", flush=True)
                await node.run(stop_after_round=launch.rounds)
                if launch.rounds is not None:
                    await serve_while_asked(net)
            nursery.cancel_scope.cancel()
        write_status(node, net, status_path, scores)
        if launch.after_run is not None:
            await launch.after_run(node, net)
    return node


async def serve_while_asked(
    net: Any, *, idle_s: float = LINGER_IDLE_S, at_most_s: float = LINGER_MAX_S
) -> None:
    """After the last round (`--rounds`), keep serving blocks while peers still fetch: nodes
    off the last committee learn of its commit before they hold its model, and when every
    member stops at once nobody is left to serve it. Returns once no block was served for
    `idle_s` (at least `idle_s` after the commit), or after `at_most_s`."""
    import trio

    deadline = trio.current_time() + at_most_s
    served = int(net.metrics().get("blocks-served", 0))
    quiet_since = trio.current_time()
    while trio.current_time() < deadline:
        await trio.sleep(LINGER_POLL_S)
        now_served = int(net.metrics().get("blocks-served", 0))
        if now_served != served:
            served, quiet_since = now_served, trio.current_time()
        elif trio.current_time() - quiet_since >= idle_s:
            return


@contextmanager
def serve_metrics(node: Any, nursery: Any, host: str, port: int) -> Iterator[tuple[str, int]]:
    """Serve `node`'s Prometheus metrics over HTTP while the block runs; yields the bound
    (host, port). The server (prometheus_client's, in a thread) is shut down on exit, so
    a stopped node refuses connections. `nursery` runs the once-a-round chain read of the
    node's stake and reputation (p2pfl.node.metrics.ChainFacts)."""
    import trio
    from prometheus_client import start_http_server

    from p2pfl.node.metrics import ChainFacts, node_registry

    facts = ChainFacts()
    registry = node_registry(node, facts, trio.lowlevel.current_trio_token())
    try:
        httpd, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise P2PFLError(
            f"cannot serve metrics on {host}:{port} ({exc}); choose another --metrics-port"
        ) from None
    nursery.start_soon(facts.follow, node)
    try:
        yield host, httpd.server_port
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


async def wait_for_model_key(chain: Any, task: bytes, identity: Any, data_dir: Path) -> Any:
    """A private task's model key (p2pfl.chain.access.model_key_for), waiting until a key
    holder has posted our wrap; None for a public task."""
    import trio

    from p2pfl.chain.access import model_key_for
    from p2pfl.chain.trio_client import run_chain
    from p2pfl.task_access import AccessError

    waited = 0.0
    while True:
        try:
            return await run_chain(
                chain, model_key_for, chain, task, identity.x25519_private_key, data_dir
            )
        except AccessError as exc:
            if waited % KEY_WAIT_SAY_S < KEY_WAIT_POLL_S:
                print(f"private task: waiting for our model key ({exc})", flush=True)
        await trio.sleep(KEY_WAIT_POLL_S)
        waited += KEY_WAIT_POLL_S


async def grant_keys(
    node: Any,
    chain: Any,
    model_key: Any,
    *,
    every_s: float = KEY_GRANT_S,
    fallback_s: float | None = None,
) -> None:
    """A key holder's watch (p2pfl.chain.access.KeyGranter): post the task model key,
    wrapped, for buyers and registered nodes that have none; the creator at once, others
    as a fallback."""
    import trio

    from p2pfl.chain.access import KeyGranter
    from p2pfl.chain.trio_client import run_chain

    creator = (await run_chain(chain, chain.task_info, model_key.task)).creator
    granter = KeyGranter(
        chain,
        model_key,
        is_creator=creator == node.address,
        clock=time.monotonic,  # read in the worker thread
        count=node.count,
    )
    if fallback_s is not None:
        granter.fallback_s = fallback_s
    while True:
        try:
            await run_chain(chain, granter.step)
        except P2PFLError as exc:  # a chain error is the watch's, never the node's end
            node.count("key-grant-errors")
            log.warning("key wraps not posted this pass (%s); retrying", exc)
        await trio.sleep(every_s)


def check_registered(chain: Any, identity: Any) -> None:
    """Refuse to start a node the registry does not list (or banned): say what to do."""
    info = chain.node_info()
    if info.banned:
        raise P2PFLError(
            f"node {identity.checksum_address} was slashed for proven misbehaviour and is banned: "
            "it cannot take part again; use a new key"
        )
    if not info.active:
        raise P2PFLError(
            f"node {identity.checksum_address} is not registered: run `p2pfl register --stake "
            "ETH` first"
        )


async def _evaluate(
    node: Any, entry: Any, held_out: Any, scores: dict[int, tuple[float, float]]
) -> None:
    """(Loss, accuracy) of a committed model on the node's held-out data, off the event loop.

    The node calls `on_round` only once it holds the committed model, so the read below
    never races the model's fetch.
    """
    import trio

    from p2pfl.core.cid import CID
    from p2pfl.train.trainer import TrainConfig, evaluate

    # The task's standardisation, as its trainers apply it (a manifest without one: none).
    norm = TrainConfig.from_dict(node.manifest.train).input_norm

    def job() -> tuple[float, float]:
        weights = node.models.decode(node.net.store.read_blob(CID.parse(entry.result)))
        return evaluate(
            node.manifest.model,
            weights,
            held_out,
            model_kwargs=node.manifest.model_kwargs,
            input_norm=norm,
        )

    loss, acc = await trio.to_thread.run_sync(job)
    scores[entry.round] = (loss, acc)
    print(
        f"round {entry.round} committed: model {entry.result} accuracy {acc:.4f} (local held-out)",
        flush=True,
    )


def node_status(node: Any, net: Any, scores: dict[int, tuple[float, float]]) -> dict[str, Any]:
    """What `p2pfl status` shows of a node (read on its trio loop): a fresh dict, safe to
    encode elsewhere. `scores`: round -> (loss, accuracy) of its model on held-out data."""
    m = node.machine
    last = max((r for r, e in node.rounds.items() if e.result), default=0)
    status = {
        "time": time.time(),
        "address": node.identity.checksum_address,
        "peer_id": net.peer_id,
        "task": node.task.hex(),
        "round": m.round,
        "phase": m.phase.value,
        "attempt": m.attempt,
        "view": m.view,
        "member": m.is_member,
        "committee": ["0x" + a.hex() for a in m.committee],
        "peers": len(net.connected_peers()),
        # NAT traversal: AutoNAT's verdict ("unknown" without --autonat) and our addresses
        # through relays (p2pfl.net.nat).
        "reachability": net.reachability,
        "circuit_addrs": net.nat.circuit_addrs,
        # Nodes the round machine counts live (heard within its window): address -> s ago.
        "live": {"0x" + a.hex(): round(ago, 1) for a, ago in sorted(node.live_nodes().items())},
        "last_commit": {
            "round": last,
            "model": node.rounds[last].result,
            "tx": node.rounds[last].commit_tx,
        }
        if last
        else None,
        "accuracy": scores[last][1] if last in scores else None,
        # Differential privacy spent by the published updates (None: the task has no DP).
        "privacy": {
            "epsilon": node.privacy.epsilon(),
            "delta": node.privacy.delta,
            "budget": None if math.isinf(node.privacy.budget) else node.privacy.budget,
            "exhausted": node.privacy.exhausted,
        }
        if node.privacy is not None
        else None,
        "counters": {**dict(m.counters), **node.counters},
    }
    return status


def status_text(node: Any, net: Any, scores: dict[int, tuple[float, float]]) -> str:
    """The node's `status.json` (what `p2pfl status --data-dir` reads)."""
    return json.dumps(node_status(node, net, scores), indent=1, default=str)


def write_status(node: Any, net: Any, path: Path, scores: dict[int, tuple[float, float]]) -> None:
    """Write the node's `status.json`."""
    write_text_atomic(path, status_text(node, net, scores))


async def _keep_status(
    node: Any,
    net: Any,
    path: Path,
    scores: dict[int, tuple[float, float]],
    every_s: float = STATUS_EVERY_S,
) -> None:
    """Rewrite status.json every `every_s`: the status is read on the loop (the node's
    state), the file written from a worker thread (100 simulated nodes' writes on their
    shard's loop were 4% of it, every other node waiting)."""
    import trio

    while True:
        await trio.to_thread.run_sync(write_text_atomic, path, status_text(node, net, scores))
        await trio.sleep(every_s)


def read_status(data_dir: str | Path) -> dict[str, Any]:
    """The running node's last `status.json`, or a P2PFLError saying how to start one."""
    path = Path(data_dir) / STATUS_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise P2PFLError(
            f"no node status at {path}: is `p2pfl node start --data-dir {data_dir}` running?"
        ) from None
