"""What each network operation of a round costs in CPU, and what a 100-node round's
essential work adds up to (issue #13 item 5: where the time goes).

    python -m sim.bench netcost

`HOSTS` real py-libp2p hosts in this one trio loop on 127.0.0.1, configured as the
simulator's nodes are (Noise, yamux, gossipsub on the task's three topics, no DHT, no
mDNS, anti-entropy sync out of the way), as the nodes of a shard share one interpreter.
Process CPU time (user + system) is read around each step and the hosts' idle CPU over
the same wall time is taken off; both ends of every exchange run here, so each figure is
the cost of the operation to the machine, not to one side:

- `netcost-idle-per-connection`: what an open connection costs per second with nothing
  sent (gossip heartbeats, yamux RTT pings, timers);
- `netcost-connection`: a new connection (TCP, Noise handshake, yamux, identify, the
  pubsub streams and subscriptions) until both hosts are quiet again;
- `netcost-push-small`, `netcost-push-model`: one message pushed to one peer over an open
  connection (`NodeNet.push`: stream, negotiation, the peer's verdict), without and with a
  delta of the scale100 model's size attached;
- `netcost-fetch-model`: one model-sized blob fetched from a peer over an open connection;
- `netcost-train-per-image`: one image of local training of the scale100 MLP (one thread).

Then the essential work of one round of `sim/scenarios/scale100.toml` (committee 7,
60,000 images in all), for 10 and for 100 nodes: every node pushes its update to each
member and fetches the committed model, and the images are trained once, plus, for the
first round, a new connection from each node to each member (later rounds reuse the
ones a node already has). Divided by the machine's two cores, that is the least round
time the work allows; `netcost-essential-ratio` is the 100-node figure over the 10-node
one, and `netcost-essential-share` what the essential work is of a measured 100-node
round's CPU (`MEASURED_ROUND_CPU_S`, from `python -m sim.bench scale100`).

Measured 2026-12-06 (quiet machine, load 0.1): a new connection 28 ms, a push 3.8 ms
(small) / 6.8-7.2 ms (a 407 KB delta), a fetch of the model 6.1-6.4 ms, an idle
connection 0.035 ms a second, 20-27 us an image. Essential work: 2.2 core-seconds a round
at 10 nodes, 7.3 at 100 (3.6 s on two cores: within 2x the 10-node median round of
2.0 s), 27 in a first round (its 700 new connections). A measured 100-node round takes
56-74 core-seconds: the essential work is ~11% of it. Most of the rest: connections to
each round's new committee (a 100-node run ends its 5 rounds with ~2,760 connections,
~550 new a round: ~15 core-seconds), and the per-message work of gossip, stream set-ups,
sync, the chain and scheduling thousands of tasks in two interpreters.

Measured 2026-12-07 (load 0.4): a new connection 18 ms, a push 2.1 ms (small) / 3.3 ms (a
407 KB delta), a fetch of the model 3.0 ms, an idle connection 0.008 ms a second, 22 us an
image. Essential work: 1.57 core-seconds a round at 10 nodes, 3.92 at 100 (1.96 s on two
cores): a ratio of 2.5 before any overhead, against the target's 2 for the whole rounds. A
measured 100-node round now takes ~22 core-seconds.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from sim.bench import ROOT_DIR, figure

HOSTS = 24
# Connections opened for the per-connection figures (distinct host pairs).
CONNECTIONS = 150
# Pushes and fetches timed per figure (each author once, round robin).
OPERATIONS = 40
IDLE_S = 10.0
SETTLE_S = 3.0
SCENARIO = ROOT_DIR / "sim" / "scenarios" / "scale100.toml"
TOTAL_IMAGES = 60_000
NODE_COUNTS = (10, 100)
CORES = 2
# Core-seconds of one 100-node round (shards' user + system CPU and their training processes
# over a run / 5; `python -m sim.bench scale100`, 2026-12-07; 56-74 on 2026-12-06).
MEASURED_ROUND_CPU_S = 22.0


def _model_bytes(scenario: Any) -> int:
    """Bytes of a float32 delta of the scenario's model."""
    from p2pfl.train.models import build_model

    model = build_model(scenario.model.name, **scenario.model.kwargs)
    return 4 * sum(p.numel() for p in model.parameters())


def _train_s_per_image(scenario: Any) -> float:
    """CPU seconds per image of one local epoch of the scenario's model and training
    (one thread), on random images of Fashion-MNIST's shape."""
    import numpy as np

    from p2pfl.train.config import TrainConfig
    from p2pfl.train.data import Dataset
    from p2pfl.train.models import build_model, model_to_numpy
    from p2pfl.train.trainer import train_local
    from sim.data import train_dict

    images = 3_000
    rng = np.random.default_rng(0)
    data = Dataset(
        rng.random((images, 1, 28, 28), dtype=np.float32),
        rng.integers(0, 10, images, dtype=np.int64),
    )
    name, kwargs = scenario.model.name, scenario.model.kwargs
    base = model_to_numpy(build_model(name, **kwargs))
    cfg = TrainConfig(**train_dict(scenario))
    train_local(name, base, data, cfg, seed=0, model_kwargs=kwargs, num_threads=1)  # warm
    t0 = time.process_time()
    train_local(name, base, data, cfg, seed=1, model_kwargs=kwargs, num_threads=1)
    return (time.process_time() - t0) / images


async def _measure(delta: int) -> dict[str, float]:
    from p2pfl.core.identity import NodeIdentity
    from p2pfl.net import NetConfig, ValidationResult, topic_name
    from p2pfl.net.config import TOPIC_KINDS
    from sim.faults import hold_host

    def accept(topic: str, data: bytes, peer: str) -> ValidationResult:
        return ValidationResult.accept()

    topics = [topic_name("netcost", kind) for kind in TOPIC_KINDS]
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="p2pfl-netcost-") as tmp:
        async with trio.open_nursery() as nursery:
            hosts = []
            stops = []
            for i in range(HOSTS):
                config = NetConfig(
                    data_dir=Path(tmp) / f"h{i}",
                    listen="/ip4/127.0.0.1/tcp/0",
                    mdns=False,
                    dht=False,
                    sync_interval_s=3600.0,
                )
                stop = trio.Event()
                key = NodeIdentity.from_seed(bytes([i + 1]) * 32).private_key
                hosts.append(await nursery.start(hold_host, config, key, stop))
                stops.append(stop)
            for h in hosts:
                for t in topics:
                    await h.join(t, accept)
            await trio.sleep(SETTLE_S)

            async def idle_rate() -> float:
                t0, w0 = time.process_time(), time.monotonic()
                await trio.sleep(IDLE_S)
                return (time.process_time() - t0) / (time.monotonic() - w0)

            async def cost(step: Callable[[], Awaitable[None]], count: int, rate: float) -> float:
                t0, w0 = time.process_time(), time.monotonic()
                await step()
                cpu = time.process_time() - t0 - rate * (time.monotonic() - w0)
                return max(cpu, 0.0) / count

            idle0 = await idle_rate()
            pairs = [(a, b) for a in range(1, HOSTS) for b in range(a)][:CONNECTIONS]

            async def connect() -> None:
                for a, b in pairs:
                    await hosts[a].connect(hosts[b].listen_addrs[0])
                await trio.sleep(SETTLE_S)

            out["connection"] = await cost(connect, len(pairs), idle0)
            idle1 = await idle_rate()
            out["idle_per_connection"] = max(idle1 - idle0, 0.0) / len(pairs)
            # Pushes and fetches go from host a to host b of an open pair.
            ops = [pairs[i % len(pairs)] for i in range(OPERATIONS)]
            blob = os.urandom(delta)

            async def pushes(size: int, tag: bytes) -> None:
                for n, (a, b) in enumerate(ops):
                    body = tag + n.to_bytes(4, "big")
                    attachment = blob[: size - 4] + n.to_bytes(4, "big") if size else b""
                    verdict = await hosts[a].push(hosts[b].peer_id, topics[0], body, attachment)
                    if verdict != "accept":
                        raise RuntimeError(f"push answered {verdict}")

            out["push_small"] = await cost(lambda: pushes(0, b"small"), len(ops), idle1)
            out["push_model"] = await cost(lambda: pushes(delta, b"model"), len(ops), idle1)
            cids = {}
            for n, (a, b) in enumerate(ops):
                cids[n] = hosts[b].put_blob(blob[:-4] + n.to_bytes(4, "big"))

            async def fetches() -> None:
                for n, (a, b) in enumerate(ops):
                    await hosts[a].fetch_blob(cids[n], providers=[hosts[b].peer_id], provide=False)

            out["fetch_model"] = await cost(fetches, len(ops), idle1)
            for stop in stops:
                stop.set()
    return out


def essential_round_cpu_s(
    nodes: int, committee: int, costs: dict[str, float], first_round: bool
) -> float:
    """Core-seconds of a scale100 round's essential work with `nodes` nodes: each node's
    update pushed to every member, the committed model fetched by every node, the 60,000
    images trained; in the first round also a new connection from each node to each member."""
    members = min(committee, nodes)
    work = nodes * members * costs["push_model"] + nodes * costs["fetch_model"]
    work += TOTAL_IMAGES * costs["train_per_image"]
    if first_round:
        work += nodes * members * costs["connection"]
    return work


def run() -> None:
    from sim.scenario import load_scenario

    scenario = load_scenario(SCENARIO, {})
    delta = _model_bytes(scenario)
    costs = trio.run(_measure, delta)
    costs["train_per_image"] = _train_s_per_image(scenario)
    figure("netcost-model-bytes", delta, "B (float32 delta of the scale100 MLP)")
    figure("netcost-idle-per-connection", costs["idle_per_connection"] * 1e3, "ms CPU per s")
    figure("netcost-connection", costs["connection"] * 1e3, "ms CPU (both ends)")
    figure("netcost-push-small", costs["push_small"] * 1e3, "ms CPU (both ends)")
    figure("netcost-push-model", costs["push_model"] * 1e3, "ms CPU (both ends)")
    figure("netcost-fetch-model", costs["fetch_model"] * 1e3, "ms CPU (both ends)")
    figure("netcost-train-per-image", costs["train_per_image"] * 1e6, "us CPU (one thread)")
    later = {}
    for nodes in NODE_COUNTS:
        first = essential_round_cpu_s(nodes, scenario.committee.size, costs, first_round=True)
        later[nodes] = essential_round_cpu_s(
            nodes, scenario.committee.size, costs, first_round=False
        )
        figure(
            f"netcost-essential-n{nodes}",
            later[nodes],
            f"core-s per round ({later[nodes] / CORES:.2f} s on {CORES} cores; first round "
            f"with its new connections {first:.2f} core-s)",
        )
    figure(
        "netcost-essential-share",
        later[NODE_COUNTS[-1]] / MEASURED_ROUND_CPU_S,
        f"of a measured {NODE_COUNTS[-1]}-node round's ~{MEASURED_ROUND_CPU_S:g} core-s",
    )
    figure(
        "netcost-essential-ratio",
        later[NODE_COUNTS[-1]] / later[NODE_COUNTS[0]],
        f"({NODE_COUNTS[-1]} / {NODE_COUNTS[0]} nodes, essential work alone)",
    )
