"""A fake network, clock, aggregator and chain that drive N RoundMachines (test helper).

Everything the trio shell would do is done here by hand: deliver gossip with a
per-message latency, answer Fetch / ComputeAggregate / StartTraining, accept the first
valid commit per round on a fake chain, and feed ChainCommitted / RoundStarted back.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from eth_utils import keccak

from p2pfl.core.cid import CID, blob_cid
from p2pfl.core.messages import Commit, Proposal, Vote
from p2pfl.core.round import RoundConfig, RoundMachine
from p2pfl.core.round_events import (
    Advance,
    AggregateComputed,
    ChainCommitted,
    ComputeAggregate,
    DeltaAvailable,
    Evidence,
    Fetch,
    LocalUpdateReady,
    ProposalReceived,
    Publish,
    ReportEvidence,
    RoundStarted,
    StartTraining,
    SubmitCommit,
    Tick,
    WrapKey,
    WrapsReady,
    event_for,
)
from p2pfl.core.signing import Domain, address_of
from p2pfl.core.sortition import committee_for, round_seed

DOMAIN = Domain(chain_id=31337, contract=bytes.fromhex("11" * 20))
N_NODES = 10
KEYS = [(i + 1).to_bytes(32, "big") for i in range(N_NODES)]
ADDRS = [address_of(k) for k in KEYS]
KEY_OF = dict(zip(ADDRS, KEYS))
STAKES = {a: 100 for a in ADDRS}
GENESIS = blob_cid(b"genesis model").to_bytes()
RULE = "fedavg"
# The fake filter rejects updates whose claimed norm exceeds this.
FAKE_NORM_LIMIT = 100.0
# A key wrap as the machine sees it: 80 opaque bytes (it never opens one).
FAKE_WRAP = bytes(80)


def committee(
    task: bytes, round_: int, base: bytes, attempt: int = 0, k: int = 7, stakes=STAKES
) -> list[bytes]:
    return committee_for(round_seed(task, round_, CID.parse(base).digest, attempt), stakes, k)


def find_task(pred: Callable[[bytes], bool]) -> bytes:
    """First task id keccak("task", i) satisfying pred (deterministic search)."""
    for i in itertools.count():
        task = keccak(b"task" + i.to_bytes(4, "big"))
        if pred(task):
            return task
    raise AssertionError("unreachable")


# Round 1's attempt 0 draws below quorum (5 of k = 7) and attempt 1 reaches it: the round
# opens at attempt 1 (a draw below quorum is left at once).
TASK_SMALL = find_task(
    lambda t: len(committee(t, 1, GENESIS)) < 5 and len(committee(t, 1, GENESIS, 1)) >= 5
)


def delta_cid(author: bytes, round_: int) -> bytes:
    return blob_cid(b"delta" + author + round_.to_bytes(8, "big")).to_bytes()


def fake_aggregate(req: ComputeAggregate, lie: bool = False) -> AggregateComputed:
    """Deterministic stand-in for filter + rule + reward root: a function of the inputs only."""
    included = tuple((u.signer, u.delta) for u in req.updates if u.norm <= FAKE_NORM_LIMIT)
    rejected = tuple((u.signer, "norm-too-large") for u in req.updates if u.norm > FAKE_NORM_LIMIT)
    if not included:
        return AggregateComputed(req.round, req.attempt, req.candidates, error="nothing survived")
    payload = req.base + b"".join(a + d for a, d in included)
    result = blob_cid((b"LIE" if lie else b"agg") + payload).to_bytes()
    root = keccak(b"".join(a for a, _ in included) + b"|" + b"".join(req.committee))
    return AggregateComputed(
        req.round, req.attempt, req.candidates, included, rejected, result, root
    )


def received(message):
    """The event a shell delivers for a gossiped message, after checking its signature."""
    if isinstance(message, Commit):
        return event_for(message)  # its votes are checked by the machine
    return event_for(message, message.verify(DOMAIN))


@dataclass
class Sim:
    config: RoundConfig
    stakes: dict[bytes, int] = field(default_factory=lambda: dict(STAKES))
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    max_latency_s: float = 0.5
    min_latency_s: float = 0.001  # raise it for a network where every message is slow
    compute_s: float = 0.2  # how long an aggregation takes (an overloaded machine: seconds)
    silent: set[bytes] = field(default_factory=set)  # never receive, never send
    liars: set[bytes] = field(default_factory=set)  # lie about aggregates, vote for wrong results
    idle: set[bytes] = field(default_factory=set)  # never finish training
    high_norm: set[bytes] = field(default_factory=set)  # updates the fake filter rejects
    bad_deltas: set[bytes] = field(default_factory=set)  # authors whose blocks fail to verify
    # Sealed tasks (config.sealed): authors whose wraps do not open, and authors that send
    # no Rewrap on a re-draw; the Fetches members sent (each must carry a wrap).
    bad_wraps: set[bytes] = field(default_factory=set)
    no_rewrap: set[bytes] = field(default_factory=set)
    rounds: int = 1  # stop after this many commits
    train_s: Callable[[int], float] = lambda i: 5.0 + i
    now: float = 0.0

    def __post_init__(self) -> None:
        self.machines = {a: RoundMachine(self.config, KEY_OF[a], DOMAIN) for a in self.stakes}
        self._queue: list[tuple[float, int, bytes, object]] = []
        self._seq = itertools.count()
        self.chain: dict[int, ChainCommitted] = {}
        self.chain_certs: dict[int, Commit] = {}
        self.advances: dict[bytes, list[Advance]] = defaultdict(list)
        self.evidence: list[Evidence] = []
        self.published: list[tuple[float, bytes, object]] = []
        self.submissions: list[tuple[float, bytes, Commit]] = []
        self.fetches: list[tuple[bytes, Fetch]] = []
        # When each round became committable (the last commit, or the start): the contract
        # takes attempt a of it only a x redrawDelay later (RedrawTooEarly).
        self.round_open: dict[int, float] = {}

    # --- plumbing ---
    def push(self, at: float, dst: bytes, event: object) -> None:
        heapq.heappush(self._queue, (at, next(self._seq), dst, event))

    def latency(self) -> float:
        return self.rng.uniform(self.min_latency_s, self.max_latency_s)

    def deliver(self, dst: bytes, event) -> None:
        if dst in self.silent:
            return
        actions = self.machines[dst].handle(event)
        for action in actions:
            self.perform(dst, action)
        if dst in self.liars and isinstance(event, ProposalReceived):
            self._lying_vote(dst, event.proposal)

    def _lying_vote(self, liar: bytes, p: Proposal) -> None:
        m = self.machines[liar]
        if p.round != m.round or p.attempt != m.attempt:
            return
        wrong = blob_cid(b"wrong" + p.result).to_bytes()
        vote = Vote(p.task, p.round, p.attempt, p.view, p.base, wrong, p.contributors_root, liar)
        vote = vote.signed(KEY_OF[liar], DOMAIN)
        self.broadcast(liar, vote)

    def broadcast(self, src: bytes, message, to=None) -> None:
        """Gossip `message` to every machine, or to the machines `to` only (`Publish.to`)."""
        self.published.append((self.now, src, message))
        event = received(message)
        for dst in self.machines if to is None else to:
            if dst != src:
                self.push(self.now + self.latency(), dst, event)

    def perform(self, src: bytes, action) -> None:
        i = list(self.machines).index(src)
        if isinstance(action, Publish):
            self.broadcast(src, action.message, action.to)
        elif isinstance(action, Fetch):
            self.fetches.append((src, action))
            ok = action.author not in self.bad_deltas
            reason = ""
            if self.config.sealed and action.author in self.bad_wraps:
                ok, reason = False, "unwrap-failed"
            answer = DeltaAvailable(action.author, action.delta, ok, reason)
            self.push(self.now + self.latency(), src, answer)
        elif isinstance(action, WrapKey):
            if src not in self.no_rewrap:
                wraps = tuple((m, FAKE_WRAP) for m in sorted(action.recipients))
                answer = WrapsReady(action.round, action.attempt, action.delta, wraps)
                self.push(self.now + self.latency(), src, answer)
        elif isinstance(action, ComputeAggregate):
            self.push(self.now + self.compute_s, src, fake_aggregate(action, lie=src in self.liars))
        elif isinstance(action, StartTraining):
            if src not in self.idle:
                norm = 500.0 if src in self.high_norm else 1.0 + i
                wraps = tuple((m, FAKE_WRAP) for m in sorted(action.recipients))
                event = LocalUpdateReady(
                    action.round, delta_cid(src, action.round), 10 + i, norm, b"", wraps
                )
                self.push(self.now + self.train_s(i), src, event)
        elif isinstance(action, SubmitCommit):
            self.submissions.append((self.now, src, action.commit))
            self._chain_submit(action.commit)
        elif isinstance(action, Advance):
            self.advances[src].append(action)
            if action.round <= self.rounds:
                start = RoundStarted(action.round, action.base, self.stakes, 0.0)
                self.push(self.now + self.latency(), src, start)
        elif isinstance(action, ReportEvidence):
            self.evidence.append(action.evidence)

    def _chain_submit(self, c: Commit) -> None:
        """The contract's rules, in miniature: first valid certificate per round wins."""
        if c.round in self.chain:
            return
        k = self.config.committee_size
        members = committee(c.task, c.round, c.base, c.attempt, k, self.stakes)
        signers = c.verify_votes(DOMAIN)
        assert len(set(signers)) == len(signers), "contract would revert"
        assert set(signers) <= set(members), "contract would revert"
        assert len(signers) >= self.config.quorum, "contract would revert"
        delay = self.config.small_redraw_delay_s
        not_before = self.round_open.get(c.round, 0.0) + c.attempt * delay
        assert self.now >= not_before, "contract would revert (RedrawTooEarly)"
        self.chain_certs[c.round] = c
        self.round_open[c.round + 1] = self.now
        self.chain[c.round] = ChainCommitted(
            c.round, c.attempt, c.view, c.base, c.result, c.contributors_root
        )
        for dst in self.machines:  # one block later, everybody sees it
            self.push(self.now + 1.0, dst, self.chain[c.round])

    # --- driving ---
    def start(self, round_: int = 1, base: bytes = GENESIS) -> None:
        self.round_open.setdefault(round_, self.now)
        for dst in self.machines:
            self.push(self.now, dst, RoundStarted(round_, base, self.stakes, 0.0))

    def run(self, until: float = 2000.0, max_steps: int = 200_000) -> None:
        """Deliver events and timer ticks in time order until quiet or `until`."""
        for _ in range(max_steps):
            if len(self.chain) >= self.rounds and not self._queue:
                return
            deadlines = [
                (d, a)
                for a, m in self.machines.items()
                if a not in self.silent and (d := m.next_deadline()) is not None
            ]
            next_timer = min(deadlines, default=(float("inf"), b""))
            next_event = self._queue[0][0] if self._queue else float("inf")
            at = min(next_timer[0], next_event)
            if at == float("inf") or at > until:
                return
            # RoundStarted carries now=0.0 as a placeholder; stamp it with the real time.
            self.now = max(self.now, at)
            if next_event <= next_timer[0]:
                _, _, dst, event = heapq.heappop(self._queue)
                if isinstance(event, RoundStarted):
                    event = RoundStarted(event.round, event.base, event.stakes, self.now)
                else:
                    self.deliver(dst, Tick(self.now))
                self.deliver(dst, event)
            else:
                self.deliver(next_timer[1], Tick(self.now))
        raise AssertionError("simulation did not settle")

    def honest(self) -> list[bytes]:
        return [a for a in self.machines if a not in self.silent and a not in self.liars]
