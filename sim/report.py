"""A simulation run's folder: metrics.jsonl, summary.json, report.md and PNG plots."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from p2pfl.core.cid import CID
from p2pfl.core.tensors import decode_tensors

if TYPE_CHECKING:
    from sim.scenario import Scenario

PHASES = ("train", "disseminate", "aggregate", "agree", "commit")


def new_run_dir(scenario_name: str, root: str | Path = "runs") -> Path:
    """`runs/<scenario>-<timestamp>/`, created; a numeric suffix avoids collisions."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(root) / f"{scenario_name}-{stamp}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = Path(f"{base}-{n}")
    path.mkdir(parents=True)
    return path


class RunWriter:
    """Appends per-round metrics as JSON lines (flushed, so a killed run keeps them)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self._metrics = (run_dir / "metrics.jsonl").open("a")

    def round(self, record: dict[str, Any]) -> None:
        self._metrics.write(json.dumps(record, default=_jsonable, sort_keys=True) + "\n")
        self._metrics.flush()

    def close(self) -> None:
        self._metrics.close()


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def write_report(
    run_dir: Path,
    scenario: dict[str, Any],
    rounds: Sequence[dict[str, Any]],
    reference: Sequence[dict[str, Any]],
    summary: dict[str, Any],
) -> None:
    """summary.json, report.md and the plots, from the rounds already recorded."""
    (run_dir / "summary.json").write_text(
        json.dumps(summary, indent=2, sort_keys=True, default=_jsonable) + "\n"
    )
    plots = _plots(run_dir, rounds, reference)
    lines = [
        f"# Simulation report: {scenario.get('name', 'scenario')}",
        "",
        *summary_table(summary),
        "",
        "## Rounds",
        "",
        "| round | accuracy | reference | loss | committee | included | rejected | wall s | "
        + " | ".join(f"{p} s" for p in PHASES)
        + " | gas | tx |",
        "|" + "---|" * (9 + len(PHASES)),
    ]
    ref_by_round = {r["round"]: r for r in reference}
    for r in rounds:
        ref = ref_by_round.get(r["round"], {})
        phases = r.get("phases_s", {})
        lines.append(
            f"| {r['round']} | {_fmt(r.get('accuracy'))} | {_fmt(ref.get('accuracy'))} | "
            f"{_fmt(r.get('loss'))} | "
            f"{len(r.get('committee', []))} | {len(r.get('included', []))} | "
            f"{len(r.get('rejected', []))} | "
            f"{_fmt(r.get('wall_s'))} | "
            + " | ".join(_fmt(phases.get(p)) for p in PHASES)
            + f" | {_fmt(r.get('gas'))} | {str(r.get('commit_tx', ''))[:18]} |"
        )
    lines += ["", "## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots]
    lines += [
        "",
        "## Scenario",
        "",
        "```json",
        json.dumps(scenario, indent=2, default=_jsonable),
        "```",
        "",
    ]
    (run_dir / "report.md").write_text("\n".join(lines))


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _plots(
    run_dir: Path, rounds: Sequence[dict[str, Any]], reference: Sequence[dict[str, Any]]
) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = []
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(10, 4))
    for series, label, style in ((rounds, "p2pfl", "o-"), (reference, "centralised FedAvg", "s--")):
        xs = [r["round"] for r in series if r.get("accuracy") is not None]
        ax_acc.plot(
            xs, [r["accuracy"] for r in series if r.get("accuracy") is not None], style, label=label
        )
        xs = [r["round"] for r in series if r.get("loss") is not None]
        ax_loss.plot(
            xs, [r["loss"] for r in series if r.get("loss") is not None], style, label=label
        )
    ax_acc.set(xlabel="round", ylabel="test accuracy", title="Accuracy vs round")
    ax_loss.set(xlabel="round", ylabel="test loss", title="Loss vs round")
    for ax in (ax_acc, ax_loss):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path = run_dir / "accuracy_loss.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    out.append(path)

    fig, ax = plt.subplots(figsize=(8, 4))
    bottom = [0.0] * len(rounds)
    xs = [r["round"] for r in rounds]
    for phase in PHASES:
        values = [float(r.get("phases_s", {}).get(phase) or 0.0) for r in rounds]
        ax.bar(xs, values, bottom=bottom, label=phase)
        bottom = [b + v for b, v in zip(bottom, values)]
    ax.set(xlabel="round", ylabel="seconds", title="Round time by phase")
    ax.legend()
    fig.tight_layout()
    path = run_dir / "phases.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    out.append(path)
    return out


def round_records(
    scenario: Scenario,
    logs: list[dict[int, Any]],
    commits: dict[int, Any],
    stores: list[Any],
    test: Any,
) -> list[dict[str, Any]]:
    """Per-round metrics from every node's RoundLogs and the chain's commits (the timeline
    rules of sim.run: earliest node to reach each step, phases monotone)."""
    from p2pfl.train.trainer import evaluate
    from sim.data import input_norm

    norm = input_norm(scenario)
    records = []
    prev_commit_t: float | None = None
    for r in range(1, scenario.rounds + 1):
        entries = [log[r] for log in logs if r in log]
        if not entries or r not in commits:
            break
        result = next((e.result for e in entries if e.result), "")
        weights = model_from_stores(stores, result)
        loss, acc = (
            (math.nan, math.nan)
            if weights is None
            else evaluate(
                scenario.model.name,
                weights,
                test,
                model_kwargs=scenario.model.kwargs,
                num_threads=1,
                input_norm=norm,
            )
        )
        t0 = prev_commit_t if prev_commit_t is not None else min(e.started for e in entries)
        members = [e for e in entries if e.member]
        published = sorted(e.published_at for e in entries if e.published_at)
        t_trained = published[max(0, math.ceil(0.8 * len(published)) - 1)] if published else t0
        t_closed = min(
            (e.collect_closed_at for e in members if e.collect_closed_at), default=t_trained
        )
        t_computed = min((e.computed_at for e in members if e.computed_at), default=t_closed)
        t_certified = min((e.certified_at for e in entries if e.certified_at), default=t_computed)
        t_committed = min((e.committed_at for e in entries if e.committed_at), default=t_certified)
        marks = [t0, min(t_trained, t_closed), t_closed, t_computed, t_certified, t_committed]
        marks = [max(marks[: i + 1]) for i in range(len(marks))]
        phases = {p: marks[i + 1] - marks[i] for i, p in enumerate(PHASES)}
        setup = float(np.median([e.started - t0 for e in entries]))
        to_publish = float(
            np.median([e.published_at - e.started for e in entries if e.published_at] or [0.0])
        )
        train_only = float(np.median([e.train_s for e in entries]))
        wall = t_committed - t0
        prev_commit_t = t_committed
        ev = commits[r]
        records.append(
            {
                "round": r,
                "accuracy": acc,
                "loss": loss,
                "committee": ["0x" + a.hex() for a in entries[0].committee],
                "included": [
                    "0x" + a.hex() for a in next((e.included for e in members if e.included), ())
                ],
                "rejected": [
                    ["0x" + a.hex(), why]
                    for a, why in next((e.rejected for e in members if e.included), ())
                ],
                "result": result,
                "wall_s": wall,
                "phases_s": phases,
                "commit_tx": "0x" + ev.tx_hash.hex(),
                "commit_block": ev.block_number,
                "signers": ev.signers,
                "gas": max((e.commit_gas for e in entries), default=0),
                "setup_s": setup,
                "start_to_publish_s": to_publish,
                "train_compute_s": train_only,
                # Per node, payload bytes of this round (from the cumulative counters at each
                # commit).
                "bytes_sent": [_round_delta(log, r, "bytes_sent") for log in logs],
                "bytes_received": [_round_delta(log, r, "bytes_received") for log in logs],
                "nodes_reporting": len(entries),
                # DP-SGD: the most privacy any node has spent so far (None: no DP).
                "epsilon": max(
                    (e.epsilon for e in entries if not math.isnan(e.epsilon)), default=None
                ),
            }
        )
    return records


def summary_table(summary: dict[str, Any]) -> list[str]:
    """A report's table of the summary's scalar figures (markdown lines)."""
    return [
        "| figure | value |",
        "|---|---|",
        *[
            f"| {k} | {_fmt(v)} |"
            for k, v in sorted(summary.items())
            if not isinstance(v, (dict, list))
        ],
    ]


def round_line(record: dict[str, Any]) -> str:
    """One committed round, as the simulators print it."""
    line = (
        f"round {record['round']}: accuracy {record['accuracy']:.4f} loss {record['loss']:.4f} "
        f"wall {record['wall_s']:.1f} s committee {len(record['committee'])} "
        f"included {len(record['included'])} tx {record['commit_tx'][:12]}"
    )
    if record.get("epsilon") is not None:
        line += f" epsilon {record['epsilon']:.2f}"
    return line


def _round_delta(log: dict[int, Any], round_: int, field: str) -> int | None:
    """A cumulative counter's growth over `round_` for one node (None: no record)."""
    if round_ not in log:
        return None
    before = max((r for r in log if r < round_), default=None)
    return getattr(log[round_], field) - (getattr(log[before], field) if before is not None else 0)


def model_from_stores(stores: list[Any], cid_text: str) -> dict[str, np.ndarray] | None:
    if not cid_text:
        return None
    cid = CID.parse(cid_text)
    for store in stores:
        if store.has_blob(cid):
            return {k: np.array(v) for k, v in decode_tensors(store.read_blob(cid)).items()}
    return None
