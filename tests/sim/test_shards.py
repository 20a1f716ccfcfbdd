"""`--shards K` mode: the nodes dealt over K processes, each one event loop hosting several
nodes with the node processes' code, on anvil; every process stopped by PID."""

import json

from sim.__main__ import main as sim_main
from tests.sim.conftest import alive


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
