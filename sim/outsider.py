"""What an outsider sees: a peer with no stake that dials one node of a running task.

Set up as a new user would (issue #12 item 5): anvil, `p2pfl chain deploy`, four keystores
registered with stake, a task (`task create`, bundled digits, MLP, committee of 3), four
`p2pfl node start` processes for `ROUNDS` rounds. Once round 1 is committed, the outsider
starts: a libp2p host with a throwaway key (no registration, no stake) that bootstraps to
one node's address only, joins the task's three topics with a validator that accepts
everything, and then does what anyone could:

- counts the peers that put it in their gossip mesh for a topic and the peers whose
  addresses it learnt (identify, Kademlia);
- keeps every message it is sent, including the history that anti-entropy sync answers
  with (updates of rounds committed before it joined);
- for every `Update` it saw, fetches the delta by its CID (or reads the inline bytes) and
  tries to read it as canonical tensors (plaintext recovered, or not);
- for every round committed on-chain, rebuilds the model's CID from the digest, fetches it
  and tries to read it the same way.

`python -m sim.bench outsider` prints the counts (`outsider-*` figures). Every process is
started here and stopped by PID.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

NODES = 4
ROUNDS = 3
PASSWORD = "outsider bench"
LISTEN_ADDR = r"listening (/ip4/127\.0\.0\.1/tcp/\d+/p2p/\S+)"
# Extra `task create` flags (e.g. a private task's) from the environment.
TASK_ARGS_ENV = "OUTSIDER_TASK_ARGS"


@dataclass
class Seen:
    """What the outsider got."""

    messages: int = 0
    updates: int = 0
    history_updates: int = 0  # updates of rounds committed before it joined (sync)
    deltas_recovered: int = 0
    deltas_failed: dict[str, int] = field(default_factory=dict)
    models: int = 0
    models_recovered: int = 0
    models_failed: dict[str, int] = field(default_factory=dict)
    mesh_peers: int = 0
    peers_known: int = 0
    cleartext_fields: tuple[str, ...] = ()


def _cli(*args: str, cwd: Path, timeout: float = 180) -> str:
    env = {**os.environ, "P2PFL_PASSWORD": PASSWORD}
    out = subprocess.run(
        [sys.executable, "-m", "p2pfl.cli", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    if out.returncode != 0:
        raise RuntimeError(f"p2pfl {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}")
    return out.stdout


def _wait_for(log: Path, pattern: str, proc: subprocess.Popen[bytes], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = re.search(pattern, log.read_text())
        if match:
            return match.group(1) if match.groups() else match.group(0)
        if proc.poll() is not None:
            raise RuntimeError(f"{log.name}: the node exited early:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    raise RuntimeError(f"{log.name}: no {pattern!r} within {timeout} s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def open_task(work: Path, rpc: str) -> list[str]:
    """keygen, deploy, register and create the task; the node names."""
    names = [f"n{i}" for i in range(NODES)]
    for name in names:
        _cli("keygen", "-o", f"{name}.json", cwd=work)
    r = ["--rpc", rpc]
    _cli("chain", "deploy", "--keystore", "n0.json", "--out", "deployment.json", "--fund-dev",
         *r, cwd=work)  # fmt: skip
    for name in names:
        _cli("register", "--keystore", f"{name}.json", "--stake", "2", "--fund-dev", *r,
             cwd=work)  # fmt: skip
    extra = os.environ.get(TASK_ARGS_ENV, "").split()
    _cli("task", "create", *r, "--keystore", "n0.json", "--name", "outsider", "--model", "mlp",
         "--model-kwargs", '{"input_shape": [1, 8, 8], "hidden": [16]}',
         "--train", '{"epochs": 1, "batch_size": 16, "lr": 0.05}', "--committee-size", "3",
         "--collect-deadline", "20", "--view-timeout", "8", "--rounds-budget", "10",
         "--data-dir", "n0-data", "-o", "manifest.json", *extra, cwd=work)  # fmt: skip
    return names


async def watch(work: Path, rpc: str, bootstrap: str, procs: list[subprocess.Popen[bytes]],
                committed_before: int) -> Seen:  # fmt: skip
    """The outsider: join, listen until the nodes are done, then fetch what it can."""
    import trio

    from p2pfl.chain.client import ChainClient, Deployment
    from p2pfl.chain.providers import rpc_web3
    from p2pfl.core.cid import CID, digest_to_cid
    from p2pfl.core.messages import Update, decode_message
    from p2pfl.core.tensors import decode_tensors
    from p2pfl.keystore import generate_identity
    from p2pfl.manifest import TaskManifest
    from p2pfl.net.config import TOPIC_KINDS, NetConfig, topic_name
    from p2pfl.net.gossip import ValidationResult
    from p2pfl.net.host import open_node_host

    manifest = TaskManifest.load(work / "manifest.json")
    task_hex = manifest.task_id.hex()
    seen = Seen()
    updates: dict[bytes, Update] = {}
    config = NetConfig(
        data_dir=work / "outsider-data", listen="/ip4/127.0.0.1/tcp/0", bootstrap=(bootstrap,)
    )

    def accept_all(topic: str, data: bytes, peer: str) -> ValidationResult:
        return ValidationResult.accept()

    async def read(channel: Any) -> None:
        async for message in channel:
            seen.messages += 1
            try:
                decoded = decode_message(message.data)
            except Exception:
                continue
            if isinstance(decoded, Update):
                updates.setdefault(decoded.signature, decoded)

    def try_read(blob: bytes, failed: dict[str, int]) -> bool:
        try:
            decode_tensors(blob)
        except Exception as exc:
            failed[type(exc).__name__] = failed.get(type(exc).__name__, 0) + 1
            return False
        return True

    async def fetch(cid: CID, failed: dict[str, int]) -> bool:
        try:
            with trio.fail_after(30):
                await net.fetch_blob(cid)
            return try_read(net.read_blob(cid), failed)
        except Exception as exc:
            reason = f"fetch:{type(exc).__name__}"
            failed[reason] = failed.get(reason, 0) + 1
            return False

    deployment = Deployment.from_json((work / "deployment.json").read_text())
    client = ChainClient(rpc_web3(rpc), deployment, generate_identity().private_key)
    genesis = CID.parse(manifest.initial_model)
    tried: set[bytes] = set()

    async def try_delta(update: Update) -> None:
        if update.inline:
            ok = try_read(update.inline, seen.deltas_failed)
        else:
            ok = await fetch(CID.parse(update.delta), seen.deltas_failed)
        seen.deltas_recovered += ok

    async def try_model(digest: bytes) -> None:
        ok = await fetch(digest_to_cid(digest, genesis.codec), seen.models_failed)
        seen.models_recovered += ok  # read after the await: fetches run concurrently

    async with open_node_host(config, generate_identity().private_key) as net:
        async with trio.open_nursery() as readers:
            for kind in TOPIC_KINDS:
                readers.start_soon(read, await net.join(topic_name(task_hex, kind), accept_all))
            # The nodes serve blocks while they run (and a few seconds after): fetch what is
            # announced as it is announced, as an eavesdropper would.
            async with trio.open_nursery() as fetches:
                last_chain_poll = 0.0
                while any(p.poll() is None for p in procs):
                    router = net.pubsub.router
                    seen.mesh_peers = max(
                        seen.mesh_peers,
                        len({p for kind in TOPIC_KINDS
                             for p in router.mesh.get(topic_name(task_hex, kind), ())}),
                    )  # fmt: skip
                    seen.peers_known = max(
                        seen.peers_known, len(net.host.get_peerstore().peers_with_addrs()) - 1
                    )
                    for key, update in list(updates.items()):
                        if key not in tried:
                            tried.add(key)
                            fetches.start_soon(try_delta, update)
                    if trio.current_time() - last_chain_poll > 2:
                        last_chain_poll = trio.current_time()
                        commits = await trio.to_thread.run_sync(
                            lambda: client.commits(0, client.block_number(), manifest.task_id)
                        )
                        for commit in commits:
                            if commit.result not in tried:
                                tried.add(commit.result)
                                seen.models += 1
                                fetches.start_soon(try_model, commit.result)
                    await trio.sleep(0.5)
            readers.cancel_scope.cancel()
    seen.updates = len(updates)
    seen.history_updates = sum(1 for u in updates.values() if u.round <= committed_before)
    if updates:
        seen.cleartext_fields = tuple(
            name for name, value in vars(next(iter(updates.values()))).items()
            if name != "signature" and value not in (b"", None)
        )  # fmt: skip
    return seen


def run_outsider(work: Path | None = None) -> Seen:
    """The whole measurement; `work` keeps the logs (a temporary directory otherwise)."""
    import trio

    from p2pfl.chain.providers import Anvil

    with tempfile.TemporaryDirectory(prefix="p2pfl-outsider-") as tmp:
        work = Path(work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        procs: list[subprocess.Popen[bytes]] = []
        with Anvil() as chain:
            open_task(work, chain.url)
            env = {**os.environ, "P2PFL_PASSWORD": PASSWORD}
            try:
                logs = []
                first = ""
                for i in range(NODES):
                    log = work / f"n{i}.log"
                    args = ["--manifest", "manifest.json", "--keystore", f"n{i}.json",
                            "--rpc", chain.url, "--data", f"digits:{i}/{NODES}",
                            "--data-dir", f"n{i}-data", "--listen", "/ip4/127.0.0.1/tcp/0",
                            "--rounds", str(ROUNDS)]  # fmt: skip
                    if first:
                        args += ["--bootstrap", first]
                    procs.append(subprocess.Popen(
                        [sys.executable, "-m", "p2pfl.cli", "node", "start", *args],
                        cwd=work, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                    ))  # fmt: skip
                    logs.append(log)
                    if not first:
                        first = _wait_for(log, LISTEN_ADDR, procs[0], 120)
                _wait_for(logs[0], r"round 1 committed", procs[0], 600)
                seen = trio.run(watch, work, chain.url, first, procs, 1)
                for proc, log in zip(procs, logs, strict=True):
                    if proc.wait(timeout=120) != 0:
                        raise RuntimeError(f"{log.name} failed:\n{log.read_text()[-3000:]}")
                return seen
            finally:
                for proc in procs:
                    _stop(proc)


if __name__ == "__main__":
    print(json.dumps(vars(run_outsider()), indent=2, default=list))
