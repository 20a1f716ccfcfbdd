"""Per-peer limits, scores, bans and counters: how the node stays up when peers misbehave.

Pure bookkeeping (no sockets); time comes in as an argument or from a clock function, so the
rules are testable without sleeping. The host layer calls `PeerBook.offence()` when a peer
sends garbage, oversized data, blocks that do not match their CID or messages the validator
rejects; when a peer's score falls to the threshold the book bans it and calls `on_ban`, which
the host uses to disconnect it and refuse its streams for `ban_s` seconds.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum


class Offence(Enum):
    """Misbehaviour the network layer detects, with how much each lowers a peer's score.

    Weights: anything that cannot happen by accident with an honest peer (bytes that do not
    hash to their CID, undecodable frames, oversized data) costs a third or more of the ban
    threshold, so three strikes ban; a message the validator rejects may be an honest relay
    of something stale, so it costs little and only a flood bans.
    """

    BAD_BLOCK = 50.0  # block bytes do not match the CID asked for
    MALFORMED_FRAME = 40.0  # a stream frame we cannot parse
    OVERSIZED = 40.0  # a block, message or frame over our limits
    REJECTED_MESSAGE = 5.0  # the node's validator said reject
    RATE_LIMITED = 2.0  # asked faster than the per-peer rate
    TIMEOUT = 1.0  # did not answer a block request in time


class TokenBucket:
    """Classic token bucket: `rate` tokens per second, at most `burst` saved up."""

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = now

    def take(self, now: float, amount: float = 1.0) -> bool:
        """Spend `amount` tokens if available; False (nothing spent) otherwise."""
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= amount:
            self.tokens -= amount
            return True
        return False

    def delay_for(self, now: float, amount: float = 1.0) -> float:
        """Seconds until `amount` tokens will be available (0 if now)."""
        tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        return 0.0 if tokens >= amount else (amount - tokens) / self.rate


class Metrics:
    """Named counters, plus per-reason and per-peer breakdowns of rejections."""

    def __init__(self) -> None:
        self.counters: Counter[str] = Counter()
        self.rejections_by_reason: Counter[str] = Counter()
        self.rejections_by_peer: Counter[str] = Counter()

    def inc(self, name: str, amount: int = 1) -> None:
        """Add `amount` to counter `name`."""
        self.counters[name] += amount

    def reject(self, reason: str, peer: str) -> None:
        """Count one rejected input, by reason and by the peer that sent it."""
        self.counters["rejected"] += 1
        self.rejections_by_reason[reason] += 1
        self.rejections_by_peer[peer] += 1

    def snapshot(self) -> dict[str, object]:
        """A plain dict copy, for logs, reports and tests."""
        return {
            **dict(self.counters),
            "rejections_by_reason": dict(self.rejections_by_reason),
            "rejections_by_peer": dict(self.rejections_by_peer),
        }


@dataclass
class _PeerState:
    score: float = 0.0
    banned_until: float = 0.0
    buckets: dict[str, TokenBucket] = field(default_factory=dict)


class PeerBook:
    """Scores, bans and rate buckets for every peer we have heard from."""

    def __init__(
        self,
        *,
        ban_threshold: float,
        ban_s: float,
        rates: dict[str, tuple[float, float]],
        metrics: Metrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`rates` maps a bucket name ("requests", "gossip") to (per second, burst)."""
        self.ban_threshold = ban_threshold
        self.ban_s = ban_s
        self.rates = rates
        self.metrics = metrics
        self.clock = clock
        self.on_ban: Callable[[str], None] = lambda peer: None
        self._peers: dict[str, _PeerState] = {}

    def _state(self, peer: str) -> _PeerState:
        state = self._peers.get(peer)
        if state is None:
            state = self._peers[peer] = _PeerState()
        return state

    def score(self, peer: str) -> float:
        """Current score (0 for unknown peers)."""
        state = self._peers.get(peer)
        return state.score if state else 0.0

    def is_banned(self, peer: str) -> bool:
        """Whether `peer` is banned right now."""
        state = self._peers.get(peer)
        return state is not None and state.banned_until > self.clock()

    def allow(self, peer: str, bucket: str, amount: float = 1.0) -> bool:
        """Take from the peer's `bucket`; on refusal count it (and a small offence)."""
        state = self._state(peer)
        now = self.clock()
        tokens = state.buckets.get(bucket)
        if tokens is None:
            rate, burst = self.rates[bucket]
            tokens = state.buckets[bucket] = TokenBucket(rate, burst, now)
        if tokens.take(now, amount):
            return True
        self.offence(peer, Offence.RATE_LIMITED, f"rate-limited-{bucket}")
        return False

    def offence(self, peer: str, offence: Offence, reason: str | None = None) -> bool:
        """Record misbehaviour; returns True if this offence got the peer banned."""
        self.metrics.reject(reason or offence.name.lower().replace("_", "-"), peer)
        state = self._state(peer)
        state.score -= offence.value
        now = self.clock()
        if state.score <= self.ban_threshold and state.banned_until <= now:
            state.banned_until = now + self.ban_s
            state.score = 0.0  # a fresh start once the ban expires
            self.metrics.inc("peers-banned")
            self.on_ban(peer)
            return True
        return False

    def reward(self, peer: str, amount: float = 0.1) -> None:
        """Good behaviour slowly earns back score, capped at 0 (no credit in advance)."""
        state = self._state(peer)
        state.score = min(0.0, state.score + amount)
