"""Multi-process simulation: every node its own OS process, one shared anvil chain.

    python -m sim sim/scenarios/tiny.toml --processes

What the in-process mode shares between nodes (one interpreter, one embedded chain, one
training pool) is here as it is on laptops: separate processes, a JSON-RPC chain, TCP
between hosts. The parent sets up the chain and the task the way `sim.run` does (same
keys, same manifest, same partitions, same training seeds), forks `sim.node_proc`
children from one fork server that imported their modules once (`sim.node_preload`: the
pages are shared), watches the chain until the scenario's rounds are committed, then
collects each child's round logs and block store and writes the same run folder
(metrics.jsonl, summary.json, report.md, plots) with the centralised reference beside it.
The parent itself only orchestrates: a helper forked from the same server cuts the data
(each node's partition written into its data dir) before the nodes start, another
evaluates the rounds' models and trains the reference after they stopped, so the parent
never holds the dataset or imports torch (`in_helper`; issue #13's tree memory).

Every process it starts (anvil, the children) is stopped by PID in a `finally`; the fork
server exits with this process.

Shaped links (`[network] namespaces = true`, `rate_mbit = R`; as root): each node process
lives in its own Linux network namespace on a private bridge (a veth pair per node, built
and removed by `sim.netns.ShapedNetwork` around the run, also on failure and Ctrl-C), with
a tbf qdisc of R Mbit/s on both ends of its link: upload and download shaped separately,
as behind an access link. No latency or loss is emulated (this kernel has tbf, no netem).
The forked child enters its namespace (setns) before it opens a socket; every node
listens on port `NETNS_NODE_PORT` of its own address, and anvil listens on the bridge's
address (the root namespace's end of the private network, never 0.0.0.0). The summary's
`network` holds the addresses and each qdisc's byte count. `python -m sim.bench shaped`
compares round times at 20 and 100 Mbit/s with the bytes the protocol moves.

Many nodes (`sim/scenarios/processes40.toml`, `python -m sim.bench processes40`): the
chain poll, the anti-entropy sync interval and the heartbeat interval (with the live
window, four beats) of each node grow with the node count (`follow_poll_s`,
`sync_interval_s`, `heartbeat_interval_s`: unchanged up to ten nodes; and the gossipsub
heartbeat, `gossip_heartbeat_s`, up to twenty) so that the
machine-wide work of each stays put (heartbeats: with the square of the node count, as
every beat reaches every node); children are stopped together; `P2PFL_SIM_PROFILE=1`
leaves a cProfile of each node (of each shard) beside its log.

Shards (`--shards K`, `run_processes(..., shards=K)`; `sim/scenarios/scale100.toml`,
`python -m sim.bench scale100`): instead of a process per node, K shard processes, each one
trio loop hosting every K-th node with the same node code (`sim.shard_proc`): both cores
used for 100 nodes without 100 interpreters; a shard's nodes share their registry and chain
reads, so each polls the chain every `SHARD_FOLLOW_POLL_S` at no RPC cost. Everything else
(anvil, the task, the partitions and data dirs, the watching, the report) is as above; the
summary's `shards` holds each shard's PID, nodes and CPU time over the rounds.

Faults: `RestartFault` (a node SIGKILLed mid-round, restarted on its data dir) and the
scenario's `faults.rpc_outage_round` (`RpcOutage`: anvil stopped for `rpc_outage_s`, then
restarted from its state file on the same port; the run then checks that every round was
committed exactly once and prints `rpc-outage-*` figures).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from p2pfl.chain.devnet import DevNet
from p2pfl.chain.providers import Anvil, free_loopback_port
from p2pfl.errors import ConfigError, P2PFLError
from p2pfl.manifest import TaskManifest
from p2pfl.net.blockstore import BlockStore
from sim.data import load_partition, save_partition
from sim.faults import FaultSpec
from sim.netns import ShapedNetwork
from sim.node_proc import (
    DEFAULT_FOLLOW_POLL_S,
    FINAL_FILE,
    KEY_ENV,
    READY_FILE,
    forked_main,
    read_round_logs,
    set_process_name,
)
from sim.report import RunWriter, new_run_dir, round_records, write_report
from sim.scenario import Scenario
from sim.shard_proc import forked_shard_main

# Peers each child dials at start-up (node 0 plus seeded earlier nodes), as in sim.run.
BOOTSTRAP_PEERS = 9
# Every node's full multiaddr, in the run folder (`sim.node_proc --address-book`).
ADDRESS_BOOK_FILE = "addresses.json"
# Whole-run guard per planned round, as in sim.run: a stalled run is reported, not hung.
MAX_SECONDS_PER_ROUND = 240.0
# How often the parent reads the chain and the children's status files (a round of a
# tiny scenario lasts about a second, and a restart fault must land inside one).
POLL_S = 0.2
# Start-up of all children (imports, data, torch, host) before round 1 may begin.
READY_TIMEOUT_S = 180.0
# After the last commit, how long children get to fetch the final model and write final.json.
FINISH_GRACE_S = 30.0
# SIGINT first (a child closes its host cleanly), SIGKILL after this long.
STOP_GRACE_S = 10.0
# Chain reads per second all node processes together make for commits: ten nodes at
# sim.node_proc's 0.2 s; with more nodes each polls less often (40 nodes: every 0.8 s), so
# that the polling (a JSON-RPC round trip and web3's Python around it, per node) does not
# grow into the cores' main work.
CHAIN_POLLS_PER_S = 50.0
# In shards (chain reads shared by a process's nodes): each node's poll reads the shard's
# cached head on the loop, and hops to a worker thread only when that is stale (older than
# SHARED_HEAD_FRESH_S) or new: a few hops a second per shard, not 100 (CommitFollower.follow).
SHARD_FOLLOW_POLL_S = 0.5
# status.json writes per second all nodes together make (ten nodes: each every second, the
# node's default; 100: each every 10 s). The parent reads them for restart faults and the
# summary; every node writes its last one when it stops. (At 20 a second, 100 nodes' writes,
# each encoding the node's live map of 100 lines, were 2.4% of their shards' event loops.)
STATUS_WRITES_PER_S = 10.0
# Anti-entropy sync streams per second all node processes together open (each opens one
# per topic every sync interval, and answers as many): up to ten nodes keep the node's 1 s
# default; 40 sync every 4 s. The in-process mode has the same budget for one event loop
# (sim.run.SIM_SYNC_STREAMS_PER_S); here it is two cores' worth of stream set-ups.
SYNC_STREAMS_PER_S = 30.0
# Heartbeats: every beat is forwarded by and verified at every node, so the machine's work
# for them grows with nodes x nodes / interval; the interval grows with the square of the
# node count to keep it put: up to this many nodes the node's 5 s; 40 beat every 80 s, 100
# every 500 s (their live window, four beats, 2,000 s: the live quorum only matters for
# deaths at that scale). A node that publishes other signed messages (its update, votes)
# within the interval skips its beat anyway (p2pfl.node.heartbeat). At 100 nodes, with the
# interval growing only linearly (50 s), beats were most of the gossip a shard forwarded
# while round 1 stalled (7,700 of its 11,000 messages per 20 s); at 5 s they alone kept two
# cores busy.
HEARTBEAT_FULL_RATE_NODES = 10
# The libp2p port of a node in its own network namespace: every namespace has its own
# ports, so all nodes take the same one (libp2p's customary port).
NETNS_NODE_PORT = 4001


@dataclass(frozen=True)
class RestartFault:
    """Kill node `node` with SIGKILL as soon as the chain has committed round `round - 1`
    (round `round` is under way), leave it down for `down_s`, then start it again on the
    same data dir: it must rejoin from the chain."""

    node: int
    round: int
    down_s: float = 2.0


@dataclass(frozen=True)
class RpcOutage:
    """Stop anvil (SIGTERM: it dumps its chain) `delay_s` after round `round - 1` is
    committed, leave the RPC endpoint down for `down_s`, start it again from the dump on
    the same port. Every node must ride it out: nothing lost, nothing committed twice."""

    round: int
    down_s: float = 30.0
    delay_s: float = 0.0

    @classmethod
    def from_spec(cls, spec: FaultSpec) -> RpcOutage | None:
        if not spec.rpc_outage_round:
            return None
        return cls(spec.rpc_outage_round, spec.rpc_outage_s, spec.rpc_outage_delay_s)


@dataclass
class _OutageClock:
    """When the outage was triggered, began and ended (time.monotonic), as it happens."""

    trigger_at: float | None = None
    stopped_at: float | None = None
    restarted_at: float | None = None
    block_before: int = -1
    block_after: int = -1

    @property
    def down(self) -> bool:
        return self.stopped_at is not None and self.restarted_at is None


# Lines a node logs when a chain call found the RPC endpoint down and is retried
# (p2pfl.chain.trio_client): counted per node in the outage figures, and those retrying
# a round's commit transaction.
RETRY_LOG_MARK = "chain unreachable for"
COMMIT_RETRY_LOG_MARK = "retrying commit_round"


# The fork server's preloaded imports (see sim.node_preload: shared, copy-on-write).
NODE_PRELOAD = "sim.node_preload"


def fork_context() -> Any:
    """multiprocessing's "forkserver" context with the node's imports preloaded: each node
    process is forked from one server that imported them once (issue #13: memory)."""
    import multiprocessing

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([NODE_PRELOAD])
    return context


# Where the helper writes the held-out test set (beside the nodes' data dirs).
TEST_DIR = "test"
# A helper process's name in /proc/<pid>/comm: "p2pfl-data", "p2pfl-evaluate".
HELPER_NAME_PREFIX = "p2pfl-"


def in_helper(name: str, job: Any, *args: Any) -> Any:
    """`job(*args)` in a short-lived process forked from the node processes' fork server,
    named `p2pfl-<name>`; returns its result (exceptions are raised here).

    The parent only orchestrates (issue #13: tree PSS): decoding the whole dataset,
    cutting it, and torch (the genesis model, each round's evaluation, the centralised
    reference) happen in such a helper before the nodes start and after they stopped,
    never beside them. Forked from the fork server, the helper finds torch already
    imported (shared pages), and the parent never imports it at all."""
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(
        max_workers=1,
        mp_context=fork_context(),
        initializer=set_process_name,
        initargs=(HELPER_NAME_PREFIX + name,),
    ) as pool:
        return pool.submit(job, *args).result()


def write_task_data(scenario: Scenario, root: Path) -> bytes:
    """(In a helper.) Cut the scenario's data as the in-process mode does (`sim.data`),
    write each node's partition into `root/node<I>` (each node process maps only its own)
    and the test set into `root/TEST_DIR`; return the genesis model's canonical bytes."""
    from p2pfl.core.tensors import encode_tensors
    from p2pfl.train.models import init_weights
    from sim.data import load_data

    _, test, partitions = load_data(scenario)
    for i, part in enumerate(partitions):
        save_partition(part, root / f"node{i}")
    save_partition(test, root / TEST_DIR)
    return encode_tensors(init_weights(scenario.model.name, scenario.model.kwargs, scenario.seed))


def evaluate_run(
    scenario: Scenario, root: Path, logs: list[dict[int, Any]], commits: dict[int, Any]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(In a helper, once the nodes stopped.) The per-round records (each committed model
    evaluated on the test set) and the centralised reference on the same partitions, read
    as maps of the files `write_task_data` wrote."""
    from p2pfl.train.models import init_weights
    from sim.run import reference_curve

    test = load_partition(root / TEST_DIR)
    stores = [BlockStore(root / f"node{i}" / "blocks") for i in range(scenario.nodes)]
    records = round_records(scenario, logs, commits, stores, test)
    genesis = init_weights(scenario.model.name, scenario.model.kwargs, scenario.seed)
    partitions = [load_partition(root / f"node{i}") for i in range(scenario.nodes)]
    return records, reference_curve(scenario, genesis, partitions, test, lambda *a: None)


@dataclass
class Child:
    """One node process (forked from the fork server, `sim.node_proc.forked_main`) and
    where its files are."""

    index: int
    argv: list[str]  # sim.node_proc's arguments
    env: dict[str, str]  # added to the child's environment (its key)
    data_dir: Path
    log_path: Path
    netns: str = ""  # network namespace the process enters first ("": this one)
    process: Any = None  # multiprocessing.Process
    restarts: int = 0
    pids: list[int] = field(default_factory=list)  # every incarnation, for the report
    peak_rss_mib: float = 0.0  # largest VmHWM of its incarnations, read before each stop

    def start(self) -> None:
        self.process = fork_context().Process(
            target=forked_main,
            args=(self.argv, self.env, str(self.log_path), self.netns),
            name=f"node{self.index}",
        )
        self.process.start()
        self.pids.append(self.process.pid)

    def running(self) -> bool:
        return self.process is not None and self.process.is_alive()

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.exitcode

    def _note_peak_rss(self) -> None:
        try:
            status = Path(f"/proc/{self.process.pid}/status").read_text()
        except OSError:
            return
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                self.peak_rss_mib = max(self.peak_rss_mib, int(line.split()[1]) / 1024)

    def kill(self) -> None:
        """SIGKILL by PID (a crash: no clean-up in the child)."""
        if self.running():
            self._note_peak_rss()
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.join()

    def stop(self) -> None:
        """SIGINT by PID, then SIGKILL if it lingers."""
        stop_all([self])

    def interrupt(self) -> None:
        """SIGINT by PID (the child closes its host and exits)."""
        if self.running():
            self._note_peak_rss()
            os.kill(self.process.pid, signal.SIGINT)

    def status(self) -> dict[str, Any] | None:
        try:
            return json.loads((self.data_dir / "status.json").read_text())
        except (OSError, ValueError):
            return None


@dataclass
class Shard:
    """One shard process (`sim.shard_proc`) hosting several nodes: their `Child` records
    share its process, and their log is its log."""

    index: int
    members: list[Child]
    log_path: Path
    process: Any = None  # multiprocessing.Process
    # (time.monotonic, user CPU s, system CPU s, the training process's user CPU s) each
    # time `note_cpu` read them.
    cpu_marks: list[tuple[float, float, float, float]] = field(default_factory=list)
    # PIDs of the shard's training processes seen (`sim.shard_proc.TrainingProcess`).
    train_pids: list[int] = field(default_factory=list)

    def start(self) -> None:
        self.process = fork_context().Process(
            target=forked_shard_main,
            args=(
                self.index,
                [child.argv for child in self.members],
                [child.env[KEY_ENV] for child in self.members],
                str(self.log_path),
            ),
            name=f"shard{self.index}",
        )
        self.process.start()
        for child in self.members:
            child.process = self.process
            child.log_path = self.log_path
            child.pids.append(self.process.pid)

    def note_cpu(self) -> None:
        """Record the CPU time so far of the shard's process (every thread's: its loop, its
        aggregations) and of its training process (a child: counted apart)."""
        if self.process is None or self.process.pid is None:
            return
        cpu = _process_cpu(self.process.pid)
        if cpu is None:
            return
        train_user = 0.0
        for pid in _child_pids(self.process.pid):
            if pid not in self.train_pids:
                self.train_pids.append(pid)
            train_cpu = _process_cpu(pid)
            if train_cpu is not None:
                train_user += train_cpu[0]
        self.cpu_marks.append((time.monotonic(), cpu[0], cpu[1], train_user))

    def figures(self) -> dict[str, Any]:
        """PID, nodes, and user/system CPU over the first to last `note_cpu` (the rounds);
        with a mark between them (the first commit: `_watch`'s `on_commit`), the same from it
        to the last (`steady_*`: the rounds after the first, start-up and round 1 apart)."""
        out: dict[str, Any] = {
            "shard": self.index,
            "pid": self.process.pid if self.process is not None else None,
            "nodes": [child.index for child in self.members],
            "train_pids": list(self.train_pids),
        }
        if len(self.cpu_marks) >= 2:
            out.update(_cpu_between(self.cpu_marks[0], self.cpu_marks[-1], ""))
        if len(self.cpu_marks) >= 3:
            out.update(_cpu_between(self.cpu_marks[1], self.cpu_marks[-1], "steady_"))
        return out


def _cpu_between(
    start: tuple[float, float, float, float], end: tuple[float, float, float, float], prefix: str
) -> dict[str, float]:
    """Wall, user, system and training-process CPU seconds between two `Shard.note_cpu`
    marks, each figure's name after `prefix`."""
    (t0, u0, s0, tu0), (t1, u1, s1, tu1) = start, end
    return {
        f"{prefix}wall_s": t1 - t0,
        f"{prefix}user_cpu_s": u1 - u0,
        f"{prefix}system_cpu_s": s1 - s0,
        f"{prefix}train_user_cpu_s": max(0.0, tu1 - tu0),
    }


def _process_cpu(pid: int) -> tuple[float, float] | None:
    """(user, system) CPU seconds of process `pid` so far; None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def _child_pids(pid: int) -> list[int]:
    """The live child processes of `pid` (forked by any of its threads)."""
    found: set[int] = set()
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found.update(int(p) for p in children.read_text().split())
        except (OSError, ValueError):
            continue  # a thread gone meanwhile
    return sorted(found)


def make_shards(children: list[Child], shards: int, run_dir: Path) -> list[Shard]:
    """Deal the nodes round-robin over `shards` processes (node 0, the creator, in shard 0)."""
    return [
        Shard(k, children[k::shards], run_dir / f"shard{k}.log")
        for k in range(min(shards, len(children)))
    ]


def stop_all(children: list[Child]) -> None:
    """SIGINT to every running child at once, then SIGKILL to those still running after
    `STOP_GRACE_S`: one grace for the whole set, not one per child (40 children stopped in
    turn on a loaded machine took minutes). Children sharing a shard process signal it once."""
    interrupted: set[int] = set()
    for child in children:
        if child.process is not None and child.process.pid not in interrupted:
            interrupted.add(child.process.pid)
            child.interrupt()
    deadline = time.monotonic() + STOP_GRACE_S
    for child in children:
        if child.process is not None:
            child.process.join(max(0.0, deadline - time.monotonic()))
    for child in children:
        if child.running():
            os.kill(child.process.pid, signal.SIGKILL)
            child.process.join()


def run_processes(
    scenario: Scenario,
    runs_root: str | Path = "runs",
    quiet: bool = False,
    restart: RestartFault | None = None,
    shards: int = 0,
    on_first_commit: Callable[[list[int]], None] | None = None,
) -> Path:
    """Run one scenario with every node in its own process on anvil (or, `shards` > 0, the
    nodes dealt over that many shard processes); returns the run folder.
    `on_first_commit(pids)`: called once, at the first commit seen, with the shards' PIDs
    (a profiler attaching for the rounds the shards' `steady_*` CPU figures cover)."""
    from sim.run import gossip_degree, gossip_heartbeat_s, print_summary, setup_task, summarise

    fault_spec = FaultSpec.from_dict(scenario.faults)
    if scenario.attacks or fault_spec.active:
        raise ConfigError(
            "--processes runs honest nodes, with at most the faults.rpc_outage_* fault: "
            "remove [attacks] and the other [faults] or run in-process"
        )
    if not scenario.committee.live_quorum:
        raise ConfigError(
            "committee.live_quorum = false is a node-local switch of in-process runs; "
            "node processes keep the default (true)"
        )
    outage = RpcOutage.from_spec(fault_spec)
    if outage is not None and not 1 <= outage.round <= scenario.rounds:
        raise ConfigError(
            f"faults.rpc_outage_round must be in 1..{scenario.rounds} (the scenario's rounds)"
        )
    if shards and (restart is not None or scenario.network.namespaces):
        raise ConfigError(
            "--shards hosts several nodes per process: no restart fault, no network "
            "namespaces (both are per node process); use --processes"
        )
    if restart is not None and not 0 < restart.node < scenario.nodes:
        raise ConfigError(f"restart.node must be a non-creator node in 1..{scenario.nodes - 1}")
    say: Any = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))
    run_dir = new_run_dir(scenario.name, Path(runs_root))
    wall_start = time.perf_counter()
    work = tempfile.TemporaryDirectory(prefix="p2pfl-simproc-")
    root = Path(work.name)
    # The data and torch stay out of this process (see `in_helper`).
    genesis_blob = in_helper("data", write_task_data, scenario, root)
    say(
        f"scenario {scenario.name}: {scenario.nodes} "
        + (f"nodes in {shards} shard processes" if shards else "node processes")
        + " on anvil, "
        f"{scenario.rounds} rounds, model {scenario.model.name}, "
        f"data {scenario.data.dataset} ({scenario.data.partition})"
    )
    children: list[Child] = []
    anvil_pid: int | None = None
    fault_events: list[dict[str, Any]] = []
    outage_clock = _OutageClock()
    commit_seen: dict[int, float] = {}  # round -> when the parent saw it committed (0: go)
    first_commit: list[int] = []  # the round of the first commit seen (the shards' CPU mark)
    # The outage restarts anvil from its own dump of the chain (SIGTERM), on the same port.
    state_path = root / "anvil-state.json" if outage is not None else None
    with contextlib.ExitStack() as links:
        # Namespaced links (as root): built before anvil, which listens on the bridge;
        # removed last, after every process in them has stopped.
        net = (
            links.enter_context(ShapedNetwork(scenario.nodes, scenario.network.rate_mbit))
            if scenario.network.namespaces
            else None
        )
        anvil = links.enter_context(
            Anvil(state_path=state_path, host=net.bridge_address if net else "127.0.0.1")
        )
        w3 = anvil.web3()
        anvil_pid = anvil.pid
        devnet, identities, manifest = setup_task(w3, scenario, genesis_blob)
        dep = devnet.deployment
        say(f"task {manifest.cid} on anvil {anvil.url} (pid {anvil.pid}), ledger {dep.ledger}")
        manifest_path = root / "manifest.json"
        manifest.save(manifest_path)
        # The creator holds the genesis model. In shards, every node holds it (as if
        # downloaded with the manifest): 99 nodes fetching it from the creator on a starved
        # machine took minutes before round 1, and the rounds are what a shards run measures.
        for i in range(len(identities) if shards else 1):
            BlockStore(root / f"node{i}" / "blocks").put_blob(genesis_blob)
        if net is not None:
            hosts = [net.node_address(i) for i in range(len(identities))]
            ports = [NETNS_NODE_PORT] * len(identities)
            say(
                f"links: {net.prefix}: bridge {net.bridge} {net.bridge_address}/24, "
                f"{len(hosts)} namespaces, "
                + (
                    f"tbf {scenario.network.rate_mbit:g} Mbit/s each way"
                    if scenario.network.rate_mbit
                    else "not shaped"
                )
            )
        else:
            hosts = ["127.0.0.1"] * len(identities)
            ports = [free_loopback_port() for _ in identities]
        listens = [f"/ip4/{h}/tcp/{p}" for h, p in zip(hosts, ports)]
        addrs = [f"{listen}/p2p/{ident.peer_id}" for listen, ident in zip(listens, identities)]
        # No DHT in a simulation: every node gets every address, as a DHT lookup would give
        # it. Without them a node reaches only the ~10-30 peers it is connected to, and a
        # committee member of 100 nodes could fetch the deltas of those authors only.
        address_book = root / ADDRESS_BOOK_FILE
        address_book.write_text(json.dumps(addrs))
        rng = np.random.default_rng(scenario.seed)
        for i, ident in enumerate(identities):
            earlier = [j for j in rng.permutation(i).tolist() if j != 0][: BOOTSTRAP_PEERS - 1]
            argv = [
                "--index",
                str(i),
                "--manifest",
                str(manifest_path),
                "--rpc",
                anvil.url,
                "--data-dir",
                str(root / f"node{i}"),
                "--listen",
                listens[i],
                "--rounds",
                str(scenario.rounds),
                "--go-file",
                str(root / "go"),
                "--follow-poll-s",
                str(follow_poll_s(scenario.nodes, shards)),
                "--sync-interval-s",
                str(sync_interval_s(scenario.nodes)),
                "--heartbeat-interval-s",
                str(heartbeat_interval_s(scenario.nodes)),
                "--gossip-heartbeat-s",
                str(gossip_heartbeat_s(scenario.nodes)),
                "--gossip-degree",
                str(gossip_degree(scenario.nodes)),
                "--status-every-s",
                str(status_every_s(scenario.nodes)),
            ]
            for j in [0] + earlier if i else []:
                argv += ["--bootstrap", addrs[j]]
            argv += ["--address-book", str(address_book)]
            # The key travels in the environment, not argv (argv is world-readable in /proc).
            env = {KEY_ENV: ident.private_key.hex()}
            children.append(
                Child(
                    i,
                    argv,
                    env,
                    root / f"node{i}",
                    run_dir / f"node{i}.log",
                    netns=net.netns(i) if net is not None else "",
                )
            )
        started = time.perf_counter()
        timed_out = False
        shard_procs = make_shards(children, shards, run_dir) if shards else []
        try:
            for child in children:
                child.data_dir.mkdir(parents=True, exist_ok=True)
                if not shards:
                    child.start()
            for shard in shard_procs:
                shard.start()
            _wait_ready(children)
            for shard in shard_procs:
                shard.note_cpu()
            (root / "go").touch()
            commit_seen[0] = time.monotonic()
            say(f"{len(children)} node processes up in {time.perf_counter() - started:.1f} s")
            timed_out = _watch(
                devnet,
                manifest,
                scenario,
                children,
                restart,
                fault_events,
                say,
                anvil=anvil,
                outage=outage,
                outage_clock=outage_clock,
                commit_seen=commit_seen,
                on_commit=lambda seen: _mark_first_commit(
                    seen, first_commit, shard_procs, on_first_commit
                ),
            )
            for shard in shard_procs:
                shard.note_cpu()  # the rounds' CPU: up to the last commit
            _wait_finished(devnet, manifest, children)
        finally:
            stop_all(children)
        wall_s = time.perf_counter() - started
        links_figures = _links_figures(net, scenario, listens) if net is not None else None
        info = devnet.admin.task_info(manifest.task_id)
        commit_events = devnet.admin.commits(
            dep.block, devnet.admin.block_number(), manifest.task_id
        )
        commits = {e.round: e for e in commit_events}

    logs = [read_round_logs(child.data_dir) for child in children]
    finals = [_read_json(child.data_dir / FINAL_FILE) or {} for child in children]
    say(
        "evaluating the rounds' models; centralised FedAvg reference (same model, seeds, "
        "partitions; no network)..."
    )
    records, ref_records = in_helper("evaluate", evaluate_run, scenario, root, logs, commits)
    writer = RunWriter(run_dir)
    for record in records:
        writer.round(record)
        say(
            f"round {record['round']}: accuracy {record['accuracy']:.4f} loss {record['loss']:.4f} "
            f"wall {record['wall_s']:.1f} s committee {len(record['committee'])} "
            f"included {len(record['included'])} tx {record['commit_tx'][:12]}"
        )
    writer.close()

    counters: dict[str, int] = {}
    for final in finals:
        for k, v in final.get("counters", {}).items():
            counters[k] = counters.get(k, 0) + v
    summary = summarise(
        scenario,
        records,
        ref_records,
        info,
        wall_start,
        wall_s,
        timed_out,
        dict(sorted(counters.items())),
    )
    summary.update(
        {
            "mode": "processes",
            # Whether this process had torch imported by the end of the run: the helpers
            # hold it, not the parent (`in_helper`; false unless its caller imported it).
            "parent_imported_torch": "torch" in sys.modules,
            # Largest node process (VmHWM, read before it was stopped).
            "child_peak_rss_mib": max(child.peak_rss_mib for child in children),
            "faults": fault_events,
            "node_final_rounds": [_final_round(child) for child in children],
            # Every process this run started (all stopped by now): anvil, then each node's
            # incarnations.
            "pids": {
                "anvil": anvil_pid,
                "anvil_incarnations": list(anvil.pids),
                "nodes": [child.pids for child in children],
            },
        }
    )
    if links_figures is not None:
        summary["network"] = links_figures
    if shard_procs:
        summary["mode"] = "shards"
        summary["shards"] = [shard.figures() for shard in shard_procs]
        if first_commit:
            summary["steady_from_round"] = first_commit[0]
    if outage is not None:
        summary["rpc_outage"] = outage_figures(
            outage,
            outage_clock,
            scenario.rounds,
            commit_events,
            commit_seen,
            fault_events,
            children,
        )
    write_report(run_dir, scenario.to_dict(), records, ref_records, summary)
    for child in children:  # the node processes' status files, for inspection and tests
        status = child.status()
        if status is not None:
            (run_dir / f"node{child.index}.status.json").write_text(json.dumps(status, indent=1))
    if "rpc_outage" in summary:
        for line in outage_lines(summary["rpc_outage"]):
            say(line)
    print_summary(summary, run_dir, say)
    work.cleanup()
    return run_dir


def _mark_first_commit(
    seen: int,
    first_commit: list[int],
    shard_procs: list[Shard],
    then: Callable[[list[int]], None] | None = None,
) -> None:
    """At the first commit the parent sees, a CPU mark on every shard (`Shard.figures`'
    `steady_*`: the rounds after it, without start-up and round 1), its round kept; then
    `then` with the shards' PIDs."""
    if first_commit:
        return
    first_commit.append(seen)
    for shard in shard_procs:
        shard.note_cpu()
    if then is not None:
        then([s.process.pid for s in shard_procs if s.process is not None])


def follow_poll_s(nodes: int, shards: int = 0) -> float:
    """Each node's chain poll interval: `CHAIN_POLLS_PER_S` shared, never under 0.2 s. In
    shards the nodes of a process share their chain reads (one head read per
    `SHARED_HEAD_FRESH_S` for all), so a poll is a lock and a cache hit, and each node polls
    every `SHARD_FOLLOW_POLL_S` however many there are."""
    if shards:
        return SHARD_FOLLOW_POLL_S
    return max(DEFAULT_FOLLOW_POLL_S, nodes / CHAIN_POLLS_PER_S)


def status_every_s(nodes: int) -> float:
    """How often each node rewrites its status.json: `STATUS_WRITES_PER_S` shared, never
    more often than the node's default (each write encodes the node's live map, a line per
    node: 100 nodes writing every second took 7% of their shards at a round start)."""
    from p2pfl.cli.launch import STATUS_EVERY_S

    return max(STATUS_EVERY_S, nodes / STATUS_WRITES_PER_S)


def sync_interval_s(nodes: int) -> float:
    """Each node's anti-entropy interval: `SYNC_STREAMS_PER_S` shared, never under the
    node's default."""
    from p2pfl.net.config import SYNC_INTERVAL_S, TOPIC_KINDS

    return max(SYNC_INTERVAL_S, nodes * len(TOPIC_KINDS) / SYNC_STREAMS_PER_S)


def heartbeat_interval_s(nodes: int) -> float:
    """Each node's heartbeat interval: the node's default up to `HEARTBEAT_FULL_RATE_NODES`,
    then growing with the square of the node count (the machine's work for beats stays put)."""
    from p2pfl.node.heartbeat import HEARTBEAT_INTERVAL_S

    return HEARTBEAT_INTERVAL_S * max(1.0, nodes / HEARTBEAT_FULL_RATE_NODES) ** 2


def _links_figures(net: ShapedNetwork, scenario: Scenario, listens: list[str]) -> dict[str, Any]:
    """What the namespaced links were and carried (read before they are removed)."""
    return {
        "namespaces": True,
        "rate_mbit": scenario.network.rate_mbit,
        "prefix": net.prefix,
        "subnet": str(net.subnet),
        "bridge_address": net.bridge_address,
        "netns": [net.netns(i) for i in range(net.nodes)],
        "listen": listens,
        # Bytes through each node's tbf: "up" leaves its namespace, "down" enters it.
        "qdisc_bytes": net.qdisc_bytes() if scenario.network.rate_mbit else None,
    }


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _final_round(child: Child) -> int:
    status = child.status() or {}
    last = status.get("last_commit") or {}
    return int(last.get("round", 0))


def _watch(
    devnet: DevNet,
    manifest: TaskManifest,
    scenario: Scenario,
    children: list[Child],
    restart: RestartFault | None,
    fault_events: list[dict[str, Any]],
    say: Any,
    anvil: Anvil | None = None,
    outage: RpcOutage | None = None,
    outage_clock: _OutageClock | None = None,
    commit_seen: dict[int, float] | None = None,
    on_commit: Callable[[int], None] | None = None,
) -> bool:
    """Poll the chain until `scenario.rounds` are committed; inject the restart fault and
    the RPC outage on the way. Returns True when the whole-run deadline passed first.
    `on_commit(round)` is called with the last round committed each time it advances.

    A node process that exits early is an error, except under the RPC outage, whose
    figures count it (a node that dies of an outage is what that fault measures)."""
    deadline = time.monotonic() + MAX_SECONDS_PER_ROUND * scenario.rounds
    seen = 0
    restart_at: float | None = None  # when the killed node comes back
    clock = outage_clock if outage_clock is not None else _OutageClock()
    seen_at = commit_seen if commit_seen is not None else {}
    dead: set[int] = set()
    while time.monotonic() < deadline:
        if not clock.down:  # nobody answers while anvil is down
            last = devnet.admin.task_info(manifest.task_id).last_round
            if last > seen:
                now = time.monotonic()
                for r in range(seen + 1, last + 1):
                    seen_at[r] = now
                seen = last
                say(f"  round {seen}/{scenario.rounds} committed")
                if on_commit is not None:
                    on_commit(seen)
        if seen >= scenario.rounds:
            return False
        for child in children:
            if (
                child.running()
                or child.index in dead
                or (restart is not None and child.index == restart.node and restart_at)
            ):
                continue
            code = child.returncode
            tail = child.log_path.read_text()[-3000:] if child.log_path.exists() else ""
            if outage is None:
                raise P2PFLError(
                    f"node {child.index} exited with {code} before round {scenario.rounds} was "
                    f"committed:\n{tail}"
                )
            dead.add(child.index)
            fault_events.append(
                {
                    "kind": "died",
                    "node": child.index,
                    "returncode": code,
                    "chain_round": seen,
                    "during_outage": clock.down,
                }
            )
            say(
                f"  node {child.index} died (exit {code}) with the chain at round "
                f"{seen}:\n{tail[-800:]}"
            )
        if dead and len(dead) == len(children):
            say("  every node process died: nothing left to commit the remaining rounds")
            return True
        if (
            restart is not None
            and restart_at is None
            and not any(f["kind"] == "sigkill" for f in fault_events)
        ):
            victim = children[restart.node]
            status = victim.status() or {}
            if seen >= restart.round - 1:
                victim.kill()
                restart_at = time.monotonic() + restart.down_s
                fault_events.append(
                    {
                        "kind": "sigkill",
                        "node": restart.node,
                        "round": status.get("round"),
                        "phase": status.get("phase"),
                        "chain_round": seen,
                    }
                )
                say(
                    f"  killed node {restart.node} (SIGKILL) in round {status.get('round')} "
                    f"({status.get('phase')})"
                )
        if restart is not None and restart_at is not None and time.monotonic() >= restart_at:
            victim = children[restart.node]
            victim.start()
            victim.restarts += 1
            restart_at = None
            fault_events.append({"kind": "restart", "node": restart.node, "chain_round": seen})
            say(f"  restarted node {restart.node} on its data dir (chain at round {seen})")
        if outage is not None and anvil is not None:
            _outage_step(outage, clock, anvil, devnet, seen, fault_events, say)
        time.sleep(POLL_S)
    return True


def _outage_step(
    outage: RpcOutage,
    clock: _OutageClock,
    anvil: Anvil,
    devnet: DevNet,
    seen: int,
    fault_events: list[dict[str, Any]],
    say: Any,
) -> None:
    """Advance the RPC outage: trigger, stop anvil (SIGTERM: it dumps its chain), restart it."""
    now = time.monotonic()
    if clock.trigger_at is None and seen >= outage.round - 1:
        clock.trigger_at = now + outage.delay_s
    if clock.stopped_at is None and clock.trigger_at is not None and now >= clock.trigger_at:
        clock.block_before = devnet.admin.block_number()
        pid = anvil.pid
        anvil.stop()
        clock.stopped_at = time.monotonic()
        fault_events.append(
            {"kind": "rpc-stop", "pid": pid, "chain_round": seen, "block": clock.block_before}
        )
        say(
            f"  RPC outage: stopped anvil (pid {pid}, SIGTERM) at block {clock.block_before}, "
            f"chain at round {seen}; "
            f"down for {outage.down_s:.0f} s"
        )
    elif clock.down and clock.stopped_at is not None and now >= clock.stopped_at + outage.down_s:
        anvil.start()
        clock.restarted_at = time.monotonic()
        clock.block_after = devnet.admin.block_number()
        fault_events.append(
            {
                "kind": "rpc-restart",
                "pid": anvil.pid,
                "block": clock.block_after,
                "down_s": round(clock.restarted_at - clock.stopped_at, 3),
            }
        )
        say(
            f"  RPC outage: anvil back (pid {anvil.pid}) after "
            f"{clock.restarted_at - clock.stopped_at:.1f} s "
            f"at block {clock.block_after}"
        )


def outage_figures(
    outage: RpcOutage,
    clock: _OutageClock,
    rounds: int,
    commit_events: list[Any],
    commit_seen: dict[int, float],
    fault_events: list[dict[str, Any]],
    children: list[Child],
) -> dict[str, Any]:
    """What the RPC outage cost: every round committed exactly once? time lost? deaths?

    Round walls are the parent's view (time between two commits it saw; round 1 from the
    `go` file). The outage round is the first committed after the restart; the time lost
    is its wall minus the median wall of the other rounds, round 1 left out when there are
    others (it carries the start-up: genesis fetch, first torch calls)."""
    per_round = Counter(e.round for e in commit_events)
    walls = {
        r: commit_seen[r] - commit_seen[r - 1]
        for r in sorted(commit_seen)
        if r >= 1 and r - 1 in commit_seen
    }
    hit = None
    if clock.restarted_at is not None:
        hit = next((r for r in sorted(walls) if commit_seen[r] >= clock.restarted_at), None)
    others = [w for r, w in walls.items() if r not in (1, hit)] or [
        w for r, w in walls.items() if r != hit
    ]
    baseline = float(np.median(others)) if others and hit is not None else None
    retries, commit_retries = {}, {}
    for child in children:
        lines = (
            child.log_path.read_text(errors="replace") if child.log_path.exists() else ""
        ).splitlines()
        retries[child.index] = sum(1 for line in lines if RETRY_LOG_MARK in line)
        commit_retries[child.index] = sum(1 for line in lines if COMMIT_RETRY_LOG_MARK in line)
    return {
        "round": outage.round,
        "planned_down_s": outage.down_s,
        "injected": clock.restarted_at is not None,
        "down_s": None
        if clock.stopped_at is None or clock.restarted_at is None
        else clock.restarted_at - clock.stopped_at,
        "block_before": clock.block_before,
        "block_after": clock.block_after,
        "rounds_planned": rounds,
        "rounds_committed": sum(1 for r in range(1, rounds + 1) if per_round[r] >= 1),
        "commit_events": len(commit_events),
        "duplicates": sum(n - 1 for n in per_round.values() if n > 1),
        "gaps": [r for r in range(1, max(per_round, default=0) + 1) if per_round[r] == 0],
        "round_walls_s": {str(r): round(w, 3) for r, w in walls.items()},
        "hit_round": hit,
        "hit_wall_s": walls.get(hit) if hit is not None else None,
        "baseline_wall_s": baseline,
        "time_lost_s": None if hit is None or baseline is None else walls[hit] - baseline,
        "node_deaths": sum(1 for f in fault_events if f["kind"] == "died"),
        "retry_log_lines": retries,
        "commit_retry_log_lines": commit_retries,
    }


def outage_lines(fig: dict[str, Any]) -> list[str]:
    """The printed `rpc-outage-*` figures."""
    lines = [
        f"rpc-outage-rounds-committed: {fig['rounds_committed']}/{fig['rounds_planned']}",
        f"rpc-outage-duplicates: {fig['duplicates']}",
        f"rpc-outage-gaps: {len(fig['gaps'])}",
        f"rpc-outage-node-deaths: {fig['node_deaths']}",
    ]
    if not fig["injected"]:
        return [*lines, "rpc-outage-injected: no (the run ended before the outage round)"]
    kept = "kept" if fig["block_after"] == fig["block_before"] else "NOT kept"
    retried = sum(1 for n in fig["retry_log_lines"].values() if n)
    lines += [
        f"rpc-outage-down: {fig['down_s']:.1f} s (chain {kept}: block {fig['block_before']} "
        "before the stop, "
        f"{fig['block_after']} after the restart)",
        f"rpc-outage-nodes-retrying: {retried}/{len(fig['retry_log_lines'])}",
        f"rpc-outage-commit-retries: {sum(fig['commit_retry_log_lines'].values())} "
        f"(by {sum(1 for n in fig['commit_retry_log_lines'].values() if n)} nodes)",
    ]
    if fig["time_lost_s"] is not None:
        lines += [
            f"rpc-outage-round-wall: round {fig['hit_round']} {fig['hit_wall_s']:.1f} s "
            f"(baseline: median wall of the other rounds, {fig['baseline_wall_s']:.1f} s)",
            f"rpc-outage-time-lost: {fig['time_lost_s']:.1f} s",
        ]
    return lines


def _wait_ready(children: list[Child]) -> None:
    """Until every child has its host up (READY_FILE); a child that dies is an error."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not all((c.data_dir / READY_FILE).exists() for c in children):
        for child in children:
            if not child.running():
                tail = child.log_path.read_text()[-3000:] if child.log_path.exists() else ""
                raise P2PFLError(f"node {child.index} exited during start-up:\n{tail}")
        if time.monotonic() > deadline:
            raise P2PFLError(f"node processes not up within {READY_TIMEOUT_S} s")
        time.sleep(POLL_S)


def _wait_finished(devnet: DevNet, manifest: TaskManifest, children: list[Child]) -> None:
    """Give every running child time to see the last commit and write final.json."""
    deadline = time.monotonic() + FINISH_GRACE_S
    while time.monotonic() < deadline:
        if all((c.data_dir / FINAL_FILE).exists() or not c.running() for c in children):
            return
        time.sleep(POLL_S)
