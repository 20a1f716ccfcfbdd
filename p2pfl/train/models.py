"""Model architectures, the name registry a task manifest refers to, and weights <-> numpy.

A manifest names its architecture (`"mlp"`, `"cnn"`, `"lenet5"`, or `"module:pkg.mod:factory"` for a
user's own torch module) plus keyword arguments; every node builds the same module from
that and loads the committed weights into it. Weights travel as `dict[str, np.ndarray]`
(float32, C-contiguous, names sorted) so the rest of the system never sees torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn

from p2pfl.errors import ConfigError

# Fashion-MNIST / MNIST geometry: the defaults every built-in model assumes.
DEFAULT_INPUT_SHAPE: tuple[int, int, int] = (1, 28, 28)
DEFAULT_NUM_CLASSES = 10

# Prefix of a manifest model name that points at a user's own factory.
MODULE_SPEC_PREFIX = "module:"

ModelFactory = Callable[..., nn.Module]


class MLP(nn.Module):
    """Fully connected classifier: flatten -> [Linear -> ReLU]* -> Linear.

    `input_shape` is any (C, H, W) so the same class serves 8x8 digits and 28x28 images.
    """

    def __init__(
        self,
        input_shape: Sequence[int] = DEFAULT_INPUT_SHAPE,
        hidden: Sequence[int] = (128,),
        num_classes: int = DEFAULT_NUM_CLASSES,
    ) -> None:
        super().__init__()
        in_features = int(np.prod(list(input_shape)))
        layers: list[nn.Module] = [nn.Flatten()]
        for width in hidden:
            layers += [nn.Linear(in_features, int(width)), nn.ReLU()]
            in_features = int(width)
        layers.append(nn.Linear(in_features, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SmallCNN(nn.Module):
    """Two conv blocks and two linear layers, no BatchNorm (no buffers, no batch coupling).

    conv(C->c1, 3x3) -> ReLU -> maxpool 2 -> conv(c1->c2, 3x3) -> ReLU -> maxpool 2
    -> fc(c2*(H/4)*(W/4) -> hidden) -> ReLU -> fc(hidden -> classes).
    With the defaults (8, 16, 64) it has ~52k parameters: one local epoch on 6000
    Fashion-MNIST images is about a second on one core (see the training spec).
    """

    def __init__(
        self,
        input_shape: Sequence[int] = DEFAULT_INPUT_SHAPE,
        channels: Sequence[int] = (8, 16),
        hidden: int = 64,
        num_classes: int = DEFAULT_NUM_CLASSES,
    ) -> None:
        super().__init__()
        if len(input_shape) != 3:
            raise ConfigError(f"cnn input_shape must be (C, H, W), got {list(input_shape)}")
        if len(channels) != 2:
            raise ConfigError(f"cnn channels must name two conv widths, got {list(channels)}")
        c_in, height, width = (int(v) for v in input_shape)
        if height < 4 or width < 4:
            raise ConfigError(f"cnn needs images of at least 4x4, got {height}x{width}")
        c1, c2 = (int(v) for v in channels)
        self.features = nn.Sequential(
            nn.Conv2d(c_in, c1, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        flat = c2 * (height // 4) * (width // 4)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(flat, int(hidden)),
            nn.ReLU(),
            nn.Linear(int(hidden), num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class LeNet5(nn.Module):
    """LeNet-5 as Flower's quickstart trains it on Fashion-MNIST (44,426 parameters).

    conv(1->6, 5x5) -> ReLU -> maxpool 2 -> conv(6->16, 5x5) -> ReLU -> maxpool 2
    -> fc(16*4*4 = 256 -> 120) -> ReLU -> fc(120 -> 84) -> ReLU -> fc(84 -> classes).
    No padding, so 28x28 inputs give 24 -> 12 -> 8 -> 4; no BatchNorm (no buffers).
    """

    def __init__(
        self,
        input_shape: Sequence[int] = DEFAULT_INPUT_SHAPE,
        num_classes: int = DEFAULT_NUM_CLASSES,
    ) -> None:
        super().__init__()
        if len(input_shape) != 3:
            raise ConfigError(f"lenet5 input_shape must be (C, H, W), got {list(input_shape)}")
        c_in, height, width = (int(v) for v in input_shape)
        # Each 5x5 valid conv takes 4 pixels, each pool halves: ((s - 4) // 2 - 4) // 2.
        out_h, out_w = ((height - 4) // 2 - 4) // 2, ((width - 4) // 2 - 4) // 2
        if out_h < 1 or out_w < 1:
            raise ConfigError(f"lenet5 needs images of at least 16x16, got {height}x{width}")
        self.features = nn.Sequential(
            nn.Conv2d(c_in, 6, kernel_size=5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, kernel_size=5),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * out_h * out_w, 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


_REGISTRY: dict[str, ModelFactory] = {"mlp": MLP, "cnn": SmallCNN, "lenet5": LeNet5}


def register_model(name: str, factory: ModelFactory, *, replace: bool = False) -> None:
    """Make `factory(**kwargs) -> nn.Module` available to manifests as `name`.

    Registering an existing name is refused unless `replace=True`, so two plug-ins cannot
    silently swap each other's architecture.
    """
    if not name or name.startswith(MODULE_SPEC_PREFIX):
        raise ConfigError(f"model name {name!r} is empty or uses the reserved 'module:' prefix")
    if name in _REGISTRY and not replace:
        raise ConfigError(f"model {name!r} is already registered; pass replace=True to override")
    _REGISTRY[name] = factory


def registered_models() -> list[str]:
    """Names `build_model` accepts without a `module:` spec, sorted."""
    return sorted(_REGISTRY)


def _import_factory(spec: str) -> ModelFactory:
    # "module:pkg.sub:factory" -> pkg.sub.factory
    rest = spec[len(MODULE_SPEC_PREFIX) :]
    module_name, sep, attr = rest.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"bad model spec {spec!r}: expected 'module:package.module:factory'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"model spec {spec!r}: cannot import {module_name!r}: {exc}") from exc
    factory: Any = module
    for part in attr.split("."):
        factory = getattr(factory, part, None)
        if factory is None:
            raise ConfigError(f"model spec {spec!r}: {module_name!r} has no attribute {attr!r}")
    if not callable(factory):
        raise ConfigError(f"model spec {spec!r}: {attr!r} is not callable")
    return factory  # type: ignore[return-value]


def build_model(name: str, **kwargs: object) -> nn.Module:
    """Build the architecture a manifest names, with its keyword arguments.

    `name` is a registered name ("mlp", "cnn", "lenet5", or one added by `register_model`) or
    `"module:package.module:factory"` importing a user's own factory. Weights are whatever
    torch's default init draws from the global RNG; use `init_weights` for seeded weights.
    """
    if name.startswith(MODULE_SPEC_PREFIX):
        factory = _import_factory(name)
    else:
        registered = _REGISTRY.get(name)
        if registered is None:
            raise ConfigError(
                f"unknown model {name!r}; known: {registered_models()} "
                "or 'module:package.module:factory'"
            )
        factory = registered
    try:
        model = factory(**kwargs)
    except TypeError as exc:
        raise ConfigError(
            f"model {name!r} rejected its parameters {sorted(kwargs)}: {exc}"
        ) from exc
    if not isinstance(model, nn.Module):
        raise ConfigError(
            f"model {name!r} factory returned {type(model).__name__}, not a torch Module"
        )
    return model


@contextmanager
def seeded_torch(seed: int) -> Iterator[None]:
    """Run a block with torch's CPU RNG seeded to `seed`, restoring the caller's RNG after."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def init_weights(
    name: str, kwargs: Mapping[str, object] | None, seed: int
) -> dict[str, np.ndarray]:
    """Seeded initial weights of `name(**kwargs)` as numpy (the manifest's genesis model).

    Same (name, kwargs, seed) and torch version => the same arrays; the global torch RNG
    is left untouched.
    """
    with seeded_torch(seed):
        model = build_model(name, **dict(kwargs or {}))
    return model_to_numpy(model)


def model_to_numpy(model: nn.Module) -> dict[str, np.ndarray]:
    """The model's state_dict (parameters and buffers) as sorted, contiguous float32 arrays.

    Non-floating buffers (e.g. BatchNorm's num_batches_tracked) are refused: prefer
    models without them, since averaging an integer counter has no meaning.
    """
    out: dict[str, np.ndarray] = {}
    state = model.state_dict()
    for key in sorted(state):
        tensor = state[key]
        if not torch.is_floating_point(tensor):
            raise ConfigError(
                f"model state {key!r} has dtype {tensor.dtype}; only float tensors can be "
                "federated (avoid BatchNorm, or drop its counters)"
            )
        out[key] = np.ascontiguousarray(tensor.detach().cpu().numpy(), dtype=np.float32).copy()
    return out


def load_numpy(model: nn.Module, weights: Mapping[str, np.ndarray]) -> None:
    """Load `weights` into `model` in place; names and shapes must match exactly."""
    state = model.state_dict()
    missing = sorted(set(state) - set(weights))
    extra = sorted(set(weights) - set(state))
    if missing or extra:
        raise ConfigError(f"weights do not fit the model: missing {missing}, unexpected {extra}")
    new_state = {}
    for key, tensor in state.items():
        arr = np.asarray(weights[key])
        if tuple(arr.shape) != tuple(tensor.shape):
            raise ConfigError(
                f"weight {key!r} has shape {list(arr.shape)}, model expects {list(tensor.shape)}"
            )
        copied = np.array(arr, dtype=np.float32, copy=True)
        new_state[key] = torch.from_numpy(copied).to(tensor.dtype)
    model.load_state_dict(new_state)
