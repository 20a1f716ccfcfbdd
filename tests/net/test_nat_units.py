"""NAT traversal settings (p2pfl.net.nat, NetConfig): checked before any host starts, and
nothing of it runs unless asked. The behaviour itself is in tests/net/test_nat.py (root)."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from p2pfl.errors import ConfigError
from p2pfl.net import NetConfig, open_node_host
from p2pfl.net.nat import is_circuit_addr
from tests.net.conftest import key

RELAY = "/ip4/203.0.113.7/tcp/4001/p2p/16Uiu2HAm4mLiwfYmJLDQ3cPjN4Rr4eubVvuiGpRxRHyKW6LS4Vn5"
PEER = "16Uiu2HAmQMBCfm2QL5TMYLqX47caNszHyPxeEYWPtdzrdnyFBhvS"


def test_relay_addresses_are_checked(tmp_path: Path) -> None:
    for bad in ("/ip4/203.0.113.7/tcp/4001", f"{RELAY}/p2p-circuit/p2p/{PEER}"):
        with pytest.raises(ConfigError, match="relay address"):
            NetConfig(data_dir=tmp_path, relays=(bad,))
    # A circuit address is a fine bootstrap peer.
    assert NetConfig(data_dir=tmp_path, bootstrap=(f"{RELAY}/p2p-circuit/p2p/{PEER}",))


def test_circuit_addresses_are_recognised() -> None:
    assert is_circuit_addr(f"{RELAY}/p2p-circuit/p2p/{PEER}")
    assert not is_circuit_addr(RELAY)


def test_off_by_default(tmp_path: Path) -> None:
    async def main() -> None:
        async with open_node_host(NetConfig(data_dir=tmp_path), key(1)) as net:
            assert net.nat.protocol is None and net.nat.autonat is None
            assert net.reachability == "unknown" and net.nat.circuit_addrs == []
            with pytest.raises(ConfigError, match="relay client"):
                await net.connect(f"{RELAY}/p2p-circuit/p2p/{PEER}")

    trio.run(main)
