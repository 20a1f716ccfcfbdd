"""Compile contracts/*.sol with the pinned solcjs and write p2pfl/chain/artifacts/<Name>.json.

Usage (from the repo root): `.venv/bin/python contracts/build.py [--check]`.
`--check` compiles into memory and exits 1 if the committed artifacts differ (stale).

The settings are pinned so that artifacts are reproducible byte for byte: solc
0.8.37 (tools/package.json), optimizer on with 10000 runs (contracts are deployed once
and called every round: measured -1.1k gas per commit vs 200 runs, code stays < 11 KB),
via-IR (commitRound has too many locals for the legacy pipeline), evmVersion "prague"
(what py-evm and anvil run), no metadata hash (so that comments or paths do not change
the bytecode).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONTRACTS_DIR = ROOT / "contracts"
ARTIFACTS_DIR = ROOT / "p2pfl" / "chain" / "artifacts"
SOLCJS = ROOT / "tools" / "node_modules" / ".bin" / "solcjs"
SOLC_VERSION = "0.8.37"
CONTRACTS = ("NodeRegistry", "RoundLedger")

SETTINGS = {
    "optimizer": {"enabled": True, "runs": 10000},
    "evmVersion": "prague",
    "viaIR": True,
    "metadata": {"bytecodeHash": "none", "appendCBOR": False},
    "outputSelection": {"*": {"*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"]}},
}


def standard_input() -> dict:
    """The solc standard-JSON input for every source in contracts/."""
    sources = {p.name: {"content": p.read_text()} for p in sorted(CONTRACTS_DIR.glob("*.sol"))}
    return {"language": "Solidity", "sources": sources, "settings": SETTINGS}


def compile_all() -> dict[str, str]:
    """Compile; returns {artifact file name: JSON text}. Raises RuntimeError on errors."""
    if not SOLCJS.exists():
        raise RuntimeError(f"{SOLCJS} not found: run scripts/setup.sh (npm ci in tools/)")
    # stdout goes to a file: node may exit before a large write to a pipe is flushed.
    with tempfile.TemporaryFile(mode="w+") as sink:
        proc = subprocess.run(
            [str(SOLCJS), "--standard-json", "--base-path", str(CONTRACTS_DIR)],
            input=json.dumps(standard_input()).encode(),
            stdout=sink,
            stderr=subprocess.PIPE,
            check=False,
            cwd=CONTRACTS_DIR,
        )
        sink.seek(0)
        stdout = sink.read()
    # solcjs may print warnings before the JSON; the JSON starts at the first '{'.
    text = stdout[stdout.index("{") :] if "{" in stdout else ""
    if not text:
        raise RuntimeError(f"solcjs produced no output: {proc.stderr.decode().strip()}")
    out = json.loads(text)
    errors = [e for e in out.get("errors", []) if e.get("severity") == "error"]
    if errors:
        raise RuntimeError(
            "\n".join(e.get("formattedMessage", e.get("message", "")) for e in errors)
        )
    result = {}
    for name in CONTRACTS:
        c = out["contracts"][f"{name}.sol"][name]
        artifact = {
            "contractName": name,
            "compiler": f"solcjs {SOLC_VERSION}",
            "settings": {k: v for k, v in SETTINGS.items() if k != "outputSelection"},
            "abi": c["abi"],
            "bytecode": "0x" + c["evm"]["bytecode"]["object"],
            "deployedBytecode": "0x" + c["evm"]["deployedBytecode"]["object"],
        }
        result[f"{name}.json"] = json.dumps(artifact, indent=1, sort_keys=True) + "\n"
    return result


def main(argv: list[str]) -> int:
    check = "--check" in argv
    artifacts = compile_all()
    stale = []
    for fname, text in artifacts.items():
        path = ARTIFACTS_DIR / fname
        current = path.read_text() if path.exists() else None
        if current != text:
            stale.append(fname)
            if not check:
                ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
    if check:
        if stale:
            print(f"stale artifacts: {', '.join(stale)} (run contracts/build.py)", file=sys.stderr)
            return 1
        print("artifacts up to date")
        return 0
    for fname in artifacts:
        size = len(json.loads(artifacts[fname])["deployedBytecode"]) // 2 - 1
        print(f"{fname}: {size} bytes runtime{' (written)' if fname in stale else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
