"""The house rules, checked on every `make test`: the layers and the pure core
(import-linter contracts in pyproject.toml), no import cycle anywhere in `p2pfl` or `sim`,
and a wheel that installs `p2pfl` only (the simulator runs from the checkout)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import grimp
import pytest
from setuptools import find_packages

ROOT = Path(__file__).resolve().parents[1]


def _lint_imports() -> str:
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert exe, "import-linter is not installed (it is a dev dependency: `make setup`)"
    out = subprocess.run([exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def test_import_linter_contracts_hold():
    report = _lint_imports()
    assert "0 broken" in report or "broken" not in report.split("Contracts:")[-1]
    assert "KEPT" in report


def _cycles(graph: grimp.ImportGraph, modules: set[str]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for root in sorted(modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root) & modules)))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append(
                        (
                            child,
                            iter(sorted(graph.find_modules_directly_imported_by(child) & modules)),
                        )
                    )
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    component.append(m)
                    if m == node:
                        break
                if len(component) > 1:
                    out.append(sorted(component))
    return out


def test_no_import_cycles():
    sys.path.insert(0, str(ROOT))
    try:
        graph = grimp.build_graph("p2pfl", "sim", cache_dir=None)
    finally:
        sys.path.remove(str(ROOT))
    modules = {m for m in graph.modules if m.split(".")[0] in ("p2pfl", "sim")}
    # A package's __init__ re-exporting its submodules is not a cycle of the design.
    for package in [m for m in modules if graph.find_children(m)]:
        for child in graph.find_children(package):
            if graph.direct_import_exists(importer=package, imported=child):
                graph.remove_import(importer=package, imported=child)
    assert _cycles(graph, modules) == []


def test_cycle_finder_finds_a_planted_cycle():
    graph = grimp.ImportGraph()
    for m in ("a", "a.x", "a.y", "a.z"):
        graph.add_module(m)
    graph.add_import(importer="a.x", imported="a.y")
    graph.add_import(importer="a.y", imported="a.z")
    graph.add_import(importer="a.z", imported="a.x")
    assert _cycles(graph, {"a.x", "a.y", "a.z"}) == [["a.x", "a.y", "a.z"]]


def test_wheel_installs_p2pfl_only():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = config["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = find_packages(where=str(ROOT), include=include)
    assert "p2pfl" in packages and "p2pfl.cli" in packages
    assert not [p for p in packages if p.split(".")[0] != "p2pfl"], packages


@pytest.mark.parametrize(
    "back_arrow",
    [
        ("p2pfl/core/cid.py", "import p2pfl.node  # planted\n"),
        ("p2pfl/net/config.py", "import p2pfl.cli.app  # planted\n"),
        ("p2pfl/core/merkle.py", "import time  # planted\n"),
    ],
)
def test_a_planted_back_arrow_breaks_the_contracts(tmp_path, back_arrow):
    """The contracts can fail: a copy of the tree with one forbidden import is refused."""
    copy = tmp_path / "tree"
    shutil.copytree(ROOT / "p2pfl", copy / "p2pfl", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(
        ROOT / "sim", copy / "sim", ignore=shutil.ignore_patterns("__pycache__", "*.md")
    )
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    path, line = back_arrow
    target = copy / path
    text = target.read_text() + "\n"
    target.write_text(text + line)
    planted_at = text.count("\n") + 1
    importer = path.removesuffix(".py").replace("/", ".")
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    out = subprocess.run([exe, "--no-cache"], cwd=copy, capture_output=True, text=True)
    assert out.returncode != 0, out.stdout
    # The copy was analysed (not the installed tree), and the planted line is the one named.
    assert f"{importer} -> " in out.stdout and f"(l.{planted_at})" in out.stdout, out.stdout


def _tool(name: str) -> str:
    exe = shutil.which(name, path=str(Path(sys.executable).parent))
    assert exe, f"{name} is not installed (it is a dev dependency: `make setup`)"
    return exe


def test_ruff_is_clean():
    """The configured rules and line length (pyproject.toml [tool.ruff]) hold everywhere."""
    out = subprocess.run(
        [_tool("ruff"), "check", "--no-cache", "p2pfl", "sim", "tests"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr


def test_mypy_is_clean():
    out = subprocess.run([_tool("mypy"), "p2pfl", "sim"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr
