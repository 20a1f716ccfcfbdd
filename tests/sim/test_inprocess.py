"""End to end: real libp2p hosts, the embedded chain and torch training, in one process."""

import json

from p2pfl.core.cid import CID
from sim.run import run_scenario
from sim.scenario import load_scenario


def test_tiny_scenario_commits_every_round_and_learns(tmp_path):
    scenario = load_scenario("sim/scenarios/tiny.toml", {"rounds": 3})
    run_dir = run_scenario(scenario, tmp_path, quiet=True)
    summary = json.loads((run_dir / "summary.json").read_text())
    rounds = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]

    assert summary["rounds_committed"] == summary["rounds_planned"] == 3
    assert not summary["timed_out"]
    # Learning happened, and tracks the centralised reference on the same data and seeds.
    assert rounds[-1]["accuracy"] > rounds[0]["accuracy"] > 0.3
    assert abs(summary["final_accuracy"] - summary["reference_accuracy"]) < 0.03
    # Every round was committed on-chain by a quorum of the committee.
    for r in rounds:
        assert r["commit_tx"].startswith("0x") and r["signers"] >= 3
        assert len(r["included"]) >= 3
        # Every node published an update and fetched or was sent something each round.
        assert all(b > 0 for b in r["bytes_sent"]) and all(b > 0 for b in r["bytes_received"])
    # The chain's last digest names the final model the nodes hold.
    assert CID.parse(summary["final_model"]).digest.hex() == summary["chain_final_digest"][2:]
    # Members recomputed the leader's aggregate bit for bit: no proposal ever mismatched.
    counters = summary["counters"]
    assert counters.get("proposal-mismatch", 0) == 0
    assert counters["votes-accepted"] > 0
    for name in ("report.md", "accuracy_loss.png", "phases.png"):
        assert (run_dir / name).stat().st_size > 0


def test_tiny_scenario_with_differential_privacy_reports_epsilon(tmp_path):
    """DP-SGD on every node (Opacus), noise set for epsilon 8 over the run's 2 rounds: each
    round commits, the spent epsilon grows and stays within the target, and the manifest
    carries the privacy settings every node trained with."""
    overrides = {
        "rounds": 2,
        "train.dp_max_grad_norm": 1.0,
        "train.dp_target_epsilon": 8.0,
        "train.dp_rounds": 2,
    }
    run_dir = run_scenario(
        load_scenario("sim/scenarios/tiny.toml", overrides), tmp_path, quiet=True
    )
    summary = json.loads((run_dir / "summary.json").read_text())
    rounds = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert summary["rounds_committed"] == 2
    epsilons = [r["epsilon"] for r in rounds]
    assert 0 < epsilons[0] < epsilons[1] <= 8.0, epsilons
    assert summary["counters"].get("dp-budget-spent", 0) == 0


def test_updates_to_the_committee_commit_and_every_node_settles_its_rounds(tmp_path):
    """`[privacy] updates = "committee"`: updates (with their deltas attached) go to the
    members only, yet every round commits with every update, members fetch no delta, and
    each node off the committee pulls the round's updates afterwards to write its reward
    file."""
    overrides = {
        "nodes": 6,
        "rounds": 2,
        "committee.size": 3,
        "privacy.updates": "committee",
        "model.kwargs.hidden": [128],  # a 39 KB delta: over the inline limit, so attached
    }
    run_dir = run_scenario(
        load_scenario("sim/scenarios/tiny.toml", overrides), tmp_path, quiet=True
    )
    summary = json.loads((run_dir / "summary.json").read_text())
    rounds = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert summary["rounds_committed"] == 2
    assert all(len(r["included"]) == 6 for r in rounds)
    assert any(len(r["committee"]) < 6 for r in rounds)  # some nodes followed
    counters = summary["counters"]
    assert counters["push-accept"] > 0 and counters.get("push-gave-up", 0) == 0
    assert counters["deltas-attached"] > 0 and counters.get("delta-attachment-mismatch", 0) == 0
    assert counters.get("fetch-retries", 0) == 0
    # Round 1's followers completed their files (the last round's may still be pulling when
    # the run stops its nodes).
    followers = 6 - len(rounds[0]["committee"])
    assert followers <= counters["round-updates-pulled"] <= counters["reward-file-missing-update"]
    for bad in ("round-pull-failed", "round-pull-rejected", "round-pull-incomplete"):
        assert counters.get(bad, 0) == 0, bad
    assert abs(summary["final_accuracy"] - summary["reference_accuracy"]) < 0.03
