"""In-process simulation: N real nodes (real libp2p hosts on 127.0.0.1, real torch
training, the embedded eth-tester chain) running a scenario, plus the centralised
FedAvg reference on the same data, model and seeds, and a report of both.

    python -m sim sim/scenarios/quickstart.toml
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import resource
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import numpy as np
import trio

from p2pfl.chain.devnet import DEFAULT_GAS_FUNDS, ETHER, DevNet
from p2pfl.chain.providers import embedded_web3, fund
from p2pfl.core.cid import CID, blob_cid
from p2pfl.core.identity import NodeIdentity, peer_id_bytes_from_public
from p2pfl.errors import ConfigError
from p2pfl.manifest import TaskManifest
from p2pfl.node import Node
from sim.attacks import (
    AttackLog,
    RoundBoard,
    behaviour_for,
    hostile_net,
    make_plan,
    run_background,
    wrap_trainer,
)
from sim.audit import audit_run
from sim.data import load_data, train_dict
from sim.faults import FaultLog, FaultSpec, Killer, LeaderKillNet, hold_host, inject
from sim.node_proc import gossip_degrees
from sim.prologue import begin
from sim.report import RunWriter, round_line, round_records, write_report
from sim.scenario import Scenario, round_timing
from sim.shard_proc import wait_for

log = logging.getLogger("p2pfl.sim")

# Concurrent training processes / aggregation threads in an in-process simulation: the cores.
CPU_SLOTS = 2
# Peers each simulated node dials at start-up.
BOOTSTRAP_PEERS = 9
# Anti-entropy sync streams per second that all hosts of one process may open together
# (each host opens one per topic every sync interval). All hosts share one event loop:
# at 30 nodes the default 1 s interval (90 streams/s) starved block fetches until rounds
# stalled in round 1; at 5 s (this budget) rounds committed.
SIM_SYNC_STREAMS_PER_S = 18.0
# Gossipsub heartbeats per second all nodes together run (mesh upkeep, IHAVE gossip, peer
# scores, each beat's control RPCs): up to twenty nodes keep the node's 1 s default; 100
# beat every 5 s (at 1 s the beats and their RPCs were ~7% of a 100-node shard's loop).
# Published messages go out at once either way; the beat repairs meshes and gossips ids.
GOSSIP_HEARTBEATS_PER_S = 20.0
# Gossipsub mesh degree D: the node's (go-libp2p's 6, D_low 4, D_high 12) up to this many
# nodes, SIM_SCALE_DEGREE above. Each gossiped message (a round's certificate and proposal,
# the heartbeats) reaches a node about D times (the first copy and D - 1 duplicates, each a
# frame read, a protobuf decode and a seen-cache look-up, and forwarded to D peers); with
# 100 nodes on two cores that is work every node does for nothing. D = 3 still makes a
# connected mesh of 100 nodes (~5 hops), and the anti-entropy sync and the chain follower
# catch what a thin mesh drops. 100 nodes in 2 shards, alternating runs on a loaded machine:
# median rounds 28.2 and 28.5 s at D = 3 against 31.7 and 34.4 s at D = 6.
SIM_FULL_DEGREE_NODES = 30
SIM_SCALE_DEGREE = 3
# Whole-run guard: a scenario that stalls this long per planned round is reported, not hung.
MAX_SECONDS_PER_ROUND = 240.0


def run_scenario(scenario: Scenario, runs_root: str | Path = "runs", quiet: bool = False) -> Path:
    """Run one scenario in this process; returns the run folder."""
    if scenario.network.namespaces:
        raise ConfigError(
            "network.namespaces puts node processes in network namespaces: run with --processes"
        )
    return trio.run(_run, scenario, Path(runs_root), quiet)


async def _run(scenario: Scenario, runs_root: Path, quiet: bool) -> Path:
    from p2pfl.net.config import NetConfig

    say, run_dir, wall_start, test, partitions, genesis, genesis_blob = begin(
        scenario, runs_root, quiet, f"{scenario.nodes} nodes"
    )

    # Chain: embedded eth-tester, contracts deployed, every node funded and registered
    # with its real peer ID (the same key drives its libp2p host).
    w3 = embedded_web3()
    devnet, identities, manifest = setup_task(w3, scenario, genesis_blob)
    dep = devnet.deployment
    say(f"task {manifest.cid} on chain {dep.chain_id}, ledger {dep.ledger}")

    writer = RunWriter(run_dir)
    # All simulated nodes share one process, so their local training runs in a pool of
    # CPU_SLOTS worker processes (torch's per-batch Python work would otherwise fight the
    # event loop for the GIL); aggregation stays in threads (numpy releases the GIL).
    cpu = trio.CapacityLimiter(CPU_SLOTS)
    pool = ProcessPoolExecutor(
        CPU_SLOTS,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker,
        initargs=(scenario,),
    )
    tmp = tempfile.TemporaryDirectory(prefix="p2pfl-sim-")
    started = time.perf_counter()
    nodes: list[Node] = []
    # Attacks and faults (sim/attacks.py, sim/faults.py); an honest run has neither.
    plan = make_plan(scenario.attacks, scenario.nodes, scenario.seed)
    fault_spec = FaultSpec.from_dict(scenario.faults)
    if fault_spec.rpc_outage_round:
        raise ConfigError(
            "faults.rpc_outage_round stops the chain's RPC node: run it with --processes (anvil)"
        )
    attack_log, fault_log = AttackLog.empty(), FaultLog.empty()
    host_stops = [trio.Event() for _ in identities]
    killer = Killer(host_stops, fault_log)
    async with AsyncExitStack() as stack:
        # Each host runs in its own task so that a fault can close one alone; at the end
        # every host is told to stop (callbacks run before the nursery exits).
        hosts = await stack.enter_async_context(trio.open_nursery())

        def stop_hosts() -> None:
            for stop in host_stops:
                stop.set()

        stack.callback(stop_hosts)
        nets: list[Any] = []
        rng = np.random.default_rng(scenario.seed)
        for i, ident in enumerate(identities):
            # Each node dials node 0 and up to BOOTSTRAP_PEERS - 1 earlier nodes chosen by the
            # seed: a connected overlay of degree ~2 x BOOTSTRAP_PEERS, like a real network.
            earlier = [j for j in rng.permutation(i).tolist() if j != 0][: BOOTSTRAP_PEERS - 1]
            bootstrap = tuple(nets[j].listen_addrs[0] for j in ([0] + earlier if i else []))
            cfg = NetConfig(
                data_dir=Path(tmp.name) / f"node{i}",
                bootstrap=bootstrap,
                dht=False,
                sync_interval_s=_sync_interval_s(scenario.nodes),
                heartbeat_s=gossip_heartbeat_s(scenario.nodes),
                **gossip_degrees(gossip_degree(scenario.nodes)),
            )
            nets.append(await hosts.start(hold_host, cfg, ident.private_key, host_stops[i]))
        nets[0].put_blob(genesis_blob)  # the task creator holds the genesis model
        # Start the training workers now (torch import) so round 1 measures training only.
        for future in [pool.submit(_worker_ready) for _ in range(CPU_SLOTS)]:
            await trio.to_thread.run_sync(future.result)
        say(f"{len(nets)} hosts up in {time.perf_counter() - started:.1f} s")
        board = RoundBoard()
        for i, (ident, net, client) in enumerate(zip(identities, nets, devnet.clients)):
            client_for_node = type(client)(w3, dep, ident.private_key)
            trainer = _pool_trainer(pool, scenario, i)
            if plan.spec.active:
                trainer = wrap_trainer(plan, i, trainer, board, len(partitions[i]))
            node_net = hostile_net(
                plan, i, net, ident, client_for_node.domain(), identities, attack_log
            )
            if fault_spec.kill_leader_round:
                node_net = LeaderKillNet(node_net, i, fault_spec.kill_leader_round, killer)
            node = Node(
                ident,
                manifest,
                client_for_node,
                node_net,
                partitions[i],
                Path(tmp.name) / f"state{i}",
                client_index=i,
                cpu_limiter=cpu,
                trainer=trainer,
                follow_poll_s=0.2,
                behaviour=behaviour_for(plan, scenario.seed, i),
                round_overrides={"live_quorum": scenario.committee.live_quorum},
            )
            nodes.append(node)
        killer.nodes = nodes
        stakes_before = {
            ident.address: devnet.admin.node_info(ident.address).stake for ident in identities
        }
        deadline = MAX_SECONDS_PER_ROUND * scenario.rounds
        with trio.move_on_after(deadline) as scope:
            async with trio.open_nursery() as nursery:
                for i, node in enumerate(nodes):
                    nursery.start_soon(killer.run_node, i, node, scenario.rounds)
                nursery.start_soon(_progress, nodes, scenario.rounds, say)
                if fault_spec.active:
                    nursery.start_soon(inject, fault_spec, killer, nets, scenario.seed, say)
                if plan.spec.sybils or plan.roles["spammers"]:
                    nursery.start_soon(
                        run_background, plan, nodes, nets, Path(tmp.name), scenario.seed, attack_log
                    )
        timed_out = scope.cancelled_caught
    pool.shutdown(cancel_futures=True)
    wall_s = time.perf_counter() - started

    # Collect what happened, round by round, from the chain and every node's log.
    info = devnet.admin.task_info(manifest.task_id)
    commits = {
        e.round: e
        for e in devnet.admin.commits(dep.block, devnet.admin.block_number(), manifest.task_id)
    }
    records = round_records(
        scenario, [n.rounds for n in nodes], commits, [n.net.store for n in nodes], test
    )
    for record in records:
        writer.round(record)
        say(round_line(record))
    writer.close()

    ref_records = reference_curve(scenario, genesis, partitions, test, say)
    summary = summarise(
        scenario, records, ref_records, info, wall_start, wall_s, timed_out, _merged_counters(nodes)
    )
    if plan.spec.active or fault_spec.active:
        summary["robustness"] = audit_run(
            plan, fault_log, attack_log, nodes, identities, devnet, manifest, commits, stakes_before
        )
    write_report(run_dir, scenario.to_dict(), records, ref_records, summary)
    print_summary(summary, run_dir, say)
    tmp.cleanup()
    return run_dir


def reference_curve(
    scenario: Scenario, genesis: Any, partitions: list[Any], test: Any, say: Any
) -> list[dict[str, Any]]:
    """The centralised FedAvg reference on the run's model, seeds and partitions (no network)."""
    from p2pfl.train.reference import reference_fedavg
    from p2pfl.train.trainer import TrainConfig

    say("centralised FedAvg reference (same model, seeds, partitions; no network)...")
    cfg = TrainConfig.from_dict({**train_dict(scenario), "seed": scenario.seed})
    reference = reference_fedavg(
        scenario.model.name,
        scenario.model.kwargs,
        genesis,
        partitions,
        test,
        scenario.rounds,
        cfg,
        scenario.seed,
        num_threads=1,
    )
    return [
        {"round": m.round, "accuracy": m.accuracy, "loss": m.loss, "compute_s": m.compute_s}
        for m in reference
    ]


def summarise(
    scenario: Scenario,
    records: list[dict[str, Any]],
    reference: list[dict[str, Any]],
    info: Any,
    wall_start: float,
    rounds_wall_s: float,
    timed_out: bool,
    counters: dict[str, int],
) -> dict[str, Any]:
    """The figures every run reports (summary.json), in-process or multi-process."""
    ref_compute = [r["compute_s"] for r in reference[1:]]
    our_walls = [r["wall_s"] for r in records]
    summary: dict[str, Any] = {
        "scenario": scenario.name,
        "nodes": scenario.nodes,
        "rounds_planned": scenario.rounds,
        "rounds_committed": info.last_round,
        "final_accuracy": records[-1]["accuracy"] if records else math.nan,
        "reference_accuracy": reference[min(len(records), len(reference) - 1)]["accuracy"]
        if records
        else math.nan,
        "overhead_ratio": (sum(our_walls) / sum(ref_compute[: len(our_walls)]))
        if our_walls
        else math.nan,
        "wall_s": time.perf_counter() - wall_start,
        "rounds_wall_s": rounds_wall_s,
        "timed_out": timed_out,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "final_model": records[-1]["result"] if records else "",
        "chain_final_digest": "0x" + info.last_result.hex(),
        "counters": counters,
    }
    summary["accuracy_gap_points"] = 100 * (
        summary["reference_accuracy"] - summary["final_accuracy"]
    )
    return summary


def print_summary(summary: dict[str, Any], run_dir: Path, say: Any) -> None:
    """The headline figures, then the run folder last."""
    for key in (
        "rounds_committed",
        "rounds_planned",
        "final_accuracy",
        "reference_accuracy",
        "overhead_ratio",
        "wall_s",
    ):
        say(
            f"{key}: {summary[key]:.4g}"
            if isinstance(summary[key], float)
            else f"{key}: {summary[key]}"
        )
    say(str(run_dir))


# With no new commit for this long, print where every node is (phase, round, counters).
STALL_REPORT_S = 20.0


async def _progress(nodes: list[Node], rounds: int, say: Any) -> None:
    """Live progress: one line per committed round, and a status dump when stalled."""
    seen = 0
    last_change = time.perf_counter()
    while not all(n.finished.is_set() for n in nodes):
        await trio.sleep(0.5)
        committed = max(
            n.machine.round if n.machine.phase.value == "advanced" else n.machine.round - 1
            for n in nodes
        )
        if committed > seen:
            seen = committed
            last_change = time.perf_counter()
            say(f"  round {seen}/{rounds} committed")
        elif time.perf_counter() - last_change > STALL_REPORT_S:
            last_change = time.perf_counter()
            for i, n in enumerate(nodes):
                m = n.machine
                say(
                    f"  node {i}: round {m.round} phase {m.phase.value} attempt {m.attempt} view "
                    f"{m.view} "
                    f"member {m.is_member} counters {dict(m.counters)} node {n.counters}"
                )


def _sync_interval_s(nodes: int) -> float:
    """Anti-entropy interval for `nodes` hosts in one process (see SIM_SYNC_STREAMS_PER_S)."""
    from p2pfl.net.config import SYNC_INTERVAL_S, TOPIC_KINDS

    return max(SYNC_INTERVAL_S, nodes * len(TOPIC_KINDS) / SIM_SYNC_STREAMS_PER_S)


def gossip_degree(nodes: int) -> int:
    """Each node's gossipsub mesh degree D for `nodes` simulated together (D_low and D_high
    follow it: `sim.node_proc.gossip_degrees`)."""
    from p2pfl.net.config import GOSSIP_DEGREE

    return GOSSIP_DEGREE if nodes <= SIM_FULL_DEGREE_NODES else SIM_SCALE_DEGREE


def gossip_heartbeat_s(nodes: int) -> int:
    """Each node's gossipsub heartbeat: `GOSSIP_HEARTBEATS_PER_S` shared, never under the
    node's default (whole seconds: py-libp2p's unit)."""
    from p2pfl.net.config import GOSSIP_HEARTBEAT_S

    return max(GOSSIP_HEARTBEAT_S, math.ceil(nodes / GOSSIP_HEARTBEATS_PER_S))


# Training worker state: the scenario's partitions, loaded once per worker process.
_WORKER_PARTITIONS: list[Any] = []


def _init_worker(scenario: Scenario) -> None:
    import warnings

    warnings.filterwarnings("ignore")
    _WORKER_PARTITIONS[:] = load_data(scenario)[2]


def _worker_ready() -> int:
    return len(_WORKER_PARTITIONS)


def _train_partition(
    index: int, model: str, model_kwargs: dict[str, Any], base: Any, cfg: Any, seed: int
) -> Any:
    from p2pfl.train.trainer import train_local

    return train_local(
        model, base, _WORKER_PARTITIONS[index], cfg, seed, model_kwargs=model_kwargs, num_threads=1
    )


def _pool_trainer(pool: ProcessPoolExecutor, scenario: Scenario, index: int) -> Any:
    """A Node trainer that runs node `index`'s training in the pool (only weights travel)."""
    model, kwargs = scenario.model.name, dict(scenario.model.kwargs)

    async def train(base: Any, cfg: Any, seed: int) -> Any:
        return await wait_for(pool.submit(_train_partition, index, model, kwargs, base, cfg, seed))

    return train


def setup_task(
    w3: Any, scenario: Scenario, genesis_blob: bytes
) -> tuple[DevNet, list[NodeIdentity], TaskManifest]:
    """Deploy, fund and register every node with its real peer ID (the same key drives its
    libp2p host), then open the scenario's task; in-process and multi-process runs alike."""
    devnet = DevNet.create(w3, n_nodes=scenario.nodes, seed=scenario.seed, register=False)
    identities = [NodeIdentity(k) for k in devnet.keys]
    for ident, client in zip(identities, devnet.clients):
        fund(w3, ident.checksum_address, scenario.stake)
        client.register(
            peer_id_bytes_from_public(ident.compressed_public_key),
            ident.x25519_public_key,
            scenario.stake,
        )
    c = scenario.committee
    dep = devnet.deployment
    manifest = TaskManifest(
        name=scenario.name,
        model=scenario.model.name,
        model_kwargs=dict(scenario.model.kwargs),
        initial_model=str(blob_cid(genesis_blob)),
        chain_id=dep.chain_id,
        registry=dep.registry,
        ledger=dep.ledger,
        train=train_dict(scenario),
        aggregation=dict(scenario.aggregation),
        committee_size=c.size,
        **round_timing(c),
        reward_per_round_wei=ETHER // 100,
        seed=scenario.seed,
        privacy=dict(scenario.privacy),
    )
    fund(
        w3,
        devnet.admin.address,
        scenario.rounds * manifest.reward_per_round_wei + DEFAULT_GAS_FUNDS,
    )
    devnet.admin.create_task(
        manifest.task_id,
        CID.parse(manifest.initial_model).digest,
        c.size,
        0,
        manifest.reward_per_round_wei,
        scenario.rounds * manifest.reward_per_round_wei,
        redraw_delay_s=0,
    )
    return devnet, identities, manifest


def _merged_counters(nodes: list[Node]) -> dict[str, int]:
    total: dict[str, int] = {}
    for node in nodes:
        for source in (node.counters, dict(node.machine.counters)):
            for k, v in source.items():
                total[k] = total.get(k, 0) + v
    return dict(sorted(total.items()))
