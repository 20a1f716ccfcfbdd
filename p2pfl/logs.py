"""Logging set-up: quiet for people by default, JSON lines for machines on request."""

from __future__ import annotations

import json
import logging
import sys
import time
import warnings

# Dependencies that log chatter at INFO/WARNING during normal operation.
NOISY_LOGGERS = ("libp2p", "multiaddr", "web3", "eth", "urllib3", "asyncio", "matplotlib", "PIL")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "t": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            entry.update(extra)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def setup_logging(verbose: int = 0, json_lines: bool = False) -> None:
    """Configure the root logger once: WARNING by default, -v INFO, -vv DEBUG."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    if json_lines:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
        )
        logging.Formatter.converter = time.localtime
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Dependencies stay at ERROR unless the user asked for debug output.
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if verbose >= 2 else logging.ERROR)
    if verbose < 2:
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module="libp2p")
