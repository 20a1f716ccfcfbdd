"""The fuzz campaign: `python -m sim.bench fuzz` (10,000,000 inputs; FUZZ_INPUTS=n to change),
or `python -m sim.bench.fuzz [INPUTS]`.

Runs the targets of `sim/fuzz/targets.py` (message decoding, the gossip validator, block /
DAG / tensor / CID verification, the round state machine) under atheris / libFuzzer
(`sim/fuzz/libfuzzer.py`: one process per target and shard, coverage from atheris's
bytecode instrumentation, seeded from protocol/vectors/*.json and the targets' seeds).
FUZZ_JOBS (default 1: the machine is shared) runs shards in parallel processes; FUZZ_SEED
picks the run.

Before the campaign it measures the hand-written engine this replaced
(`sim/fuzz/engine.py`: sys.settrace coverage on one input in 16, our own mutators) on the
same targets for a short run each, and prints both rates and their ratio
(`fuzz-<target>-speedup`), both in inputs per CPU second (the machine is shared): the
engine's own CPU clock, and the libFuzzer child's CPU time less its start-up (imports,
instrumentation, the seeds: a `-runs=0` run of the same target). Prints per-target
figures, then `fuzz-inputs`, `fuzz-hangs` and the headline `fuzz-crashes`. Exits non-zero
only when it could not measure; crashes and hangs are a result, printed with the end of
libFuzzer's report and the saved input (each shard's output and findings are kept under
runs/fuzz-<time>/<target>-<seed>/).
"""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from sim.bench import ROOT_DIR, BenchError, figure

DEFAULT_INPUTS = 10_000_000
# Share of the inputs per target, by cost. The round machine's inputs are programs of ~15
# events that sign messages (~4 ms each under instrumentation); a blocks input builds and
# walks a DAG (~1.5 ms); the others are single parses or validations (~50 us). With 32% on
# blocks, blocks took 80% of a campaign's CPU after its coverage had stopped growing (332
# edges by 1.7M inputs); these shares give every target over a million inputs (the round
# target 100k) and keep a 10M campaign near an hour of one core.
SHARES = {"messages": 0.50, "validator": 0.34, "blocks": 0.15, "round": 0.01}
# Inputs of the baseline (old engine) and of the matching atheris run, per target.
BASELINE_INPUTS = {"messages": 60_000, "validator": 30_000, "blocks": 30_000, "round": 2_000}


def _engine_rate(name: str, inputs: int) -> float:
    """Inputs per CPU second of the hand-written engine on `name`."""
    from sim.fuzz.engine import fuzz
    from sim.fuzz.targets import all_targets

    target = next(t for t in all_targets() if t.name == name)
    started = time.process_time()
    stats = fuzz(target, inputs, seed=1)
    cpu = time.process_time() - started
    return stats.inputs / cpu if cpu > 0 else 0.0


def _shard(name: str, inputs: int, seed: int, keep: Path | None = None) -> Any:
    """One libFuzzer process; with `keep`, its output and any crash or timeout input stay
    in keep/<target>-<seed>/ (a finding must be replayable)."""
    from sim.fuzz.libfuzzer import run_target

    workdir = keep / f"{name}-{seed}" if keep is not None else None
    return run_target(name, inputs, seed=seed, workdir=workdir)


def run(argv: list[str] | None = None) -> None:
    """Run the campaign and print its figures (headline: fuzz-crashes)."""
    args = argv or []
    try:
        total = (
            int(args[0])
            if args and args[0].isdigit()
            else int(os.environ.get("FUZZ_INPUTS", DEFAULT_INPUTS))
        )
        jobs = max(1, int(os.environ.get("FUZZ_JOBS", "1")))
        seed = int(os.environ.get("FUZZ_SEED", "1"))
    except ValueError as exc:
        raise BenchError(f"bad FUZZ_INPUTS/FUZZ_JOBS/FUZZ_SEED: {exc}") from None
    try:
        import atheris  # noqa: F401
    except ImportError:
        raise BenchError("atheris is not installed: run scripts/setup.sh") from None

    # The engine this replaced against atheris, target by target, in this same run.
    for name, n in BASELINE_INPUTS.items():
        old = _engine_rate(name, n)
        start_up = _shard(name, 0, seed)
        new = _shard(name, n, seed)
        if new.crashes or new.hangs or start_up.crashes:
            raise BenchError(f"{name}: the baseline run failed:\n{new.tail}")
        cpu = new.cpu_s - start_up.cpu_s
        rate = (new.inputs - start_up.inputs) / cpu if cpu > 0 else 0.0
        figure(f"fuzz-{name}-engine-rate", old, "inputs/cpu-s")
        figure(f"fuzz-{name}-atheris-rate", rate, "inputs/cpu-s")
        figure(f"fuzz-{name}-speedup", rate / old if old else 0.0, "x")

    counts = {name: int(total * share) for name, share in SHARES.items()}
    counts["messages"] += total - sum(counts.values())
    work = [
        (name, n // jobs + (1 if i < n % jobs else 0), seed * 1000 + i)
        for name, n in counts.items()
        for i in range(jobs)
    ]
    started = time.perf_counter()
    keep = ROOT_DIR / "runs" / time.strftime("fuzz-%Y%m%d-%H%M%S")
    results: dict[str, list[Any]] = {name: [] for name in counts}
    # Threads only wait on the libFuzzer child processes: `jobs` of them at a time.
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [(name, pool.submit(_shard, name, n, s, keep)) for name, n, s in work if n]
        for name, future in futures:
            results[name].append(future.result())
    wall_s = time.perf_counter() - started
    totals = {"inputs": 0, "crashes": 0, "hangs": 0}
    for name, parts in results.items():
        inputs = sum(p.inputs for p in parts)
        seconds = sum(p.seconds for p in parts)
        crashes = sum(p.crashes for p in parts)
        hangs = sum(p.hangs for p in parts)
        totals["inputs"] += inputs
        totals["crashes"] += crashes
        totals["hangs"] += hangs
        figure(f"fuzz-{name}-inputs", inputs, "inputs")
        figure(f"fuzz-{name}-crashes", crashes, "crashes")
        figure(f"fuzz-{name}-hangs", hangs, "hangs")
        figure(f"fuzz-{name}-rate", inputs / seconds if seconds else 0.0, "inputs/wall-s")
        figure(f"fuzz-{name}-coverage", max((p.coverage for p in parts), default=0), "edges")
        figure(f"fuzz-{name}-corpus", max((p.corpus for p in parts), default=0), "inputs")
        for p in parts:
            if p.crashes or p.hangs:
                print(
                    f"  {name}: {p.artifacts}\n    " + p.tail[-2000:].replace("\n", "\n    "),
                    file=sys.stderr,
                )
    figure("fuzz-wall-time", wall_s, "s")
    figure("fuzz-rate", totals["inputs"] / wall_s if wall_s else 0.0, "inputs/s")
    figure("fuzz-inputs", totals["inputs"], "inputs")
    figure("fuzz-hangs", totals["hangs"], "hangs")
    figure("fuzz-crashes", totals["crashes"], "crashes")


if __name__ == "__main__":
    run(sys.argv[1:])
