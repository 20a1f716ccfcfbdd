"""Compiled contract artifacts (ABI + bytecode), committed so Python users need no Node.

Rebuilt by `contracts/build.py`; tests/chain/test_artifacts.py fails when they are stale.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from p2pfl.errors import ChainError

ARTIFACTS_DIR = Path(__file__).resolve().parent / "artifacts"


@functools.cache
def load_artifact(name: str) -> dict[str, Any]:
    """{"abi": [...], "bytecode": "0x...", "deployedBytecode": "0x...", ...} for a contract."""
    path = ARTIFACTS_DIR / f"{name}.json"
    try:
        return json.loads(path.read_text())
    except OSError as exc:
        raise ChainError(f"missing contract artifact {path}; run contracts/build.py") from exc
