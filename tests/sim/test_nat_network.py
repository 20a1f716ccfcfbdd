"""`sim.netns.NatNetwork`: two private networks behind MASQUERADE and a public relay host, as
root; what a node behind a NAT can and cannot reach, and nothing left after."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from sim.netns import NatNetwork, leftovers

needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="network namespaces need root (CI runs as root)"
)
PORT = 5000


def in_netns(ns: str, code: str, **kwargs) -> subprocess.Popen[str]:  # type: ignore[no-untyped-def]
    return subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


@needs_root
def test_nodes_reach_out_through_their_nat_and_nothing_reaches_in() -> None:
    with NatNetwork(2) as net:
        assert sorted(leftovers(net.prefix)) == sorted(
            [
                *net.namespaces(),
                net.bridge,
                f"{net.prefix}-hr",
                f"{net.prefix}-h0",
                f"{net.prefix}-h1",
            ]
        )
        server = in_netns(
            net.relay_netns,
            "import socket; s = socket.create_server(('0.0.0.0', %d)); print('ready', flush=True);"
            " c, a = s.accept(); print(a[0])" % PORT,
        )
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        client = in_netns(
            net.node_netns(0),
            f"import socket; socket.create_connection(('{net.relay_address}', {PORT}), timeout=5)",
        )
        assert client.wait(timeout=10) == 0, client.stderr.read() if client.stderr else ""
        seen, _ = server.communicate(timeout=10)
        assert seen.strip() == net.nat_public_address(0)  # masqueraded
        # From the public network: the NAT drops what nobody inside asked for, the private
        # address has no route.
        for target, error in (
            (net.nat_public_address(1), "timed out"),
            (net.node_address(1), "Network is unreachable"),
        ):
            probe = in_netns(
                net.relay_netns,
                f"import socket; socket.create_connection(('{target}', {PORT}), timeout=3)",
            )
            _, err = probe.communicate(timeout=10)
            assert probe.returncode != 0 and error in err, err
    assert leftovers(net.prefix) == []


@needs_root
def test_everything_is_removed_on_failure() -> None:
    net = NatNetwork(1)
    with pytest.raises(KeyboardInterrupt), net:
        assert len(leftovers(net.prefix)) == 6  # relay, nat0, lan0, bridge, hr, h0
        raise KeyboardInterrupt
    assert leftovers(net.prefix) == []
