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
namespace and link: only when no other run is going on).

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


def require_root_and_tools(tools: tuple[str, ...] = ("ip", "tc")) -> None:
    """ConfigError saying what to do unless this process can build namespaces (and has
    `tools`: iproute2's ip and tc, and iptables for NAT)."""
    if os.geteuid() != 0:
        raise ConfigError(
            "network.namespaces needs root (it creates namespaces, veth pairs, a bridge and "
            "tbf qdiscs): run as root or set network.namespaces = false"
        )
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        packages = "iptables" if missing == ["iptables"] else "iproute2 iptables"
        raise ConfigError(
            f"network.namespaces needs {' and '.join(missing)}: "
            f"run scripts/setup.sh or apt-get install {packages}"
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


class _BuiltNetwork:
    """The life cycle both networks share: on entering, check the size (`_check`), root and
    `TOOLS`, turn SIGTERM into an exit while the network is up, build it (`_create`; what
    was made is removed if that fails); on leaving, remove every link and namespace made."""

    TOOLS: tuple[str, ...] = ("ip", "tc")
    prefix: str
    subnet: ipaddress.IPv4Network | None
    created_netns: list[str]
    created_links: list[str]
    _old_sigterm: Any

    @property
    def bridge(self) -> str:
        return f"{self.prefix}-br"

    @property
    def bridge_address(self) -> str:
        """The root namespace's address on the bridge, the network's .1 (anvil listens here)."""
        assert self.subnet is not None
        return str(self.subnet.network_address + 1)

    def _check(self) -> None:
        raise NotImplementedError

    def _create(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Any:
        self._check()
        require_root_and_tools(self.TOOLS)
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

    def remove(self) -> None:
        """Delete every link and namespace this network created (namespaces take their
        interfaces and iptables rules with them); idempotent and best effort: one failure
        does not keep the others."""
        _delete(self.created_links, self.created_netns)
        if self._old_sigterm is not None:
            signal.signal(signal.SIGTERM, self._old_sigterm)
            self._old_sigterm = None


@dataclass
class ShapedNetwork(_BuiltNetwork):
    """A bridge and `nodes` namespaces on veth pairs with tbf at `rate_mbit` (0: no tbf)."""

    nodes: int
    rate_mbit: float = 0.0
    prefix: str = field(default_factory=lambda: NAME_ROOT + secrets.token_hex(2))
    subnet: ipaddress.IPv4Network | None = None
    created_netns: list[str] = field(default_factory=list)
    created_links: list[str] = field(default_factory=list)
    _old_sigterm: Any = None

    def netns(self, i: int) -> str:
        return f"{self.prefix}-{i}"

    def host_link(self, i: int) -> str:
        return f"{self.prefix}-h{i}"

    def node_link(self, i: int) -> str:
        return f"{self.prefix}-n{i}"

    def node_address(self, i: int) -> str:
        assert self.subnet is not None
        return str(self.subnet.network_address + FIRST_NODE_HOST + i)

    def _check(self) -> None:
        if not 1 <= self.nodes <= MAX_NODES:
            raise ConfigError(f"network.namespaces: 1..{MAX_NODES} nodes, not {self.nodes}")

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

    def qdisc_bytes(self) -> dict[str, list[int]]:
        """Bytes each node's tbf qdiscs have sent so far: "up" (netns end), "down" (bridge end)."""
        return {
            "up": [
                _qdisc_sent(["tc", "-n", self.netns(i)], self.node_link(i))
                for i in range(self.nodes)
            ],
            "down": [_qdisc_sent(["tc"], self.host_link(i)) for i in range(self.nodes)],
        }


# NatNetwork: each private network is 192.168.(LAN_THIRD_OCTET + i).0/24 (the NAT .1, the node
# .2), as behind home routers. They live only inside their namespaces, so they cannot clash
# with this machine's own networks; distinct per network so that one node's private address
# never reaches the other's listener by accident.
LAN_THIRD_OCTET = 100
RELAY_HOST = 2  # the relay's address on the public bridge: .2 (the root namespace has .1)
FIRST_NAT_HOST = 10  # NAT i's public address: .(10 + i)
MAX_PRIVATE_NETWORKS = 100


@dataclass
class NatNetwork(_BuiltNetwork):
    """A public network with a relay host, and `private_networks` networks each behind its own
    NAT (Linux MASQUERADE), as root:

        root netns:  bridge <p>-br, P.1/24 ("the internet"; anvil listens here)
          |-- <p>-hr ==veth== <p>-r     in netns <p>-relay, P.2          (public host)
          |-- <p>-h0 ==veth== <p>-w0    in netns <p>-nat0,  P.10         (NAT 0, WAN side)
          |                   <p>-l0    in netns <p>-nat0,  192.168.100.1 (LAN side)
          |                      ==veth== <p>-p0 in netns <p>-lan0, 192.168.100.2, default via .1
          |-- <p>-h1 ... NAT 1 / lan1 on 192.168.101.0/24

    Each NAT namespace forwards (net.ipv4.ip_forward=1) and masquerades what leaves its WAN
    side (`iptables -t nat -A POSTROUTING -o <p>-wI -j MASQUERADE`): a node in lanI reaches the
    public network from P.(10 + I), and nothing on the public network can open a connection
    to it (no route to 192.168.x, and the NAT's own address has no listener). With
    `drop_unsolicited` (the default) the NAT also drops, rather than resets, connections
    nobody inside opened (`iptables -A INPUT -i <p>-wI -m conntrack --ctstate NEW,INVALID -j
    DROP`), as home routers do. That is what lets TCP hole punching work: a peer's SYN that
    arrives before our own SYN has left is dropped instead of answered by a RST that aborts
    our dial, and our SYN then opens the mapping its retransmission comes through. With
    `symmetric` the NAT maps every new connection to a random port (`MASQUERADE
    --random-fully`): the port a peer learnt of is not the one our next dial leaves from, and
    hole punching cannot work. Removing the
    namespaces removes their interfaces, veth peers and iptables rules; the root namespace
    keeps none of our rules. Same exit guarantees and name prefix as `ShapedNetwork`.
    """

    private_networks: int = 2
    # Drop (rather than refuse) connections nobody inside asked for, as home routers do.
    drop_unsolicited: bool = True
    # A symmetric NAT: every new connection leaves from a random port (MASQUERADE
    # --random-fully), so the address a peer observed is not the one a new dial leaves from.
    symmetric: bool = False
    prefix: str = field(default_factory=lambda: NAME_ROOT + secrets.token_hex(2))
    subnet: ipaddress.IPv4Network | None = None
    created_netns: list[str] = field(default_factory=list)
    created_links: list[str] = field(default_factory=list)
    _old_sigterm: Any = None

    @property
    def relay_netns(self) -> str:
        return f"{self.prefix}-relay"

    @property
    def relay_address(self) -> str:
        assert self.subnet is not None
        return str(self.subnet.network_address + RELAY_HOST)

    def nat_netns(self, i: int) -> str:
        return f"{self.prefix}-nat{i}"

    def node_netns(self, i: int) -> str:
        """The namespace of the node behind NAT `i`."""
        return f"{self.prefix}-lan{i}"

    def nat_public_address(self, i: int) -> str:
        """The address NAT `i`'s nodes appear from on the public network."""
        assert self.subnet is not None
        return str(self.subnet.network_address + FIRST_NAT_HOST + i)

    def node_address(self, i: int) -> str:
        """The private address of the node behind NAT `i`."""
        return f"192.168.{LAN_THIRD_OCTET + i}.2"

    def namespaces(self) -> list[str]:
        return [self.relay_netns] + [
            ns
            for i in range(self.private_networks)
            for ns in (self.nat_netns(i), self.node_netns(i))
        ]

    TOOLS = ("ip", "iptables")

    def _check(self) -> None:
        if not 1 <= self.private_networks <= MAX_PRIVATE_NETWORKS:
            raise ConfigError(
                f"NatNetwork: 1..{MAX_PRIVATE_NETWORKS} private networks, "
                f"not {self.private_networks}"
            )

    def _netns(self, name: str) -> str:
        _run("ip", "netns", "add", name)
        self.created_netns.append(name)
        _run("ip", "-n", name, "link", "set", "lo", "up")
        return name

    def _public_host(self, ns: str, outer: str, inner: str, address: str) -> None:
        """A veth from the bridge (`outer`) into `ns` (`inner`, at `address` on the subnet)."""
        assert self.subnet is not None
        _run("ip", "link", "add", outer, "type", "veth", "peer", "name", inner)
        self.created_links.append(outer)
        _run("ip", "link", "set", inner, "netns", ns)
        _run("ip", "link", "set", outer, "master", self.bridge, "up")
        _run("ip", "-n", ns, "addr", "add", f"{address}/{self.subnet.prefixlen}", "dev", inner)
        _run("ip", "-n", ns, "link", "set", inner, "up")

    def _create(self) -> None:
        self.subnet = _free_subnet()
        _run("ip", "link", "add", self.bridge, "type", "bridge")
        self.created_links.append(self.bridge)
        _run(
            "ip",
            "addr",
            "add",
            f"{self.bridge_address}/{self.subnet.prefixlen}",
            "dev",
            self.bridge,
        )
        _run("ip", "link", "set", self.bridge, "up")
        relay = self._netns(self.relay_netns)
        self._public_host(relay, f"{self.prefix}-hr", f"{self.prefix}-r", self.relay_address)
        for i in range(self.private_networks):
            nat, lan = self._netns(self.nat_netns(i)), self._netns(self.node_netns(i))
            wan_if, lan_if, node_if = (f"{self.prefix}-{k}{i}" for k in ("w", "l", "p"))
            self._public_host(nat, f"{self.prefix}-h{i}", wan_if, self.nat_public_address(i))
            gateway = f"192.168.{LAN_THIRD_OCTET + i}.1"
            # Created inside the NAT namespace, so nothing of the LAN side touches the root one.
            _run("ip", "-n", nat, "link", "add", lan_if, "type", "veth", "peer", "name", node_if)
            _run("ip", "-n", nat, "link", "set", node_if, "netns", lan)
            _run("ip", "-n", nat, "addr", "add", f"{gateway}/24", "dev", lan_if)
            _run("ip", "-n", nat, "link", "set", lan_if, "up")
            _run("ip", "-n", lan, "addr", "add", f"{self.node_address(i)}/24", "dev", node_if)
            _run("ip", "-n", lan, "link", "set", node_if, "up")
            _run("ip", "-n", lan, "route", "add", "default", "via", gateway)
            _run("ip", "netns", "exec", nat, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
            _run(
                "ip", "netns", "exec", nat,
                "iptables", "-t", "nat", "-A", "POSTROUTING", "-o", wan_if, "-j", "MASQUERADE",
                *(["--random-fully"] if self.symmetric else []),
            )  # fmt: skip
            if self.drop_unsolicited:
                # A new connection from outside to the NAT itself (replies to ours are
                # translated before INPUT and forwarded inside) is dropped without a reset.
                _run(
                    "ip", "netns", "exec", nat, "iptables", "-A", "INPUT", "-i", wan_if,
                    "-m", "conntrack", "--ctstate", "NEW,INVALID", "-j", "DROP",
                )  # fmt: skip


def _delete(links: list[str], netns: list[str]) -> None:
    """Delete `links` then `netns` (newest first), best effort, and empty both lists. A
    namespace takes its interfaces, their veth peers and its iptables rules with it."""
    errors = []
    for link in reversed(links):  # veths first (their peers go too), bridge last
        out = subprocess.run(
            ["ip", "link", "del", link], capture_output=True, text=True, check=False
        )
        if out.returncode != 0 and "Cannot find device" not in out.stderr:
            errors.append(out.stderr.strip())
    for ns in reversed(netns):
        out = subprocess.run(
            ["ip", "netns", "del", ns], capture_output=True, text=True, check=False
        )
        if out.returncode != 0 and "No such file" not in out.stderr:
            errors.append(out.stderr.strip())
    links.clear()
    netns.clear()
    if errors:
        print(f"sim.netns: clean-up left errors: {errors}", file=sys.stderr)


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
