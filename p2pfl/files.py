"""File helpers shared by the node's state files (status, chain cursor, rewards, strikes,
round records)."""

from __future__ import annotations

import os
from pathlib import Path


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write `text` to `path` so that a reader, or a node restarted after a kill, sees the
    old content or the new one, never a torn file: write `<name>.tmp` beside it, then
    rename it over `path` (atomic on POSIX). Returns the path."""
    return write_bytes_atomic(path, text.encode())


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """`write_text_atomic` for bytes."""
    target = Path(path)
    tmp = target.with_suffix(target.suffix + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, target)
    return target
