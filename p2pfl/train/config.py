"""Local training hyper-parameters (`TrainConfig`), apart from the trainer so that
manifests and scenario files can be read without importing torch.

Normative text: protocol/spec/training.md.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from p2pfl.errors import ConfigError

__all__ = ["OPTIMIZERS", "TrainConfig"]

OPTIMIZERS = ("sgd", "adam")


@dataclass(frozen=True)
class TrainConfig:
    """Local training hyper-parameters, as named in a task manifest's `train` table.

    Defaults reach ~85% test accuracy on Fashion-MNIST with the small CNN after about
    three FedAvg rounds of 10 IID clients x 1 epoch (measured; see the training spec).
    """

    epochs: int = 1
    batch_size: int = 32
    lr: float = 0.05
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        def need(ok: bool, what: str) -> None:
            if not ok:
                raise ConfigError(f"train config: {what}")

        for name in ("epochs", "batch_size", "seed"):
            value = getattr(self, name)
            is_int = isinstance(value, int) and not isinstance(value, bool)
            need(is_int, f"{name} must be an integer, got {value!r}")
        for name in ("lr", "momentum", "weight_decay"):
            value = getattr(self, name)
            is_num = isinstance(value, (int, float)) and not isinstance(value, bool)
            need(is_num and math.isfinite(value), f"{name} must be a finite number, got {value!r}")
        need(self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}")
        need(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        need(self.lr > 0, f"lr must be > 0, got {self.lr}")
        need(
            self.optimizer in OPTIMIZERS,
            f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}",
        )
        need(0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}")
        need(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        need(0 <= self.seed < 2**64, f"seed must be in [0, 2^64), got {self.seed}")

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> TrainConfig:
        """Build from a manifest table; unknown keys are an error, missing keys take defaults."""
        if not isinstance(raw, Mapping):
            raise ConfigError(f"train config must be a table, got {type(raw).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(
                f"train config: unknown keys {unknown}; known keys are {sorted(known)}"
            )
        return cls(**dict(raw))

    def to_dict(self) -> dict[str, Any]:
        """The manifest table (every key, so a manifest pins its defaults)."""
        return asdict(self)
