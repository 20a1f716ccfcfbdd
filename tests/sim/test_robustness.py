"""Attacks and faults in the in-process simulation (fast subset of `python -m sim.robustness`).

Real libp2p hosts, the embedded chain and torch training; 6 nodes on sklearn digits."""

import json

import numpy as np
import pytest

from p2pfl.errors import ConfigError
from sim.attacks import alie, alie_z_max, craft_round, make_plan
from sim.faults import FaultSpec, kill_set
from sim.run import run_scenario
from sim.scenario import load_scenario

SIX = {"nodes": 6, "committee.size": 6}


def _run(tmp_path, **overrides):
    scenario = load_scenario("sim/scenarios/tiny.toml", {**SIX, **overrides})
    run_dir = run_scenario(scenario, tmp_path, quiet=True)
    summary = json.loads((run_dir / "summary.json").read_text())
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return summary, records


# ------------------------------------------------------------------ pure parts


def test_attack_plan_is_seeded_disjoint_and_strict():
    plan = make_plan({"poison": "sign_flip", "fraction": 0.3, "equivocators": 1, "censors": 1}, 10, 7)
    assert plan == make_plan({"poison": "sign_flip", "fraction": 0.3, "equivocators": 1, "censors": 1}, 10, 7)
    assert len(plan.poisoners) == 3
    groups = [set(plan.poisoners), set(plan.roles["equivocators"]), set(plan.roles["censors"]), {plan.victim}]
    assert sum(len(g) for g in groups) == len(set().union(*groups)) == 6
    with pytest.raises(ConfigError):
        make_plan({"poison": "sing_flip", "fraction": 0.3}, 10, 7)
    with pytest.raises(ConfigError):
        make_plan({"fraction": 0.3, "typo": 1}, 10, 7)
    with pytest.raises(ConfigError):
        make_plan({"poison": "zero", "fraction": 0.5, "liars": 5}, 10, 7)  # nobody honest left
    with pytest.raises(ConfigError):
        FaultSpec.from_dict({"kill_fraction": 1.5})
    assert len(kill_set(FaultSpec(kill_fraction=0.3), 10, 7)) == 3


def test_poisoned_updates_are_what_the_literature_describes():
    rng = np.random.default_rng(0)
    honest = [{"w": rng.normal(1.0, 0.1, 50).astype(np.float32)} for _ in range(10)]
    claims = [100] * 10

    def crafted(poison, **kw):
        plan = make_plan({"poison": poison, "fraction": 0.3, **kw}, 10, 7)
        deltas, n = craft_round(plan, 7, 1, honest, claims, previous_global={"w": np.ones(50, np.float32)})
        return plan, deltas, n

    plan, d, _ = crafted("sign_flip")
    for i in range(10):
        expected = -honest[i]["w"] if i in plan.poisoners else honest[i]["w"]
        assert np.array_equal(d[i]["w"], expected)
    plan, d, _ = crafted("scale")
    assert np.allclose(d[plan.poisoners[0]]["w"], -10 * honest[plan.poisoners[0]]["w"])
    plan, d, n = crafted("inflate")
    assert [n[i] for i in plan.poisoners] == [10000] * 3 and all(d[i] is honest[i] for i in range(10))
    plan, d, _ = crafted("zero")
    assert not np.any(d[plan.poisoners[0]]["w"])
    plan, d, _ = crafted("stale")
    assert np.array_equal(d[plan.poisoners[0]]["w"], np.ones(50, np.float32))
    plan, d, _ = crafted("noise")
    a = d[plan.poisoners[0]]["w"]
    assert abs(np.linalg.norm(a) / np.linalg.norm(honest[plan.poisoners[0]]["w"]) - 10) < 3
    # ALIE: every colluder sends mean - z * std of the colluders' honest deltas.
    plan, d, _ = crafted("alie")
    z = alie_z_max(10, 3)
    assert 0.4 < z < 0.6  # Baruch et al.: n=10, f=3 -> s=3, z = Phi^-1(0.7) ~ 0.52
    stack = np.stack([honest[i]["w"].astype(np.float64) for i in plan.poisoners])
    assert np.allclose(d[plan.poisoners[0]]["w"], stack.mean(0) - z * stack.std(0), atol=1e-6)
    assert alie([honest[0]], z)["w"].dtype == np.float32


# ------------------------------------------------------------------ full simulations


def test_two_sign_flippers_out_of_six_are_filtered_and_the_run_learns(tmp_path):
    summary, records = _run(tmp_path, rounds=3, attacks={"poison": "sign_flip", "fraction": 0.34})
    rob = summary["robustness"]
    assert len(rob["attackers"]["poisoners"]) == 2
    assert summary["rounds_committed"] == 3 and not summary["timed_out"]
    assert rob["violations"] == []
    # The default filter rejected every flipped update that reached a proposal.
    for r in rob["rounds"]:
        assert r["poisoners_included"] == []
        assert {why for who, why in r["rejected"] if who in rob["attackers"]["poisoners"]} <= {"low-cosine"}
    assert any(r["rejected"] for r in rob["rounds"])
    assert records[-1]["accuracy"] > 0.8
    assert summary["final_accuracy"] > summary["reference_accuracy"] - 0.05


def test_equivocation_is_slashed_on_chain_and_the_reporter_paid(tmp_path):
    summary, _ = _run(tmp_path, rounds=2, attacks={"equivocators": 1})
    rob = summary["robustness"]
    (cheat,) = rob["attackers"]["equivocators"]
    assert summary["rounds_committed"] == 2
    # It cheats in round 1. Round 2 draws from the registry at round 1's commit: if the
    # slash landed before it, the ejected node sits round 2 out; if after (a loaded
    # machine), it is still registered, cheats again and is slashed again. Either way
    # every offence is proven on-chain before the next round's commit ...
    assert rob["equivocated_rounds"] in ([1], [1, 2])
    assert sorted(p["round"] for p in rob["equivocation_proofs"]) == rob["equivocated_rounds"]
    assert all(p["node"] == cheat and p["kind"] == 1 for p in rob["equivocation_proofs"])
    assert rob["equivocation_slashed_late"] == [] and rob["equivocation_unslashed_rounds"] == []
    # ... and the first slash ejects and bans it: stake 0, what survives unbonding.
    stake = rob["attacker_stakes"][str(cheat)]
    assert (stake["after_wei"], stake["banned"]) == (0, True)
    slashed = sum(s["amount_wei"] for s in rob["slashes"])
    assert stake["unbonding_wei"] == stake["before_wei"] - slashed > 0
    assert len(rob["slashes"]) == len(rob["equivocation_proofs"])
    for s in rob["slashes"]:
        assert s["node"] == cheat and s["reporter"] != cheat and s["reporter_reward_wei"] == s["amount_wei"] // 5
    assert summary["counters"]["evidence-submitted"] == len(rob["equivocation_proofs"])
    assert cheat not in rob["rounds"][1]["included"] and rob["violations"] == []
    # Every node rebuilt the committed reward tree (proposals are keyed by their root too).
    assert "reward-root-mismatch" not in summary["counters"]


def test_leader_killed_after_proposing_the_round_still_commits(tmp_path):
    summary, _ = _run(tmp_path, rounds=2, faults={"kill_leader_round": 1})
    rob = summary["robustness"]
    dead = rob["leader_killed"]
    assert dead is not None and rob["killed"] == [dead] and rob["leader_kill_round"] == 1
    assert summary["rounds_committed"] == 2 and not summary["timed_out"]
    assert rob["violations"] == []
    # Round 2 runs without the dead node: its update is never included again.
    assert dead not in rob["rounds"][1]["included"]
