"""Accuracy against privacy: `python -m sim.bench dp`.

Runs the quickstart (`sim/scenarios/quickstart.toml`: 10 nodes, Fashion-MNIST IID, small
CNN, 10 rounds) in-process without differential privacy and with DP-SGD at target budgets
ε = 1, 4 and 8 (δ = 1e-5, per-sample clipping norm 1.0, the noise that reaches the target
after the 10 rounds: `train.dp_target_epsilon` / `train.dp_rounds`), and prints for each
`dp-eps<E>-accuracy` (final test accuracy), `dp-eps<E>-epsilon` (the most any node spent,
from the run's metrics) and `dp-eps<E>-reference-accuracy` (centralised FedAvg with the same
DP training), then writes the curve to `docs/privacy-accuracy.png`.

DP_BENCH_ROUNDS=n shortens every run (the curve then is not the quickstart's);
DP_BENCH_EPSILONS="1,4,8" picks the budgets.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from sim.bench import ROOT_DIR, BenchError, figure

SCENARIO = ROOT_DIR / "sim" / "scenarios" / "quickstart.toml"
PLOT = ROOT_DIR / "docs" / "privacy-accuracy.png"
EPSILONS = (1.0, 4.0, 8.0)
CLIP = 1.0


def _run(overrides: dict[str, Any], runs: Path) -> dict[str, Any]:
    from sim.run import run_scenario
    from sim.scenario import load_scenario

    run_dir = run_scenario(load_scenario(str(SCENARIO), overrides), runs, quiet=True)
    summary = json.loads((run_dir / "summary.json").read_text())
    rounds = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    if summary["rounds_committed"] < summary["rounds_planned"]:
        raise BenchError(f"{overrides}: {summary['rounds_committed']} rounds committed")
    return {
        "accuracy": summary["final_accuracy"],
        "reference": summary["reference_accuracy"],
        "epsilon": max((r["epsilon"] or 0.0 for r in rounds), default=0.0),
    }


def run(argv: list[str] | None = None) -> None:
    rounds = int(os.environ.get("DP_BENCH_ROUNDS", "0"))
    epsilons = (
        tuple(float(e) for e in os.environ.get("DP_BENCH_EPSILONS", "").split(",") if e.strip())
        or EPSILONS
    )
    base: dict[str, Any] = {"rounds": rounds} if rounds else {}
    planned = rounds or 10
    results: dict[float, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="p2pfl-dp-bench-") as tmp:
        plain = _run(base, Path(tmp))
        figure("dp-none-accuracy", plain["accuracy"], "accuracy")
        figure("dp-none-reference-accuracy", plain["reference"], "accuracy")
        for eps in epsilons:
            out = _run(
                {
                    **base,
                    "train.dp_max_grad_norm": CLIP,
                    "train.dp_target_epsilon": eps,
                    "train.dp_rounds": planned,
                },
                Path(tmp),
            )
            results[eps] = out
            figure(f"dp-eps{eps:g}-accuracy", out["accuracy"], "accuracy")
            figure(f"dp-eps{eps:g}-epsilon", out["epsilon"], "epsilon")
            figure(f"dp-eps{eps:g}-reference-accuracy", out["reference"], "accuracy")
    _plot(plain, results, planned)


def _plot(plain: dict[str, Any], results: dict[float, dict[str, Any]], rounds: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    eps = sorted(results)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(
        [results[e]["epsilon"] for e in eps],
        [results[e]["accuracy"] for e in eps],
        "o-",
        label="p2pfl, DP-SGD (10 nodes)",
    )
    ax.plot(
        [results[e]["epsilon"] for e in eps],
        [results[e]["reference"] for e in eps],
        "s--",
        label="centralised FedAvg, same DP-SGD",
    )
    ax.axhline(plain["accuracy"], color="grey", linestyle=":", label="p2pfl, no DP")
    ax.set_xlabel("epsilon spent (delta = 1e-5)")
    ax.set_ylabel(f"test accuracy after {rounds} rounds")
    ax.set_title("Quickstart (Fashion-MNIST, IID): accuracy against privacy")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    PLOT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(PLOT, dpi=120)
    print(f"plot: {PLOT}", file=sys.stderr)


if __name__ == "__main__":
    run(sys.argv[1:])
