"""Robustness campaign: attacks x aggregation rules, protocol attacks and faults.

    python -m sim.robustness [--only table|stack|protocol|report] [--rounds N]

Three parts, results cached as JSON under `runs/robustness/` and rendered into
`sim/ROBUSTNESS.md`:

- **table** (aggregation level): every poisoning attack x every rule, same nodes, data,
  model, seeds and the very `p2pfl.core.aggregate` pipeline the committees run, but no
  network and no chain: local training in a 2-process pool, then `aggregate()`. This is
  what makes 50 (attack, rule) runs affordable on 2 cores.
- **stack** (full simulation, `sim.run`): the default pipeline under each poisoning
  attack with real libp2p hosts, the embedded chain, committees and commits.
- **protocol**: equivocation, lying/withholding/silent/censoring members, replay,
  spam, Sybils, and the faults (30% killed, leader killed after proposing, partition),
  each a full simulation with its robustness audit.

Each full simulation audits itself (`sim.audit.audit_run`).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from sim.attacks import POISONS, craft_round, make_plan

RESULTS_DIR = Path("runs/robustness")
REPORT_PATH = Path("sim/ROBUSTNESS.md")
BASE_SCENARIO = Path("sim/scenarios/attack_base.toml")
# The rules of the table, each parameterised for f = 3 attackers out of 10.
RULES: dict[str, dict[str, Any]] = {
    "fedavg": {"rule": "fedavg"},
    "median": {"rule": "median"},
    "trimmed_mean": {"rule": "trimmed_mean", "trim_fraction": 0.3},
    "multikrum": {"rule": "multikrum", "byzantine_f": 3},
    "default": {},
}
ATTACK_ROWS = [p for p in POISONS]  # "none" = the clean run
# The table's floor: the attackers' nodes simply absent (no update, no data), i.e. what a
# perfect defence could reach. With non-IID data their 30% of the data can hold most of
# some class, so the floor itself can be several points under the clean run.
ABSENT = "absent"
# Table-only variants: row name -> the [attacks] table. A jittered ALIE sends three slightly
# different vectors, so the duplicate rule keeps all three instead of one.
VARIANTS: dict[str, dict[str, Any]] = {"alie_jitter": {"poison": "alie", "alie_jitter": 0.05}}
TABLE_ROWS = [*ATTACK_ROWS, *VARIANTS, ABSENT]
ATTACK_FRACTION = 0.3
# Index of the first round whose wall time is compared between runs (0-based).
STEADY_FROM = 2
# Seeds of the table (each: its own partitions, attackers, init and training seeds).
TABLE_SEEDS = (7, 8)
# Final accuracy = mean test accuracy of the last rounds: non-IID FL moves a few points
# from one round to the next, which would otherwise drown the differences between rules.
FINAL_WINDOW = 3


# ---------------------------------------------------------------- aggregation-level table

_CAMPAIGN: dict[str, Any] = {}


def _init_campaign_worker(scenario: Any) -> None:
    import warnings

    from sim.data import load_data

    warnings.filterwarnings("ignore")
    _CAMPAIGN["parts"] = load_data(replace(scenario, attacks={}))[2]


def _campaign_train(
    index: int, flip: bool, model: str, kwargs: dict[str, Any], base: Any, cfg: Any, seed: int
) -> Any:
    from p2pfl.train.trainer import train_local
    from sim.attacks import flip_labels

    data = _CAMPAIGN["parts"][index]
    if flip:
        data = replace(data, y=flip_labels(data.y))
    return train_local(model, base, data, cfg, seed, model_kwargs=kwargs, num_threads=1)


def table_run(
    scenario: Any, pool: ProcessPoolExecutor, test: Any, poison: str, rule: str
) -> dict[str, Any]:
    """One (attack, rule) cell: FL without the network, with the committee's aggregate()."""
    from p2pfl.core import aggregate as agg
    from p2pfl.core.tensors import flatten, layout_size, tensor_sizes, unflatten
    from p2pfl.parallel import threaded
    from p2pfl.train.models import init_weights
    from p2pfl.train.trainer import TrainConfig, client_seed, evaluate
    from sim.data import train_dict

    attacks = (
        {}
        if poison in ("none", ABSENT)
        else {**VARIANTS.get(poison, {"poison": poison}), "fraction": ATTACK_FRACTION}
    )
    plan = make_plan(attacks, scenario.nodes, scenario.seed)
    # Absent: the nodes the attackers would be (the choice depends on the seed only) send nothing.
    absent = set(
        make_plan(
            {"poison": "zero", "fraction": ATTACK_FRACTION}, scenario.nodes, scenario.seed
        ).poisoners
        if poison == ABSENT
        else ()
    )
    present = [i for i in range(scenario.nodes) if i not in absent]
    spec = agg.RuleSpec.from_dict(RULES[rule]) if RULES[rule] else agg.RuleSpec.default()
    cfg = TrainConfig.from_dict({**train_dict(scenario), "seed": scenario.seed})
    weights = init_weights(scenario.model.name, scenario.model.kwargs, scenario.seed)
    previous: dict[str, np.ndarray] | None = None
    history, rejected_poisoners, rejected_honest = [], 0, 0
    strikes: dict[int, dict[bytes, int]] = {}  # the probation history the nodes keep
    started = time.perf_counter()
    for r in range(1, scenario.rounds + 1):
        flip = poison == "label_flip"
        futures = [
            pool.submit(
                _campaign_train,
                i,
                flip and i in plan.poisoners,
                scenario.model.name,
                dict(scenario.model.kwargs),
                weights,
                cfg,
                client_seed(scenario.seed, r, i),
            )
            for i in range(scenario.nodes)
        ]
        results = [f.result() for f in futures]
        deltas, claims = craft_round(
            plan,
            scenario.seed,
            r,
            [x.delta for x in results],
            [x.n_samples for x in results],
            previous,
        )
        base_vec, layout = flatten(weights)
        contributions = [
            agg.Contribution(i.to_bytes(20, "big"), max(1, claims[i]), flatten(deltas[i])[0])
            for i in present
        ]
        record = spec.probation.record(r, strikes) if spec.probation else {}
        try:
            out = agg.aggregate(
                spec,
                contributions,
                expected_size=layout_size(layout),
                segments=tensor_sizes(layout),
                record=record,
                parallel=threaded,
            )
            step = out.delta
            if spec.probation:
                strikes[r] = agg.strike_points(out.rejected, spec.probation)
            for peer, _ in out.rejected:
                if int.from_bytes(peer, "big") in plan.poisoners:
                    rejected_poisoners += 1
                else:
                    rejected_honest += 1
        except agg.NothingToAggregate as exc:
            step = np.zeros_like(base_vec)
            if spec.probation:
                strikes[r] = agg.strike_points(exc.rejected, spec.probation)
        new = unflatten(np.add(base_vec, step, dtype=np.float32), layout)
        previous = {k: (new[k] - weights[k]).astype(np.float32) for k in new}
        weights = new
        loss, acc = evaluate(
            scenario.model.name,
            weights,
            test,
            model_kwargs=scenario.model.kwargs,
            num_threads=1,
            input_norm=cfg.input_norm,
        )
        history.append(acc)
    slots = scenario.rounds * len(plan.poisoners)
    honest_slots = scenario.rounds * (len(present) - len(plan.poisoners))
    return {
        "attack": poison,
        "rule": rule,
        "rule_name": spec.name,
        "seed": scenario.seed,
        "accuracy": float(np.mean(history[-FINAL_WINDOW:])),
        "history": history,
        "poisoners": list(plan.poisoners),
        "rejected_poisoner_share": rejected_poisoners / slots if slots else None,
        "rejected_honest_share": rejected_honest / honest_slots,
        "seconds": time.perf_counter() - started,
    }


def run_table(
    scenario: Any,
    out: Path,
    say: Any,
    rules: list[str] | None = None,
    seeds: tuple[int, ...] = TABLE_SEEDS,
) -> list[dict[str, Any]]:
    """Every (attack, rule) cell for every seed; with `rules`, only those columns are
    re-run and the other cells are kept from `out`. Ends by printing the default
    pipeline's gaps (`summarize_default`)."""
    from sim.data import load_data

    cells = []
    if rules and out.exists():
        cells = [c for c in json.loads(out.read_text())["cells"] if c["rule"] not in rules]
    for seed in seeds:
        seeded = replace(scenario, seed=seed)
        _, test, _ = load_data(replace(seeded, attacks={}))
        with ProcessPoolExecutor(
            2,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_campaign_worker,
            initargs=(seeded,),
        ) as pool:
            for poison in TABLE_ROWS:
                for rule in rules or RULES:
                    cell = table_run(seeded, pool, test, poison, rule)
                    say(
                        f"table seed {seed} {poison:10s} x {rule:12s}: accuracy "
                        f"{cell['accuracy']:.4f} "
                        f"({cell['seconds']:.0f} s)"
                    )
                    cells.append(cell)
                    out.write_text(
                        json.dumps(
                            {"scenario": scenario.to_dict(), "seeds": list(seeds), "cells": cells},
                            indent=1,
                        )
                    )
    summarize_default(cells, say)
    return cells


def summarize_default(cells: list[dict[str, Any]], say: Any) -> None:
    """Print, per attack, the default pipeline's accuracy averaged over the seeds and its
    gap to the clean run and to the floor (attackers absent)."""
    mean = {a: c["accuracy"] for (a, r), c in _mean_cells(cells).items() if r == "default"}
    clean, floor = mean.get("none"), mean.get(ABSENT)
    for attack in TABLE_ROWS:
        if attack in mean and clean is not None:
            beyond = "" if floor is None else f", vs floor {100 * (mean[attack] - floor):+.1f}"
            say(
                f"default {attack:10s}: {100 * mean[attack]:.1f}% (vs clean "
                f"{100 * (mean[attack] - clean):+.1f}{beyond} points)"
            )


# ---------------------------------------------------------------- full-stack runs

# Protocol attacks and faults of the campaign: name -> scenario overrides.
PROTOCOL_RUNS: dict[str, dict[str, Any]] = {
    "clean": {},
    "equivocation (1 node)": {"attacks": {"equivocators": 1}},
    "lying members (2)": {"attacks": {"liars": 2}},
    "withheld votes (2)": {"attacks": {"withholders": 2}},
    "silent leaders (2)": {"attacks": {"silent_leaders": 2}},
    "censoring member (1)": {"attacks": {"censors": 1}},
    "replay of old rounds (1)": {"attacks": {"replayers": 1}},
    "topic spam (1 node, 20 msg/s)": {"attacks": {"spammers": 1}},
    "Sybil flood (10 peers, no stake)": {"attacks": {"sybils": 10}},
    "30% killed in round 3": {"faults": {"kill_fraction": 0.3, "kill_round": 3}},
    "leader killed after proposing (round 3)": {"faults": {"kill_leader_round": 3}},
    "partition for 20 s (round 3)": {"faults": {"partition_round": 3, "partition_s": 20.0}},
}


def stack_run(scenario: Any, runs_root: Path) -> dict[str, Any]:
    from sim.run import run_scenario

    run_dir = run_scenario(scenario, runs_root, quiet=True)
    summary = json.loads((run_dir / "summary.json").read_text())
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {
        "run_dir": str(run_dir),
        "summary": summary,
        "walls": [r["wall_s"] for r in records],
        "accuracies": [r["accuracy"] for r in records],
    }


def run_stack(
    scenario: Any, out: Path, say: Any, which: str, only: list[str] | None = None
) -> dict[str, Any]:
    results: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {}
    if which == "stack":
        jobs = {
            p: {"attacks": {"poison": p, "fraction": ATTACK_FRACTION} if p != "none" else {}}
            for p in ATTACK_ROWS
        }
    else:
        jobs = PROTOCOL_RUNS
    for name, overrides in jobs.items():
        if only and not any(o in name for o in only):
            continue
        s = replace(scenario, name=f"rob-{which}", **overrides)
        started = time.perf_counter()
        # Each run in a fresh process: runs in one process share module state (one such
        # leak, a registry snapshot cache keyed by block number, stalled a campaign) and
        # a campaign's topic-spam run stalled after 7 earlier runs while it passes alone.
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as isolated:
            res = isolated.submit(stack_run, s, RESULTS_DIR / "runs").result()
        res["overrides"] = overrides
        results[name] = res
        sm = res["summary"]
        say(
            f"{which} {name}: rounds {sm['rounds_committed']}/{sm['rounds_planned']} accuracy "
            f"{sm['final_accuracy']:.4f} "
            f"wall {time.perf_counter() - started:.0f} s violations "
            f"{len(sm.get('robustness', {}).get('violations', []))}"
        )
        # In the campaign's order whatever was re-run, so the tables keep their row order.
        results = {
            k: results[k]
            for k in sorted(results, key=lambda k: list(jobs).index(k) if k in jobs else len(jobs))
        }
        out.write_text(json.dumps(results, indent=1))
    return results


# ---------------------------------------------------------------- report


NOTES = """## Findings (read with the tables below)

- **Default pipeline vs the 2-point target** (table, 30% attackers, non-IID Fashion-MNIST):
  holds for scale x-10, Gaussian noise (10x norm), label flip, ALIE, zero and stale free
  riders and inflated n_samples (gaps -2.0 .. +0.4 points; the -2.0 rows are runs where
  *every* attacker update was rejected, i.e. the cost of training without the attackers'
  30% of the data, not of the attack). It **fails for sign flip (-15 points)**: with
  Dirichlet(0.5) data the honest updates are nearly orthogonal, so a flipped update's
  cosine to the coordinate median is often >= 0 and only 45% of them are rejected. Raising
  `min_cosine` to 0.1 or using the trimmed-mean reference does not fix it (measured: 61.9 /
  62.5 and 62.5 / 62.4 % for seeds 7 / 8, vs 74.9 clean). Multi-Krum (59.6) is no better.
  **Copy** free riders cost -6.8 points because the duplicate rule rejects the copied honest
  victim too (by design: it cannot tell author from copier).
- **Why the default anyway**: it is the only column that never collapses: FedAvg and
  trimmed mean fall to ~10% under x-10 scaling, median loses 10-18 points to free riders
  and non-IID drift, Multi-Krum rejects 30-43% of *honest* updates whenever attackers are
  identical (ALIE, zero, stale, copy) and loses 10+ points there.
- **ALIE as implemented** sends one shared vector from all colluders (Baruch et al.), so the
  duplicate rule rejects it outright; a jittered ALIE would pass the filter and be bounded
  only by clipping (not measured).
- **Equivocation** is detected by every honest node, proven on-chain with
  `submitEquivocation` within the same round (before the next commit), 50% of the stake
  slashed each time, the reporter paid 1/5 of the slash (tests/sim/test_robustness.py).
  **Gap found**: a leader that had not yet received the second version proposes the first
  one, and verifiers who *do* hold both still vote for it (`_verify_inputs` only refuses
  equivocators among the filter-rejected), so an equivocator's update can be committed in
  the round it equivocated (seen in 2 of 3 rounds of a 6-node run). Fix belongs in
  `p2pfl/core/round.py`: verifiers should refuse proposals that include a known
  equivocator (the next view's leader excludes it).
- A slashed node is ejected and banned by the registry (`NodeRegistry.slash`): from the next
  round's snapshot its stake is 0, so its updates are dropped at the first hop as unregistered.
- **Protocol attacks (full stack, table at the end)**: every run committed 5/5 rounds and no
  committed round included an unregistered author (Sybil updates are dropped at the first
  hop: `gossip-reject-unregistered-signer`). Lying members' bogus votes never reach quorum;
  a liar that also builds a certificate publishes its honest vote inside it and is caught
  equivocating (slashed). Withheld votes and silent leaders cost at most one view. A
  censoring member silences its victim in the views it leads (the victim was included in
  2 of 5 rounds): a known limit (protocol/spec/round.md "Known limits"). Replayed old-round
  messages are dropped (`stale-round`, `replayed-round`).
- **Faults**: 30% killed in round 3 → later rounds still commit, each paying the collect
  deadline (20 s) because the 80% collect quorum counts registered, not live, nodes. A
  leader killed right after proposing → the round commits in the same view through the
  other members' certificate and the fallback submitter. A 20 s partition → the round
  commits after healing (+~16 s).
- **Not done / found broken**: the topic-spam run (1 node, 20 msg/s) **crashed the
  simulation**: `Node._on_chain_commit` raised `P2PFLError: model size unknown before the
  genesis model is loaded` out of the chain follower (a node that sees a commit before it
  fetched the genesis model kills its nursery) — a node.py bug to fix (defer the event
  until the model is loaded). Peak RSS under spam not measured. Not in this campaign: vote
  equivocation as its own attack, jittered ALIE, kill-and-restart and the chain RPC outage
  (done with processes and anvil by another helper).
"""


def _mean_cells(raw: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """Cells averaged over seeds (accuracy and rejection shares)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for c in raw:
        groups.setdefault((c["attack"], c["rule"]), []).append(c)
    out = {}
    for key, cs in groups.items():
        mean = lambda k: None if cs[0][k] is None else float(np.mean([c[k] for c in cs]))  # noqa: E731
        out[key] = {
            **cs[0],
            "accuracy": mean("accuracy"),
            "rejected_poisoner_share": mean("rejected_poisoner_share"),
            "rejected_honest_share": mean("rejected_honest_share"),
            "n_seeds": len(cs),
        }
    return out


def _fmt_acc(x: float | None) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"


FINDINGS_HEADING = "## Findings"
BASE_HEADING = "Base scenario of the table"
PROTOCOL_HEADING = "## Protocol attacks and faults, full simulation"


def _kept_sections(previous: str | None) -> tuple[str, str]:
    """What a re-render keeps from the file it replaces: the Findings (edited by hand as
    results come in) and the sections after the protocol table that the campaign does
    not generate (`### ...` subsections, "## Hostile input"). Empty strings if absent."""
    if not previous or FINDINGS_HEADING not in previous or BASE_HEADING not in previous:
        return NOTES, ""
    a = previous.index(FINDINGS_HEADING)
    findings = previous[a : previous.index(BASE_HEADING, a)].rstrip()
    tail = ""
    if PROTOCOL_HEADING in previous:
        rest = previous[previous.index(PROTOCOL_HEADING) + len(PROTOCOL_HEADING) :]
        starts = [i for i in (rest.find("\n### "), rest.find("\n## ")) if i >= 0]
        if starts:
            tail = rest[min(starts) + 1 :].rstrip()
    return findings, tail


def render(
    scenario_text: str,
    table: dict[str, Any] | None,
    stack: dict[str, Any] | None,
    protocol: dict[str, Any] | None,
    commands: list[str],
    previous: str | None = None,
) -> str:
    findings, tail = _kept_sections(previous)
    lines = [
        "# Robustness: attacks, faults and what holds",
        "",
        "Generated by `python -m sim.robustness` (`sim/robustness.py`); the raw results are the "
        "JSON files",
        "under `runs/robustness/`. Re-render without re-running: `python -m sim.robustness --only "
        "report`",
        "(it keeps the Findings and the hand-written sections after the protocol table).",
        "",
        "Commands run for this file:",
        "",
        "```",
        *commands,
        "```",
        "",
        findings,
        "",
        "Base scenario of the table (`sim/scenarios/attack_base.toml`; the full-stack runs use "
        "`sim/scenarios/attack_stack.toml`, 10 nodes on non-IID digits, 5 rounds):",
        "",
        "```toml",
        scenario_text.strip(),
        "```",
        "",
    ]
    if table:
        cells = _mean_cells(table["cells"])
        rules = list(RULES)
        lines += [
            "## Attack x rule (aggregation level)",
            "",
            f"Final test accuracy (%, mean of the last {FINAL_WINDOW} rounds of "
            f"{table['scenario']['rounds']}, "
            f"averaged over seeds {table.get('seeds')}), 30% attackers "
            f"({max(len(c['poisoners']) for c in table['cells'])} of {table['scenario']['nodes']} "
            "nodes, seeded choice). "
            "Same partitions, model, seeds and `p2pfl.core.aggregate` as the committees; no "
            "network or chain "
            "(those are exercised by the full-stack runs below). Rules: "
            + ", ".join(
                f"`{r}` = `{next((c['rule_name'] for c in table['cells'] if c['rule'] == r), r)}`"
                for r in rules
            )
            + ".",
            "",
            "| attack | "
            + " | ".join(rules)
            + " | default − clean (points) | default − floor (points) |",
            "|---|" + "---|" * (len(rules) + 2),
        ]
        clean_default = cells.get(("none", "default"), {}).get("accuracy")
        floor_default = cells.get((ABSENT, "default"), {}).get("accuracy")
        labels = {"none": "clean (no attack)", ABSENT: "floor: attackers absent"}
        for attack in TABLE_ROWS:
            row = [
                _fmt_acc(cells[(attack, r)]["accuracy"]) if (attack, r) in cells else "—"
                for r in rules
            ]
            d = cells.get((attack, "default"), {}).get("accuracy")
            gaps = [
                "—" if d is None or ref is None else f"{100 * (d - ref):+.1f}"
                for ref in (clean_default, floor_default)
            ]
            lines.append(
                f"| {labels.get(attack, attack)} | "
                + " | ".join(row)
                + f" | {gaps[0]} | {gaps[1]} |"
            )
        lines += [
            "",
            "Share of the attackers' updates the rule rejected (default pipeline / Multi-Krum), "
            "and honest updates rejected:",
            "",
            "| attack | default: attackers rejected | default: honest rejected | multikrum: "
            "attackers rejected | multikrum: honest rejected |",
            "|---|---|---|---|---|",
        ]
        for attack in TABLE_ROWS:
            d, m = cells.get((attack, "default")), cells.get((attack, "multikrum"))
            if d is None or m is None:
                continue

            def f(x: float | None) -> str:
                return "—" if x is None else f"{100 * x:.0f}%"

            lines.append(
                f"| {attack} | {f(d['rejected_poisoner_share'])} | "
                f"{f(d['rejected_honest_share'])} | "
                f"{f(m['rejected_poisoner_share'])} | {f(m['rejected_honest_share'])} |"
            )
        lines.append("")
    if stack:
        lines += [
            "## Default pipeline under poisoning, full simulation",
            "",
            "Real libp2p hosts, embedded chain, sortition committees, commits; 30% poisoners.",
            "",
            "| attack | rounds committed | final accuracy (%) | vs clean (points) | poisoner "
            "updates included (sum over rounds) | violations |",
            "|---|---|---|---|---|---|",
        ]
        clean = stack.get("none", {}).get("summary", {}).get("final_accuracy")
        for name, res in stack.items():
            sm = res["summary"]
            rob = sm.get("robustness", {})
            inc = sum(len(r.get("poisoners_included") or []) for r in rob.get("rounds", []))
            gap = "—" if clean is None else f"{100 * (sm['final_accuracy'] - clean):+.1f}"
            lines.append(
                f"| {name if name != 'none' else 'clean'} | "
                f"{sm['rounds_committed']}/{sm['rounds_planned']} | "
                f"{_fmt_acc(sm['final_accuracy'])} | {gap} | {inc if rob else '—'} | "
                f"{len(rob.get('violations', [])) if rob else '—'} |"
            )
        lines.append("")
    if protocol:
        lines += [
            "## Protocol attacks and faults, full simulation",
            "",
            "| run | rounds committed | final accuracy (%) | round walls (s) | (attempt, view) of "
            "each commit | notes |",
            "|---|---|---|---|---|---|",
        ]
        clean_walls = protocol.get("clean", {}).get("walls")
        for name, res in protocol.items():
            sm = res["summary"]
            rob = sm.get("robustness", {})
            av = (
                " ".join(f"({r['attempt']},{r['view']})" for r in rob.get("rounds", []))
                or "(0,0) all"
            )
            notes = _notes(rob, sm, res, clean_walls)
            walls = " ".join(f"{w:.1f}" for w in res["walls"])
            lines.append(
                f"| {name} | {sm['rounds_committed']}/{sm['rounds_planned']} | "
                f"{_fmt_acc(sm['final_accuracy'])} | "
                f"{walls} | {av} | {notes} |"
            )
        lines.append("")
    if tail:
        lines += [tail, ""]
    return "\n".join(lines) + "\n"


def _notes(
    rob: dict[str, Any], sm: dict[str, Any], res: dict[str, Any], clean_walls: list[float] | None
) -> str:
    out = []
    if rob.get("violations"):
        out.append(f"VIOLATIONS: {rob['violations']}")
    elif rob:
        out.append("no unregistered/equivocating author included")
    if rob.get("equivocated_rounds"):
        slashed = rob["slashes"]
        stakes = ", ".join(
            "%g->%g ETH" % (v["before_wei"] / 1e18, v["after_wei"] / 1e18)
            for v in rob["attacker_stakes"].values()
        )
        proved = sorted({p["round"] for p in rob["equivocation_proofs"]})
        reward = sum(s["reporter_reward_wei"] for s in slashed) / 1e18
        out.append(
            f"equivocated in rounds {rob['equivocated_rounds']}, proofs on-chain for rounds "
            f"{proved}, "
            f"late {len(rob['equivocation_slashed_late'])}; stake {stakes}; "
            f"reporters rewarded {reward:g} ETH in {len(slashed)} slash(es)"
        )
    log = rob.get("attack_log", {})
    for key in ("lies", "withheld", "silenced", "censored", "replayed", "spam_sent", "sybil_sent"):
        if log.get(key):
            out.append(f"{key} {log[key]}")
    if rob.get("victim_included_rounds") is not None:
        out.append(f"censored victim included in {rob['victim_included_rounds']} round(s)")
    if rob.get("killed"):
        out.append(f"killed nodes {rob['killed']}")
    if rob.get("leader_killed") is not None:
        out.append(
            f"leader {rob['leader_killed']} killed after its round-{rob['leader_kill_round']} "
            "proposal"
        )
    if rob.get("partition"):
        out.append(f"partition {rob['partition'][0]} / {rob['partition'][1]}")
    if rob.get("strike_histories_agree") is False:
        out.append("strike histories differ between nodes")
    if rob.get("strikes"):
        # The campaign's scenarios run the default pipeline: its probation rule.
        from p2pfl.core.aggregate import RuleSpec

        spec = RuleSpec.default().probation
        assert spec is not None, "the default pipeline has a probation rule"
        history = {int(r): pts for r, pts in rob["strikes"].items()}
        on = {
            r["round"]: sorted(spec.on_probation(spec.record(r["round"], history)), key=str)
            for r in rob.get("rounds", [])
        }
        if any(on.values()):
            out.append(
                "on probation: "
                + ", ".join(
                    f"round {r} [{', '.join(map(str, nodes))}]" for r, nodes in on.items() if nodes
                )
            )
    if clean_walls and res["walls"] and res["walls"] != clean_walls:
        # Rounds 1-2 carry start-up skew that depends on the machine's load at the time;
        # compare from round 3 on (the clean run's steady state).
        n = min(len(clean_walls), len(res["walls"]))
        if n > STEADY_FROM:
            lost = sum(res["walls"][STEADY_FROM:n]) - sum(clean_walls[STEADY_FROM:n])
            out.append(f"time lost vs clean in rounds {STEADY_FROM + 1}-{n}: {lost:+.1f} s")
    c = sm.get("counters", {})
    interesting = {
        k: v
        for k, v in c.items()
        if any(s in k for s in ("reject", "equivoc", "evidence", "mismatch", "decode"))
    }
    if interesting:
        out.append("counters " + ", ".join(f"{k} {v}" for k, v in sorted(interesting.items())))
    return "; ".join(out).replace("|", "/")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sim.robustness", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--only", choices=["table", "stack", "protocol", "report"], action="append")
    parser.add_argument("--scenario", default=str(BASE_SCENARIO))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument(
        "--run", action="append", help="only the full-stack runs whose name contains this"
    )
    parser.add_argument(
        "--rule",
        action="append",
        choices=list(RULES),
        help="table: re-run only this rule's column, keep the other cells",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        help=f"table: these seeds instead of {list(TABLE_SEEDS)}; results go to "
        "runs/robustness/table-seeds-<seeds>.json, not into the report",
    )
    args = parser.parse_args(argv)
    from p2pfl.logs import setup_logging
    from sim.scenario import load_scenario
    from sim.strict import override_value

    setup_logging()
    overrides = {k: override_value(v) for k, _, v in (s.partition("=") for s in args.set)}
    scenario = load_scenario(args.scenario, overrides)
    parts = args.only or ["table", "stack", "protocol"]
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    say = lambda *a: print(*a, flush=True)  # noqa: E731
    files = {p: RESULTS_DIR / f"{p}.json" for p in ("table", "stack", "protocol")}
    if "table" in parts:
        if args.seeds and tuple(args.seeds) != TABLE_SEEDS:
            extra = RESULTS_DIR / f"table-seeds-{'-'.join(map(str, args.seeds))}.json"
            run_table(scenario, extra, say, args.rule, tuple(args.seeds))
        else:
            run_table(scenario, files["table"], say, args.rule)
    for which in ("stack", "protocol"):
        if which in parts:
            run_stack(scenario, files[which], say, which, args.run)
    load = lambda p: json.loads(files[p].read_text()) if files[p].exists() else None  # noqa: E731
    commands_file = RESULTS_DIR / "commands.txt"
    command = "python -m sim.robustness " + " ".join(sys.argv[1:] if argv is None else argv)
    if parts != ["report"]:
        with commands_file.open("a") as f:
            f.write(command.strip() + "\n")
    commands = commands_file.read_text().splitlines() if commands_file.exists() else []
    previous = REPORT_PATH.read_text() if REPORT_PATH.exists() else None
    # The scenario shown is the table's base, whatever --scenario the protocol runs used.
    REPORT_PATH.write_text(
        render(
            BASE_SCENARIO.read_text(),
            load("table"),
            load("stack"),
            load("protocol"),
            commands,
            previous,
        )
    )
    say(str(REPORT_PATH))
    return 0


if __name__ == "__main__":
    sys.exit(main())
