"""`p2pfl task create`, `p2pfl node start`, `p2pfl model get`: the commands a person runs on
a laptop. Each is a plain function (testable) plus its argparse wiring. The simulator is
not a product command: it runs from a checkout as `python -m sim`."""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from p2pfl.cli.common import (
    DEFAULT_DEPLOYMENT,
    DEFAULT_RPC,
    add_password_option,
    default_rpc,
    ether_to_wei,
    read_password,
)
from p2pfl.cli.launch import DEFAULT_METRICS_HOST, read_status
from p2pfl.cli.progress import Progress, progress_printer
from p2pfl.cli.status_page import DEFAULT_STATUS_HOST
from p2pfl.errors import ConfigError, P2PFLError
from p2pfl.train.config import DATASET_INPUT_NORMS

log = logging.getLogger("p2pfl.cli")

DEFAULT_DATA_DIR = "p2pfl-data"
DEFAULT_LISTEN = "/ip4/0.0.0.0/tcp/4001"
# Fraction of a node's own data held out to report the accuracy of committed models.
LOCAL_EVAL_FRACTION = 0.1

__all__ = ["create_task", "get_model", "load_node_data", "read_status", "start_node"]


# ---------------------------------------------------------------- task create


def create_task(
    rpc_url: str,
    deployment_path: str | Path,
    keystore: str | Path,
    password: str,
    *,
    name: str,
    model: str,
    model_kwargs: dict[str, Any],
    train: dict[str, Any],
    aggregation: dict[str, Any],
    committee_size: int,
    reward_per_round_wei: int,
    rounds_budget: int,
    seed: int,
    data_dir: str | Path,
    manifest_out: str | Path,
    collect_deadline_s: float = 60.0,
    view_timeout_s: float = 15.0,
    access_price_wei: int = 0,
    sealed_updates: bool = True,
    updates_to_committee: bool = False,
) -> Any:
    """Write the manifest and the genesis model (into the creator's block store) and open
    the task on-chain with `reward_per_round_wei * rounds_budget` escrowed.

    `access_price_wei` > 0 makes the task private: a fresh task model key seals the
    genesis model (and every model the nodes commit), is kept in `data_dir` (task-keys/),
    and is posted wrapped to every registered node; outsiders buy access at that price
    (`p2pfl buy-access`)."""
    from p2pfl.chain.access import KeyGranter
    from p2pfl.chain.client import ChainClient, Deployment
    from p2pfl.chain.providers import rpc_web3
    from p2pfl.core.tensors import encode_tensors
    from p2pfl.keystore import load_keystore
    from p2pfl.manifest import TaskManifest
    from p2pfl.net.blockstore import BlockStore
    from p2pfl.sealing import new_key
    from p2pfl.task_access import ModelKey, save_model_key, seal_model
    from p2pfl.train.models import init_weights

    if access_price_wei < 0:
        raise ConfigError("--price must be >= 0 (0: a public task)")
    identity = load_keystore(keystore, password)
    deployment = Deployment.load(deployment_path)
    genesis = encode_tensors(init_weights(model, model_kwargs, seed))
    key = new_key() if access_price_wei else None
    # A private task's blocks are sealed from the genesis model on: the manifest (hence
    # the task id) names the sealed genesis; the ledger's key digest then binds the key.
    root = BlockStore(Path(data_dir) / "blocks").put_blob(
        seal_model(key, genesis) if key is not None else genesis
    )
    manifest = TaskManifest(
        name=name,
        model=model,
        model_kwargs=model_kwargs,
        initial_model=str(root),
        chain_id=deployment.chain_id,
        registry=deployment.registry,
        privacy={
            **({} if sealed_updates else {"sealed": False}),
            **({"updates": "committee"} if updates_to_committee else {}),
        },
        ledger=deployment.ledger,
        train=train,
        aggregation=aggregation,
        committee_size=committee_size,
        collect_deadline_s=collect_deadline_s,
        view_timeout_s=view_timeout_s,
        redraw_timeout_s=collect_deadline_s + 3 * view_timeout_s,
        reward_per_round_wei=reward_per_round_wei,
        seed=seed,
    )
    manifest.save(manifest_out)
    client = ChainClient(rpc_web3(rpc_url), deployment, identity.private_key)
    if key is None:
        client.create_task(
            manifest.task_id,
            root.digest,
            committee_size,
            0,
            reward_per_round_wei,
            reward_per_round_wei * rounds_budget,
            redraw_delay_s=int(manifest.small_redraw_delay_s),
        )
        return manifest
    model_key = ModelKey(manifest.task_id, key)
    save_model_key(data_dir, model_key)
    client.create_private_task(
        manifest.task_id,
        root.digest,
        committee_size,
        0,
        reward_per_round_wei,
        reward_per_round_wei * rounds_budget,
        int(manifest.small_redraw_delay_s),
        access_price_wei,
        model_key.digest,
    )
    # Every node registered now gets the key at once; later ones from a key holder's node.
    KeyGranter(client, model_key, is_creator=True).step()
    return manifest


# ---------------------------------------------------------------- node start


def load_node_data(spec: str, seed: int) -> Any:
    """A node's private data: a `.npz` / image-folder path, or `fashion-mnist:I/N` /
    `digits:I/N` (IID part I of N of a bundled data set, for demos)."""
    from p2pfl.train.data import load_digits, load_fashion_mnist, load_user_data
    from p2pfl.train.partition import partition_iid

    for prefix, loader in (
        ("fashion-mnist:", lambda: load_fashion_mnist("train")),
        ("digits:", load_digits),
    ):
        if spec.startswith(prefix):
            try:
                index, parts = (int(x) for x in spec[len(prefix) :].split("/"))
            except ValueError:
                raise ConfigError(
                    f"--data {spec!r}: expected {prefix}I/N, e.g. {prefix}0/4"
                ) from None
            if not 0 <= index < parts:
                raise ConfigError(f"--data {spec!r}: part index must be in 0..{parts - 1}")
            data = loader()
            return data.subset(partition_iid(data.y, parts, seed)[index])
    return load_user_data(spec)


# ---------------------------------------------------------------- model get


@dataclass(frozen=True)
class ModelAccess:
    """What `model get` needs to open a private task's model: the task's manifest, the
    chain, and the keystore whose X25519 key a wrap was posted to (a node's, or a buyer's
    after `p2pfl buy-access`)."""

    manifest: str | Path
    rpc_url: str
    keystore: str | Path
    password: str


def open_private_model(access: ModelAccess, data_dir: str | Path) -> Any:
    """The task model key for `access` (p2pfl.chain.access.model_key_for: kept in
    `data_dir`, else unwrapped from the chain); None for a public task."""
    from p2pfl.chain.access import model_key_for
    from p2pfl.chain.client import ChainClient, Deployment
    from p2pfl.chain.providers import rpc_web3
    from p2pfl.keystore import load_keystore
    from p2pfl.manifest import TaskManifest

    manifest = TaskManifest.load(access.manifest)
    identity = load_keystore(access.keystore, access.password)
    deployment = Deployment(manifest.chain_id, manifest.registry, manifest.ledger, 0)
    client = ChainClient(rpc_web3(access.rpc_url), deployment, identity.private_key)
    return model_key_for(client, manifest.task_id, identity.x25519_private_key, data_dir)


async def get_model(
    cid_text: str,
    out: str | Path,
    data_dir: str | Path,
    bootstrap: Sequence[str],
    progress: Progress | None = None,
    access: ModelAccess | None = None,
) -> Path:
    """Write the model `cid_text` to `out` as .safetensors: from the local store, else
    fetched from peers. A private task's model is opened with the task model key
    (`access`: a wrap for the keystore's key must be on-chain, see `p2pfl buy-access`)."""
    from p2pfl.cli.common import fetch_only_host
    from p2pfl.core.cid import CID
    from p2pfl.core.tensors import decode_tensors
    from p2pfl.errors import InvalidMessage
    from p2pfl.net.blockstore import BlockStore
    from p2pfl.node.models import fetch_reporting
    from p2pfl.sealing import SealError

    model_key = open_private_model(access, data_dir) if access is not None else None
    cid = CID.parse(cid_text)
    store = BlockStore(Path(data_dir) / "blocks")
    if not store.has_blob(cid):
        if not bootstrap:
            raise P2PFLError(
                f"{cid} is not in {data_dir}; pass --bootstrap ADDR of a peer that has it"
            )
        async with fetch_only_host(data_dir, bootstrap) as net:
            await fetch_reporting(net, cid, None, progress)
    blob = store.read_blob(cid)
    if model_key is not None:
        try:
            blob = model_key.open(blob)
        except SealError as exc:
            raise P2PFLError(f"{cid} does not open with the task's model key ({exc})") from None
    try:
        decode_tensors(blob)  # it is a canonical model, not arbitrary bytes
    except InvalidMessage as exc:
        hint = "" if model_key else " (a private task's sealed model? pass --manifest)"
        raise P2PFLError(f"{cid} is not a model: {exc}{hint}") from None
    Path(out).write_bytes(blob)
    return Path(out)


# ---------------------------------------------------------------- argparse


def _json_arg(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object")
    return value


def add_node_commands(sub: argparse._SubParsersAction) -> None:
    rpc_default = default_rpc()

    task = sub.add_parser("task", help="training tasks").add_subparsers(
        dest="task_command", metavar="ACTION"
    )
    create = task.add_parser(
        "create", help="write a manifest + genesis model and open the task on-chain"
    )
    create.add_argument(
        "--rpc", default=rpc_default, help=f"JSON-RPC URL (default $P2PFL_RPC or {DEFAULT_RPC})"
    )
    create.add_argument(
        "--deployment", default=DEFAULT_DEPLOYMENT, help="deployment file from `p2pfl chain deploy`"
    )
    create.add_argument(
        "--keystore", default="node-key.json", help="creator's keystore (pays the escrow)"
    )
    add_password_option(create)
    create.add_argument("--name", default="task")
    create.add_argument(
        "--model", default="cnn", help="model registry name (cnn, mlp) or module:pkg.mod:factory"
    )
    create.add_argument(
        "--model-kwargs", type=_json_arg, default={}, help="JSON object of model arguments"
    )
    create.add_argument(
        "--train",
        type=_json_arg,
        default={},
        help='JSON training recipe, e.g. {"epochs": 1, "lr": 0.05}',
    )
    create.add_argument(
        "--standardise",
        metavar="DATASET",
        default="none",
        choices=("none", *sorted(DATASET_INPUT_NORMS)),
        help="standardise inputs with this data set's mean/std, recorded in the manifest's "
        "train table (input_mean, input_std) so every node applies it (default: none, "
        "pixels stay in [0, 1])",
    )
    create.add_argument(
        "--aggregation", type=_json_arg, default={}, help="JSON aggregation pipeline ({} = default)"
    )
    create.add_argument("--committee-size", type=int, default=7)
    create.add_argument(
        "--collect-deadline", type=float, default=60.0, help="seconds to collect updates per round"
    )
    create.add_argument("--view-timeout", type=float, default=15.0, help="seconds per leader view")
    create.add_argument("--reward-per-round", default="0.01", help="ETH paid per committed round")
    create.add_argument("--rounds-budget", type=int, default=100, help="rounds the escrow pays for")
    create.add_argument(
        "--private",
        metavar="PRICE",
        help="a private task: models sealed under a task model key, access sold for PRICE "
        "ETH (paid into the reward escrow); registered nodes receive the key",
    )
    create.add_argument(
        "--plain-updates",
        action="store_true",
        help="publish deltas in the clear (manifest privacy.sealed = false); by default each "
        "delta is sealed to the round's committee (protocol/spec/sealing.md)",
    )
    create.add_argument(
        "--updates-to-committee",
        action="store_true",
        help="send each update to the round's committee only, not gossip it to every node "
        "(manifest privacy.updates = committee; for large tasks: n x k messages a round "
        "instead of n x n; protocol/spec/round.md)",
    )
    create.add_argument("--seed", type=int, default=0)
    create.add_argument(
        "--data-dir",
        default=DEFAULT_DATA_DIR,
        help="creator's node data dir (holds the genesis model)",
    )
    create.add_argument(
        "-o",
        "--out",
        default="manifest.json",
        help="manifest file to write and share with participants",
    )
    create.set_defaults(handler=_cmd_task_create)

    node = sub.add_parser("node", help="run a node").add_subparsers(
        dest="node_command", metavar="ACTION"
    )
    start = node.add_parser(
        "start", help="join a task: train, gossip, serve on committees, follow the chain"
    )
    start.add_argument(
        "--task", "--manifest", dest="manifest", required=True, help="task manifest file"
    )
    start.add_argument("--keystore", default="node-key.json")
    add_password_option(start)
    start.add_argument("--rpc", default=rpc_default)
    start.add_argument(
        "--data",
        required=True,
        help="private training data: .npz (x, y), an image folder tree, "
        "or fashion-mnist:I/N / digits:I/N",
    )
    start.add_argument(
        "--data-dir",
        default=DEFAULT_DATA_DIR,
        help="block store, state and status (survives restarts)",
    )
    start.add_argument(
        "--listen", default=DEFAULT_LISTEN, help=f"TCP multiaddr (default {DEFAULT_LISTEN})"
    )
    start.add_argument(
        "--bootstrap",
        action="append",
        default=[],
        help="peer multiaddr with /p2p/<id> (repeatable)",
    )
    start.add_argument(
        "--rounds", type=int, default=None, help="stop after this round is committed"
    )
    start.add_argument("--threads", type=int, default=1, help="torch threads for local training")
    # Off by default: several nodes on one machine (or a node beside another exporter)
    # would fight over any fixed port, and an operator who scrapes knows which to pick.
    start.add_argument(
        "--metrics-port",
        type=int,
        default=0,
        help="serve Prometheus metrics on this port at /metrics (default 0: off)",
    )
    start.add_argument(
        "--metrics-host",
        default=DEFAULT_METRICS_HOST,
        help=f"address the metrics server listens on (default {DEFAULT_METRICS_HOST}, loopback)",
    )
    # Off by default for the same reason as the metrics.
    start.add_argument(
        "--status-port",
        type=int,
        default=0,
        help="serve the live status page on this port at / (default 0: off)",
    )
    start.add_argument(
        "--status-host",
        default=DEFAULT_STATUS_HOST,
        help=f"address the status page listens on (default {DEFAULT_STATUS_HOST}, loopback)",
    )
    # NAT traversal (p2pfl.net.nat): all off by default.
    start.add_argument(
        "--relay-service",
        action="store_true",
        help="act as a circuit relay v2 for nodes behind NAT (for a node on a public address)",
    )
    start.add_argument(
        "--relay",
        action="append",
        default=[],
        metavar="ADDR",
        help="reserve a slot on this relay (/ip4/.../tcp/.../p2p/<id>; repeatable): peers then "
        "reach this node at ADDR/p2p-circuit/p2p/<our id>, printed at start",
    )
    start.add_argument(
        "--autonat",
        action="store_true",
        help="answer peers' dial-back requests and learn whether this node is publicly reachable",
    )
    start.add_argument(
        "--hole-punching",
        action="store_true",
        help="upgrade relayed connections to direct ones through both NATs (DCUtR)",
    )
    start.set_defaults(handler=_cmd_node_start)

    model = sub.add_parser("model", help="models by CID").add_subparsers(
        dest="model_command", metavar="ACTION"
    )
    get = model.add_parser("get", help="fetch a model by CID and write it as .safetensors")
    get.add_argument("cid")
    get.add_argument("-o", "--out", required=True)
    get.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    get.add_argument(
        "--bootstrap",
        action="append",
        default=[],
        help="peer to fetch from when not stored locally",
    )
    get.add_argument(
        "--manifest",
        help="a private task's manifest: open the model with the task model key wrapped to "
        "--keystore's key on-chain (after `p2pfl buy-access`, or as a registered node)",
    )
    get.add_argument(
        "--rpc", default=rpc_default, help=f"JSON-RPC URL (default $P2PFL_RPC or {DEFAULT_RPC})"
    )
    get.add_argument("--keystore", default="node-key.json", help="keystore (with --manifest)")
    add_password_option(get)
    get.set_defaults(handler=_cmd_model_get)


def with_standardisation(train: dict[str, Any], dataset: str) -> dict[str, Any]:
    """`train` with `dataset`'s input mean/std added ("none": unchanged); a recipe that
    already names its own mean/std is an error rather than silently overridden."""
    if dataset == "none":
        return train
    if "input_mean" in train or "input_std" in train:
        raise ConfigError("--standardise and --train's input_mean/input_std: give only one")
    norm = DATASET_INPUT_NORMS[dataset]
    return {**train, "input_mean": list(norm.mean), "input_std": list(norm.std)}


def _cmd_task_create(args: argparse.Namespace) -> int:
    manifest = create_task(
        args.rpc,
        args.deployment,
        args.keystore,
        read_password(args),
        name=args.name,
        model=args.model,
        model_kwargs=args.model_kwargs,
        train=with_standardisation(args.train, args.standardise),
        aggregation=args.aggregation,
        committee_size=args.committee_size,
        reward_per_round_wei=ether_to_wei(args.reward_per_round),
        rounds_budget=args.rounds_budget,
        seed=args.seed,
        data_dir=args.data_dir,
        manifest_out=args.out,
        collect_deadline_s=args.collect_deadline,
        view_timeout_s=args.view_timeout,
        access_price_wei=ether_to_wei(args.private) if args.private else 0,
        sealed_updates=not args.plain_updates,
        updates_to_committee=args.updates_to_committee,
    )
    print(f"task id:       0x{manifest.task_id.hex()}")
    sent = "to the committee only" if args.updates_to_committee else "gossiped to every node"
    sealing = "sealed to each round committee" if manifest.sealed else "plain"
    print(f"updates:       {sealing}, {sent}")
    if args.private:
        print(f"private:       access {args.private} ETH (`p2pfl buy-access`)")
    print(f"manifest:      {args.out} ({manifest.cid})")
    print(f"initial model: {manifest.initial_model} (in {args.data_dir})")
    return 0


async def start_node(
    manifest_path: str | Path,
    keystore: str | Path,
    password: str,
    rpc_url: str,
    data_spec: str,
    data_dir: str | Path,
    listen: str,
    bootstrap: Sequence[str],
    rounds: int | None = None,
    num_threads: int = 1,
    metrics_port: int = 0,
    metrics_host: str = DEFAULT_METRICS_HOST,
    status_port: int = 0,
    status_host: str = DEFAULT_STATUS_HOST,
    progress: Progress | None = None,
    net_options: dict[str, Any] | None = None,
) -> None:
    """`p2pfl node start`: run one node until `rounds` are committed (or forever).
    `metrics_port` 0: no metrics server; `status_port` 0: no status page; `progress`:
    training epochs and model fetches; `net_options`: more `NetConfig` fields (NAT
    traversal: relay_service, relays, autonat, hole_punching)."""
    from p2pfl.cli.launch import Launch, launch_node
    from p2pfl.keystore import load_keystore
    from p2pfl.manifest import TaskManifest
    from p2pfl.train.data import split_dataset

    if not 0 <= metrics_port <= 65535:
        raise ConfigError(f"--metrics-port {metrics_port}: expected 0 (off) or a TCP port")
    if not 0 <= status_port <= 65535:
        raise ConfigError(f"--status-port {status_port}: expected 0 (off) or a TCP port")
    manifest = TaskManifest.load(manifest_path)
    identity = load_keystore(keystore, password)
    train, held_out = split_dataset(
        load_node_data(data_spec, manifest.seed), LOCAL_EVAL_FRACTION, manifest.seed
    )
    node = await launch_node(
        Launch(
            identity=identity,
            manifest=manifest,
            rpc_url=rpc_url,
            data=train,
            data_dir=Path(data_dir),
            listen=listen,
            bootstrap=tuple(bootstrap),
            rounds=rounds,
            num_threads=num_threads,
            held_out=held_out,
            metrics_port=metrics_port or None,
            metrics_host=metrics_host,
            status_port=status_port or None,
            status_host=status_host,
            node_options={"progress": progress},
            net_options=dict(net_options or {}),
        )
    )
    print(f"stopped after round {node.machine.round}", flush=True)


def _cmd_node_start(args: argparse.Namespace) -> int:
    import functools

    import trio

    net_options = {
        "relay_service": args.relay_service,
        "relays": tuple(args.relay),
        "autonat": args.autonat,
        "hole_punching": args.hole_punching,
    }
    trio.run(
        functools.partial(start_node, net_options=net_options),
        args.manifest,
        args.keystore,
        read_password(args),
        args.rpc,
        args.data,
        args.data_dir,
        args.listen,
        args.bootstrap,
        args.rounds,
        args.threads,
        args.metrics_port,
        args.metrics_host,
        args.status_port,
        args.status_host,
        progress_printer(args.quiet),
    )
    return 0


def _cmd_model_get(args: argparse.Namespace) -> int:
    import trio

    access = (
        ModelAccess(args.manifest, args.rpc, args.keystore, read_password(args))
        if args.manifest
        else None
    )
    out = trio.run(
        get_model,
        args.cid,
        args.out,
        args.data_dir,
        args.bootstrap,
        progress_printer(args.quiet),
        access,
    )
    print(f"wrote {out}")
    return 0


def _format_live(live: dict[str, float] | None) -> str:
    """Nodes heard within the live window, with how long ago (status.json's `live`)."""
    if not live:
        return "-"
    heard = ", ".join(f"{address[:10]}... {ago:.0f} s" for address, ago in live.items())
    return f"{len(live)} nodes ({heard})"


def format_node_status(status: dict[str, Any]) -> str:
    last = status.get("last_commit") or {}
    acc = status.get("accuracy")
    lines = [
        f"node:        {status['address']} ({status['peer_id']})",
        f"task:        0x{status['task']}",
        f"round:       {status['round']} ({status['phase']}, attempt {status['attempt']}, view "
        f"{status['view']})",
        f"committee:   {len(status['committee'])} "
        f"members{' (this node is one)' if status['member'] else ''}",
        f"peers:       {status['peers']}",
        f"live:        {_format_live(status.get('live'))}",
        f"last commit: round {last.get('round', '-')} model {last.get('model', '-')} tx "
        f"{last.get('tx', '-')}",
        "accuracy:    "
        f"{'-' if acc is None or (isinstance(acc, float) and math.isnan(acc)) else f'{acc:.4f}'} "
        "(local held-out)",
        f"privacy:     {_format_privacy(status.get('privacy'))}",
        f"updated:     {time.time() - status['time']:.0f} s ago",
    ]
    return "\n".join(lines)


def _format_privacy(privacy: dict[str, Any] | None) -> str:
    """DP spent, e.g. 'epsilon 2.31 of 4 (delta 1e-05)'; '-' for a task without DP."""
    if not privacy:
        return "- (the task trains without differential privacy)"
    budget = privacy.get("budget")
    text = f"epsilon {privacy['epsilon']:.2f}" + (f" of {budget:g}" if budget else "")
    text += f" (delta {privacy['delta']:g})"
    if privacy.get("exhausted"):
        text += ": budget spent, no more updates"
    return text
