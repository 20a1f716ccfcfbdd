"""p2pfl/core stays pure: importing all of it pulls in none of trio, libp2p, web3, torch."""

import pkgutil
import subprocess
import sys

import p2pfl.core

FORBIDDEN = ("trio", "libp2p", "web3", "torch")


def test_core_imports_no_io_or_torch():
    modules = [f"p2pfl.core.{m.name}" for m in pkgutil.iter_modules(p2pfl.core.__path__)]
    assert modules, "no core modules found"
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"bad = sorted(n for n in sys.modules if n.split('.')[0] in {FORBIDDEN!r})\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"core imported: {out.stdout.strip()}"
