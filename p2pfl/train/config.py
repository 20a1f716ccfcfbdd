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

__all__ = ["DATASET_INPUT_NORMS", "OPTIMIZERS", "InputNorm", "TrainConfig"]

OPTIMIZERS = ("sgd", "adam")


@dataclass(frozen=True)
class InputNorm:
    """Input standardisation: x -> (x - mean[c]) / std[c] per channel c, on x in [0, 1].

    A task constant, not something a node computes: each node holds only its partition,
    so statistics it computed itself would differ from its peers' and the reference's.
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.mean or len(self.mean) != len(self.std):
            raise ConfigError(
                f"input standardisation needs one mean and one std per channel, got "
                f"{list(self.mean)} and {list(self.std)}"
            )
        for value in (*self.mean, *self.std):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"input mean/std must be numbers, got {value!r}")
            if not math.isfinite(value):
                raise ConfigError(f"input mean/std must be finite, got {value!r}")
        if min(self.std) <= 0:
            raise ConfigError(f"input std must be > 0, got {list(self.std)}")


# Per-dataset statistics of the *training* split (pixels scaled to [0, 1]), rounded to 4
# places so manifests stay readable and stable across numpy versions. Fashion-MNIST's are
# the well-known constants (0.2860, 0.3530): exactly what its 60,000 training images give
# (0.28604, 0.35302, measured); digits' are sklearn's 1797 images (0.30526, 0.37605).
DATASET_INPUT_NORMS: dict[str, InputNorm] = {
    "fashion-mnist": InputNorm((0.2860,), (0.3530,)),
    "digits": InputNorm((0.3053,), (0.3760,)),
}


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
    # Input standardisation (`InputNorm`), one value per channel; empty = none, which is
    # what manifests written before these keys existed mean.
    input_mean: tuple[float, ...] = ()
    input_std: tuple[float, ...] = ()
    # Differential privacy (DP-SGD, p2pfl.train.privacy): on when dp_max_grad_norm > 0.
    # Noise is set directly (dp_noise_multiplier) or derived from a target
    # (dp_target_epsilon over dp_rounds rounds, at dp_delta); a node stops contributing
    # once its spent epsilon would pass dp_max_epsilon (default: the target). Off, every
    # dp_* key keeps its default and manifests keep the bytes they had before these keys.
    dp_max_grad_norm: float = 0.0
    dp_noise_multiplier: float = 0.0
    dp_target_epsilon: float = 0.0
    dp_rounds: int = 0
    dp_delta: float = 1e-5
    dp_max_epsilon: float = 0.0
    # Each delta rounded to float16 values (kept as float32 tensors, so the canonical bytes,
    # CIDs and aggregation are unchanged), what the rounding left over added to the next
    # round's delta (error feedback); a member is then sent the delta in half the bytes
    # (`p2pfl.core.tensors.pack_float16`). Off, manifests keep the bytes they had.
    delta_float16: bool = False

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
        need(
            isinstance(self.delta_float16, bool),
            f"delta_float16 must be true or false, got {self.delta_float16!r}",
        )
        for name in ("input_mean", "input_std"):
            value = getattr(self, name)
            need(isinstance(value, (list, tuple)), f"{name} must be a list, got {value!r}")
            object.__setattr__(self, name, tuple(value))  # JSON lists -> hashable tuples
        need(
            bool(self.input_mean) == bool(self.input_std),
            "input_mean and input_std go together (both or neither)",
        )
        if self.input_mean:
            InputNorm(self.input_mean, self.input_std)  # validates the pair
        for name in (
            "dp_max_grad_norm",
            "dp_noise_multiplier",
            "dp_target_epsilon",
            "dp_delta",
            "dp_max_epsilon",
        ):
            value = getattr(self, name)
            is_num = isinstance(value, (int, float)) and not isinstance(value, bool)
            need(is_num and math.isfinite(value) and value >= 0, f"{name} must be >= 0")
        need(isinstance(self.dp_rounds, int) and self.dp_rounds >= 0, "dp_rounds must be >= 0")
        if not self.dp:
            need(
                (self.dp_noise_multiplier, self.dp_target_epsilon, self.dp_rounds) == (0.0, 0.0, 0)
                and self.dp_max_epsilon == 0,
                "dp_* keys need dp_max_grad_norm > 0 (differential privacy is off)",
            )
            return
        need(self.optimizer == "sgd", "differential privacy (DP-SGD) needs optimizer = sgd")
        need(0 < self.dp_delta < 1, f"dp_delta must be in (0, 1), got {self.dp_delta}")
        by_noise = self.dp_noise_multiplier > 0
        by_target = self.dp_target_epsilon > 0 or self.dp_rounds > 0
        need(
            by_noise != by_target,
            "differential privacy: set dp_noise_multiplier, or dp_target_epsilon with"
            " dp_rounds, not both",
        )
        if by_target:
            need(
                self.dp_target_epsilon > 0 and self.dp_rounds > 0,
                "dp_target_epsilon and dp_rounds go together",
            )

    @property
    def dp(self) -> bool:
        """Whether training is differentially private (DP-SGD)."""
        return self.dp_max_grad_norm > 0

    @property
    def dp_budget(self) -> float:
        """The epsilon after which a node stops contributing (inf: no budget)."""
        if self.dp_max_epsilon > 0:
            return self.dp_max_epsilon
        return self.dp_target_epsilon if self.dp_target_epsilon > 0 else math.inf

    @property
    def input_norm(self) -> InputNorm | None:
        """The standardisation every trainer and evaluator of the task applies, if any."""
        if not self.input_mean:
            return None
        return InputNorm(self.input_mean, self.input_std)

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
        """The manifest table: every key, so a manifest pins its defaults, except an absent
        standardisation and absent differential privacy, so that manifests keep the bytes
        (and CID) they had before those keys."""
        out = asdict(self)
        if not self.input_mean:
            del out["input_mean"], out["input_std"]
        else:
            out["input_mean"], out["input_std"] = list(self.input_mean), list(self.input_std)
        if not self.dp:
            for name in [k for k in out if k.startswith("dp_")]:
                del out[name]
        if not self.delta_float16:
            del out["delta_float16"]
        return out
