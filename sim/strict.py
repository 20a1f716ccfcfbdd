"""Strict parsing of TOML tables into frozen dataclasses: the one definition every
simulation config (scenario, `[attacks]`, `[faults]`) uses. Unknown keys and values of
the wrong type are errors that name the key, never silently ignored."""

from __future__ import annotations

import math
import tomllib
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

from p2pfl.errors import ConfigError


def read_scenario_toml(path: str | Path, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """A scenario file's table, `name` defaulting to the file's stem, with `overrides`
    (dotted keys, "committee.size": 5) applied; a clear error for a missing or bad file."""
    try:
        raw = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"no scenario file at {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    raw.setdefault("name", Path(path).stem)
    for dotted, value in (overrides or {}).items():
        node = raw
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return raw


def override_value(text: str) -> Any:
    """The value of a `--set KEY=VALUE` override: a TOML value (3, 0.5, true, "x",
    [1, 2]), else the text itself, so `--set privacy.updates=committee` needs no quotes."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def build(cls: type, raw: Any, where: str, *, non_negative: tuple[type, ...] = ()) -> Any:
    """`cls(**raw)` with every key known and every value of its default's type.

    Numbers must be finite; an int field takes only ints, a float field ints or floats
    (stored as float); a nested dataclass field takes a table. `non_negative`: the field
    types (int, float) whose values must be >= 0 (counts, fractions, seconds)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a table")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {sorted(known)}")
    values = {}
    for key, value in raw.items():
        spec = known[key]
        default = spec.default_factory() if callable(spec.default_factory) else spec.default
        if is_dataclass(default):
            values[key] = build(type(default), value, f"{where}.{key}", non_negative=non_negative)
            continue
        values[key] = _checked(default, value, f"{where}.{key}", non_negative)
    return cls(**values)


def _checked(default: Any, value: Any, where: str, non_negative: tuple[type, ...]) -> Any:
    def fail() -> ConfigError:
        kind = ("a non-negative " if type(default) in non_negative else "") + type(default).__name__
        return ConfigError(f"{where}: expected {kind}, got {value!r}")

    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise fail()
        return value
    if isinstance(default, (int, float)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise fail()
        if isinstance(default, int) and not isinstance(value, int):
            raise fail()
        if not math.isfinite(value) or (type(default) in non_negative and value < 0):
            raise fail()
        return float(value) if isinstance(default, float) else value
    if isinstance(default, (str, dict)) and not isinstance(value, type(default)):
        raise fail()
    return value
