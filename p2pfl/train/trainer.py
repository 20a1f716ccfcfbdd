"""The local trainer: from the committed base weights and private data to a delta.

A node calls `train_local` once per round; only the `TrainResult` (delta, sample count,
loss, time) leaves this module — the user's data never does. Everything is seeded:
the same (base, data, config, seed, thread count) gives the same delta bit for bit.
Normative text: protocol/spec/training.md.
"""

from __future__ import annotations

import hashlib
import mmap
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from p2pfl.errors import ConfigError
from p2pfl.train.config import InputNorm, TrainConfig
from p2pfl.train.data import Dataset
from p2pfl.train.models import build_model, load_numpy, model_to_numpy, seeded_torch

# Domain tag of the per-client seed derivation; bump the version if the formula changes.
CLIENT_SEED_TAG = b"p2pfl/train/client-seed/v1"
# Seeds are kept below 2^63 so they fit torch.manual_seed and any signed 64-bit integer.
SEED_BITS = 63
# Evaluation batch: large enough to amortise Python overhead, small enough to stay
# well under 100 MiB of activations for the built-in models.
EVAL_BATCH_SIZE = 1000


@dataclass(frozen=True)
class TrainResult:
    """What one local training run hands to the network layer."""

    delta: dict[str, np.ndarray]  # trained - base, float32, sorted names
    n_samples: int
    train_loss: float  # sample-weighted mean loss over the last epoch
    seconds: float  # wall time of the training loop
    dp: Any = None  # p2pfl.train.privacy.DPSteps when trained with DP-SGD, else None


def client_seed(task_seed: int, round: int, client: int | bytes) -> int:
    """The seed a client uses to train in `round`: shuffling order and torch RNG.

    seed = first 8 bytes of sha256(TAG || u64be(task_seed) || u64be(round) || id), big
    endian, shifted right by one (63 bits); id = u64be(client) for a client index (the
    simulation) or the raw bytes of an identifier such as a 20-byte address.
    The networked nodes and `reference_fedavg` both call this, so their curves compare.
    """
    if isinstance(client, (bytes, bytearray)):
        ident = bytes(client)
    else:
        if client < 0 or client >= 2**64:
            raise ConfigError(f"client index must be in [0, 2^64), got {client}")
        ident = client.to_bytes(8, "big")
    if not (0 <= task_seed < 2**64 and 0 <= round < 2**64):
        raise ConfigError(f"task_seed and round must be in [0, 2^64), got {task_seed}, {round}")
    digest = hashlib.sha256(
        CLIENT_SEED_TAG + task_seed.to_bytes(8, "big") + round.to_bytes(8, "big") + ident
    ).digest()
    return int.from_bytes(digest[:8], "big") >> (64 - SEED_BITS)


@contextmanager
def torch_threads(num_threads: int | None) -> Iterator[None]:
    """Run a block with `torch.set_num_threads(num_threads)`, restoring the previous value.

    None leaves torch's setting alone. Deltas are bit-identical only for equal thread
    counts (reductions split differently), so the simulation pins it.
    """
    if num_threads is None:
        yield
        return
    if num_threads < 1:
        raise ConfigError(f"num_threads must be >= 1, got {num_threads}")
    previous = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _resolve_model(model: str | nn.Module, model_kwargs: Mapping[str, Any] | None) -> nn.Module:
    if isinstance(model, nn.Module):
        if model_kwargs:
            raise ConfigError("model_kwargs apply only when the model is given by name")
        return model
    return build_model(model, **dict(model_kwargs or {}))


def standardise(x: torch.Tensor, norm: InputNorm | None, *, in_place: bool = False) -> torch.Tensor:
    """(x - mean[c]) / std[c] over the channel axis of [N, C, H, W]; `x` itself if no norm.
    `in_place` overwrites `x` (same values: one copy of a partition less in memory).

    The trainer, the evaluator and the reference all go through here, so a task's nodes
    and its reference see the same inputs bit for bit.
    """
    if norm is None:
        return x
    channels = x.shape[1]
    if len(norm.mean) != channels:
        raise ConfigError(
            f"input standardisation has {len(norm.mean)} channel(s), the data has {channels}"
        )
    mean = torch.tensor(norm.mean, dtype=x.dtype).view(1, channels, 1, 1)
    std = torch.tensor(norm.std, dtype=x.dtype).view(1, channels, 1, 1)
    return x.sub_(mean).div_(std) if in_place else (x - mean) / std


def data_tensors(data: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """`data`'s inputs and labels as tensors sharing its memory: indexing them copies one
    batch, never the whole partition, which may be a read-only memory map (issue #13's
    node footprint). Only ever read."""
    return _tensor_of(np.asarray(data.x)), _tensor_of(np.asarray(data.y))


def page_releaser(x: np.ndarray) -> Callable[[], None]:
    """For a memory-mapped `x` (a node process's partition file, `np.load(mmap_mode="r")`):
    a call that unmaps the pages read so far (MADV_DONTNEED on a read-only shared file
    mapping: the data stays in the kernel's page cache, a later read maps it back with a
    minor fault). Called after each batch, training holds one batch of the partition in
    its memory, not all of it (issue #13: ten nodes' partitions were 170 MiB of PSS). For
    any other array, a no-op."""
    mapping = getattr(x, "base", None)  # np.memmap's buffer is its mmap.mmap
    if isinstance(mapping, mmap.mmap) and hasattr(mmap, "MADV_DONTNEED"):
        return lambda: mapping.madvise(mmap.MADV_DONTNEED)
    return lambda: None


def _tensor_of(a: np.ndarray) -> torch.Tensor:
    """`a` as the tensor `torch.tensor(a)` would copy it to, strides included (those of
    size-1 axes too, which numpy sets freely and convolutions' rounding depends on): over
    `a`'s own memory when `a` is C-contiguous (the copy would keep its strides), else a
    copy."""
    if not a.flags.c_contiguous:
        return torch.tensor(a)
    with warnings.catch_warnings():
        # Read-only arrays (the dataset cache, a memory map): the tensor is only read.
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(a)


class Optimizer(Protocol):
    """What the training loop needs of an optimizer (torch.optim's or `SGD` below)."""

    def zero_grad(self, set_to_none: bool = True) -> None: ...

    def step(self) -> Any: ...


class SGD:
    """torch.optim.SGD's CPU step (its single-tensor path; no dampening, no Nesterov), bit
    for bit, without torch.optim: an optimizer's first call there imports torch._dynamo and
    sympy (~800 modules, ~70 MiB per process, measured), more than the rest of a node's
    training needs (issue #13). tests/train checks the equality with torch's own.
    """

    def __init__(
        self, params: Iterable[torch.Tensor], lr: float, momentum: float, weight_decay: float
    ) -> None:
        self.params = list(params)
        self.lr, self.momentum, self.weight_decay = float(lr), float(momentum), weight_decay
        self.buffers: list[torch.Tensor | None] = [None] * len(self.params)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for param in self.params:
            param.grad = None

    def step(self) -> None:
        with torch.no_grad():
            for i, param in enumerate(self.params):
                if param.grad is None:
                    continue
                grad = param.grad
                if self.weight_decay != 0:
                    grad = grad.add(param, alpha=self.weight_decay)
                if self.momentum != 0:
                    buf = self.buffers[i]
                    if buf is None:
                        buf = self.buffers[i] = grad.detach().clone()
                    else:
                        buf.mul_(self.momentum).add_(grad, alpha=1)
                    grad = buf
                param.add_(grad, alpha=-self.lr)


def _make_optimizer(model: nn.Module, cfg: TrainConfig) -> Optimizer:
    if cfg.optimizer == "sgd":
        return SGD(model.parameters(), cfg.lr, cfg.momentum, cfg.weight_decay)
    # Adam's first-moment decay is its own default (0.9); `momentum` is an SGD knob.
    return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def train_local(
    model: str | nn.Module,
    base: Mapping[str, np.ndarray],
    data: Dataset,
    cfg: TrainConfig,
    seed: int | None = None,
    *,
    model_kwargs: Mapping[str, Any] | None = None,
    num_threads: int | None = None,
    on_epoch: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """Train from `base` on `data` for `cfg.epochs` and return the float32 delta.

    `model` is a manifest name (built with `model_kwargs`) or a module, which is loaded
    with `base` and trained in place. `seed` (default `cfg.seed`; normally
    `client_seed(cfg.seed, round, client)`) fixes the shuffling — a fresh permutation per
    epoch from `np.random.default_rng(seed)` — and torch's RNG for the duration (dropout).
    The optimizer starts fresh every call. The last partial batch is kept. Inputs are
    standardised by `cfg.input_norm` when the task sets one. `on_epoch(epoch, loss)` is
    called after each epoch (1-based; its sample-weighted mean loss), e.g. for progress.
    """
    if len(data) == 0:
        raise ConfigError("cannot train on an empty dataset")
    run_seed = cfg.seed if seed is None else seed
    net = _resolve_model(model, model_kwargs)
    load_numpy(net, base)
    base32 = {k: np.asarray(v, dtype=np.float32) for k, v in base.items()}
    x_src, y_src = data_tensors(data)
    release_pages = page_releaser(data.x)
    n = len(data)
    rng = np.random.default_rng(run_seed)
    loss_fn = nn.CrossEntropyLoss()

    if cfg.dp:
        # A private copy (the cached dataset stays read-only), standardised once per call.
        x_all = standardise(torch.tensor(data.x), cfg.input_norm, in_place=True)
        y_all = torch.tensor(data.y)
        with torch_threads(num_threads), seeded_torch(run_seed):
            return _train_dp(net, base32, x_all, y_all, cfg, run_seed, rng, on_epoch)
    with torch_threads(num_threads), seeded_torch(run_seed):
        optimizer = _make_optimizer(net, cfg)
        net.train()
        started = time.perf_counter()
        epoch_loss = 0.0
        for epoch in range(cfg.epochs):
            order = torch.from_numpy(rng.permutation(n))
            loss_sum = 0.0
            for start in range(0, n, cfg.batch_size):
                idx = order[start : start + cfg.batch_size]
                # The batch's copy, standardised: elementwise, so its values are those of
                # the whole partition standardised first, bit for bit (and its strides, on
                # which convolutions' rounding depends, those of indexing a tensor).
                xb = standardise(x_src[idx], cfg.input_norm, in_place=True)
                release_pages()
                optimizer.zero_grad(set_to_none=True)
                loss = loss_fn(net(xb), y_src[idx])
                loss.backward()
                optimizer.step()
                loss_sum += float(loss.detach()) * len(idx)
            epoch_loss = loss_sum / n
            if on_epoch is not None:
                on_epoch(epoch + 1, epoch_loss)
        seconds = time.perf_counter() - started

    trained = model_to_numpy(net)
    delta = {k: np.subtract(trained[k], base32[k], dtype=np.float32) for k in sorted(trained)}
    return TrainResult(delta=delta, n_samples=n, train_loss=epoch_loss, seconds=seconds)


def _train_dp(
    net: nn.Module,
    base32: Mapping[str, np.ndarray],
    x_all: torch.Tensor,
    y_all: torch.Tensor,
    cfg: TrainConfig,
    run_seed: int,
    rng: np.random.Generator,
    on_epoch: Callable[[int, float], None] | None,
) -> TrainResult:
    """DP-SGD with Opacus (see p2pfl.train.privacy): Poisson-sampled batches from `rng`,
    per-sample clipping, seeded Gaussian noise; the same inputs give the same delta."""
    from opacus import GradSampleModule
    from opacus.optimizers import DPOptimizer

    from p2pfl.train.privacy import plan

    n = len(y_all)
    spent = plan(cfg, n)
    steps_per_epoch = spent.steps // cfg.epochs
    model = GradSampleModule(net, loss_reduction="mean")
    noise = torch.Generator().manual_seed(run_seed)
    optimizer = DPOptimizer(
        torch.optim.SGD(
            model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        ),
        noise_multiplier=spent.noise_multiplier,
        max_grad_norm=cfg.dp_max_grad_norm,
        expected_batch_size=cfg.batch_size,
        loss_reduction="mean",
        generator=noise,
    )
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    started = time.perf_counter()
    epoch_loss = 0.0
    try:
        with warnings.catch_warnings():
            # Opacus's hooks on a first layer whose input needs no gradient: expected here.
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            for epoch in range(cfg.epochs):
                loss_sum, seen = 0.0, 0
                for _ in range(steps_per_epoch):
                    idx = torch.from_numpy(np.flatnonzero(rng.random(n) < spent.sample_rate))
                    if len(idx) == 0:
                        # An empty Poisson batch: no step taken, but the accountant counts one
                        # (plan() fixed the steps), which can only overstate epsilon.
                        continue
                    optimizer.zero_grad(set_to_none=True)
                    loss = loss_fn(model(x_all[idx]), y_all[idx])
                    loss.backward()
                    optimizer.step()
                    loss_sum += float(loss.detach()) * len(idx)
                    seen += len(idx)
                epoch_loss = loss_sum / max(seen, 1)
                if on_epoch is not None:
                    on_epoch(epoch + 1, epoch_loss)
    finally:
        model._close()  # the per-sample hooks come off the caller's module
    seconds = time.perf_counter() - started
    trained = model_to_numpy(net)
    delta = {k: np.subtract(trained[k], base32[k], dtype=np.float32) for k in sorted(trained)}
    return TrainResult(delta, n, epoch_loss, seconds, dp=spent)


def evaluate(
    model: str | nn.Module,
    weights: Mapping[str, np.ndarray],
    data: Dataset,
    *,
    model_kwargs: Mapping[str, Any] | None = None,
    num_threads: int | None = None,
    batch_size: int = EVAL_BATCH_SIZE,
    input_norm: InputNorm | None = None,
) -> tuple[float, float]:
    """(mean cross-entropy loss, accuracy in [0, 1]) of `weights` on `data`, its inputs
    standardised by `input_norm` (the task's `TrainConfig.input_norm`, as in training)."""
    if len(data) == 0:
        raise ConfigError("cannot evaluate on an empty dataset")
    net = _resolve_model(model, model_kwargs)
    load_numpy(net, weights)
    net.eval()
    loss_sum = 0.0
    correct = 0
    with torch_threads(num_threads), torch.inference_mode():
        for start in range(0, len(data), batch_size):
            xb = standardise(
                torch.from_numpy(np.array(data.x[start : start + batch_size])), input_norm
            )
            yb = torch.from_numpy(np.array(data.y[start : start + batch_size]))
            logits = net(xb)
            loss_sum += float(nn.functional.cross_entropy(logits, yb, reduction="sum"))
            correct += int((logits.argmax(dim=1) == yb).sum())
    return loss_sum / len(data), correct / len(data)


def apply_delta(
    base: Mapping[str, np.ndarray], delta: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """base + delta in float32 (names must match)."""
    if set(base) != set(delta):
        raise ConfigError(f"delta names {sorted(delta)} do not match base names {sorted(base)}")
    return {k: np.add(base[k], delta[k], dtype=np.float32) for k in sorted(base)}


def weights_equal(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> bool:
    """True iff both have the same names and bit-identical arrays."""
    return set(a) == set(b) and all(
        a[k].shape == b[k].shape and a[k].tobytes() == b[k].tobytes() for k in a
    )


__all__ = [
    "TrainConfig",
    "TrainResult",
    "apply_delta",
    "client_seed",
    "evaluate",
    "model_to_numpy",
    "standardise",
    "torch_threads",
    "train_local",
    "weights_equal",
]
