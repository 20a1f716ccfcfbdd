"""A chain RPC outage in `--processes` mode: anvil is stopped while round 2 is under way and
restarted from its state file 8 s later on the same port. Every node process must ride
it out -- no commit lost, none duplicated, no node dead -- and every process is stopped
at the end."""

import json

import pytest

from p2pfl.errors import ConfigError
from sim.processes import run_processes
from sim.scenario import load_scenario
from tests.sim.conftest import alive

ROUNDS = 3
OUTAGE_S = 8.0


def test_nodes_ride_out_an_rpc_outage_without_losing_or_duplicating_a_commit(tmp_path, capsys):
    # More local epochs make round 2 last a few seconds: the committee trains, aggregates
    # and votes while the chain is down, so its commit is sent into the outage.
    scenario = load_scenario(
        "sim/scenarios/tiny.toml",
        {
            "rounds": ROUNDS,
            "train.epochs": 20,
            "faults.rpc_outage_round": 2,
            "faults.rpc_outage_s": OUTAGE_S,
        },
    )
    run_dir = run_processes(scenario, tmp_path)
    out = capsys.readouterr().out
    summary = json.loads((run_dir / "summary.json").read_text())
    fig = summary["rpc_outage"]

    # The outage happened, after round 1 and before round 2 was committed...
    kinds = [f["kind"] for f in summary["faults"]]
    assert kinds == ["rpc-stop", "rpc-restart"], summary["faults"]
    assert summary["faults"][0]["chain_round"] == 1
    assert fig["injected"] and fig["down_s"] >= OUTAGE_S
    # ...anvil came back with its chain (state file), as a new process on the same port...
    assert fig["block_after"] == fig["block_before"] > 0
    assert len(summary["pids"]["anvil_incarnations"]) == 2
    # ...and the nodes saw it down, retried, and went on.
    assert sum(fig["retry_log_lines"].values()) > 0
    assert fig["hit_round"] == 2

    # Every round committed exactly once: one RoundCommitted event per round, no gap.
    assert fig["rounds_committed"] == ROUNDS and fig["commit_events"] == ROUNDS
    assert fig["duplicates"] == 0 and fig["gaps"] == []
    assert summary["rounds_committed"] == ROUNDS and not summary["timed_out"]
    # No node process died, and every one saw the last round.
    assert fig["node_deaths"] == 0
    assert summary["node_final_rounds"] == [ROUNDS] * scenario.nodes
    assert all(len(p) == 1 for p in summary["pids"]["nodes"])

    assert f"rpc-outage-rounds-committed: {ROUNDS}/{ROUNDS}" in out
    assert "rpc-outage-duplicates: 0" in out
    assert "rpc-outage-node-deaths: 0" in out
    assert "rpc-outage-time-lost: " in out

    # Nothing left behind: both anvil incarnations and every node process are gone.
    pids = summary["pids"]
    for pid in [
        *pids["anvil_incarnations"],
        *(p for incarnations in pids["nodes"] for p in incarnations),
    ]:
        assert not alive(pid), f"process {pid} still running"


def test_rpc_outage_round_out_of_range_is_refused(tmp_path):
    scenario = load_scenario("sim/scenarios/tiny.toml", {"faults.rpc_outage_round": 3})
    with pytest.raises(ConfigError, match="rpc_outage_round"):
        run_processes(scenario, tmp_path, quiet=True)  # tiny has 2 rounds
