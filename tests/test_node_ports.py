"""The node reaches the chain and the network only through `ChainPort` and `NodeNet`
(p2pfl.node.ports); the real backends must provide every member, with its parameters."""

from __future__ import annotations

import inspect

import pytest

from p2pfl.chain.client import ChainClient
from p2pfl.net.host import NodeNet as HostNet
from p2pfl.node.ports import ChainPort, NodeNet


def _methods(protocol: type) -> list[str]:
    return sorted(n for n, v in vars(protocol).items() if not n.startswith("_") and callable(v))


def _parameters(fn: object) -> list[tuple[str, object]]:
    return [(p.name, p.kind) for p in inspect.signature(fn).parameters.values()]  # type: ignore[arg-type]


@pytest.mark.parametrize(("port", "real"), [(ChainPort, ChainClient), (NodeNet, HostNet)])
def test_the_real_backend_provides_every_port_member(port: type, real: type) -> None:
    methods = _methods(port)
    assert methods, f"{port.__name__} lists no methods"
    for name in methods:
        provided = getattr(real, name, None)
        assert callable(provided), f"{real.__name__} lacks {port.__name__}.{name}"
        want = _parameters(getattr(port, name))
        have = _parameters(provided)
        assert have[: len(want)] == want, (
            f"{real.__name__}.{name}{have} differs from {port.__name__}.{name}{want}"
        )
        assert all(
            p.default is not inspect.Parameter.empty
            for p in list(inspect.signature(provided).parameters.values())[len(want) :]
        ), name
        assert inspect.iscoroutinefunction(provided) == inspect.iscoroutinefunction(
            getattr(port, name)
        ), name
    for name in getattr(port, "__annotations__", {}):  # data members: a property or set in __init__
        assert hasattr(real, name) or f"self.{name} =" in inspect.getsource(real.__init__), (  # type: ignore[misc]
            f"{real.__name__} lacks attribute {name}"
        )


def test_chain_port_lists_exactly_the_calls_the_node_makes() -> None:
    """Every `chain.<name>` the node package uses is a ChainPort member, and nothing else is."""
    import pathlib
    import re

    import p2pfl.node

    used = set()
    for path in pathlib.Path(p2pfl.node.__file__).parent.glob("*.py"):
        used |= set(re.findall(r"(?<![\w.])(?:self\.)?chain\.(\w+)", path.read_text()))
    used |= {"block_number", "commits"}  # the CommitFollower's, on the node's behalf
    assert used == set(_methods(ChainPort))
