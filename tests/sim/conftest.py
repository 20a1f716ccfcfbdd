"""Helpers shared by the simulation tests."""

from __future__ import annotations

import os


def alive(pid: int) -> bool:
    """True if a process with this PID still exists (signal 0 checks, sends nothing)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
