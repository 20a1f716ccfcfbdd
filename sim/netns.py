"""Shaped links for `--processes` runs: each node process in its own Linux network namespace.

    [network]
    namespaces = true
    rate_mbit = 20.0        # tbf on both directions of every node's link; 0: unshaped

The run builds, as root, one private L2 network in the root namespace:

    root netns:  bridge <prefix>-br, address 10.213.S.1/24  (anvil listens here)
                   |-- <prefix>-h0 ==veth== <prefix>-n0  in netns <prefix>-0, 10.213.S.10
                   |-- <prefix>-h1 ==veth== <prefix>-n1  in netns <prefix>-1, 10.213.S.11
                   ...

and a `tbf` qdisc at `rate_mbit` on both ends of each veth pair: the netns end's egress
shapes what the node uploads, the bridge end's egress what it downloads (a qdisc shapes
only what leaves an interface). Traffic between two nodes thus crosses the sender's upload
and the receiver's download, as between two hosts behind their own access links. This
kernel has tbf but no netem: bandwidth only, no added latency or loss (say so beside any
figure).

`ShapedNetwork` is a context manager; everything it created is removed on exit, on
failure and on Ctrl-C (SIGTERM is turned into the same exit while it is open). Names carry
a run-unique prefix (`pfl` + 4 hex digits: interface names are at most 15 bytes), so runs
side by side do not collide; each run takes a /24 no interface of this machine uses.
`python -m sim.netns --clean` removes what a SIGKILLed run left behind (every `pfl*`
namespace and link).

A node process enters its namespace with `enter_netns(name)` right after it is forked and
before it opens any socket (setns(2) on /run/netns/NAME, as `ip netns exec` does): the fork
server and its preloaded imports stay shared, and the child's later threads inherit the
namespace.
"""

from __future__ import annotations

import ctypes
import ipaddress
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from types import FrameType, TracebackType
from typing import Any

from p2pfl.errors import ConfigError, P2PFLError

# The run-unique name prefix: "pfl" + 4 hex digits. Every name the run creates starts with
# it; `clean_stale` removes anything starting with NAME_ROOT.
NAME_ROOT = "pfl"
# 10.213.0.0/16: one /24 per run (the bridge .1, node i at .(10 + i)). Private, and not a
# range Docker, libvirt or a home router hands out by default.
SUBNET_POOL = ipaddress.IPv4Network("10.213.0.0/16")
FIRST_NODE_HOST = 10
MAX_NODES = 240  # .10 .. .249 of a /24
# tbf's bucket: 10 ms of traffic at the rate, at least 4 full-size frames (a bucket
# smaller than a frame passes nothing; the kernel splits GSO super-packets to fit).
BURST_S = 0.010
MIN_BURST_BYTES = 4 * 1514
# The qdisc's queue, in time at the rate: beyond it tbf drops (TCP backs off). 50 ms is
# the usual choice for an access link (wondershaper); no latency is added below it.
QUEUE_LATENCY_MS = 50
# Where `ip netns add` mounts a namespace (iproute2).
NETNS_RUN_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000  # <sched.h>
COMMAND_TIMEOUT_S = 20.0


class NetnsError(P2PFLError):
    """A network namespace, link or qdisc could not be created or removed."""


def require_root_and_tools() -> None:
    """ConfigError saying what to do unless this process can build namespaces."""
    if os.geteuid() != 0:
        raise ConfigError(
            "network.namespaces needs root (it creates namespaces, veth pairs, a bridge and "
            "tbf qdiscs): run as root or set network.namespaces = false"
        )
    missing = [tool for tool in ("ip", "tc") if shutil.which(tool) is None]
    if missing:
        raise ConfigError(
            f"network.namespaces needs {' and '.join(missing)} (iproute2): "
            "run scripts/setup.sh or apt-get install iproute2"
        )


def _run(*argv: str, check: bool = True) -> str:
    proc = subprocess.run(
        argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False
    )
    if check and proc.returncode != 0:
        raise NetnsError(f"`{' '.join(argv)}` failed: {proc.stderr.strip() or proc.returncode}")
    return proc.stdout


def tbf_args(rate_mbit: float) -> list[str]:
    """`tc qdisc add ... tbf` arguments for `rate_mbit` (burst and queue as above)."""
    rate_bytes_s = rate_mbit * 1e6 / 8
    burst = max(int(rate_bytes_s * BURST_S), MIN_BURST_BYTES)
    return [
        "tbf",
        "rate",
        f"{int(rate_mbit * 1e6)}bit",
        "burst",
        str(burst),
        "latency",
        f"{QUEUE_LATENCY_MS}ms",
    ]


def _used_networks() -> list[ipaddress.IPv4Network]:
    out = json.loads(_run("ip", "-j", "-4", "addr", "show") or "[]")
    return [
        ipaddress.IPv4Interface(f"{a['local']}/{a['prefixlen']}").network
        for link in out
        for a in link.get("addr_info", [])
    ]


def _free_subnet() -> ipaddress.IPv4Network:
    used = _used_networks()
    candidates = list(SUBNET_POOL.subnets(new_prefix=24))
    start = secrets.randbelow(len(candidates))
    for k in range(len(candidates)):
        net = candidates[(start + k) % len(candidates)]
        if not any(net.overlaps(u) for u in used):
            return net
    raise NetnsError(f"no free /24 left in {SUBNET_POOL}: remove stale runs (--clean)")


@dataclass
class ShapedNetwork:
    """A bridge and `nodes` namespaces on veth pairs with tbf at `rate_mbit` (0: no tbf)."""

    nodes: int
    rate_mbit: float = 0.0
    prefix: str = field(default_factory=lambda: NAME_ROOT + secrets.token_hex(2))
    subnet: ipaddress.IPv4Network | None = None
    created_netns: list[str] = field(default_factory=list)
    created_links: list[str] = field(default_factory=list)
    _old_sigterm: Any = None

    @property
    def bridge(self) -> str:
        return f"{self.prefix}-br"

    @property
    def bridge_address(self) -> str:
        """The root namespace's address on the bridge (anvil listens here)."""
        assert self.subnet is not None
        return str(self.subnet.network_address + 1)

    def netns(self, i: int) -> str:
        return f"{self.prefix}-{i}"

    def host_link(self, i: int) -> str:
        return f"{self.prefix}-h{i}"

    def node_link(self, i: int) -> str:
        return f"{self.prefix}-n{i}"

    def node_address(self, i: int) -> str:
        assert self.subnet is not None
        return str(self.subnet.network_address + FIRST_NODE_HOST + i)

    def __enter__(self) -> ShapedNetwork:
        if not 1 <= self.nodes <= MAX_NODES:
            raise ConfigError(f"network.namespaces: 1..{MAX_NODES} nodes, not {self.nodes}")
        require_root_and_tools()
        if threading_main():
            self._old_sigterm = signal.signal(signal.SIGTERM, _sigterm_as_exit)
        try:
            self._create()
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.remove()

    def _create(self) -> None:
        self.subnet = _free_subnet()
        plen = self.subnet.prefixlen
        _run("ip", "link", "add", self.bridge, "type", "bridge")
        self.created_links.append(self.bridge)
        _run("ip", "addr", "add", f"{self.bridge_address}/{plen}", "dev", self.bridge)
        _run("ip", "link", "set", self.bridge, "up")
        shaping = tbf_args(self.rate_mbit) if self.rate_mbit > 0 else []
        for i in range(self.nodes):
            ns, host, inner = self.netns(i), self.host_link(i), self.node_link(i)
            _run("ip", "netns", "add", ns)
            self.created_netns.append(ns)
            _run("ip", "link", "add", host, "type", "veth", "peer", "name", inner)
            self.created_links.append(host)
            _run("ip", "link", "set", inner, "netns", ns)
            _run("ip", "link", "set", host, "master", self.bridge, "up")
            _run("ip", "-n", ns, "addr", "add", f"{self.node_address(i)}/{plen}", "dev", inner)
            _run("ip", "-n", ns, "link", "set", inner, "up")
            _run("ip", "-n", ns, "link", "set", "lo", "up")
            if shaping:
                _run("tc", "qdisc", "add", "dev", host, "root", *shaping)
                _run("tc", "-n", ns, "qdisc", "add", "dev", inner, "root", *shaping)

    def remove(self) -> None:
        """Delete every link and namespace this network created (idempotent; best effort:
        one failure does not keep the others)."""
        errors = []
        for link in reversed(self.created_links):  # veths first (their peers go too), bridge last
            out = subprocess.run(
                ["ip", "link", "del", link], capture_output=True, text=True, check=False
            )
            if out.returncode != 0 and "Cannot find device" not in out.stderr:
                errors.append(out.stderr.strip())
        for ns in reversed(self.created_netns):
            out = subprocess.run(
                ["ip", "netns", "del", ns], capture_output=True, text=True, check=False
            )
            if out.returncode != 0 and "No such file" not in out.stderr:
                errors.append(out.stderr.strip())
        self.created_links.clear()
        self.created_netns.clear()
        if self._old_sigterm is not None:
            signal.signal(signal.SIGTERM, self._old_sigterm)
            self._old_sigterm = None
        if errors:
            print(f"sim.netns: clean-up left errors: {errors}", file=sys.stderr)

    def qdisc_bytes(self) -> dict[str, list[int]]:
        """Bytes each node's tbf qdiscs have sent so far: "up" (netns end), "down" (bridge end)."""
        return {
            "up": [
                _qdisc_sent(["tc", "-n", self.netns(i)], self.node_link(i))
                for i in range(self.nodes)
            ],
            "down": [_qdisc_sent(["tc"], self.host_link(i)) for i in range(self.nodes)],
        }


def _qdisc_sent(tc: list[str], dev: str) -> int:
    out = json.loads(_run(*tc, "-s", "-j", "qdisc", "show", "dev", dev) or "[]")
    return sum(int(q.get("bytes", 0)) for q in out if q.get("kind") == "tbf")


def threading_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _sigterm_as_exit(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def enter_netns(name: str) -> None:
    """Move the calling thread (a freshly forked, single-threaded node process) into the
    network namespace `name` (setns(2); Python 3.12's os.setns is not here yet)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(os.path.join(NETNS_RUN_DIR, name), os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise NetnsError(f"setns into network namespace {name}: {os.strerror(err)}")
    finally:
        os.close(fd)


def leftovers(prefix: str = NAME_ROOT) -> list[str]:
    """Namespaces and root-namespace links whose names start with `prefix`."""
    names = [line.split()[0] for line in _run("ip", "netns", "list").splitlines() if line.strip()]
    links = [link["ifname"] for link in json.loads(_run("ip", "-j", "link", "show") or "[]")]
    return [n for n in names + links if n.startswith(prefix)]


def clean_stale(prefix: str = NAME_ROOT) -> list[str]:
    """Remove every namespace and link named `prefix*` (what a SIGKILLed run left)."""
    gone = leftovers(prefix)
    for name in gone:
        subprocess.run(["ip", "link", "del", name], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
    return gone


def main(argv: list[str]) -> int:
    if argv != ["--clean"]:
        print("usage: python -m sim.netns --clean", file=sys.stderr)
        return 2
    require_root_and_tools()
    for name in clean_stale():
        print(f"removed {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
