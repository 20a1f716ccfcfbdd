"""Benchmarks: `python -m sim.bench NAME` prints `figure-name: value unit` lines.

Each benchmark is a module `sim/bench/<name>.py` exposing `run() -> None` that prints
its figures (headline last) and raises `BenchError` only when it could not measure.
"""


class BenchError(Exception):
    """The benchmark could not measure (missing tool, failed set-up)."""


def figure(name: str, value: float | int | str, unit: str) -> None:
    """Print one figure in the conventional `name: value unit` form."""
    if isinstance(value, float):
        text = f"{value:.4g}" if abs(value) < 1e5 else f"{value:.0f}"
    else:
        text = str(value)
    print(f"{name}: {text} {unit}", flush=True)
