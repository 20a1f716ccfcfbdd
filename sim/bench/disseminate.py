"""One 10 MiB delta to a 7-member committee among 20 nodes; and what an idle node costs.

Twenty nodes run in this process on 127.0.0.1, connected in a sparse random graph (each dials
3 others). The author (not a committee member) stores a 10 MiB delta and gossips a small
announcement carrying its root CID on the updates topic. Each of the 7 committee members, on
receiving it, fetches the blob with `fetch_blob_with_group`: the frontier of the DAG is striped
across the committee, each member takes its stripe from the author and the rest from the other
members, so the author uploads the delta about once instead of seven times.

Figures:
- `disseminate-10MiB-k7`: seconds from the announcement until all 7 members hold the verified
  blob (all 20 nodes share one CPU here, so this is an upper bound for separate machines);
- `gossip-burst-100-to-k7`: seconds until every committee member holds all of 100 small
  updates published at the same instant by the 20 nodes (gossip + sync repair);
- `disseminate-author-upload`: bytes the author served / delta size (target <= 2);
- `idle-rss`, `idle-cpu`: one node alone in its own OS process, connected to one peer and
  subscribed to a topic (gossip heartbeat and sync running), measured over a few seconds.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path

import trio

from sim.bench import BenchError, ChildProcess, cpu_seconds, figure, rss_mib

NODES = 20
COMMITTEE = 7
DELTA_BYTES = 10 * 1024 * 1024
DIALS_PER_NODE = 3
# 20 nodes x 5 = 100 updates published at the same instant.
BURST_PER_NODE = 5
BURST_TIMEOUT_S = 60.0
IDLE_WARMUP_S = 3.0
IDLE_WINDOW_S = 5.0
TASK = "bench"


def _key(seed: int) -> bytes:
    from p2pfl.core.identity import NodeIdentity

    return NodeIdentity.from_seed(seed.to_bytes(2, "big") * 16).private_key


async def _disseminate(tmp: Path) -> tuple[float, float, float]:
    from p2pfl.core.cid import CID
    from p2pfl.net import NetConfig, ValidationResult, open_node_host, topic_name

    topic = topic_name(TASK, "updates")
    rng = random.Random(7)
    async with AsyncExitStack() as stack:
        nets = []
        for i in range(NODES):
            config = NetConfig(data_dir=tmp / f"n{i}", dht=False)
            nets.append(await stack.enter_async_context(open_node_host(config, _key(i + 1))))
        for i, net in enumerate(nets):
            for j in rng.sample([k for k in range(NODES) if k != i], DIALS_PER_NODE):
                await net.connect(nets[j].listen_addrs[0])
        author = nets[0]
        members = nets[1 : 1 + COMMITTEE]
        group = [m.peer_id for m in members]
        # Committee members learn each other's and the author's addresses (in the node this
        # comes from the registry + DHT); dial so streams can be opened directly.
        for m in members:
            for other in [author, *members]:
                if other is not m:
                    await m.connect(other.listen_addrs[0])

        channels = [await n.join(topic, lambda t, d, p: ValidationResult.accept()) for n in nets]
        await trio.sleep(2.0)  # meshes form
        delta = os.urandom(DELTA_BYTES)
        done_at: list[float] = []

        async def member_loop(member, channel) -> None:  # type: ignore[no-untyped-def]
            message = await channel.receive()
            root = CID.parse(message.data.decode())
            await member.fetch_blob_with_group(root, [author.peer_id], group)
            if member.read_blob(root) != delta:
                raise BenchError("member assembled different bytes")
            done_at.append(time.perf_counter())

        async with trio.open_nursery() as nursery:
            for m, channel in zip(members, channels[1 : 1 + COMMITTEE]):
                nursery.start_soon(member_loop, m, channel)
            start = time.perf_counter()
            root = author.put_blob(delta)
            await author.publish(topic, str(root).encode())
        seconds = max(done_at) - start
        uploaded = author.metrics().get("bytes-served", 0)

        # 100 updates published at once by the 20 nodes: time until every member has all.
        burst = {f"update {i} {j}".encode() for i in range(NODES) for j in range(BURST_PER_NODE)}
        burst_done: list[float] = []

        async def member_burst(channel) -> None:  # type: ignore[no-untyped-def]
            seen: set[bytes] = set()
            while not burst <= seen:
                seen.add((await channel.receive()).data)
            burst_done.append(time.perf_counter())

        with trio.move_on_after(BURST_TIMEOUT_S):
            async with trio.open_nursery() as nursery:
                for channel in channels[1 : 1 + COMMITTEE]:
                    nursery.start_soon(member_burst, channel)
                burst_start = time.perf_counter()
                for i, n in enumerate(nets):
                    for j in range(BURST_PER_NODE):
                        nursery.start_soon(n.publish, topic, f"update {i} {j}".encode())
        if len(burst_done) < COMMITTEE:
            raise BenchError(
                f"only {len(burst_done)}/{COMMITTEE} members got all 100 updates in "
                f"{BURST_TIMEOUT_S} s"
            )
        return seconds, uploaded / DELTA_BYTES, max(burst_done) - burst_start


# --- idle node in its own process -----------------------------------------------------------


async def _idle_child(data_dir: Path, seed: int, bootstrap: list[str]) -> None:
    from p2pfl.net import NetConfig, ValidationResult, open_node_host, topic_name

    logging.getLogger("p2pfl.net.host").setLevel(logging.ERROR)
    config = NetConfig(data_dir=data_dir, bootstrap=tuple(bootstrap), require_peers=bool(bootstrap))
    async with open_node_host(config, _key(seed)) as net:
        await net.join(topic_name(TASK, "updates"), lambda t, d, p: ValidationResult.accept())
        print("ADDR", net.listen_addrs[0], flush=True)
        await trio.sleep_forever()


def _Child(*args: str) -> ChildProcess:
    return ChildProcess("sim.bench.disseminate", *args)


def _idle(tmp: Path) -> tuple[float, float]:
    first = _Child("idle", "--data", str(tmp / "idle0"), "--seed", "900")
    try:
        addr = first.wait_for("ADDR")
        second = _Child("idle", "--data", str(tmp / "idle1"), "--seed", "901", "--bootstrap", addr)
        try:
            second.wait_for("ADDR")
            time.sleep(IDLE_WARMUP_S)
            cpu0, t0 = cpu_seconds(second.p.pid), time.monotonic()
            time.sleep(IDLE_WINDOW_S)
            cpu1, t1 = cpu_seconds(second.p.pid), time.monotonic()
            return rss_mib(second.p.pid), 100.0 * (cpu1 - cpu0) / (t1 - t0)
        finally:
            second.stop()
    finally:
        first.stop()


def run() -> None:
    """Print the idle cost of a node, then the dissemination time and the author's upload."""
    logging.getLogger("p2pfl.net.host").setLevel(logging.ERROR)  # nodes start without bootstrap
    with tempfile.TemporaryDirectory() as tmp:
        rss, cpu = _idle(Path(tmp))
        figure("idle-rss", rss, "MiB")
        figure("idle-cpu", cpu, "%")
        seconds, upload, burst_s = trio.run(_disseminate, Path(tmp))
    figure("gossip-burst-100-to-k7", burst_s, "s")
    figure("disseminate-author-upload", upload, "x-delta")
    figure("disseminate-10MiB-k7", seconds, "s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", action="store_true", required=True)
    parser.add_argument("mode", choices=["idle"])
    parser.add_argument("--data", required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--bootstrap", action="append", default=[])
    ns = parser.parse_args()
    try:
        trio.run(_idle_child, Path(ns.data), ns.seed, ns.bootstrap)
    except KeyboardInterrupt:
        pass
