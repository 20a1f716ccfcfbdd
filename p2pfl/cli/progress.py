"""Progress lines for long CLI work (training epochs, model fetches), on stderr.

Plain lines, no carriage returns or bars: they read the same in a terminal and in a log
file. Shown when stderr is a terminal (or `P2PFL_PROGRESS=1` asks for them anyway, e.g.
under a supervisor that keeps the output); `-q`/`--quiet` turns them off. The producers
(the node's training, model fetches) limit themselves to about a line a second.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from typing import TextIO

# The producers take this: one line of text (None: no progress wanted).
Progress = Callable[[str], None]


def progress_printer(quiet: bool, stream: TextIO | None = None) -> Progress | None:
    """Where progress lines go for this invocation, or None when they are off."""
    out = stream if stream is not None else sys.stderr
    if quiet:
        return None
    if not (out.isatty() or os.environ.get("P2PFL_PROGRESS") == "1"):
        return None
    lock = threading.Lock()  # training reports from a worker thread, fetches from trio

    def emit(text: str) -> None:
        with lock:
            print(text, file=out, flush=True)

    return emit
