"""A DES run's folder: metrics.jsonl (one record per round), summary.json, report.md and
PNG plots. Phases are sim.report's (the in-process run's) definitions, so the two compare:
from the previous commit (t0), train ends when 80% of the round's updates are published
(or collection closes), disseminate ends at the first member's collection close,
aggregate at its first computed aggregate, agree at the first certificate, commit when
the first node learns of the chain's commit; each mark no earlier than the one before."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from p2pfl.core.cid import CID
from p2pfl.core.sortition import committee_for, round_seed
from sim.des.engine import Engine
from sim.report import PHASES, new_run_dir, summary_table

__all__ = ["PHASES", "new_run_dir", "round_records", "summarise", "write_run"]


def _phases(entries: list[Any], t0: float) -> tuple[dict[str, float], float]:
    members = [e for e in entries if e.member]
    published = sorted(e.published_at for e in entries if e.published_at)
    t_trained = published[max(0, math.ceil(0.8 * len(published)) - 1)] if published else t0
    t_closed = min((e.collect_closed_at for e in members if e.collect_closed_at), default=t_trained)
    t_computed = min((e.computed_at for e in members if e.computed_at), default=t_closed)
    t_certified = min((e.certified_at for e in entries if e.certified_at), default=t_computed)
    t_committed = min((e.committed_at for e in entries if e.committed_at), default=t_certified)
    marks = [t0, min(t_trained, t_closed), t_closed, t_computed, t_certified, t_committed]
    marks = [max(marks[: i + 1]) for i in range(len(marks))]
    return {p: marks[i + 1] - marks[i] for i, p in enumerate(PHASES)}, t_committed


def _stats(values: Any) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    if not a.size:
        return {}
    return {
        "mean": float(a.mean()),
        "p50": float(np.percentile(a, 50)),
        "p95": float(np.percentile(a, 95)),
        "max": float(a.max()),
    }


def round_records(engine: Engine) -> list[dict[str, Any]]:
    chain = engine.chain
    records: list[dict[str, Any]] = []
    prev_t: float | None = None
    prev_bytes = (np.zeros(len(engine.nodes)), np.zeros(len(engine.nodes)))
    base = engine.genesis
    for r in range(1, engine.rounds + 1):
        committed = chain.committed.get(r)
        entries = [n.log[r] for n in engine.nodes if r in n.log]
        if committed is None or not entries:
            break
        t0 = prev_t if prev_t is not None else min(e.started for e in entries)
        phases, t_committed = _phases(entries, t0)
        stakes = chain.stakes_of_round[r]
        sizes = [
            len(
                committee_for(
                    round_seed(engine.task, r, CID.parse(base).digest, a),
                    stakes,
                    engine.config.committee_size,
                )
            )
            for a in range(committed.attempt + 1)
        ]
        up, down = engine.bytes_at_commit[r]
        round_up, round_down = up - prev_bytes[0], down - prev_bytes[1]
        records.append(
            {
                "round": r,
                "wall_s": t_committed - t0,
                "phases_s": phases,
                "attempt": committed.attempt,
                "view": committed.view,
                "committee_sizes": sizes,
                "committed_at_s": chain.committed_at[r],
                "result": str(CID.parse(committed.result)),
                "bytes_up": _stats(round_up),
                "bytes_down": _stats(round_down),
                "nodes_reporting": len(entries),
            }
        )
        prev_t, prev_bytes, base = t_committed, (up, down), committed.result
    return records


def summarise(engine: Engine, records: list[dict[str, Any]]) -> dict[str, Any]:
    s = engine.s
    committed = len(records)
    phase_medians = {
        f"phase_{p}_median_s": float(np.median([r["phases_s"][p] for r in records]))
        if records
        else math.nan
        for p in PHASES
    }
    walls = [r["wall_s"] for r in records]
    sizes = [n for r in records for n in r["committee_sizes"]]
    slashed = engine.chain.stats.slashed
    detect, slash = [], []
    for signer, _round, t in engine.equivocations:
        if signer in engine.evidence_at and engine.evidence_at[signer] >= t:
            detect.append(engine.evidence_at[signer] - t)
        if signer in slashed and slashed[signer] >= t:
            slash.append(slashed[signer] - t)
    node_rounds = s.nodes * committed
    handled = sum(n.handled for n in engine.nodes)
    return {
        "scenario": s.name,
        "nodes": s.nodes,
        "rounds": s.rounds,
        "rounds_committed": committed,
        "rounds_failed": s.rounds - committed,
        "virtual_s": engine.now,
        "wall_s": engine.wall_s,
        "wall_per_node_round_ms": 1000 * engine.wall_s / node_rounds if node_rounds else math.nan,
        "cpu_s": engine.cpu_s,
        "cpu_per_node_round_ms": 1000 * engine.cpu_s / node_rounds if node_rounds else math.nan,
        "machine_events_handled": handled,
        "gossip_messages": engine.messages,
        "gossip_deliveries": engine.deliveries,
        **phase_medians,
        "round_latency_s": _stats(walls),
        "redraw_rounds": sum(1 for r in records if r["attempt"] > 0),
        "redraw_frequency": (sum(1 for r in records if r["attempt"] > 0) / committed)
        if committed
        else math.nan,
        "attempts_total": sum(r["attempt"] + 1 for r in records),
        "view_changes_in_committed_attempts": sum(r["view"] for r in records),
        "committee_size": _stats(sizes),
        "committee_size_histogram": {
            str(k): int(v) for k, v in zip(*np.unique(sizes, return_counts=True))
        }
        if sizes
        else {},
        "bytes_up_per_node_round_mean": float(np.mean([r["bytes_up"]["mean"] for r in records]))
        if records
        else math.nan,
        "bytes_down_per_node_round_mean": float(np.mean([r["bytes_down"]["mean"] for r in records]))
        if records
        else math.nan,
        "bytes_down_per_node_round_max": float(
            max((r["bytes_down"]["max"] for r in records), default=math.nan)
        ),
        "equivocations": len(engine.equivocations),
        "equivocators_slashed": len(slashed),
        "equivocation_detect_s_median": float(np.median(detect)) if detect else math.nan,
        "equivocation_slash_s_median": float(np.median(slash)) if slash else math.nan,
        "commits_submitted": engine.chain.stats.commits_submitted,
        "commits_reverted": engine.chain.stats.commits_reverted,
        "gossip_rejected": dict(engine.gossip_rejected),
        "violations_certified_conflicts": engine.safety.certified_conflicts,
        "violations_committed_mismatches": engine.safety.committed_mismatches,
        "violations_honest_double_signs": engine.safety.honest_double_signs,
        "violations": engine.safety.certified_conflicts
        + engine.safety.committed_mismatches
        + engine.safety.honest_double_signs,
    }


def write_run(
    run_dir: Path, engine: Engine, records: list[dict[str, Any]], summary: dict[str, Any]
) -> None:
    with (run_dir / "metrics.jsonl").open("w") as f:
        for r in records:
            f.write(json.dumps(r, sort_keys=True) + "\n")
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    plots = _plots(run_dir, records, summary)
    lines = [
        f"# Discrete-event simulation: {summary['scenario']}",
        "",
        *summary_table(summary),
        "",
        "## Round latency per phase (seconds over the committed rounds)",
        "",
        "| phase | p50 | p90 | p99 | max |",
        "|---|---|---|---|---|",
    ]
    for p in (*PHASES, "round"):
        values = [r["wall_s"] if p == "round" else r["phases_s"][p] for r in records] or [math.nan]
        q = np.percentile(values, [50, 90, 99, 100])
        lines.append(f"| {p} | " + " | ".join(_fmt(float(x)) for x in q) + " |")
    lines += [
        "",
        "## Rounds",
        "",
        "| round | wall s | "
        + " | ".join(f"{p} s" for p in PHASES)
        + " | attempt | view | committee sizes | up MB/node | down MB/node (mean) |",
        "|" + "---|" * (7 + len(PHASES)),
    ]
    for r in records:
        lines.append(
            f"| {r['round']} | {_fmt(r['wall_s'])} | "
            + " | ".join(_fmt(r["phases_s"][p]) for p in PHASES)
            + f" | {r['attempt']} | {r['view']} | {r['committee_sizes']} | "
            f"{_fmt(r['bytes_up']['mean'] / 1e6)} | {_fmt(r['bytes_down']['mean'] / 1e6)} |"
        )
    lines += ["", "## Plots", "", *[f"![{p.stem}]({p.name})" for p in plots], ""]
    lines += ["## Scenario", "", "```json", json.dumps(engine.s.to_dict(), indent=2), "```", ""]
    (run_dir / "report.md").write_text("\n".join(lines))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def _plots(run_dir: Path, records: list[dict[str, Any]], summary: dict[str, Any]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out: list[Path] = []
    if not records:
        return out
    xs = [r["round"] for r in records]
    fig, ax = plt.subplots(figsize=(8, 4))
    bottom = np.zeros(len(records))
    for p in PHASES:
        values = np.array([r["phases_s"][p] for r in records])
        ax.bar(xs, values, bottom=bottom, label=p)
        bottom += values
    ax.set(xlabel="round", ylabel="seconds (virtual)", title="Round latency by phase")
    ax.legend()
    out.append(_save(fig, run_dir / "phases.png"))

    fig, ax = plt.subplots(figsize=(8, 4))
    ax.boxplot([[r["phases_s"][p] for r in records] for p in PHASES], tick_labels=list(PHASES))
    ax.set(ylabel="seconds (virtual)", title="Phase latency over rounds (box: p25-p75)")
    out.append(_save(fig, run_dir / "phase_percentiles.png"))

    fig, ax = plt.subplots(figsize=(8, 4))
    for key, label in (("bytes_up", "up"), ("bytes_down", "down")):
        ax.plot(xs, [r[key]["mean"] / 1e6 for r in records], "o-", label=f"{label} mean")
        ax.plot(xs, [r[key]["max"] / 1e6 for r in records], "x--", label=f"{label} max")
    ax.set(xlabel="round", ylabel="MB per node", title="Bytes per node per round")
    ax.legend()
    out.append(_save(fig, run_dir / "bytes.png"))

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    hist = summary["committee_size_histogram"]
    a1.bar([int(k) for k in hist], list(hist.values()))
    a1.set(xlabel="committee size drawn", ylabel="draws", title="Committee size distribution")
    a2.bar(xs, [r["attempt"] for r in records], label="re-draws (attempt)")
    a2.bar(
        xs,
        [r["view"] for r in records],
        bottom=[r["attempt"] for r in records],
        label="view changes",
    )
    a2.set(xlabel="round", title="Re-draws and view changes per committed round")
    a2.legend()
    out.append(_save(fig, run_dir / "committees.png"))
    return out


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path
