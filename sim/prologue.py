"""What every simulation mode does first: say what runs, make the run folder, cut the data
and build the genesis model (`sim.run` in-process, `sim.processes` as OS processes)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from sim.data import load_data
from sim.report import new_run_dir
from sim.scenario import Scenario


class Prologue(NamedTuple):
    say: Callable[..., None]
    run_dir: Path
    wall_start: float  # perf_counter at the start of the run
    test: Any  # Dataset: the held-out test set
    partitions: list[Any]  # one Dataset per node
    genesis: dict[str, Any]  # the initial weights
    genesis_blob: bytes  # their canonical safetensors bytes (the genesis CID's content)


def begin(scenario: Scenario, runs_root: str | Path, quiet: bool, how: str) -> Prologue:
    """Start a run: `how` says how the nodes run (printed in the first line)."""
    from p2pfl.core.tensors import encode_tensors
    from p2pfl.train.models import init_weights

    say: Callable[..., None] = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))
    run_dir = new_run_dir(scenario.name, Path(runs_root))
    wall_start = time.perf_counter()
    _, test, partitions = load_data(scenario)
    say(
        f"scenario {scenario.name}: {how}, {scenario.rounds} rounds, "
        f"model {scenario.model.name}, data {scenario.data.dataset} ({scenario.data.partition})"
    )
    genesis = init_weights(scenario.model.name, scenario.model.kwargs, scenario.seed)
    return Prologue(say, run_dir, wall_start, test, partitions, genesis, encode_tensors(genesis))
