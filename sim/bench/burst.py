"""100 signed updates published at once by 20 OS processes; and what an idle node costs.

Twenty nodes, each its own OS process (`python -m sim.bench.burst --child ...`) running the
real `NodeNet` on 127.0.0.1, join one by one through bootstrap multiaddrs (each dials up to
three earlier nodes, seeded). Every node joins the task's updates topic with the node's own
gossip checks (`p2pfl.core.validation.check_gossip`: canonical decoding, task, round window,
EIP-712 signature, registered signer), exactly as `p2pfl.node.Node` does. Seven nodes are the
committee members. Once the mesh has formed and gone quiet, one node's idle cost is read from
/proc; then every node publishes 5 signed, valid `Update`s for round 1 at the same wall-clock
instant (100 in all), and each member reports when it holds all 100.

Figures:
- `idle-node-rss`, `idle-node-cpu`: one non-member process, mesh formed, nothing to send
  (gossipsub heartbeat, sync, DHT maintenance running), CPU over IDLE_WINDOW_S;
- `gossip-burst-cpu-all-processes`: CPU seconds the 20 processes spent from the publishing
  instant until the last member was done (20 x 100 signature checks, gossipsub,
  sync), against the wall-clock seconds of the headline: near 2 x seconds = CPU-bound here;
- `gossip-burst-via-sync`: member deliveries that came by our sync, not gossipsub, first;
- `gossip-burst-delivered`: (member, update) pairs delivered, out of 7 x 100;
- `gossip-burst-100-to-k7-processes`: seconds from the publishing instant until the last
  member holds all 100 (20 Python processes share the machine's cores: an upper bound).
"""

from __future__ import annotations

import argparse
import logging
import random
import tempfile
import time
from pathlib import Path

import trio

from sim.bench import BenchError, ChildProcess, cpu_seconds, figure, rss_mib

NODES = 20
COMMITTEE = 7
# 20 nodes x 5 = 100 updates published at the same instant.
PER_NODE = 5
TOTAL = NODES * PER_NODE
# Bootstrap multiaddrs per node (earlier nodes, seeded): a sparse connected graph.
BOOTSTRAP_PEERS = 3
# Between child start-ups, on top of waiting for each child's ADDR: 20 interpreters
# importing libp2p at once on 2 shared cores would time each other out.
START_STAGGER_S = 0.3
# A child has this long to print its ADDR (imports + host start on a loaded machine).
CHILD_START_TIMEOUT_S = 120.0
# After the last node started: heartbeats (1 s) graft the meshes, identify and DHT settle.
MESH_SETTLE_S = 8.0
IDLE_WINDOW_S = 10.0
# The publishing instant is set this far ahead, so every child is asleep waiting for it.
GO_LEAD_S = 2.0
BURST_TIMEOUT_S = 180.0
TASK = b"\x5b" * 32
CHAIN_ID = 31337
CONTRACT = b"\x42" * 20
ROUND = 1
SEED = 11


def _identity(index: int):  # type: ignore[no-untyped-def]
    from p2pfl.core.identity import NodeIdentity

    return NodeIdentity.from_seed(b"burst-bench" + index.to_bytes(2, "big"))


def _updates(index: int) -> list[bytes]:
    """Node `index`'s PER_NODE signed, valid Updates for ROUND (deterministic)."""
    from p2pfl.core.cid import blob_cid
    from p2pfl.core.messages import Update
    from p2pfl.core.signing import Domain

    me = _identity(index)
    domain = Domain(chain_id=CHAIN_ID, contract=CONTRACT)
    out = []
    for j in range(PER_NODE):
        u = Update(
            task=TASK,
            round=ROUND,
            base=blob_cid(b"genesis").to_bytes(),
            delta=blob_cid(f"delta {index} {j}".encode()).to_bytes(),
            n_samples=100 + j,
            norm=1.0,
            inline=b"",
            signer=me.address,
        )
        out.append(u.signed(me.private_key, domain).encode())
    return out


def _validator():  # type: ignore[no-untyped-def]
    """The node's gossip validator (p2pfl.node.intake.Intake.validator) for this task and round."""
    from p2pfl.core.signing import Domain
    from p2pfl.core.validation import check_gossip
    from p2pfl.net import ValidationResult

    domain = Domain(chain_id=CHAIN_ID, contract=CONTRACT)
    registered = {_identity(i).address for i in range(NODES)}

    def validate(topic: str, data: bytes, peer: str) -> ValidationResult:
        return ValidationResult.of(
            check_gossip(data, task=TASK, domain=domain, registered=registered, current_round=ROUND)
        )

    return validate


# --- child ------------------------------------------------------------------------------------


async def _child(index: int, data_dir: Path, bootstrap: list[str], go_file: Path) -> None:
    from p2pfl.net import NetConfig, open_node_host, topic_name

    logging.getLogger("p2pfl.net.host").setLevel(logging.ERROR)
    config = NetConfig(
        data_dir=data_dir,
        listen="/ip4/127.0.0.1/tcp/0",
        bootstrap=tuple(bootstrap),
        require_peers=bool(bootstrap),
        bootstrap_timeout_s=60.0,
    )
    mine = _updates(index)
    async with open_node_host(config, _identity(index).private_key) as net:
        channel = await net.join(topic_name(TASK.hex(), "updates"), _validator())
        print("ADDR", net.listen_addrs[0], flush=True)
        while not go_file.exists():
            await trio.sleep(0.05)
        await trio.sleep(max(0.0, float(go_file.read_text()) - time.time()))
        seen: set[bytes] = set()
        via: dict[str, int] = {}
        async with trio.open_nursery() as nursery:
            for data in mine:
                nursery.start_soon(net.publish, topic_name(TASK.hex(), "updates"), data)
            while len(seen) < TOTAL:
                message = await channel.receive()
                if message.msg_id not in seen:
                    seen.add(message.msg_id)
                    via[message.via] = via.get(message.via, 0) + 1
                    print("COUNT", len(seen), flush=True)
        print("ALL", repr(time.time()), flush=True)
        print("VIA-SYNC", via.get("sync", 0), flush=True)
        await trio.sleep_forever()


# --- parent -----------------------------------------------------------------------------------


def _Child(*args: str) -> ChildProcess:
    return ChildProcess("sim.bench.burst", *args)


def _lines(child: ChildProcess) -> list[str]:
    child.out.seek(0)
    return child.out.read().splitlines()


def _count(child: ChildProcess) -> int:
    counts = [int(line.split()[1]) for line in _lines(child) if line.startswith("COUNT ")]
    return max(counts, default=0)


def _done_at(child: ChildProcess) -> float | None:
    for line in _lines(child):
        if line.startswith("ALL "):
            return float(line.split()[1])
    return None


def _run(tmp: Path) -> tuple[float, float, int, float | None, float, int | None]:
    rng = random.Random(SEED)
    go_file = tmp / "go"
    children: list[ChildProcess] = []
    try:
        addrs: list[str] = []
        for i in range(NODES):
            boot = rng.sample(addrs, min(BOOTSTRAP_PEERS, len(addrs)))
            args = ["--index", str(i), "--data", str(tmp / f"n{i}"), "--go", str(go_file)]
            for addr in boot:
                args += ["--bootstrap", addr]
            children.append(_Child(*args))
            addrs.append(children[-1].wait_for("ADDR", CHILD_START_TIMEOUT_S))
            time.sleep(START_STAGGER_S)
        time.sleep(MESH_SETTLE_S)
        member_ids = sorted(rng.sample(range(NODES), COMMITTEE))  # as sortition would: any 7
        members = [children[i] for i in member_ids]
        idle = children[next(i for i in range(NODES) if i not in member_ids)]
        cpu0, t0 = cpu_seconds(idle.p.pid), time.monotonic()
        time.sleep(IDLE_WINDOW_S)
        cpu1, t1 = cpu_seconds(idle.p.pid), time.monotonic()
        rss, cpu = rss_mib(idle.p.pid), 100.0 * (cpu1 - cpu0) / (t1 - t0)

        go_at = time.time() + GO_LEAD_S
        go_file.with_suffix(".tmp").write_text(repr(go_at))
        go_file.with_suffix(".tmp").rename(go_file)
        time.sleep(max(0.0, go_at - time.time()))
        cpu_before = sum(cpu_seconds(c.p.pid) for c in children)
        deadline = time.monotonic() + GO_LEAD_S + BURST_TIMEOUT_S
        while time.monotonic() < deadline and any(_done_at(m) is None for m in members):
            for child in children:
                if child.p.poll() is not None:
                    raise BenchError(f"a child exited: {chr(10).join(_lines(child)[-20:])}")
            time.sleep(0.2)
        delivered = sum(_count(m) for m in members)
        done = [_done_at(m) for m in members]
        seconds = (
            max(d for d in done if d is not None) - go_at
            if all(d is not None for d in done)
            else None
        )
        if seconds is None:
            for i, m in enumerate(members):
                print(f"member {i}: {_count(m)}/{TOTAL}", flush=True)
        cpu_burst = sum(cpu_seconds(c.p.pid) for c in children) - cpu_before
        via_sync = (
            sum(int(m.wait_for("VIA-SYNC", 5.0)) for m in members) if seconds is not None else None
        )
        return rss, cpu, delivered, seconds, cpu_burst, via_sync
    finally:
        for child in children:
            child.stop()


def run() -> None:
    """Print an idle node's RSS and CPU, then burst delivery and time to the 7 members."""
    with tempfile.TemporaryDirectory() as tmp:
        rss, cpu, delivered, seconds, cpu_burst, via_sync = _run(Path(tmp))
    figure("idle-node-rss", rss, "MiB")
    figure("idle-node-cpu", cpu, "%")
    figure("gossip-burst-cpu-all-processes", cpu_burst, "cpu-s")
    if via_sync is not None:
        print(f"gossip-burst-via-sync: {via_sync}/{COMMITTEE * TOTAL}", flush=True)
    print(f"gossip-burst-delivered: {delivered}/{COMMITTEE * TOTAL}", flush=True)
    if seconds is None:
        raise BenchError(
            f"only {delivered}/{COMMITTEE * TOTAL} deliveries in {BURST_TIMEOUT_S:.0f} s"
        )
    figure("gossip-burst-100-to-k7-processes", seconds, "s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", action="store_true", required=True)
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--go", required=True)
    parser.add_argument("--bootstrap", action="append", default=[])
    ns = parser.parse_args()
    try:
        trio.run(_child, ns.index, Path(ns.data), ns.bootstrap, Path(ns.go))
    except KeyboardInterrupt:
        pass
