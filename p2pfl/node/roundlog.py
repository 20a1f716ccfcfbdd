"""What a node observed of each round, and the hooks a simulation uses to make a node
faulty or malicious."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class RoundLog:
    """What the node observed of one round (for status, metrics and the simulator)."""

    round: int
    started: float
    base: str = ""
    committee: tuple[bytes, ...] = ()
    member: bool = False
    result: str = ""
    included: tuple[bytes, ...] = ()
    rejected: tuple[tuple[bytes, str], ...] = ()
    train_s: float = 0.0
    train_loss: float = math.nan
    aggregate_s: float = 0.0
    fetch_s: float = 0.0
    published_at: float = 0.0
    collect_closed_at: float = 0.0  # first aggregate requested (member): collection over
    computed_at: float = 0.0  # first aggregate computed (member)
    certified_at: float = 0.0
    committed_at: float = 0.0
    commit_tx: str = ""
    commit_gas: int = 0
    bytes_sent: int = 0  # the network layer's cumulative payload counters, at the commit
    bytes_received: int = 0
    epsilon: float = math.nan  # DP-SGD: privacy spent by this node's published updates so far


# (base weights, training config, seed) -> p2pfl.train.trainer.TrainResult
Trainer = Callable[[dict[str, np.ndarray], Any, int], Awaitable[Any]]


@dataclass
class Behaviour:
    """Hooks for simulations of faulty and malicious nodes (all off = honest)."""

    # delta -> delta, applied to our own trained delta before publishing (poisoning)
    poison: Callable[[int, dict[str, np.ndarray]], dict[str, np.ndarray]] | None = None
    n_samples_factor: float = 1.0
    silent: bool = False  # never publish anything (crash-like but stays connected)
    # Sealed updates (tests of bad input): the sealed delta's bytes as published (a tampered
    # ciphertext is named by its own CID, so only opening it fails), and each key wrap as
    # sent, by member (a wrap that does not open for that member); and no Rewrap at all.
    tamper_sealed: Callable[[bytes], bytes] | None = None
    tamper_wrap: Callable[[bytes, bytes], bytes] | None = None
    withhold_rewraps: bool = False
    # Updates to the committee: > 0 pushes our update to at most this many members (the
    # others must pull it from them; tests of the members' pulls).
    direct_members: int = 0
