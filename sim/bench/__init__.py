"""Benchmarks: `python -m sim.bench NAME` prints `figure-name: value unit` lines.

Each benchmark is a module `sim/bench/<name>.py` exposing `run() -> None` that prints
its figures (headline last) and raises `BenchError` only when it could not measure.
"""

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT_DIR = Path(__file__).resolve().parents[2]
# A child process has this long to print a line it is waited for.
CHILD_START_TIMEOUT_S = 60.0


class BenchError(Exception):
    """The benchmark could not measure (missing tool, failed set-up)."""


def figure(name: str, value: float | int | str, unit: str) -> None:
    """Print one figure in the conventional `name: value unit` form."""
    if isinstance(value, float):
        text = f"{value:.4g}" if abs(value) < 1e5 else f"{value:.0f}"
    else:
        text = str(value)
    print(f"{name}: {text} {unit}", flush=True)


class ChildProcess:
    """A benchmark's helper process (`python -m MODULE --child ARGS...`) whose output lines
    are read back by prefix; stopped by PID."""

    def __init__(self, module: str, *args: str) -> None:
        self.out = tempfile.TemporaryFile("w+")
        self.p = subprocess.Popen(
            [sys.executable, "-m", module, "--child", *args],
            cwd=ROOT_DIR,
            stdout=self.out,
            stderr=subprocess.STDOUT,
        )

    def wait_for(self, prefix: str, timeout_s: float = CHILD_START_TIMEOUT_S) -> str:
        """The rest of the first output line that starts with `prefix `."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.out.seek(0)
            for line in self.out.read().splitlines():
                if line.startswith(prefix + " "):
                    return line.split(" ", 1)[1].strip()
            if self.p.poll() is not None:
                self.out.seek(0)
                raise BenchError(f"child exited: {self.out.read()[-2000:]}")
            time.sleep(0.05)
        raise BenchError(f"child printed no {prefix} in {timeout_s:.0f} s")

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def rss_mib(pid: int) -> float:
    """Resident set size of a process, MiB (from /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise BenchError("no VmRSS in /proc")
