"""Committed artifacts are what contracts/build.py produces from the sources."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

from p2pfl.chain.artifacts import ARTIFACTS_DIR, load_artifact

ROOT = Path(__file__).resolve().parents[2]


def test_artifacts_load_without_node() -> None:
    for name in ("NodeRegistry", "RoundLedger"):
        art = load_artifact(name)
        assert art["bytecode"].startswith("0x6") and len(art["abi"]) > 10
        assert art["settings"]["evmVersion"] == "prague"


@pytest.mark.skipif(
    shutil.which("node") is None, reason="node not installed: artifacts cannot be rebuilt here"
)
def test_committed_artifacts_are_fresh() -> None:
    spec = importlib.util.spec_from_file_location(
        "contracts_build", ROOT / "contracts" / "build.py"
    )
    build = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(build)
    fresh = build.compile_all()
    stale = [f for f, text in fresh.items() if (ARTIFACTS_DIR / f).read_text() != text]
    assert not stale, f"stale artifacts {stale}: run .venv/bin/python contracts/build.py and commit"
