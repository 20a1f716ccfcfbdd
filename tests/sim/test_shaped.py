"""Shaped links (`[network] namespaces`, `sim.netns`): node processes in their own network
namespaces on a bridge, tbf on both ends of each veth pair; everything removed after."""

from __future__ import annotations

import json
import os
import signal

import pytest

from p2pfl.errors import ConfigError
from sim.netns import ShapedNetwork, leftovers, require_root_and_tools, tbf_args
from sim.processes import run_processes
from sim.run import run_scenario
from sim.scenario import load_scenario
from tests.sim.conftest import alive

# Skipped only when not root: CI runs as root, and scripts/setup.sh installs iproute2 (a
# missing `ip` or `tc` is then a failure, with sim.netns's message).
needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="network namespaces need root (CI runs as root)"
)


def test_scenario_keys_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="network.namespaces"):
        load_scenario("sim/scenarios/tiny.toml", {"network.rate_mbit": 20.0})
    with pytest.raises(ConfigError, match="rate_mbit"):
        load_scenario(
            "sim/scenarios/tiny.toml", {"network.namespaces": True, "network.rate_mbit": -1.0}
        )
    scenario = load_scenario("sim/scenarios/tiny.toml", {"network.namespaces": True})
    with pytest.raises(ConfigError, match="--processes"):
        run_scenario(scenario, tmp_path)


def test_tbf_bucket_holds_frames_and_ten_ms():
    assert tbf_args(20.0) == ["tbf", "rate", "20000000bit", "burst", "25000", "latency", "50ms"]
    assert tbf_args(1.0)[4] == str(4 * 1514)  # never below four full frames


def test_not_root_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(ConfigError, match="needs root"):
        require_root_and_tools()


@needs_root
def test_network_is_removed_on_failure_and_on_sigterm():
    net = ShapedNetwork(2, rate_mbit=5.0)
    with pytest.raises(KeyboardInterrupt), net:
        assert sorted(leftovers(net.prefix)) == sorted(
            [net.bridge, net.host_link(0), net.host_link(1), net.netns(0), net.netns(1)]
        )
        raise KeyboardInterrupt  # as Ctrl-C
    assert leftovers(net.prefix) == []

    handler = signal.getsignal(signal.SIGTERM)
    net = ShapedNetwork(1)
    with pytest.raises(SystemExit), net:
        os.kill(os.getpid(), signal.SIGTERM)  # turned into an exit while the network is up
    assert leftovers(net.prefix) == []
    assert signal.getsignal(signal.SIGTERM) == handler  # restored


@needs_root
def test_ten_node_processes_on_shaped_links_commit_and_leave_nothing(tmp_path):
    scenario = load_scenario(
        "sim/scenarios/tiny.toml",
        {"nodes": 10, "network.namespaces": True, "network.rate_mbit": 20.0},
    )
    run_dir = run_processes(scenario, tmp_path, quiet=True)
    summary = json.loads((run_dir / "summary.json").read_text())

    assert summary["rounds_committed"] == summary["rounds_planned"] == 2
    assert not summary["timed_out"]
    net = summary["network"]
    # Every node listened on its own namespace's address (the bridge's /24), not loopback.
    subnet_prefix = net["subnet"].rsplit(".", 1)[0] + "."
    assert len(set(net["listen"])) == 10
    for i, listen in enumerate(net["listen"]):
        assert listen.startswith(f"/ip4/{subnet_prefix}")
        assert f"listening {listen}/p2p/" in (run_dir / f"node{i}.log").read_text()
    # Both tbf qdiscs of every link carried the node's traffic (payload bytes are a floor).
    rounds = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for i in range(10):
        sent = sum(r["bytes_sent"][i] or 0 for r in rounds)
        received = sum(r["bytes_received"][i] or 0 for r in rounds)
        assert net["qdisc_bytes"]["up"][i] >= sent > 0
        assert net["qdisc_bytes"]["down"][i] >= received > 0
    # Nothing left: no namespace or link of the run, no process.
    assert leftovers(net["prefix"]) == []  # (other runs' prefixes may come and go meanwhile)
    for pid in [summary["pids"]["anvil"], *(p for ps in summary["pids"]["nodes"] for p in ps)]:
        assert not alive(pid)
