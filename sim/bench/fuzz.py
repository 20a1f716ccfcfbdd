"""The fuzz campaign: `python -m sim.bench fuzz` (1,000,000 inputs; FUZZ_INPUTS=n to change),
or `python -m sim.bench.fuzz [INPUTS]`.

Runs the targets of `sim/fuzz/targets.py` (message decoding, the gossip validator, block /
DAG / tensor / CID verification, the round state machine) with the coverage-guided
mutational fuzzer of `sim/fuzz/engine.py`, seeded from protocol/vectors/*.json. FUZZ_JOBS
(default 1: the machine is shared) runs shards in parallel processes; FUZZ_SEED picks the
run. Prints per-target figures, then `fuzz-inputs`, `fuzz-hangs` and the headline
`fuzz-crashes`. Exits non-zero only when it could not measure; crashes are a result, printed
with their first examples.
"""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from sim.bench import BenchError, figure

DEFAULT_INPUTS = 1_000_000
# Share of the inputs per target. The round machine's inputs are programs of ~15 events
# that sign messages (~2 ms each), the others single parses (~40 us): the shares keep the
# campaign to a few minutes on one core while every target gets >= 50k inputs.
SHARES = {"messages": 0.35, "validator": 0.30, "blocks": 0.30, "round": 0.05}
# Per-input CPU-time budget: real work is < 50 ms; a CPU second is a blow-up.
BUDGET_S = 1.0


def _shard(name: str, inputs: int, seed: int) -> Any:
    from sim.fuzz.engine import fuzz
    from sim.fuzz.targets import all_targets

    target = next(t for t in all_targets() if t.name == name)
    return fuzz(target, inputs, seed=seed, budget_s=BUDGET_S)


def _merge(parts: list[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "inputs": 0,
        "crashes": 0,
        "hangs": 0,
        "cpu_s": 0.0,
        "slowest_s": 0.0,
        "arcs": 0,
        "outcomes": 0,
        "examples": [],
    }
    outcomes: set[str] = set()
    for p in parts:
        out["inputs"] += p.inputs
        out["crashes"] += p.crashes
        out["hangs"] += p.hangs
        out["cpu_s"] += p.seconds
        out["slowest_s"] = max(out["slowest_s"], p.slowest_s)
        out["arcs"] = max(out["arcs"], p.arcs)
        outcomes |= set(p.outcomes)
        out["examples"] += p.examples
    out["outcomes"] = len(outcomes)
    return out


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
        seed = int(os.environ.get("FUZZ_SEED", "0"))
    except ValueError as exc:
        raise BenchError(f"bad FUZZ_INPUTS/FUZZ_JOBS/FUZZ_SEED: {exc}") from None
    counts = {name: int(total * share) for name, share in SHARES.items()}
    counts["messages"] += total - sum(counts.values())
    # Shards: each target split into `jobs` pieces with their own seeds.
    work = [
        (name, n // jobs + (1 if i < n % jobs else 0), seed * 1000 + i)
        for name, n in counts.items()
        for i in range(jobs)
    ]
    started = time.perf_counter()
    results: dict[str, list[Any]] = {name: [] for name in counts}
    if jobs == 1:
        for name, n, s in work:
            results[name].append(_shard(name, n, s))
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            futures = [(name, pool.submit(_shard, name, n, s)) for name, n, s in work if n]
            for name, future in futures:
                results[name].append(future.result())
    wall_s = time.perf_counter() - started
    totals = {"inputs": 0, "crashes": 0, "hangs": 0}
    for name, parts in results.items():
        m = _merge(parts)
        for key in totals:
            totals[key] += m[key]
        rate = m["inputs"] / m["cpu_s"] if m["cpu_s"] else 0.0
        figure(f"fuzz-{name}-inputs", m["inputs"], "inputs")
        figure(f"fuzz-{name}-crashes", m["crashes"], "crashes")
        figure(f"fuzz-{name}-hangs", m["hangs"], "hangs")
        figure(f"fuzz-{name}-rate", rate, "inputs/s")
        figure(f"fuzz-{name}-slowest-input", m["slowest_s"] * 1e3, "cpu-ms")
        figure(f"fuzz-{name}-outcomes", m["outcomes"], "distinct")
        figure(f"fuzz-{name}-coverage", m["arcs"], "line-arcs")
        for text, data in m["examples"][:3]:
            print(
                f"  {name} example: {data[:64].hex()} ...\n    " + text.replace("\n", "\n    "),
                file=sys.stderr,
            )
    figure("fuzz-wall-time", wall_s, "s")
    figure("fuzz-rate", totals["inputs"] / wall_s if wall_s else 0.0, "inputs/s")
    figure("fuzz-inputs", totals["inputs"], "inputs")
    figure("fuzz-hangs", totals["hangs"], "hangs")
    figure("fuzz-crashes", totals["crashes"], "crashes")


if __name__ == "__main__":
    run(sys.argv[1:])
