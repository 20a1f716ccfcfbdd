"""`--shards K` mode: the nodes dealt over K processes, each one event loop hosting several
nodes with the node processes' code, on anvil; every process stopped by PID."""

import json
import os
import sys
import time
from pathlib import Path

import pytest

from sim.__main__ import main as sim_main
from tests.sim.conftest import alive

ROOT_DIR = Path(__file__).resolve().parents[2]


def test_six_nodes_in_two_shards_commit_and_every_process_stops(tmp_path):
    argv = ["sim/scenarios/tiny.toml", "--shards", "2", "--set", "nodes=6", "--set", "rounds=2"]
    assert sim_main([*argv, "--runs", str(tmp_path), "-q"]) == 0
    (run_dir,) = tmp_path.iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    rounds = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]

    assert summary["mode"] == "shards"
    assert summary["rounds_committed"] == summary["rounds_planned"] == 2
    assert not summary["timed_out"]
    assert [r["nodes_reporting"] for r in rounds] == [6, 6]  # every node logged each round
    assert summary["node_final_rounds"] == [2] * 6
    # Two shard processes, three nodes each (dealt round-robin), both busy in the rounds.
    shards = summary["shards"]
    assert [s["nodes"] for s in shards] == [[0, 2, 4], [1, 3, 5]]
    assert shards[0]["pid"] != shards[1]["pid"]
    assert all(s["user_cpu_s"] > 0 for s in shards)
    pids = summary["pids"]
    assert [p for incarnations in pids["nodes"] for p in incarnations] == [
        shards[i % 2]["pid"] for i in range(6)
    ]
    for pid in [pids["anvil"], *(s["pid"] for s in shards)]:
        assert not alive(pid), f"process {pid} still running"
    # Each shard trained in a training process of its own (its CPU counted apart), gone
    # with the shard.
    assert all(len(s["train_pids"]) == 1 for s in shards)
    assert all(s["train_user_cpu_s"] > 0 for s in shards)
    training = [p for s in shards for p in s["train_pids"]]
    deadline = time.monotonic() + 10  # (a shard killed after its grace: reaped by init)
    while any(alive(pid) for pid in training) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in training:
        assert not alive(pid), f"training process {pid} still running"


def test_each_nodes_gossipsub_heartbeat_slows_with_the_node_count():
    """The machine-wide gossipsub heartbeat work stays put: up to twenty nodes beat at the
    node's default, 100 every 5 s (whole seconds); the node processes take the flag."""
    from p2pfl.net.config import GOSSIP_HEARTBEAT_S
    from sim.node_proc import parse_args
    from sim.run import gossip_heartbeat_s

    assert [gossip_heartbeat_s(n) for n in (1, 10, 20)] == [GOSSIP_HEARTBEAT_S] * 3
    assert [gossip_heartbeat_s(n) for n in (21, 40, 100)] == [2, 2, 5]
    argv = ["--index", "0", "--manifest", "m", "--rpc", "r", "--data-dir", "d", "--rounds", "1"]
    argv += ["--listen", "/ip4/127.0.0.1/tcp/0"]
    assert parse_args([*argv, "--gossip-heartbeat-s", "5"]).gossip_heartbeat_s == 5
    assert parse_args(argv).gossip_heartbeat_s == 0  # (the node's default)


def test_large_simulations_thin_the_gossip_mesh():
    """Up to thirty nodes keep the node's mesh degree (go-libp2p's 6/4/12); larger
    simulations run D = 3 (D_low 2, D_high 6), in process and in node processes alike."""
    from p2pfl.net.config import GOSSIP_DEGREE, GOSSIP_DEGREE_HIGH, GOSSIP_DEGREE_LOW, NetConfig
    from sim.node_proc import gossip_degrees, parse_args
    from sim.run import gossip_degree

    assert [gossip_degree(n) for n in (1, 10, 30)] == [GOSSIP_DEGREE] * 3
    assert [gossip_degree(n) for n in (31, 40, 100)] == [3, 3, 3]
    assert gossip_degrees(GOSSIP_DEGREE) == {
        "degree": GOSSIP_DEGREE,
        "degree_low": GOSSIP_DEGREE_LOW,
        "degree_high": GOSSIP_DEGREE_HIGH,
    }
    thin = NetConfig(data_dir="d", **gossip_degrees(3))  # a valid config (low <= D <= high)
    assert (thin.degree, thin.degree_low, thin.degree_high) == (3, 2, 6)
    argv = ["--index", "0", "--manifest", "m", "--rpc", "r", "--data-dir", "d", "--rounds", "1"]
    argv += ["--listen", "/ip4/127.0.0.1/tcp/0"]
    assert parse_args([*argv, "--gossip-degree", "3"]).gossip_degree == 3
    assert parse_args(argv).gossip_degree == 0  # (the node's default)


def test_a_shards_training_process_trains_each_node_as_the_node_would(tmp_path):
    """Node training runs in the shard's training process on the node's partition file:
    the very delta `train_local` gives in the node itself, a training's error raised to its
    caller, a training process that died replaced (the training that found it dead runs
    in the new one), the process named and gone once the shard shuts it down."""
    import signal

    import numpy as np
    import trio

    from p2pfl.train.data import load_fashion_mnist
    from p2pfl.train.models import init_weights
    from p2pfl.train.trainer import TrainConfig, train_local
    from sim.data import load_partition, save_partition
    from sim.shard_proc import TRAIN_PROCESS_PREFIX, TrainingProcess, shard_trainer

    images = load_fashion_mnist("test")
    folder = tmp_path / "node3"
    save_partition(type(images)(images.x[:300], images.y[:300]), folder)
    kwargs = {"input_shape": [1, 28, 28], "hidden": [16]}
    base = init_weights("mlp", kwargs, seed=5)
    conv_base = init_weights("lenet5", {}, seed=5)
    cfg = TrainConfig(epochs=1, batch_size=32, lr=0.05, momentum=0.9)

    process = TrainingProcess(3)
    first = process.pid()
    try:
        assert first != os.getpid()
        assert Path(f"/proc/{first}/comm").read_text().strip() == f"{TRAIN_PROCESS_PREFIX}3"
        train = shard_trainer(process, str(folder), "mlp", kwargs)
        trained = trio.run(train, base, cfg, 11)
        # A convolution too: the training process's own malloc settings
        # (`tune_malloc_for_training`) must not change a bit of what it computes.
        conv = trio.run(shard_trainer(process, str(folder), "lenet5", {}), conv_base, cfg, 11)
        missing = shard_trainer(process, str(tmp_path / "nobody"), "mlp", kwargs)
        with pytest.raises(FileNotFoundError):
            trio.run(missing, base, cfg, 11)
        os.kill(first, signal.SIGKILL)
        again = trio.run(train, base, cfg, 11)
        second = process.pid()
        assert process.restarts == 1 and second != first
        assert Path(f"/proc/{second}/comm").read_text().strip() == f"{TRAIN_PROCESS_PREFIX}3"
    finally:
        process.shutdown(wait=True)
    data = load_partition(folder)
    here = train_local("mlp", base, data, cfg, 11, model_kwargs=kwargs, num_threads=1)
    assert trained.n_samples == again.n_samples == here.n_samples == 300
    assert sorted(trained.delta) == sorted(again.delta) == sorted(here.delta)
    for name in here.delta:
        assert trained.delta[name].tobytes() == here.delta[name].tobytes(), name
        assert again.delta[name].tobytes() == here.delta[name].tobytes(), name
        assert np.abs(here.delta[name]).sum() > 0  # it trained
    conv_here = train_local("lenet5", conv_base, data, cfg, 11, num_threads=1)
    assert sorted(conv.delta) == sorted(conv_here.delta)
    for name in conv_here.delta:
        assert conv.delta[name].tobytes() == conv_here.delta[name].tobytes(), name
    assert not alive(first) and not alive(second)


def test_a_shard_killed_outright_takes_its_training_process_with_it():
    """SIGKILL gives a shard no chance to stop its training process: the kernel does
    (PR_SET_PDEATHSIG), so no orphan keeps running."""
    import signal
    import subprocess
    import sys
    import time

    code = (
        "import time\n"
        "from sim.shard_proc import TrainingProcess\n"
        "process = TrainingProcess(9)\n"
        "print(process.pid(), flush=True)\n"
        "time.sleep(60)\n"
    )
    shard = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        worker = int(shard.stdout.readline())
        assert alive(worker)
    finally:
        shard.send_signal(signal.SIGKILL)
        shard.wait()
    deadline = time.monotonic() + 10
    while alive(worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(worker)


def test_a_run_stopped_with_sigterm_leaves_no_process_behind(tmp_path):
    """`kill <pid of python -m sim>` ends a run as Ctrl-C does: anvil, the fork server, the
    shards and their training processes all stop."""
    import signal
    import subprocess
    import time

    argv = ["sim/scenarios/tiny.toml", "--shards", "2", "--set", "nodes=4", "--set", "rounds=50"]
    run = subprocess.Popen(
        [sys.executable, "-m", "sim", *argv, "--runs", str(tmp_path)],
        cwd=ROOT_DIR,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        for line in run.stdout:
            if "node processes up" in line:
                break
        family = _descendants(run.pid)
        names = sorted(_name(pid) for pid in family)
        assert "anvil" in names
        assert [n for n in names if n.startswith("p2pfl-")] == [
            "p2pfl-shard0",
            "p2pfl-shard1",
            "p2pfl-train0",
            "p2pfl-train1",
        ]
        run.send_signal(signal.SIGTERM)
        assert run.wait(timeout=120) != 0
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    deadline = time.monotonic() + 30
    while any(alive(pid) for pid in family) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [(pid, _name(pid)) for pid in family if alive(pid)]
    for pid, _ in left:  # (stopped here by PID, so that a failure leaves none either)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert left == []


def _descendants(pid: int) -> list[int]:
    """Every live process below `pid`."""
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        for children in Path(f"/proc/{parent}/task").glob("*/children"):
            try:
                kids = [int(p) for p in children.read_text().split()]
            except OSError:
                continue
            found += kids
            todo += kids
    return found


def _name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def test_a_node_process_trains_under_its_training_malloc_as_the_node_would(tmp_path):
    """A `--processes` node trains by the node's own path (`RoundWorkers.train`: no
    trainer, `train_local` in a worker thread under the node's CPU limiter) inside its
    `train_context`, `sim.node_proc.malloc_for_training`: glibc's training settings while
    it runs and the node's again after. Run in a child process (the settings are the
    process's): the stored delta is `train_local`'s bit for bit, twice over, the context
    entered around each training."""
    import subprocess

    script = f"""
import contextlib, trio, numpy as np
from types import SimpleNamespace
from p2pfl.net.blockstore import BlockStore
from p2pfl.node.roundlog import Behaviour
from p2pfl.node.workers import RoundWorkers, _store_delta
from p2pfl.train.data import load_fashion_mnist
from p2pfl.train.models import init_weights
from p2pfl.train.trainer import TrainConfig, client_seed, train_local
from sim.node_proc import malloc_for_training, tune_malloc

tune_malloc()
images = load_fashion_mnist("test")
data = type(images)(images.x[:200], images.y[:200])
base = init_weights("lenet5", {{}}, seed=5)
train = dict(epochs=1, batch_size=32, lr=0.01, momentum=0.9)
entered = []

@contextlib.contextmanager
def context():
    entered.append(True)
    with malloc_for_training():
        yield

async def ensure(cid):
    return base

events = []

async def put(event):
    events.append(event)

node = SimpleNamespace(
    behaviour=Behaviour(), privacy=None, models=SimpleNamespace(ensure=ensure),
    manifest=SimpleNamespace(train=train, seed=3, model="lenet5", model_kwargs={{}}),
    client_index=4, data=data, trainer=None, train_context=context, num_threads=1, progress=None,
    clock=trio.current_time, cpu=None, net=SimpleNamespace(store=BlockStore({str(tmp_path)!r})),
    address=b"\\x01" * 20, rounds={{}}, queue=SimpleNamespace(put=put),
)

async def main():
    node.cpu = trio.CapacityLimiter(1)
    workers = RoundWorkers(node)
    await workers.train(1, b"")
    await workers.train(2, b"")
    return workers

workers = trio.run(main)
assert entered == [True, True]
cfg = TrainConfig.from_dict({{**train, "seed": 3}})
for r, event in enumerate(events, 1):
    here = train_local("lenet5", base, data, cfg, client_seed(3, r, 4), num_threads=1)
    assert any(np.abs(d).sum() > 0 for d in here.delta.values())
    expected, cid, _ = _store_delta(BlockStore({str(tmp_path / "here")!r}), here.delta)
    assert event.delta == cid.to_bytes()
    assert workers._deltas[r][(node.address, event.delta)] == expected
    assert event.n_samples == 200
print("SAME")
"""
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT_DIR, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0 and out.stdout.strip() == "SAME", out.stderr[-2000:]
