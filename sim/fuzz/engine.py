"""A small mutational fuzzer, stdlib only, guided by line coverage and outcomes.

How it works (libFuzzer's loop, in Python): a corpus starts from seed inputs; each
iteration picks a corpus entry, applies a few random mutations (bit flips, interesting
integers, block insert/delete/duplicate, splice with another entry, truncation, or a
target's own structure-aware mutator) and runs the target on the result under a
per-input time budget. An input that reaches new coverage joins the corpus, so later
mutations start from deeper inside the code.

Coverage: `sys.settrace` line arcs (previous line, line) inside the project's own
files (p2pfl/ by default). Tracing costs several times the run itself, so only every
`trace_every`-th input is traced; every input still counts an *outcome* (the target's
label: a verdict, a rejection reason), and a never-seen outcome also joins the corpus.

Results: a crash is any exception a target does not declare as its documented way to
refuse input (targets catch those themselves and return a label); a hang is an input
that uses more than `budget_s` of CPU time (SIGPROF interrupts it where Python code
runs; a C call that overruns is still counted once it returns). CPU time, not wall time:
on a shared machine a descheduled input is not a hang. Everything is seeded.
"""

from __future__ import annotations

import os
import random
import signal
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import CodeType, FrameType
from typing import Any, Protocol

# Largest input the generic mutators grow to: above every protocol limit that matters
# for parsing logic (headers, frames), yet small enough that a run stays fast. Targets
# that must see oversized input build it themselves (see targets.py).
MAX_INPUT_BYTES = 8192
# Inputs kept in the corpus: enough to hold every coverage-increasing input of a run
# (thousands), bounded so a long campaign's memory does not grow with its length.
MAX_CORPUS = 5000
# Mutations stacked per input (libFuzzer's -mutate_depth default is 5).
MAX_STACKED_MUTATIONS = 5
# Default per-input CPU-time budget: every target's real work is well under a millisecond
# to a few tens of milliseconds; a second means an algorithmic blow-up or a loop.
DEFAULT_BUDGET_S = 1.0
# Trace one input in this many for coverage (tracing multiplies the cost of a run).
DEFAULT_TRACE_EVERY = 16
# Crash examples kept per target for the report.
MAX_EXAMPLES = 5

_INTERESTING_8 = (0, 1, 0x7F, 0x80, 0xFF)
_INTERESTING_INTS = (
    0,
    1,
    2,
    31,
    32,
    33,
    36,
    127,
    128,
    255,
    256,
    65535,
    2**31 - 1,
    2**32 - 1,
    2**63,
    2**64 - 1,
)


class Hang(BaseException):
    """Raised by the SIGPROF handler when an input overruns its CPU-time budget.

    A BaseException so that a target's `except Exception` cannot swallow it.
    """


class Target(Protocol):
    """One thing under fuzz: `run` returns an outcome label or raises (= a crash)."""

    name: str

    def seeds(self) -> list[bytes]: ...

    def run(self, data: bytes) -> str: ...

    def mutate(self, data: bytes, rng: random.Random) -> bytes | None: ...


@dataclass
class FuzzStats:
    """What one campaign on one target did."""

    target: str
    inputs: int = 0
    crashes: int = 0
    hangs: int = 0
    seconds: float = 0.0
    slowest_s: float = 0.0  # CPU seconds of the most expensive input
    corpus: int = 0
    arcs: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    examples: list[tuple[str, bytes]] = field(default_factory=list)  # (traceback tail, input)

    @property
    def inputs_per_s(self) -> float:
        return self.inputs / self.seconds if self.seconds > 0 else 0.0


# --- coverage ------------------------------------------------------------------------------


class Coverage:
    """Line arcs executed in files under `roots`, collected with sys.settrace."""

    def __init__(self, roots: Sequence[str]) -> None:
        self.roots = tuple(os.path.abspath(r) for r in roots)
        self.arcs: set[tuple[CodeType, int, int]] = set()
        self._wanted: dict[CodeType, bool] = {}

    def trace(self, fn: Callable[[], Any]) -> tuple[Any, int]:
        """Run fn() under tracing; returns (its result, number of new arcs)."""
        arcs = self.arcs
        wanted = self._wanted
        roots = self.roots
        last: dict[FrameType, int] = {}
        new = 0

        def local(frame: FrameType, event: str, arg: Any) -> Any:
            nonlocal new
            if event == "line":
                line = frame.f_lineno
                arc = (frame.f_code, last.get(frame, -1), line)
                last[frame] = line
                if arc not in arcs:
                    arcs.add(arc)
                    new += 1
            elif event == "return":
                last.pop(frame, None)
            return local

        def call(frame: FrameType, event: str, arg: Any) -> Any:
            code = frame.f_code
            ok = wanted.get(code)
            if ok is None:
                ok = wanted[code] = code.co_filename.startswith(roots)
            return local if ok else None

        sys.settrace(call)
        try:
            result = fn()
        finally:
            sys.settrace(None)
        return result, new


# --- mutation ------------------------------------------------------------------------------


def _int_bytes(rng: random.Random) -> bytes:
    value = rng.choice(_INTERESTING_INTS)
    if rng.random() < 0.3:
        value = max(0, value + rng.choice((-1, 1)))
    size = rng.choice((1, 2, 4, 8))
    value &= (1 << (8 * size)) - 1
    return value.to_bytes(size, rng.choice(("big", "little")))


def mutate_bytes(data: bytes, rng: random.Random, corpus: Sequence[bytes] = ()) -> bytes:
    """One generic byte-level mutation (libFuzzer's set, roughly)."""
    buf = bytearray(data)
    op = rng.randrange(11)
    n = len(buf)
    if n == 0 or op == 0:  # insert random bytes
        pos = rng.randint(0, n)
        buf[pos:pos] = rng.randbytes(rng.choice((1, 1, 2, 4, rng.randint(1, 64))))
    elif op == 1:  # flip a bit
        pos = rng.randrange(n)
        buf[pos] ^= 1 << rng.randrange(8)
    elif op == 2:  # set an interesting byte
        buf[rng.randrange(n)] = rng.choice(_INTERESTING_8)
    elif op == 3:  # random byte
        buf[rng.randrange(n)] = rng.randrange(256)
    elif op == 4:  # overwrite with an interesting integer
        chunk = _int_bytes(rng)
        pos = rng.randrange(n)
        buf[pos : pos + len(chunk)] = chunk
    elif op == 5:  # delete a block
        pos = rng.randrange(n)
        del buf[pos : pos + rng.randint(1, max(1, min(64, n - pos)))]
    elif op == 6:  # duplicate a block somewhere else
        pos = rng.randrange(n)
        chunk = bytes(buf[pos : pos + rng.randint(1, 32)])
        at = rng.randint(0, n)
        buf[at:at] = chunk
    elif op == 7:  # truncate
        del buf[rng.randrange(n) :]
    elif op == 8:  # splice with another corpus entry
        other = rng.choice(corpus) if corpus else data
        cut_a, cut_b = rng.randint(0, n), rng.randint(0, len(other))
        buf = buf[:cut_a] + bytearray(other[cut_b:])
    elif op == 9:  # add/subtract a small amount to a byte (length fields, counters)
        pos = rng.randrange(n)
        buf[pos] = (buf[pos] + rng.choice((-2, -1, 1, 2))) & 0xFF
    else:  # copy a block over another (repeated structure)
        src, dst = rng.randrange(n), rng.randrange(n)
        size = rng.randint(1, 16)
        buf[dst : dst + size] = buf[src : src + size]
    return bytes(buf[:MAX_INPUT_BYTES])


# --- the loop ------------------------------------------------------------------------------


def _on_alarm(signum: int, frame: Any) -> None:
    raise Hang()


def fuzz(
    target: Target,
    inputs: int,
    *,
    seed: int = 0,
    budget_s: float = DEFAULT_BUDGET_S,
    trace_every: int = DEFAULT_TRACE_EVERY,
    coverage_roots: Sequence[str] | None = None,
    progress: Callable[[FuzzStats], None] | None = None,
    progress_every: int = 0,
) -> FuzzStats:
    """Run `inputs` fuzz cases against `target`; returns its stats (never raises for a crash).

    Seeds run first (they count as inputs), then mutants of the corpus. `trace_every=0`
    turns coverage off (outcome feedback only).
    """
    rng = random.Random(seed)
    stats = FuzzStats(target.name)
    corpus: list[bytes] = []
    if coverage_roots is None:
        import p2pfl

        coverage_roots = [os.path.dirname(p2pfl.__file__)]
    coverage = Coverage(coverage_roots) if trace_every else None
    use_alarm = hasattr(signal, "setitimer") and _in_main_thread()
    old_handler = signal.signal(signal.SIGPROF, _on_alarm) if use_alarm else None
    mutate_own = getattr(target, "mutate", None)
    pending = list(target.seeds())
    started = time.perf_counter()
    try:
        for i in range(inputs):
            if pending:
                data = pending.pop(0)
            else:
                data = rng.choice(corpus) if corpus else b""
                for _ in range(rng.randint(1, MAX_STACKED_MUTATIONS)):
                    mutated = (
                        mutate_own(data, rng)
                        if mutate_own is not None and rng.random() < 0.5
                        else None
                    )
                    data = mutated if mutated is not None else mutate_bytes(data, rng, corpus)
            traced = coverage is not None and i % trace_every == 0
            t0 = time.process_time()
            new_arcs = 0
            if use_alarm:
                signal.setitimer(signal.ITIMER_PROF, budget_s)
            try:
                if traced:
                    assert coverage is not None
                    label, new_arcs = coverage.trace(lambda: target.run(data))
                else:
                    label = target.run(data)
            except Hang:
                label = "HANG"
            except Exception:
                label = "CRASH"
                _keep_example(stats, traceback.format_exc(), data)
            finally:
                if use_alarm:
                    signal.setitimer(signal.ITIMER_PROF, 0)
            elapsed = time.process_time() - t0
            stats.slowest_s = max(stats.slowest_s, elapsed)
            if label == "HANG" or (label != "CRASH" and elapsed > budget_s):
                stats.hangs += 1
                _keep_example(stats, f"hang: {elapsed:.3f} s", data)
                label = "HANG"
            elif label == "CRASH":
                stats.crashes += 1
            stats.inputs += 1
            first_time = stats.outcomes[label] == 0
            stats.outcomes[label] += 1
            if (new_arcs or first_time) and label not in ("CRASH", "HANG"):
                if len(corpus) >= MAX_CORPUS:
                    corpus[rng.randrange(len(corpus))] = data
                else:
                    corpus.append(data)
            elif not corpus:
                corpus.append(data)
            if progress is not None and progress_every and stats.inputs % progress_every == 0:
                stats.seconds = time.perf_counter() - started
                progress(stats)
    finally:
        if use_alarm:
            signal.setitimer(signal.ITIMER_PROF, 0)
            signal.signal(signal.SIGPROF, old_handler)
    stats.seconds = time.perf_counter() - started
    stats.corpus = len(corpus)
    stats.arcs = len(coverage.arcs) if coverage is not None else 0
    return stats


def _keep_example(stats: FuzzStats, text: str, data: bytes) -> None:
    if len(stats.examples) < MAX_EXAMPLES:
        tail = "\n".join(text.strip().splitlines()[-6:])
        stats.examples.append((tail, data))


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
