"""The fuzz targets of `sim/fuzz/targets.py` under atheris (libFuzzer), one target per process.

    python -m sim.fuzz.libfuzzer TARGET [libFuzzer flags]     # e.g. messages -runs=100000

libFuzzer drives the input generation: coverage comes from atheris's bytecode
instrumentation of `p2pfl` and `sim.fuzz` (imported inside `instrument_imports`), the
corpus starts from the target's seeds (protocol vectors, valid messages, DAG programs:
written into a fresh corpus folder unless one is given), and mutation alternates
between libFuzzer's byte mutators and the target's own structure-aware `mutate` (which
re-signs messages, so mutants get past the signature check). Any exception that escapes
`target.run` — an undocumented error or an `InvariantBroken` — is a crash: libFuzzer stops,
prints the traceback and writes the input as `crash-<sha1>` under `-artifact_prefix`. An
input running longer than `-timeout` seconds is a hang (`timeout-<sha1>`).

`run_target()` runs one such process and reads its result (inputs, seconds, crash or hang
and the artifact): what `python -m sim.bench fuzz` and the tests use.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT_DIR = Path(__file__).resolve().parents[2]
TARGETS = ("messages", "validator", "blocks", "round")
# Per-input budget in seconds (libFuzzer -timeout, wall clock): real work is < 50 ms; the
# margin is for a shared, loaded machine, where a 1 s limit flagged a slow scheduler.
TIMEOUT_S = 5
# libFuzzer's memory limit per process.
RSS_LIMIT_MB = 2048
# Inputs at most this long (the targets' seeds are < 2 KiB; messages are capped by the
# gossip limit far above, but longer inputs only slow the search).
MAX_LEN = 4096
_DONE = re.compile(r"Done (\d+) runs in (\d+) second")
_EXECS = re.compile(r"stat::number_of_executed_units:\s*(\d+)")
_COV = re.compile(r"#\d+\s+\w+\s+cov: (\d+) ft: (\d+) corp: (\d+)")


@dataclass
class LibFuzzerRun:
    """What one libFuzzer process reported."""

    target: str
    inputs: int = 0
    seconds: float = 0.0  # wall time of the child, start-up included
    cpu_s: float = 0.0  # CPU time (user + system) of the child, start-up included
    crashes: int = 0
    hangs: int = 0
    coverage: int = 0  # libFuzzer's "cov": instrumented edges reached
    features: int = 0
    corpus: int = 0
    artifacts: list[str] = field(default_factory=list)
    returncode: int = 0
    tail: str = ""  # the end of its output, for a crash report

    @property
    def rate(self) -> float:
        """Inputs per wall-clock second."""
        return self.inputs / self.seconds if self.seconds else 0.0


def _load_target(name: str) -> Any:
    """A target of sim/fuzz/targets.py by name, or `package.module:Factory` (tests plant
    targets with known bugs this way)."""
    import importlib

    import atheris

    module_name, _, attr = name.partition(":")
    planted = [module_name.split(".")[0]] if attr else []
    with atheris.instrument_imports(include=["p2pfl", "sim.fuzz", *planted]):
        if attr:
            return getattr(importlib.import_module(module_name), attr)()
        from sim.fuzz.targets import all_targets
    for target in all_targets():
        if target.name == name:
            return target
    raise SystemExit(f"unknown fuzz target {name!r}; one of {', '.join(TARGETS)}")


def main(argv: list[str]) -> None:
    """`python -m sim.fuzz.libfuzzer TARGET [flags]`: fuzz until libFuzzer stops."""
    import atheris

    if len(argv) < 2 or argv[1].startswith("-"):
        raise SystemExit(__doc__)
    name, flags = argv[1], argv[2:]
    target = _load_target(name)
    corpus = [f for f in flags if not f.startswith("-")]
    flags = [f for f in flags if f.startswith("-")]
    if not corpus:  # run by hand: a corpus folder of its own, kept for the next run
        corpus = [tempfile.mkdtemp(prefix=f"p2pfl-fuzz-{name}-")]
    folder = Path(corpus[0])
    folder.mkdir(parents=True, exist_ok=True)
    if not any(folder.iterdir()):  # a new corpus starts from the target's seeds
        for i, seed in enumerate(target.seeds()):
            (folder / f"seed-{i:04d}").write_bytes(seed)
    own_mutate = getattr(target, "mutate", None)

    def one_input(data: bytes) -> None:
        target.run(data)

    def custom_mutator(data: bytes, max_size: int, seed: int) -> bytes:
        rng = random.Random(seed)
        if own_mutate is not None and rng.random() < 0.5:
            out = own_mutate(data, rng)
            if out is not None and len(out) <= max_size:
                return bytes(out)
        return bytes(atheris.Mutate(data, max_size))

    atheris.Setup([argv[0], *flags, *corpus], one_input, custom_mutator=custom_mutator)
    atheris.Fuzz()


def run_target(
    name: str,
    inputs: int,
    *,
    seed: int = 1,
    workdir: Path | None = None,
    timeout_s: int = TIMEOUT_S,
    extra: list[str] | None = None,
) -> LibFuzzerRun:
    """Fuzz `name` for `inputs` inputs in a child process; its figures (never raises for a
    crash: a crash is a result)."""
    with tempfile.TemporaryDirectory(prefix="p2pfl-fuzz-") as tmp:
        work = workdir or Path(tmp)
        artifacts = work / "artifacts"
        artifacts.mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable,
            "-m",
            "sim.fuzz.libfuzzer",
            name,
            f"-runs={inputs}",
            f"-seed={seed}",
            f"-timeout={timeout_s}",
            f"-rss_limit_mb={RSS_LIMIT_MB}",
            f"-max_len={MAX_LEN}",
            f"-artifact_prefix={artifacts}/",
            "-print_final_stats=1",
            "-print_pcs=0",
            *(extra or []),
            str(work / "corpus"),  # inside `work`: gone with the temporary folder
        ]
        env = {**os.environ, "PYTHONPATH": str(ROOT_DIR)}
        with open(work / "output.txt", "w+b") as out:
            started, cpu = time.perf_counter(), _children_cpu_s()
            proc = subprocess.run(cmd, cwd=ROOT_DIR, stdout=out, stderr=subprocess.STDOUT, env=env)
            wall_s = time.perf_counter() - started
            cpu_s = _children_cpu_s() - cpu
            out.seek(0)
            text = out.read().decode(errors="replace")
        result = LibFuzzerRun(name, returncode=proc.returncode, tail=text[-4000:])
        found = sorted(p.name for p in artifacts.iterdir())
        result.artifacts = [str(artifacts / f) for f in found]
        result.crashes = sum(1 for f in found if f.startswith(("crash-", "oom-", "leak-")))
        result.hangs = sum(1 for f in found if f.startswith(("timeout-", "slow-unit-")))
        if proc.returncode != 0 and not (result.crashes or result.hangs):
            result.crashes = 1  # died without an artifact (an abort in native code)
        if m := _EXECS.search(text):
            result.inputs = int(m.group(1))
        elif m := _DONE.search(text):
            result.inputs = int(m.group(1))
        covs = _COV.findall(text)
        if covs:
            result.coverage, result.features, result.corpus = (int(x) for x in covs[-1])
        # The child's whole wall time, its start-up (imports, instrumentation, ~1.5 s)
        # included: libFuzzer's own figure counts whole seconds only.
        result.seconds = wall_s
        result.cpu_s = cpu_s
        return result


def _children_cpu_s() -> float:
    """CPU seconds of this process's waited-for children so far (one child at a time per
    caller thread: the campaign's shards run in threads, so only the single-job baseline
    reads this)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


if __name__ == "__main__":
    main(sys.argv)
