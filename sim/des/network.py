"""The network model: a gossipsub mesh overlay for the topics, and per-node links with
FIFO serialisation for block transfers.

Gossip. Each topic's mesh is a random D-regular overlay (D = 6, gossipsub's default),
with a seeded one-way latency per mesh link, uniform in [min, max]. A node forwards a
message it validated to its mesh peers once, so a message reaches node v along the
fastest path of the overlay: arrival = published + sum over the path of (link latency +
the forwarder's validation + its D copies serialised on its up-link). Paths are computed
once per source (Dijkstra over the overlay, scipy) and reused for every message; the
per-hop cost is added as hops x (validate + D x size / bandwidth). Gossip messages are
small (updates carry a CID, not the delta, above 16 KiB): they are not queued behind
block transfers (an approximation; a 20 Mbit/s link sends a 300-byte message in 0.1 ms).

Bytes. Every online node sends and receives about D - 1 copies of each message
(first copy in, forwards out to the mesh peers that have not sent it); counted per node.

Block transfers (deltas, models) take size / bandwidth on the holder's up-link and the
fetcher's down-link, each a FIFO queue: a transfer ends when the later of its two slots
ends (a serialisation model, no fair sharing; see `Links.transfer`).
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import dijkstra

from sim.des.scenario import NetworkSection


class Overlay:
    """The mesh: latency-shortest paths and their hop counts from each source (cached)."""

    def __init__(self, n: int, spec: NetworkSection, rng: np.random.Generator) -> None:
        self.n = n
        self.spec = spec
        d = min(spec.degree, n - 1)
        # d/2 random cycles (a random permutation each) give a connected d-regular graph;
        # an odd d adds one random matching.
        edges: set[tuple[int, int]] = set()
        for _ in range(max(1, d // 2)):
            order = rng.permutation(n)
            for i in range(n):
                a, b = int(order[i]), int(order[(i + 1) % n])
                if a != b:
                    edges.add((min(a, b), max(a, b)))
        if d % 2 and n > 2:
            order = rng.permutation(n)
            for i in range(0, n - 1, 2):
                a, b = int(order[i]), int(order[i + 1])
                edges.add((min(a, b), max(a, b)))
        pairs = np.array(sorted(edges), dtype=np.int64)
        lat = rng.uniform(spec.latency_min_s, spec.latency_max_s, len(pairs))
        rows = np.concatenate([pairs[:, 0], pairs[:, 1]])
        cols = np.concatenate([pairs[:, 1], pairs[:, 0]])
        self._latency = csr_matrix((np.concatenate([lat, lat]), (rows, cols)), shape=(n, n))
        self._hops = csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
        self.degree = np.bincount(rows, minlength=n)
        self._paths: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._seed = int(rng.integers(2**31))

    def paths_from(self, src: int) -> tuple[np.ndarray, np.ndarray]:
        """(latency, hops) of the fastest overlay path from `src` to every node."""
        cached = self._paths.get(src)
        if cached is None:
            lat, pred = dijkstra(self._latency, indices=src, return_predecessors=True)
            hops = np.zeros(self.n)
            order = np.argsort(lat)
            for v in order[1:]:  # predecessors come first in latency order
                hops[v] = hops[pred[v]] + 1
            cached = self._paths[src] = (lat, hops)
        return cached

    def arrivals(self, src: int, size_bytes: int) -> np.ndarray:
        """Seconds after publishing at which each node has the message (src: 0)."""
        lat, hops = self.paths_from(src)
        per_hop = self.spec.validate_s + self.spec.degree * size_bytes * 8 / self.bandwidth_bps
        return lat + hops * per_hop  # type: ignore[no-any-return]

    @property
    def bandwidth_bps(self) -> float:
        return self.spec.bandwidth_mbit * 1e6

    def direct_latency(self, a: int, b: int) -> float:
        """One-way latency of a direct connection a-b (for block transfers), seeded."""
        lo, hi = min(a, b), max(a, b)
        h = (lo * 0x9E3779B1 ^ hi * 0x85EBCA77 ^ self._seed) & 0xFFFFFFFF
        h = (h ^ (h >> 15)) * 0x2C1B3C6D & 0xFFFFFFFF
        frac = ((h ^ (h >> 12)) & 0xFFFFFF) / float(1 << 24)
        return self.spec.latency_min_s + frac * (self.spec.latency_max_s - self.spec.latency_min_s)


class Links:
    """Per-node up- and down-links as FIFO serialisation queues, and byte counters."""

    def __init__(self, n: int, bandwidth_bps: float) -> None:
        self.bandwidth_bps = bandwidth_bps
        self.up_free = np.zeros(n)
        self.down_free = np.zeros(n)
        self.bytes_up = np.zeros(n, dtype=np.int64)
        self.bytes_down = np.zeros(n, dtype=np.int64)

    def transfer(self, holder: int, fetcher: int, size_bytes: int, request_at: float) -> float:
        """Queue one transfer on both links; returns when the last byte is sent.

        Each link serves its own queue in FIFO order and is busy size / bandwidth for it;
        the transfer ends when the later of its two slots ends. (Holding both links for
        the union of the two waits would leave a fetcher's link idle while one busy holder
        is waited for: head-of-line blocking that parallel fetches from many holders do
        not have.)"""
        seconds = size_bytes * 8 / self.bandwidth_bps
        up_start = max(request_at, self.up_free[holder])
        down_start = max(request_at, self.down_free[fetcher])
        self.up_free[holder] = up_start + seconds
        self.down_free[fetcher] = down_start + seconds
        end = max(up_start, down_start) + seconds
        self.bytes_up[holder] += size_bytes
        self.bytes_down[fetcher] += size_bytes
        return float(end)

    def count_gossip(self, src: int, online: np.ndarray, degree: np.ndarray, size: int) -> None:
        """One message flooded over the mesh: D - 1 copies in and out per online node."""
        copies = np.maximum(degree - 1, 1) * online
        self.bytes_up += copies * size
        self.bytes_down += copies * size
        self.bytes_up[src] += size
