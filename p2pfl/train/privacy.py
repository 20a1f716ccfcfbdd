"""Differential privacy of a node's updates: DP-SGD steps (Opacus) and the node's ledger.

DP-SGD (Abadi et al. 2016) as Opacus implements it: per-sample gradients
(`opacus.GradSampleModule`), each clipped to `dp_max_grad_norm`, summed, Gaussian noise of
standard deviation `noise_multiplier x dp_max_grad_norm` added (`opacus.optimizers.DPOptimizer`,
seeded), batches drawn by Poisson sampling at rate q = batch_size / n, so that the RDP
accountant's subsampled-Gaussian bound applies. `p2pfl.train.trainer.train_local` runs it
when the task's `train` table turns it on (`TrainConfig.dp`).

What a round spends is `DPSteps` (noise multiplier, sample rate, steps); `PrivacyLedger`
adds up the steps of every update the node *published* (one trained but withheld reveals
nothing) with Opacus's RDP accountant, in a JSON file in the node's data dir that survives
restarts (a round is recorded once), and answers ε at the task's δ. A node whose next update
would take ε past the budget (`TrainConfig.dp_budget`) withholds it and stops training.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from p2pfl.errors import ConfigError
from p2pfl.train.config import TrainConfig

LEDGER_FILE = "privacy.json"
# Rényi orders the accountant tries: Opacus's defaults (1.1 .. 63) and on to 255, so that a
# strongly noised run (small epsilon) gets its tight bound rather than the edge of the grid.
RDP_ORDERS = [1 + x / 10.0 for x in range(1, 100)] + [float(a) for a in range(12, 256)]


@dataclass(frozen=True)
class DPSteps:
    """What one round of DP-SGD training spent."""

    noise_multiplier: float
    sample_rate: float
    steps: int


def steps_per_round(cfg: TrainConfig, n_samples: int) -> int:
    """Optimizer steps of one round: epochs x ceil(n / batch) Poisson-sampled batches."""
    return cfg.epochs * math.ceil(n_samples / cfg.batch_size)


def sample_rate(cfg: TrainConfig, n_samples: int) -> float:
    return min(1.0, cfg.batch_size / n_samples)


def noise_multiplier(cfg: TrainConfig, n_samples: int) -> float:
    """The task's noise multiplier, or the one that reaches `dp_target_epsilon` at
    `dp_delta` after `dp_rounds` rounds on `n_samples` (Opacus's RDP search)."""
    if not cfg.dp:
        raise ConfigError("differential privacy is off in this train config")
    if cfg.dp_noise_multiplier > 0:
        return cfg.dp_noise_multiplier
    from opacus.accountants.utils import get_noise_multiplier

    return float(
        get_noise_multiplier(
            target_epsilon=cfg.dp_target_epsilon,
            target_delta=cfg.dp_delta,
            sample_rate=sample_rate(cfg, n_samples),
            steps=steps_per_round(cfg, n_samples) * cfg.dp_rounds,
            accountant="rdp",
            epsilon_tolerance=0.01,
        )
    )


def plan(cfg: TrainConfig, n_samples: int) -> DPSteps:
    """What one round on `n_samples` will spend."""
    return DPSteps(
        noise_multiplier(cfg, n_samples),
        sample_rate(cfg, n_samples),
        steps_per_round(cfg, n_samples),
    )


def epsilon(spent: list[DPSteps], delta: float) -> float:
    """ε at `delta` after all of `spent` (RDP accountant; 0 for nothing spent)."""
    if not spent:
        return 0.0
    from opacus.accountants import RDPAccountant

    accountant = RDPAccountant()
    accountant.history = [(s.noise_multiplier, s.sample_rate, s.steps) for s in spent]
    return float(accountant.get_epsilon(delta, alphas=RDP_ORDERS))


def ledger_for(data_dir: Path, train: dict[str, Any]) -> PrivacyLedger | None:
    """The ledger of a node whose task's `train` table turns DP on (None: it does not);
    kept in `data_dir/privacy.json`."""
    cfg = TrainConfig.from_dict(train)
    if not cfg.dp:
        return None
    return PrivacyLedger(Path(data_dir) / LEDGER_FILE, cfg.dp_delta, cfg.dp_budget)


class PrivacyLedger:
    """The rounds whose updates this node published under DP, on disk (`path`, JSON)."""

    def __init__(self, path: Path, delta: float, budget: float) -> None:
        self.path = Path(path)
        self.delta = delta
        self.budget = budget
        self.rounds: dict[int, DPSteps] = {}
        self.exhausted = False
        self._epsilon = 0.0
        if self.path.exists():
            try:
                doc = json.loads(self.path.read_text())
                self.rounds = {
                    int(r): DPSteps(float(s[0]), float(s[1]), int(s[2]))
                    for r, s in doc["rounds"].items()
                }
                self.exhausted = bool(doc.get("exhausted", False))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise ConfigError(f"privacy ledger {self.path} is unreadable: {exc}") from None
            self._epsilon = epsilon(list(self.rounds.values()), self.delta)

    def epsilon(self) -> float:
        """ε spent so far (published updates; computed when they change, cheap to read)."""
        return self._epsilon

    def epsilon_with(self, round_: int, steps: DPSteps) -> float:
        """ε if round `round_`'s update (spending `steps`) were published too."""
        spent = {**self.rounds, round_: steps}
        return epsilon(list(spent.values()), self.delta)

    def spend(self, round_: int, steps: DPSteps) -> float:
        """Record a published update (once per round: a restart may publish it again);
        returns ε spent."""
        self.rounds[round_] = steps
        self._epsilon = epsilon(list(self.rounds.values()), self.delta)
        self._save()
        return self._epsilon

    def close(self) -> None:
        """The budget is spent: no more updates (recorded, so a restart stays stopped)."""
        self.exhausted = True
        self._save()

    def _save(self) -> None:
        doc = {
            "delta": self.delta,
            "budget": None if math.isinf(self.budget) else self.budget,
            "exhausted": self.exhausted,
            "epsilon": self.epsilon(),
            "rounds": {
                str(r): [s.noise_multiplier, s.sample_rate, s.steps]
                for r, s in sorted(self.rounds.items())
            },
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w") as fh:
            json.dump(doc, fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
