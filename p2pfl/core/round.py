"""The round state machine, sans-IO: events in, actions out.

DESIGN §4; normative text in protocol/spec/round.md.

One `RoundMachine` per node per task. It never touches a socket, a clock or a random
source: time arrives in `Tick(now)` / `RoundStarted(now)`, messages arrive already
signature-checked, heavy work (fetching deltas, aggregating) is *requested* through
actions (`Fetch`, `ComputeAggregate`) and its outcome comes back as events
(`DeltaAvailable`, `AggregateComputed`). The trio node, the simulator and the tests
all drive the very same object.

Why aggregation is an action and not an injected function: it is the one step that
costs seconds (GB of float work), so the shell must be free to run it in a worker
thread or process while the node keeps gossiping and answering timers; as an event
its result is also trivially faked in tests, and cached here by its exact input set,
so a leader's own computation and a verifier's recomputation are the same request.

Three tables say what the machine does (h11 `_state.py` style):

- `HANDLERS`: which handler takes each event type in each phase (every pair is listed;
  an event a phase does not act on goes to a handler that drops or ignores it);
- `TRANSITIONS`: the legal phase changes. Every change goes through `_goto`, which
  checks it (`next_phase`); any other transition is a bug and raises `RoundStateError`;
- `TIMERS`: which deadlines a `Tick` checks in each phase.

Network input never raises: it is dropped, counted in `counters` and reported as
`Rejected`.
"""

from __future__ import annotations

import enum
import math
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from p2pfl.core.cid import CID
from p2pfl.core.messages import Commit, Proposal, Rewrap, Signed, Update, Vote
from p2pfl.core.round_events import (
    Action,
    Advance,
    AggregateComputed,
    ChainCommitted,
    CommitSeen,
    ComputeAggregate,
    DeltaAvailable,
    Event,
    Evidence,
    Fetch,
    Gossip,
    HeartbeatReceived,
    LocalUpdateReady,
    ProposalReceived,
    Publish,
    Rejected,
    ReportEvidence,
    RewrapReceived,
    RoundStarted,
    StartTraining,
    SubmitCommit,
    Tick,
    UpdateKey,
    UpdateReceived,
    VoteReceived,
    WrapKey,
    WrapsReady,
)
from p2pfl.core.sealed import covers, foreign_members, members_of, wrap_for
from p2pfl.core.signing import Domain, address_of
from p2pfl.core.sortition import commit_quorum, committee_for, leader_of, round_seed
from p2pfl.errors import ConfigError, InvalidMessage, P2PFLError

__all__ = [
    "DISCRETION_REASONS",
    "HANDLERS",
    "REASON_EQUIVOCATION",
    "REASON_UNAVAILABLE",
    "TIMERS",
    "TRANSITIONS",
    "Phase",
    "RoundConfig",
    "RoundMachine",
    "RoundStateError",
    "Timer",
    "Trigger",
    "collect_quorum",
    "next_phase",
    "timeout_factor",
]

# Rejection reasons a leader adds to a proposal on its own authority (they are not the
# aggregation rule's output, so verifiers cannot recompute them; see spec "Verify").
# Aggregation rules must not use these strings.
REASON_UNAVAILABLE = "unavailable"  # the delta's blocks could not be fetched or were bad
REASON_EQUIVOCATION = "equivocation"  # the author signed two different updates this round
DISCRETION_REASONS = frozenset({REASON_UNAVAILABLE, REASON_EQUIVOCATION})


class RoundStateError(P2PFLError):
    """The shell drove the machine illegally (a bug in the caller or here), not bad input."""


@dataclass(frozen=True)
class RoundConfig:
    """Per-task round parameters (from the task manifest); times in seconds."""

    task: bytes  # 32-byte task id
    committee_size: int  # k: the sortition's nominal committee size
    rule: str  # canonical text of the aggregation RuleSpec; proposals must carry it
    # Votes a commit needs; 0 = ceil(2k/3) (sortition.commit_quorum), the contract's floor.
    task_quorum: int = 0
    # Collection window from the draw: one local epoch of a small model on a laptop,
    # plus publishing, fits comfortably; stragglers wait for the next round.
    collect_deadline_s: float = 60.0
    # Close collection early once this percentage of expected participants has a
    # fetched, verified delta (DESIGN §4 step 4: partial aggregation at 80%).
    collect_quorum_percent: int = 80
    # Once the quorum is held, keep collecting this long for the remaining expected
    # updates (closing at once when all are held; the collect deadline still bounds it).
    # Nodes of one task train the same epochs on similar partitions, so they finish within
    # seconds of each other: measured on Flower's 10-client experiment, the 2 updates an
    # 80% quorum left out arrived a few seconds after it. 5 s includes them and costs a
    # round at most 5 s when a node is really gone. 0 = close at the quorum (as before).
    straggler_grace_s: float = 5.0
    # 0 = expected participants are the registered nodes (positive stake) *heard from*:
    # in the first round (no history) all of them; later, those whose update this node
    # saw last round or sees this round, plus new registrations and itself (spec
    # "Timers / collect"). Dead laptops then stop costing the full collect deadline each
    # round; a returning node counts again as soon as its update arrives. This is a local
    # liveness guess, not a safety rule: the committee still votes on the aggregate.
    # > 0 = a fixed count (no adaptation).
    expected_participants: int = 0
    # Floor of the adaptive count, as a share of the registered nodes: a node that heard
    # little last round (restart, partition, slow links) must not close collection on a
    # handful of updates. 100 = always every registered node (no adaptation).
    min_expected_percent: int = 50
    # One view: fetch any missing deltas, recompute the aggregate (seconds at GB/s),
    # gossip a proposal and votes. 15 s leaves a wide margin on a laptop.
    view_timeout_s: float = 15.0
    # Timeouts that grow (Tendermint's rule, its `timeout_*_delta` per failed round): view
    # v of an attempt lasts view_timeout_s x g^(s + v) and the attempt's collection and
    # re-draw timeout x g^s, where s = the attempts of this round before it that stalled
    # (drawn >= q, so not a small re-draw), g = this factor, capped at
    # `max_timeout_factor`. When every step is slow (an overloaded machine, a slow
    # network: 100 nodes in one process never committed with fixed timeouts) the windows
    # grow until one fits; they start over each round (after a commit). Every input is
    # shared (the draw, the attempt and view numbers), so all nodes compute the same
    # schedule. 1.5 as Tendermint's defaults grow by about half a timeout per round; 1.0 =
    # fixed timeouts.
    timeout_growth: float = 1.5
    # Cap of the growth: 8 x the configured timeouts (reached at the 6th step with 1.5),
    # so a round that keeps failing for another reason is re-tried at a bounded pace.
    max_timeout_factor: float = 8.0
    # Collect quorum over *live* participants: a registered node presumed alive by the
    # history (see expected_participants) but not heard (any signed message, heartbeats
    # included) for `live_window_s` is not expected. Judged only once heartbeats are heard
    # at all (a network that sends none keeps the history's guess) and a window after the
    # first one. A local liveness guess, like E itself: it closes collection earlier,
    # never decides what is committed.
    live_quorum: bool = True
    # Four heartbeat intervals (p2pfl.node.heartbeat.HEARTBEAT_INTERVAL_S = 5 s): a loaded
    # event loop or a gossip hop can delay a beat or two; a node silent this long is gone.
    live_window_s: float = 20.0
    # Member at rank r after the view's leader submits the commit at r * this delay:
    # a few blocks, so the leader's transaction normally lands first.
    commit_fallback_delay_s: float = 10.0
    # Attempt a (re-draw with seed ‖ a) starts at round start + a * this. Must exceed a
    # collection window plus a few views, since a stuck attempt is also re-drawn.
    redraw_timeout_s: float = 150.0
    # A draw below quorum moves to the next attempt after this: everyone computes the same
    # draw, so there is nothing to wait for but the contract's anti-grinding `redrawDelay`
    # (seconds per attempt), which must not exceed this value.
    small_redraw_delay_s: float = 5.0
    # Re-draw when an attempt reaches its end with no certificate (e.g. > 1/3 of the
    # committee offline), not only when the draw is too small to reach quorum.
    redraw_when_stuck: bool = True
    # With a liveness history (see expected_participants), treat a draw with fewer than q
    # presumed-alive members as too small (re-drawn after small_redraw_delay_s instead of
    # stalling until redraw_timeout_s), and skip views whose leader is presumed dead. A
    # local guess like the collect quorum: a wrong one costs time, never safety.
    skip_presumed_dead: bool = True
    # A leader proposes only with at least this many candidate updates.
    min_updates: int = 1
    # Sanity bound on a claimed sample count (it weights FedAvg): 1e9 samples is more
    # than any single laptop holds.
    max_n_samples: int = 10**9
    # Messages for a later round/attempt/view kept until we get there (clock skew
    # between nodes); a bound so a flood cannot grow memory.
    max_buffered: int = 1024
    max_rounds_ahead: int = 1
    max_views_ahead: int = 4
    # Registered nodes train each round; a pure follower/validator sets False.
    train: bool = True
    # Sealed updates (spec sealing.md): deltas travel encrypted, their key wrapped to the
    # committee. The task's `[privacy] sealed` (on by default in a manifest); False here
    # so the machine's own tests and the DES model plain updates unless they ask.
    sealed: bool = False
    # Who receives a round's Update and Rewrap messages (the task's `[privacy] updates`).
    # False: gossip to every node (they all learn each author and delta CID). True: the
    # author sends them to the members of each attempt's committee directly, and to a
    # re-drawn committee's new members when it is drawn: a round then costs n x k
    # messages instead of gossip's n x n (each with several copies), and nodes off the
    # committee learn who contributed only from proposals (spec round.md *Updates to the
    # committee*). So are the attempt's proposals and votes: only its members act on them,
    # and each gossiped to every node was validated and forwarded by all n. Certificates
    # (and the proposal a certificate certifies, which names the round's contributors) and
    # heartbeats are gossiped either way.
    updates_to_committee: bool = False

    def __post_init__(self) -> None:
        if len(self.task) != 32:
            raise ConfigError("task must be the 32-byte task id")
        if self.committee_size < 1:
            raise ConfigError("committee_size must be >= 1")
        if not 0 < self.collect_quorum_percent <= 100:
            raise ConfigError("collect_quorum_percent must be in 1..100")
        if not 0 < self.min_expected_percent <= 100:
            raise ConfigError("min_expected_percent must be in 1..100")
        if (
            min(
                self.collect_deadline_s,
                self.view_timeout_s,
                self.redraw_timeout_s,
                self.small_redraw_delay_s,
            )
            <= 0
        ):
            raise ConfigError("deadlines and timeouts must be positive")
        if self.commit_fallback_delay_s < 0:
            raise ConfigError("commit_fallback_delay_s must be >= 0")
        if self.straggler_grace_s < 0:
            raise ConfigError("straggler_grace_s must be >= 0")
        if self.live_window_s <= 0:
            raise ConfigError("live_window_s must be positive")
        if self.timeout_growth < 1 or self.max_timeout_factor < 1:
            raise ConfigError("timeout_growth and max_timeout_factor must be >= 1 (1 = fixed)")
        first_view_ends = self.collect_deadline_s + self.view_timeout_s
        if self.redraw_when_stuck and self.redraw_timeout_s <= first_view_ends:
            raise ConfigError(
                "redraw_timeout_s must exceed collect_deadline_s + view_timeout_s, "
                "or an attempt is re-drawn before its first view can finish"
            )

    @property
    def quorum(self) -> int:
        return commit_quorum(self.committee_size, self.task_quorum)


# At most this many attempts in a row are skipped for presumed-dead members: a wrong
# liveness guess then costs a few small re-draws, never a round that never starts.
MAX_PRESUMED_DEAD_REDRAWS = 3

# A draw below quorum among a round's attempts 0 .. SMALL_DRAWS_SKIPPED_AT_ONCE - 1 is left
# the moment it is drawn (every node draws alike: nothing to collect, nobody to wait for);
# later ones wait `small_redraw_delay_s` as before, so that a registry that can never seat
# a quorum re-draws at a bounded pace instead of spinning. A draw is below quorum with
# probability ~17% at k = 7 on a large registry (Poisson(7) < 5): eight in a row, ~1e-6.
SMALL_DRAWS_SKIPPED_AT_ONCE = 8

# The contract takes attempt a's commit only at block.timestamp >= the last commit's
# timestamp + a x redrawDelay; block timestamps are whole seconds, so an attempt entered
# early (small draws skipped) submits this much after its local bound.
CHAIN_CLOCK_MARGIN_S = 1.0


def timeout_factor(config: RoundConfig, steps: int) -> float:
    """How much longer a timeout is after `steps` failed attempts/views of a round:
    timeout_growth^steps, capped at max_timeout_factor (spec "Timers / growth")."""
    factor = 1.0
    for _ in range(steps):  # at most log_g(cap) steps: it stops at the cap
        if factor >= config.max_timeout_factor or config.timeout_growth == 1:
            break
        factor *= config.timeout_growth
    return min(factor, config.max_timeout_factor)


def collect_quorum(percent: int, expected: int) -> int:
    """Updates that close collection early: ceil(percent * expected / 100), in integers."""
    return max(1, (percent * expected + 99) // 100)


class Phase(enum.Enum):
    IDLE = "idle"  # no round yet
    REDRAWING = "redrawing"  # drawn committee < quorum: wait for the next attempt
    COLLECTING = "collecting"  # member: gathering updates until deadline or quorum
    FOLLOWING = "following"  # not a member of this attempt: store updates, wait
    VOTING = "voting"  # member: views run (propose / verify / vote)
    CERTIFIED = "certified"  # a quorum certificate exists: submit (by rank), wait for the chain
    ADVANCED = "advanced"  # the chain committed the round; waiting for RoundStarted(r+1)


class Trigger(enum.Enum):
    ROUND_STARTED = "round-started"
    DRAW_MEMBER = "draw-member"
    DRAW_FOLLOWER = "draw-follower"
    DRAW_SMALL = "draw-small"
    COLLECT_CLOSED = "collect-closed"
    VIEW_TIMEOUT = "view-timeout"
    CERTIFIED = "certified"
    CHAIN_COMMITTED = "chain-committed"


_DRAWS = {
    Trigger.DRAW_MEMBER: Phase.COLLECTING,
    Trigger.DRAW_FOLLOWER: Phase.FOLLOWING,
    Trigger.DRAW_SMALL: Phase.REDRAWING,
}
# In every phase: the shell starts the next round (or we follow the chain's commit).
_ALWAYS = {Trigger.ROUND_STARTED: Phase.IDLE, Trigger.CHAIN_COMMITTED: Phase.ADVANCED}

# The legal transitions. RoundStarted resets to IDLE (a new round starts clean) and
# then applies a DRAW_* trigger; a re-draw applies DRAW_* from the attempt's phase
# (never once certified: the certificate stands until the chain commits).
TRANSITIONS: dict[Phase, dict[Trigger, Phase]] = {
    Phase.IDLE: {**_DRAWS, **_ALWAYS},
    Phase.REDRAWING: {**_DRAWS, **_ALWAYS},
    Phase.COLLECTING: {
        Trigger.COLLECT_CLOSED: Phase.VOTING,
        Trigger.CERTIFIED: Phase.CERTIFIED,
        **_DRAWS,
        **_ALWAYS,
    },
    Phase.FOLLOWING: {Trigger.CERTIFIED: Phase.CERTIFIED, **_DRAWS, **_ALWAYS},
    Phase.VOTING: {
        Trigger.VIEW_TIMEOUT: Phase.VOTING,
        Trigger.CERTIFIED: Phase.CERTIFIED,
        **_DRAWS,
        **_ALWAYS,
    },
    Phase.CERTIFIED: {**_ALWAYS},
    # A chain commit for a later round while we wait (we lag): follow it too.
    Phase.ADVANCED: {**_ALWAYS},
}


def next_phase(phase: Phase, trigger: Trigger) -> Phase:
    """The phase `trigger` leads to from `phase`; raises RoundStateError if the table has
    no such transition (a bug in the machine, never the network's doing)."""
    try:
        return TRANSITIONS[phase][trigger]
    except KeyError:
        raise RoundStateError(
            f"illegal transition {trigger.value} in phase {phase.value}"
        ) from None


class Timer(enum.Enum):
    """Deadlines, in the order a `Tick` checks them (each sees the phase the one before
    left: a re-draw may start a collection that is already due to close)."""

    NEXT_ATTEMPT = "next-attempt"  # re-draw (`_next_attempt_at`)
    COLLECT_END = "collect-end"  # close collection (`collect_deadline_s` after the draw)
    GRACE_END = "grace-end"  # close collection (`straggler_grace_s` after the quorum)
    LIVENESS = "liveness"  # a live participant fell silent: re-check the collect quorum
    VIEW_END = "view-end"  # next view (`view_timeout_s` after the view started)
    SUBMIT = "submit"  # our turn to submit the certificate (`commit_fallback_delay_s` by rank)


# The timers armed in each phase. A draw below quorum is always left at the next
# attempt; a draw that stalls only with `redraw_when_stuck` (see `_timers_for`).
TIMERS: dict[Phase, tuple[Timer, ...]] = {
    Phase.IDLE: (),
    Phase.REDRAWING: (Timer.NEXT_ATTEMPT,),
    Phase.COLLECTING: (Timer.NEXT_ATTEMPT, Timer.COLLECT_END, Timer.GRACE_END, Timer.LIVENESS),
    Phase.FOLLOWING: (Timer.NEXT_ATTEMPT,),
    Phase.VOTING: (Timer.NEXT_ATTEMPT, Timer.VIEW_END),
    Phase.CERTIFIED: (Timer.SUBMIT,),
    Phase.ADVANCED: (),
}


def _timers_for(config: RoundConfig) -> dict[Phase, tuple[Timer, ...]]:
    """`TIMERS` under `config`: without `redraw_when_stuck` only REDRAWING re-draws."""
    if config.redraw_when_stuck:
        return TIMERS
    return {
        phase: tuple(t for t in timers if t is not Timer.NEXT_ATTEMPT or phase is Phase.REDRAWING)
        for phase, timers in TIMERS.items()
    }


# How an incoming message relates to where we are.
_CURRENT, _FUTURE, _DROP = "current", "future", "drop"


class _SharedSnapshots:
    """Stakes snapshots (and their registered sets) shared by the machines of one
    process that start a round from equal ones: a machine only reads them.

    One process may run many machines (sim/des runs 1,000): a private copy each was a
    thousand 1,000-entry tables that every update reads, more than a CPU cache holds.
    A few recent snapshots are kept (machines of one process start rounds close
    together); an unequal one replaces the oldest."""

    KEPT = 4

    def __init__(self) -> None:
        self._recent: list[tuple[dict[bytes, int], frozenset[bytes]]] = []

    def shared(self, stakes: Mapping[bytes, int]) -> tuple[dict[bytes, int], frozenset[bytes]]:
        copy = dict(stakes)
        for snapshot in self._recent:
            if snapshot[0] == copy:
                return snapshot
        snapshot = (copy, frozenset(a for a, s in copy.items() if s > 0))
        self._recent = [snapshot, *self._recent[: self.KEPT - 1]]
        return snapshot


_snapshots = _SharedSnapshots()


@dataclass
class _Attempt:
    """State of one sortition draw (round, attempt); replaced on re-draw."""

    number: int
    committee: tuple[bytes, ...]
    start: float
    collect_deadline: float
    # Drawn too small only by this node's liveness guess (not by the draw's size, which
    # everyone computes alike): the early re-draw is local, the schedule is not.
    presumed_dead: bool = False
    # Earlier attempts of the round that stalled: the growth step of its timeouts.
    stalled_before: int = 0
    # When the straggler grace ends (set once the collect quorum is held).
    grace_end: float = math.inf
    view: int = 0
    view_deadline: float = math.inf
    proposal: Proposal | None = None  # first valid proposal of the current view
    verify_failed: bool = False  # counted once per view
    voted_views: set[int] = field(default_factory=set)
    propose_keys: dict[int, tuple[UpdateKey, ...]] = field(default_factory=dict)
    proposed_views: set[int] = field(default_factory=set)
    tally: dict[tuple[int, bytes, bytes], dict[bytes, Vote]] = field(default_factory=dict)
    computing: set[tuple[UpdateKey, ...]] = field(default_factory=set)
    computed: dict[tuple[UpdateKey, ...], AggregateComputed] = field(default_factory=dict)


class RoundMachine:
    """Protocol state of one node for one task, across rounds."""

    def __init__(self, config: RoundConfig, private_key: bytes, domain: Domain) -> None:
        self.config = config
        self.domain = domain
        self.address = address_of(private_key)
        self._key = private_key
        self._phase = Phase.IDLE  # the initial state; every change after goes through `_goto`
        self._in_phase = _PHASE_TABLES[self._phase]
        self._timers = _timers_for(config)
        self.round = -1
        self.base = b""
        self.now = -math.inf
        self.counters: Counter[str] = Counter()
        self._buffer: list[Event] = []
        self._dirty = False
        self._out: list[Action] = []
        # The round whose update authors `_heard` holds (None: no round yet): the liveness
        # history behind the expected participants (see `_expected_participants`).
        self._heard_round: int | None = None
        # Liveness across rounds (`live_quorum`): registered signer -> last time any signed
        # message of theirs reached us; judged from a window after the first heartbeat.
        self._last_heard: dict[bytes, float] = {}
        self._heartbeats_since: float | None = None
        self._live_checked = -math.inf  # the LIVENESS timer's last check
        self._reset_round(RoundStarted(-1, b"", {}, self.now), recent=None)

    # --- public API -----------------------------------------------------------------

    def handle(self, event: Event) -> list[Action]:
        """Feed one event; returns the actions to perform, in order."""
        self._out = []
        self._dispatch(event)
        self._replay()
        out, self._out = self._out, []
        return out

    def next_deadline(self) -> float | None:
        """Earliest time at which a `Tick` would do something (None: no timer armed)."""
        times = [self._due_at(timer) for timer in self._timers[self.phase]]
        finite = [t for t in times if t is not None and t != math.inf]
        return min(finite) if finite else None

    @property
    def phase(self) -> Phase:
        return self._phase

    @property
    def attempt(self) -> int:
        return self._attempt.number

    @property
    def view(self) -> int:
        return self._attempt.view

    @property
    def committee(self) -> tuple[bytes, ...]:
        return self._attempt.committee

    @property
    def is_member(self) -> bool:
        return self.address in self._attempt.committee

    @property
    def certificate(self) -> Commit | None:
        return self._certificate

    def last_heard(self) -> dict[bytes, float]:
        """Registered node -> when a signed message of theirs last reached us (its `now`)."""
        return dict(self._last_heard)

    def is_live(self, node: bytes) -> bool:
        """Whether `node` counts as live for the collect quorum (see `live_quorum`)."""
        return not self._judging_liveness() or self._heard_recently(node)

    # --- plumbing ---------------------------------------------------------------------

    def _goto(self, trigger: Trigger) -> None:
        """The one place the phase changes, and only as `TRANSITIONS` allows."""
        self._phase = next_phase(self._phase, trigger)
        self._in_phase = _PHASE_TABLES[self._phase]
        self._dirty = True

    def _can(self, trigger: Trigger) -> bool:
        return trigger in self._in_phase.triggers

    def _emit(self, action: Action) -> None:
        self._out.append(action)

    def _drop(self, reason: str, signer: bytes, penalize: bool, detail: str = "") -> None:
        self.counters[f"rejected:{reason}"] += 1
        self._emit(Rejected(reason, signer, penalize, detail))

    def _replay(self) -> None:
        """Re-offer buffered messages after any state change (round, attempt, view, phase)."""
        while self._dirty:
            self._dirty = False
            pending, self._buffer = self._buffer, []
            for event in pending:
                self._dispatch(event)

    def _buffer_event(self, event: Event, signer: bytes) -> None:
        if len(self._buffer) >= self.config.max_buffered:
            self._drop("buffer-full", signer, False)
            return
        self._buffer.append(event)

    def _dispatch(self, event: Event) -> None:
        handler = self._in_phase.handlers.get(type(event))
        if handler is None:
            raise RoundStateError(f"unknown event {type(event).__name__}")
        handler(self, event)

    def _ignore(self, event: Event) -> None:
        """Nothing to do in this phase (see `HANDLERS` for why)."""

    def _conflicts_with_ours(self, message: Signed) -> bool:
        """True if we already stand by another body under `message`'s statement key.

        Our statements include those signed with our key that reach us from the network
        (`_record_statement`): ours from before a restart, or replays. Signing `message`
        would then be equivocation, so callers skip it (counted) instead of signing.
        """
        known = self._own_seen.get(message.statement_key())
        if known is not None and known != message.body():
            self.counters["equivocation-avoided"] += 1
            return True
        return False

    def _sign(self, message: Signed) -> Signed:
        """Sign, refusing ever to sign two different bodies under one statement key."""
        key = message.statement_key()
        body = message.body()
        if self._my_statements.setdefault(key, body) != body:
            raise RoundStateError(f"refusing to equivocate on statement {key[0]}/{key[2:]}")
        return message.signed(self._key, self.domain)

    # --- rounds and draws -------------------------------------------------------------

    def _recent_signers(self, event: RoundStarted) -> frozenset[bytes]:
        """Members whose vote or proposal we accepted last round (alive, maybe not training)."""
        if self._heard_round is None or self._heard_round != event.round - 1:
            return frozenset()
        return frozenset(self._signers)

    def _recent_authors(self, event: RoundStarted) -> frozenset[bytes] | None:
        """Who is presumed alive at the start of `event.round`, or None (no history).

        The authors of the updates heard in the previous round, plus nodes registered
        since (a joiner gets the benefit of the doubt). No history when this machine did
        not run the previous round (first round, restart, or it followed the chain past
        rounds it never saw), or, when updates go to the committee only, this node was
        not drawn last round (it heard no update): then every registered node is expected,
        as in the first round; heartbeats, once judged, still tell the dead apart.
        """
        if self._heard_round is None or self._heard_round != event.round - 1:
            return None
        if self.config.updates_to_committee and not self._drawn_member:
            return None  # off the committee, we heard no update: no history to go by
        joined = {a for a, s in event.stakes.items() if s > 0 and a not in self._registered}
        return frozenset(self._heard | joined)

    def _reset_round(
        self,
        event: RoundStarted,
        recent: frozenset[bytes] | None,
        recent_signers: frozenset[bytes] = frozenset(),
    ) -> None:
        self.round = event.round
        self.base = event.base
        self._base_digest = CID.parse(event.base).digest if event.base else bytes(32)
        self._stakes, self._registered = _snapshots.shared(event.stakes)
        # Liveness (a local guess for the early close only; see `_expected_participants`):
        # `_heard` = authors of this round's updates, `_live` = those plus the presumed alive.
        self._heard: set[bytes] = set()
        self._live: set[bytes] = set(
            self._registered if recent is None else self._registered & recent
        )
        self._has_history = recent is not None
        # Signers of votes/proposals, this round and last: alive for the committee checks.
        self._signers: set[bytes] = set()
        self._signers_prev = recent_signers
        if self.config.train and self.address in self._registered:
            self._live.add(self.address)  # we count on our own update
        self._probation = frozenset(event.probation)
        self._unsealable = frozenset(event.unsealable)
        self._eligible = len(self._registered - self._probation)  # both fixed for the round
        self._expected_floor = collect_quorum(self.config.min_expected_percent, self._eligible)
        self._round_start = event.now
        self._first_update: dict[bytes, Update] = {}
        # Authors whose first update's delta verified: the collect count without a pass
        # over every update on every event (quadratic in the nodes per round at scale).
        self._verified_first: set[bytes] = set()
        self._updates: dict[UpdateKey, Update] = {}
        self._equivocators: set[bytes] = set()
        self._delta_ok: dict[UpdateKey, bool] = {}
        self._fetching: set[UpdateKey] = set()
        self._own_update_sent = False
        self._statements: dict[tuple[bytes, tuple[int, bytes, int, int, int]], Signed] = {}
        self._reported: set[tuple[bytes, tuple[int, bytes, int, int, int]]] = set()
        self._my_statements: dict[tuple[int, bytes, int, int, int], bytes] = {}
        # Statements under our key that reached us from the network (see _conflicts_with_ours).
        self._own_seen: dict[tuple[int, bytes, int, int, int], bytes] = {}
        self._committees: dict[int, tuple[bytes, ...]] = {}
        # Sealed updates: our wrap of an author's key from a Rewrap (by update key); the
        # members each author re-wrapped for, by (author, attempt): (delta, members); the
        # attempts we sent our own Rewrap for.
        self._rewraps: dict[UpdateKey, bytes] = {}
        self._rewrapped: dict[tuple[bytes, int], tuple[bytes, frozenset[bytes]]] = {}
        self._rewraps_sent: set[int] = set()
        # Updates to the committee: the members our update was sent to (any attempt).
        self._update_sent_to: set[bytes] = set()
        # Whether we were drawn in an attempt of this round (read at the next round start:
        # only a member heard the updates when they go to the committee only).
        self._drawn_member = False
        self._certificate: Commit | None = None
        self._submit_at: float | None = None
        self._attempt = _Attempt(0, (), event.now, math.inf)

    def _committee_of(self, attempt: int) -> tuple[bytes, ...]:
        if attempt not in self._committees:
            seed = round_seed(self.config.task, self.round, self._base_digest, attempt)
            drawn = committee_for(seed, self._stakes, self.config.committee_size)
            self._committees[attempt] = tuple(drawn)
        return self._committees[attempt]

    def _next_attempt_at(self) -> float:
        """When this node draws the next attempt.

        A draw presumed dead by this node's own liveness guess is left after the short
        `small_redraw_delay_s` from when the node entered it. Every other attempt ends on
        the round's common schedule (`_scheduled_start`), which depends on nothing local:
        otherwise a node that skipped attempts early would stay that many attempts ahead of
        one that did not, for good (attempts advance at the same pace everywhere, and only
        the next attempt's messages are kept), and a committee split across attempts never
        certifies. With the schedule they meet again at the end of the skipper's attempt.
        (A presumed-dead draw is always in REDRAWING: only a new draw or round leaves it.)"""
        a = self._attempt
        if a.presumed_dead:
            return a.start + self.config.small_redraw_delay_s
        return self._scheduled_start(a.number + 1)

    def _scheduled_start(self, attempt: int) -> float:
        """Start of `attempt` on the round's common schedule: from the round start, each
        earlier attempt lasts nothing if its draw is below quorum (the same for everyone;
        after SMALL_DRAWS_SKIPPED_AT_ONCE attempts, `small_redraw_delay_s`), else
        `redraw_timeout_s` (a stalled attempt, growing)."""
        start = self._round_start
        stalled = 0
        for number in range(attempt):
            if self._left_at_once(number):
                continue
            if len(self._committee_of(number)) < self.config.quorum:
                start += self.config.small_redraw_delay_s
            else:
                start += self.config.redraw_timeout_s * timeout_factor(self.config, stalled)
                stalled += 1
        return start

    def _left_at_once(self, attempt: int) -> bool:
        """`attempt`'s draw is below quorum and among the round's first
        SMALL_DRAWS_SKIPPED_AT_ONCE: every node leaves it the moment it draws it."""
        return (
            attempt < SMALL_DRAWS_SKIPPED_AT_ONCE
            and len(self._committee_of(attempt)) < self.config.quorum
        )

    def _opening_attempt(self) -> int:
        """The round's first attempt not left at once: the first draw that reaches quorum
        (SMALL_DRAWS_SKIPPED_AT_ONCE if none of the attempts before it does). A sealed
        update's wraps are for its committee (sealing.md §2)."""
        attempt = 0
        while self._left_at_once(attempt):
            attempt += 1
        return attempt

    def _commit_not_before(self, attempt: int) -> float:
        """When our certificate of `attempt` may be submitted: the contract takes attempt a
        only `a x redrawDelay` (<= `small_redraw_delay_s`) after the last commit, which this
        node learned of at its round start; an attempt entered early because the draws
        before it were below quorum waits for that bound (plus CHAIN_CLOCK_MARGIN_S)."""
        if attempt == 0:
            return -math.inf
        bound = self._round_start + attempt * self.config.small_redraw_delay_s
        return bound + CHAIN_CLOCK_MARGIN_S

    def _stalled_before(self, attempt: int) -> int:
        """Attempts of this round before `attempt` drawn >= q (the growth step, shared)."""
        return sum(1 for n in range(attempt) if len(self._committee_of(n)) >= self.config.quorum)

    def _view_timeout(self, view: int) -> float:
        """How long `view` of the current attempt lasts (grows with attempts and views)."""
        steps = self._attempt.stalled_before + view
        return self.config.view_timeout_s * timeout_factor(self.config, steps)

    def _max_view(self) -> int:
        """Highest view a vote (or a follower's proposal) may name now.

        Views advance at most once per `view_timeout_s` from the attempt's start (collection
        may close early), so a view beyond what the clock allows (plus `max_views_ahead` of
        skew) can only come from a member signing statements for views that never run; each
        one is kept as a statement, so without this bound one member could grow our memory
        without limit.
        """
        a = self._attempt
        elapsed = self.now - a.start
        by_clock = self._views_within(elapsed) if math.isfinite(elapsed) and elapsed > 0 else 0
        return max(a.view, by_clock) + self.config.max_views_ahead

    def _views_within(self, elapsed: float) -> int:
        """How many whole views (of growing length) fit in `elapsed` seconds."""
        views, spent = 0, 0.0
        while True:
            length = self._view_timeout(views)
            if spent + length > elapsed:
                return views
            if self._view_timeout(views + 1) == length:  # capped or fixed: the rest is even
                return views + int((elapsed - spent) // length)
            views, spent = views + 1, spent + length

    def _start_next_round(self, event: RoundStarted) -> None:
        if event.round <= self.round:
            raise RoundStateError(
                f"RoundStarted({event.round}) but round {self.round} is already under way"
            )
        self._start_round(event)

    def _start_round(self, event: RoundStarted) -> None:
        CID.parse(event.base)  # the shell's own input: a bad base is a bug, let it raise
        self.now = max(self.now, event.now)
        self._goto(Trigger.ROUND_STARTED)
        self._reset_round(event, self._recent_authors(event), self._recent_signers(event))
        self._heard_round = event.round
        self.counters["rounds-started"] += 1
        if self.config.train and self._stakes.get(self.address, 0) > 0:
            # The author wraps to itself too: a sealed update always carries a wrap (so
            # sealed and plain updates are told apart even when the author alone is drawn).
            opening = self._committee_of(self._opening_attempt())
            recipients = (
                (self.address, *(m for m in opening if m != self.address))
                if self.config.sealed
                else ()
            )
            self._emit(StartTraining(event.round, event.base, recipients, self.config.sealed))
        self._draw(0, event.now)

    def _draw(self, attempt: int, start: float) -> None:
        if self._left_at_once(attempt):
            # Below quorum, and everybody knows it: the next attempt starts now. Only its
            # commit waits for the contract's bound (`_commit_not_before`).
            if attempt:
                self.counters["redraws"] += 1
            self.counters["draws-skipped:small"] += 1
            self._draw(attempt + 1, start)
            return
        committee = self._committee_of(attempt)
        stalled = self._stalled_before(attempt)
        collect_s = self.config.collect_deadline_s * timeout_factor(self.config, stalled)
        self._attempt = _Attempt(
            attempt, committee, start, start + collect_s, stalled_before=stalled
        )
        if attempt:
            self.counters["redraws"] += 1
        if len(committee) >= self.config.quorum:
            self._send_rewrap()
            self._send_update_to_committee()
        if len(committee) < self.config.quorum:
            self._goto(Trigger.DRAW_SMALL)
        elif self._presumed_dead_draw(attempt, committee):
            self.counters["redraws:presumed-dead"] += 1
            self._attempt.presumed_dead = True
            self._goto(Trigger.DRAW_SMALL)
        elif self.address in committee:
            self._drawn_member = True
            self._goto(Trigger.DRAW_MEMBER)
            for key in sorted(self._updates):  # a new member needs every delta seen so far
                self._fetch(key)
            self._check_collection()
        else:
            self._goto(Trigger.DRAW_FOLLOWER)

    def _guessing_liveness(self) -> bool:
        """Whether the liveness guess is credible enough to skip draws and views on: the
        heartbeats are judged (a window has passed since the first), or the last round's
        authors are a history of at least the expected floor."""
        if not self.config.skip_presumed_dead:
            return False
        if self._judging_liveness():
            return True
        return self._has_history and len(self._live) >= self._expected_floor

    def _presumed_alive(self, member: bytes) -> bool:
        """With heartbeats judged: heard (any signed message) within the live window, so a
        member killed after it last authored an update is seen dead from the next draw on.
        Without: it authored last round's updates, or voted or proposed this round or last."""
        if self._judging_liveness():
            return self._heard_recently(member)
        return member in self._live or member in self._signers or member in self._signers_prev

    def _presumed_dead_draw(self, attempt: int, committee: tuple[bytes, ...]) -> bool:
        """Fewer than q members of this draw are presumed alive: it cannot certify."""
        if attempt >= MAX_PRESUMED_DEAD_REDRAWS or not self._guessing_liveness():
            return False
        return sum(1 for m in committee if self._presumed_alive(m)) < self.config.quorum

    def _first_live_view(self, view: int) -> int:
        """`view`, or the next view (within `max_views_ahead`) whose leader is presumed alive."""
        if not self._guessing_liveness():
            return view
        committee = list(self._attempt.committee)
        for skip in range(min(len(committee), self.config.max_views_ahead + 1)):
            if self._presumed_alive(leader_of(committee, view + skip)):
                self.counters["views-skipped:presumed-dead"] += skip
                return view + skip
        return view

    # --- timers -------------------------------------------------------------------------

    def _on_heartbeat(self, event: HeartbeatReceived) -> None:
        """A signed heartbeat: its signer is alive (nothing else; it names no statement)."""
        beat = event.heartbeat
        if event.verified_signer != beat.signer:
            self._drop("bad-signer", beat.signer, True)
            return
        if beat.task != self.config.task:
            self._drop("wrong-task", beat.signer, True)
            return
        if beat.round < self.round:
            # A node behind us sends no update for our round; and an old beat re-offered by
            # gossip's sync (a restart) must not make a dead node look alive.
            self.counters["heartbeats:stale"] += 1
            return
        self.counters["heartbeats"] += 1
        if self._heartbeats_since is None and self.round > 0 and math.isfinite(self.now):
            # The live window starts at the first beat heard in a running round. Not before:
            # a beat that arrives ahead of the first Tick (now = -inf) or of RoundStarted
            # would start judging at once, and in round 1 every node whose first beat of the
            # round had not come yet (still starting up) would leave the collect quorum.
            self._heartbeats_since = self.now
        self._heard_from(beat.signer)

    def _heard_from(self, signer: bytes) -> None:
        """Any signed message of a registered node that reached us: it is alive now."""
        if self._stakes.get(signer, 0) > 0:
            self._last_heard[signer] = self.now

    def _judging_liveness(self) -> bool:
        """Whether silence marks a node dead: heartbeats are in use and a window has passed
        since the first one (before that, a silent node may simply not have beaten yet)."""
        since = self._heartbeats_since
        return (
            self.config.live_quorum
            and since is not None
            and self.now >= since + self.config.live_window_s
        )

    def _heard_recently(self, node: bytes) -> bool:
        if node == self.address:
            return True
        heard = self._last_heard.get(node)
        return heard is not None and self.now < heard + self.config.live_window_s

    def _next_silence(self) -> float | None:
        """When the next expected participant would fall silent (LIVENESS timer), or None.

        The earliest window end after the last check: a node last heard at t is live until
        t + live_window_s; one never heard, until a window after the first heartbeat."""
        if not self.config.live_quorum or self._heartbeats_since is None:
            return None
        window = self.config.live_window_s
        ends = [
            self._last_heard.get(node, self._heartbeats_since) + window
            for node in self._live - self._probation - {self.address}
        ]
        later = [t for t in ends if t > self._live_checked]
        return min(later, default=None)

    def _on_tick(self, event: Tick) -> None:
        self.now = max(self.now, event.now)
        for timer in Timer:  # in order, each in the phase the one before left (see Timer)
            if timer in self._timers[self.phase]:
                due = self._due_at(timer)
                if due is not None and self.now >= due:
                    self._fire(timer)

    def _due_at(self, timer: Timer) -> float | None:
        """When `timer` fires in the current attempt (None: not set)."""
        a = self._attempt
        if timer is Timer.NEXT_ATTEMPT:
            return self._next_attempt_at()
        if timer is Timer.COLLECT_END:
            return a.collect_deadline
        if timer is Timer.GRACE_END:
            return a.grace_end
        if timer is Timer.LIVENESS:
            return self._next_silence()
        if timer is Timer.VIEW_END:
            return a.view_deadline
        return self._submit_at

    def _fire(self, timer: Timer) -> None:
        a = self._attempt
        if timer is Timer.NEXT_ATTEMPT:
            self._draw(a.number + 1, self._next_attempt_at())
        elif timer is Timer.COLLECT_END:
            self.counters["collect-closed:deadline"] += 1
            self._close_collection()
        elif timer is Timer.GRACE_END:
            self.counters["collect-closed:quorum"] += 1
            self.counters["collect-closed:grace-end"] += 1
            self._close_collection()
        elif timer is Timer.LIVENESS:
            self._live_checked = self.now
            self._check_collection()
        elif timer is Timer.VIEW_END:
            self._goto(Trigger.VIEW_TIMEOUT)
            self.counters["view-changes"] += 1
            self._enter_view(a.view + 1)
        else:
            self._submit()

    # --- collection -----------------------------------------------------------------------

    def _collected(self) -> list[Update]:
        """Candidate updates: verified delta, author not an equivocator, openable by the
        whole committee (sealed); sorted by author."""
        return [
            u
            for author, u in sorted(self._first_update.items())
            if author not in self._equivocators
            and self._delta_ok.get((author, u.delta)) is True
            and self._usable(u)
        ]

    def _usable(self, u: Update) -> bool:
        """Whether every member of the attempt can open `u`'s delta (always, unsealed):
        its own wraps, plus the author's Rewrap for this attempt, cover the committee
        (spec sealing.md). Every member computes the same from the same signed messages,
        so a leader proposes only what its verifiers can recompute; an author silent at a
        re-draw is left out of that attempt instead of stalling it."""
        if not self.config.sealed:
            return True
        wrapped = members_of(u.wraps)
        a = self._attempt
        extra = self._rewrapped.get((u.signer, a.number)) if a.number else None
        if extra is not None and extra[0] == u.delta:
            wrapped = wrapped | extra[1]
        return covers(a.committee, u.signer, wrapped | self._unsealable)

    def _my_wrap(self, key: UpdateKey) -> bytes | None:
        """Our wrap of the key of `key`'s delta: in its Update, else from a Rewrap."""
        update = self._updates.get(key)
        mine = wrap_for(update.wraps, self.address) if update is not None else None
        return mine if mine is not None else self._rewraps.get(key)

    def _counted(self) -> int:
        """How many of `_collected()` count toward the collect quorum (authors not on
        probation), from the incremental set: equivocators and probation are few."""
        excluded = self._equivocators | self._probation
        return len(self._verified_first) - len(self._verified_first & excluded)

    def _expected_participants(self) -> int:
        """E of the collect quorum: the registered nodes presumed alive, within bounds.

        Presumed alive (`_live`): every registered node in the first round; afterwards the
        authors heard last round (`_recent_authors`), this node itself, and any author
        whose update arrives this round (a returning node counts again at once). Never
        below `min_expected_percent` of the registered nodes, nor above all of them.
        Authors on probation (`RoundStarted.probation`) are left out of all three.
        Only liveness depends on it: each member may close at its own E, and the
        committee still votes on the leader's aggregate.
        """
        if self.config.expected_participants:
            return self.config.expected_participants
        if self._judging_liveness():  # heard this round or recently (see `live_quorum`)
            alive = sum(
                1
                for a in self._live - self._probation
                if a in self._heard or self._heard_recently(a)
            )
        else:  # (probation is a few authors: no pass over every live node per update)
            alive = len(self._live) - len(self._live & self._probation)
        return min(self._eligible, max(alive, self._expected_floor))

    def _hear(self, author: bytes) -> None:
        """A registered author's valid update for this round reached us: it is alive."""
        self._heard.add(author)
        self._live.add(author)

    def _check_collection(self) -> None:
        if not self._can(Trigger.COLLECT_CLOSED):
            return  # not collecting
        expected = self._expected_participants()
        quorum = collect_quorum(self.config.collect_quorum_percent, expected)
        counted = self._counted()
        if counted < quorum:
            return
        a = self._attempt
        if a.grace_end == math.inf:  # the quorum is held: stragglers get the grace
            a.grace_end = self.now + self.config.straggler_grace_s
        if counted >= expected or self.now >= a.grace_end:
            self.counters["collect-closed:quorum"] += 1
            self._close_collection()

    def _close_collection(self) -> None:
        self._goto(Trigger.COLLECT_CLOSED)
        self._enter_view(0)

    def _enter_view(self, view: int) -> None:
        a = self._attempt
        a.view = self._first_live_view(view)
        a.view_deadline = self.now + self._view_timeout(a.view)
        a.proposal = None
        a.verify_failed = False
        self._dirty = True  # buffered proposals for this view get re-offered
        self._try_propose()

    def _fetch(self, key: UpdateKey) -> None:
        if key in self._fetching or key in self._delta_ok:
            return
        wrap = b""
        if self.config.sealed:
            found = self._my_wrap(key)
            if found is None:
                return  # not wrapped to us (yet): a Rewrap may bring it (`_on_rewrap`)
            wrap = found
        self._fetching.add(key)
        self._emit(Fetch(*key, wrap))

    def _ignore_local_update(self, event: LocalUpdateReady) -> None:
        self.counters["local-update-ignored"] += 1

    def _on_local_update(self, event: LocalUpdateReady) -> None:
        if (
            event.round != self.round
            or self._own_update_sent
            or self._stakes.get(self.address, 0) <= 0
        ):
            self._ignore_local_update(event)
            return
        update = Update(
            task=self.config.task,
            round=self.round,
            base=self.base,
            delta=event.delta,
            n_samples=event.n_samples,
            norm=event.norm,
            inline=event.inline,
            signer=self.address,
            wraps=event.wraps,
        )
        if self._conflicts_with_ours(update):
            self.counters["local-update-ignored"] += 1
            return
        update = self._sign(update)  # type: ignore[assignment]
        self._own_update_sent = True
        key = (self.address, update.delta)
        self._first_update[self.address] = update
        if self.config.updates_to_committee:
            self._send_update_to_committee()
        else:
            self._emit(Publish(update))
        self._updates[key] = update
        self._statements[(self.address, update.statement_key())] = update
        self._delta_ok[key] = True  # our own blocks are local
        self._verified_first.add(self.address)
        self.counters["updates-accepted"] += 1
        self._hear(self.address)
        self._send_rewrap()  # published after a re-draw: wrap for the current committee too
        self._after_new_data()

    def _send_update_to_committee(self) -> None:
        """Updates to the committee: send our update to the members of this attempt it has
        not been sent to (all of them at first, a re-draw's new members later); nothing
        for a draw below quorum (no one to collect) nor before our update is out."""
        own = self._first_update.get(self.address)
        a = self._attempt
        if (
            not self.config.updates_to_committee
            or not self._own_update_sent
            or own is None
            or len(a.committee) < self.config.quorum
        ):
            return
        recipients = tuple(
            m for m in a.committee if m != self.address and m not in self._update_sent_to
        )
        if recipients:
            self._update_sent_to.update(recipients)
            self._emit(Publish(own, to=recipients))

    # --- sealed updates: re-wraps for a re-drawn committee (spec sealing.md) ------------------

    def _send_rewrap(self) -> None:
        """Ask the shell to wrap our update's key for this attempt's members that its own
        wraps miss (once per attempt; nothing at the round's opening attempt, whose committee
        the update's wraps cover, nor for a plain task or before our update is out)."""
        a = self._attempt
        own = self._first_update.get(self.address)
        if (
            not self.config.sealed
            or not self._own_update_sent
            or own is None
            or a.number == self._opening_attempt()
            or a.number in self._rewraps_sent
            or len(a.committee) < self.config.quorum
        ):
            return
        wrapped = members_of(own.wraps) | {self.address}
        recipients = tuple(m for m in a.committee if m not in wrapped)
        if recipients:
            self._rewraps_sent.add(a.number)
            self._emit(WrapKey(self.round, a.number, own.delta, recipients))

    def _on_wraps_ready(self, event: WrapsReady) -> None:
        """The shell wrapped our key: sign and gossip the Rewrap (if still in its attempt)."""
        if (
            (event.round, event.attempt) != (self.round, self._attempt.number)
            or not event.wraps
            or (self.address, event.attempt) in self._rewrapped  # (answered already)
        ):
            self.counters["rewraps-stale"] += 1
            return
        rewrap = Rewrap(
            task=self.config.task,
            round=self.round,
            attempt=event.attempt,
            delta=event.delta,
            wraps=event.wraps,
            signer=self.address,
        )
        try:
            replace(rewrap, signature=bytes(65)).validate()
        except InvalidMessage as exc:  # the shell's wraps were malformed
            self._emit(Rejected("bad-wraps", self.address, False, str(exc)))
            return
        self.counters["rewraps-sent"] += 1
        # Our own rewrap never comes back from gossip: note it as others will (`_usable`).
        self._rewrapped[(self.address, event.attempt)] = (event.delta, members_of(event.wraps))
        rewrap = self._sign(rewrap)  # type: ignore[assignment]
        if self.config.updates_to_committee:  # only the attempt's members use it (`_usable`)
            to = tuple(m for m in self._attempt.committee if m != self.address)
            self._emit(Publish(rewrap, to=to))
        else:
            self._emit(Publish(rewrap))

    def _on_rewrap(self, event: RewrapReceived) -> None:
        """An author's wraps for a re-drawn committee: note which members it covers (the
        `_usable` rule) and our own wrap, then fetch the delta if we are collecting."""
        signer = self._checked_signer(event)
        if signer is None:
            return
        r = event.rewrap
        if r.task != self.config.task:
            self._drop("wrong-task", signer, True)
            return
        if r.round != self.round:
            if r.round < self.round:
                self._drop("stale-round", signer, False)
            else:
                self._hold_future_round(event, signer, r.round)
            return
        if self._stakes.get(signer, 0) <= 0:
            self._drop("not-registered", signer, True)
            return
        if r.attempt < self._attempt.number:
            self._drop("stale-attempt", signer, False)
            return
        if r.attempt > self._attempt.number + 1:
            self._drop("future-attempt", signer, False)
            return
        if foreign_members(r.wraps, self._committee_of(r.attempt)) or not r.wraps:
            self._drop("bad-wraps", signer, True, "wraps for nodes off the attempt's committee")
            return
        slot = (signer, r.attempt)
        if slot in self._rewrapped:
            # Wraps are random: a second rewrap differs without being equivocation.
            self._drop("duplicate", signer, False)
            return
        self._rewrapped[slot] = (r.delta, members_of(r.wraps))
        self.counters["rewraps-accepted"] += 1
        key = (signer, r.delta)
        mine = wrap_for(r.wraps, self.address)
        if mine is not None:
            self._rewraps.setdefault(key, mine)
        if key in self._updates and self.phase in (Phase.COLLECTING, Phase.VOTING):
            self._fetch(key)
        self._after_new_data()

    def _on_delta(self, event: DeltaAvailable) -> None:
        key = (event.author, event.delta)
        if key not in self._fetching:
            return  # an answer for another round, or never asked
        self._fetching.discard(key)
        self._delta_ok[key] = event.ok
        if not event.ok and event.reason:  # the author's doing (e.g. a tampered ciphertext)
            self._drop(event.reason, event.author, True)
        first = self._first_update.get(event.author)
        if event.ok and first is not None and first.delta == event.delta:
            self._verified_first.add(event.author)
        self.counters["deltas-ok" if event.ok else "deltas-bad"] += 1
        self._after_new_data()

    def _after_new_data(self) -> None:
        self._check_collection()
        self._try_propose()
        self._try_verify()

    # --- checks common to incoming messages ------------------------------------------------

    def _checked_signer(self, event: Gossip) -> bytes | None:
        """The signer the event's message names, if the caller recovered that very signer;
        else the event is dropped, penalized (None). A commit certificate has no signer of
        its own (b""): the machine checks its votes."""
        if isinstance(event, CommitSeen):
            return b""
        signer = event.message.signer
        if event.verified_signer != signer:
            self._drop("bad-signer", signer, True)
            return None
        self._heard_from(signer)
        return signer

    def _hold(self, event: Gossip) -> None:
        """IDLE: no round yet to check a message against; keep it (bounded) until one starts."""
        signer = self._checked_signer(event)
        if signer is None:
            return
        if event.message.task != self.config.task:
            self._drop("wrong-task", signer, True)
            return
        self._buffer_event(event, signer)

    def _after_commit(self, event: Gossip) -> None:
        """ADVANCED: our round is committed, so a message is stale or for a later round."""
        signer = self._checked_signer(event)
        if signer is not None:
            self._classify_after_commit(event, signer)

    def _classify_after_commit(self, event: Gossip, signer: bytes) -> None:
        m = event.message
        if m.task != self.config.task:
            self._drop("wrong-task", signer, True)
        elif m.round <= self.round:
            self._drop("stale-round", signer, False)
        else:
            self._hold_future_round(event, signer, m.round)

    def _hold_future_round(self, event: Event, signer: bytes, round_: int) -> None:
        if round_ - self.round <= self.config.max_rounds_ahead:
            self._buffer_event(event, signer)
        else:
            self._drop("future-round", signer, False)

    def _classify_round(
        self, event: Event, signer: bytes, task: bytes, round_: int, base: bytes
    ) -> str:
        if task != self.config.task:
            self._drop("wrong-task", signer, True)
            return _DROP
        if round_ < self.round:
            self._drop("stale-round", signer, False)
            return _DROP
        if round_ > self.round:
            self._hold_future_round(event, signer, round_)
            return _FUTURE
        if base != self.base:
            self._drop("wrong-base", signer, True)
            return _DROP
        return _CURRENT

    def _classify_attempt(self, event: Event, signer: bytes, attempt: int) -> str:
        if attempt < self._attempt.number:
            self._drop("stale-attempt", signer, False)
            return _DROP
        if attempt > self._attempt.number:
            if attempt == self._attempt.number + 1:
                self._buffer_event(event, signer)
                return _FUTURE
            self._drop("future-attempt", signer, False)
            return _DROP
        return _CURRENT

    def _record_statement(self, message: Signed) -> bool:
        """First statement per (signer, key) is kept; a different second one is evidence.

        Returns True when `message` is new (first of its key), False for a duplicate or
        a conflicting statement (which is reported, once per signer and key).
        """
        signer: bytes = message.signer  # type: ignore[attr-defined]
        slot = (signer, message.statement_key())
        first = self._statements.get(slot)
        if first is None:
            self._statements[slot] = message
            if signer == self.address:  # ours (e.g. from before a restart): stand by it
                self._own_seen.setdefault(slot[1], message.body())
                self._my_statements.setdefault(slot[1], message.body())
            return True
        if first.body() == message.body():
            self._drop("duplicate", signer, False)
            return False
        self.counters["rejected:equivocation"] += 1
        self._emit(Rejected("equivocation", signer, False))
        if slot not in self._reported:
            self._reported.add(slot)
            self.counters["evidence"] += 1
            self._emit(ReportEvidence(Evidence(first, message)))
        return False

    # --- updates ------------------------------------------------------------------------------

    def _on_late_update(self, event: UpdateReceived) -> None:
        """ADVANCED: a straggler's update for the committed round (its `base` is then the
        old model, ours the new one) is stale, but tells us its author is alive."""
        signer = self._checked_signer(event)
        if signer is None:
            return
        u = event.update
        late = (u.task, u.round) == (self.config.task, self.round)
        if late and self._stakes.get(signer, 0) > 0:
            self._hear(signer)  # alive: expected next round
        self._classify_after_commit(event, signer)

    def _on_update(self, event: UpdateReceived) -> None:
        """Keep the update (a later draw or a proposal may need it), fetch nothing."""
        self._take_update(event, fetch=False)

    def _on_update_and_fetch(self, event: UpdateReceived) -> None:
        """COLLECTING/VOTING (a member): keep the update and fetch its delta at once."""
        self._take_update(event, fetch=True)

    def _take_update(self, event: UpdateReceived, fetch: bool) -> None:
        if self._checked_signer(event) is None:
            return
        u = event.update
        if self._classify_round(event, u.signer, u.task, u.round, u.base) != _CURRENT:
            return
        if self._stakes.get(u.signer, 0) <= 0:
            self._drop("not-registered", u.signer, True)
            return
        self._hear(u.signer)  # even if it turns out to be a duplicate or an equivocation
        if u.n_samples > self.config.max_n_samples:
            self._drop("bad-bounds", u.signer, True, f"n_samples {u.n_samples}")
            return
        if self.config.sealed != bool(u.wraps):
            reason = "not-sealed" if self.config.sealed else "unexpected-wraps"
            self._drop(reason, u.signer, True)
            return
        if foreign_members(u.wraps, {*self._committee_of(self._opening_attempt()), u.signer}):
            self._drop("bad-wraps", u.signer, True, "wraps for nodes off the round's committee")
            return
        first = self._first_update.get(u.signer)
        if not self._record_statement(u):
            conflict = first is not None and first.body() != u.body()
            if conflict and u.signer not in self._equivocators:
                # Keep the second version too (a proposal may name either): at most 2 per author.
                self._equivocators.add(u.signer)
                self._updates.setdefault((u.signer, u.delta), u)
                self._after_new_data()
            return
        key = (u.signer, u.delta)
        self._first_update[u.signer] = u
        if self._delta_ok.get(key) is True:
            self._verified_first.add(u.signer)
        self._updates[key] = u
        self.counters["updates-accepted"] += 1
        if fetch:
            self._fetch(key)
        self._after_new_data()

    # --- proposals ----------------------------------------------------------------------------

    def _valid_proposal(self, event: ProposalReceived) -> Proposal | None:
        """The proposal, if it is for this attempt, by a leader, and well-formed (else
        dropped or held: None)."""
        p = event.proposal
        if self._checked_signer(event) is None:
            return None
        if self._classify_round(event, p.signer, p.task, p.round, p.base) != _CURRENT:
            return None
        if self._classify_attempt(event, p.signer, p.attempt) != _CURRENT:
            return None
        committee = list(self._attempt.committee)
        if len(committee) < self.config.quorum or leader_of(committee, p.view) != p.signer:
            self._drop("not-leader", p.signer, True)
            return None
        if p.rule != self.config.rule:
            self._drop("wrong-rule", p.signer, True)
            return None
        included = {a for a, _ in p.included}
        rejected = {a for a, _ in p.rejected}
        if included & rejected or any(self._stakes.get(a, 0) <= 0 for a in included | rejected):
            self._drop("bad-proposal", p.signer, True, "authors must be registered and in one list")
            return None
        return p

    def _watch_proposal(self, event: ProposalReceived) -> None:
        """Not collecting or voting (a follower, a draw below quorum, certified): do not act
        on a proposal, but record it to catch equivocation."""
        p = self._valid_proposal(event)
        if p is None:
            return
        if p.view > self._max_view():
            self._drop("future-view", p.signer, False)
        elif self._record_statement(p):
            self.counters["proposals-accepted"] += 1
            self._signers.add(p.signer)

    def _proposal_of_this_view(self, event: ProposalReceived) -> Proposal | None:
        """A member's valid proposal for the current view, recorded (else None: dropped,
        or held until we reach its view)."""
        p = self._valid_proposal(event)
        if p is None:
            return None
        a = self._attempt
        if p.view < a.view:
            if self._record_statement(p):  # (else already counted as duplicate/equivocation)
                self._drop("stale-view", p.signer, False)
            return None
        if p.view > a.view:
            # Not recorded yet: it is re-offered when we reach its view.
            if p.view - a.view <= self.config.max_views_ahead:
                self._buffer_event(event, p.signer)
            else:
                self._drop("future-view", p.signer, False)
            return None
        if not self._record_statement(p):
            return None
        self.counters["proposals-accepted"] += 1
        self._signers.add(p.signer)
        return p

    def _on_proposal(self, event: ProposalReceived) -> None:
        """VOTING: verify the view's proposal (and vote if it checks)."""
        p = self._proposal_of_this_view(event)
        if p is not None:
            self._attempt.proposal = p
            self._try_verify()

    def _on_proposal_while_collecting(self, event: ProposalReceived) -> None:
        """COLLECTING: the leader closed its collection, so ours is moot: the proposal
        defines the set. Close, then verify it as in VOTING."""
        p = self._proposal_of_this_view(event)
        if p is not None:
            self.counters["collect-closed:proposal"] += 1
            self._close_collection()
            self._attempt.proposal = p
            self._try_verify()

    def _verify_inputs(self, p: Proposal) -> tuple[list[Update], bool] | None:
        """Updates the proposal's aggregate is recomputed over, and whether all are ready.

        None means the proposal can never be verified by us (a delta failed, an
        equivocator's rejected version is ambiguous, or it includes an update by a known
        equivocator: the leader may not have seen the second version yet, but we have,
        and a later view's leader excludes it).
        """
        if any(author in self._equivocators for author, _ in p.included):
            self.counters["proposal-includes-equivocator"] += 1
            return None
        updates: list[Update] = []
        ready = True
        filter_rejected = [a for a, reason in p.rejected if reason not in DISCRETION_REASONS]
        keys: list[UpdateKey | None] = list(p.included)
        for author in filter_rejected:
            if author in self._equivocators:
                return None
            first = self._first_update.get(author)
            keys.append((author, first.delta) if first else None)
        for key in keys:
            if key is None or key not in self._updates:
                ready = False  # the signed Update has not reached us yet
                continue
            if not self._usable(self._updates[key]):
                ready = False  # its Rewrap for this attempt has not reached us (yet)
                continue
            ok = self._delta_ok.get(key)
            if ok is False:
                return None
            if ok is None:
                ready = False
                self._fetch(key)
            updates.append(self._updates[key])
        updates.sort(key=lambda u: u.signer)
        return updates, ready

    def _try_verify(self) -> None:
        a = self._attempt
        p = a.proposal
        if p is None or self.phase != Phase.VOTING or p.view != a.view:
            return
        if a.view in a.voted_views or a.verify_failed:
            return
        inputs = self._verify_inputs(p)
        if inputs is None:
            a.verify_failed = True
            self.counters["proposal-unverifiable"] += 1
            return
        updates, ready = inputs
        if not ready:
            return
        key = tuple((u.signer, u.delta) for u in updates)
        result = a.computed.get(key)
        if result is None:
            self._compute(updates)
            return
        filter_rejected = tuple((x, r) for x, r in p.rejected if r not in DISCRETION_REASONS)
        if (
            not result.error
            and result.included == p.included
            and result.rejected == filter_rejected
            and result.result == p.result
            and result.contributors_root == p.contributors_root
        ):
            self._vote(p.view, p.result, p.contributors_root)
        else:
            a.verify_failed = True
            self.counters["proposal-mismatch"] += 1

    def _compute(self, updates: list[Update]) -> None:
        a = self._attempt
        request = ComputeAggregate(
            self.round, a.number, self.base, self.config.rule, a.committee, tuple(updates)
        )
        if request.candidates not in a.computing:
            a.computing.add(request.candidates)
            self.counters["aggregates-requested"] += 1
            self._emit(request)

    def _on_computed(self, event: AggregateComputed) -> None:
        a = self._attempt
        ours = event.round == self.round and event.attempt == a.number
        if not ours or event.candidates not in a.computing:
            return  # an answer for a round/attempt we have left
        a.computing.discard(event.candidates)
        a.computed[event.candidates] = event
        if event.error:
            self.counters["aggregate-errors"] += 1
        self._try_propose()
        self._try_verify()

    def _try_propose(self) -> None:
        a = self._attempt
        if self.phase != Phase.VOTING or a.view in a.proposed_views:
            return
        if leader_of(list(a.committee), a.view) != self.address:
            return
        key = a.propose_keys.get(a.view)
        if key is None:
            candidates = self._collected()
            if len(candidates) < self.config.min_updates:
                return  # retried whenever a delta arrives during the view
            key = tuple((u.signer, u.delta) for u in candidates)
            a.propose_keys[a.view] = key
            if key not in a.computed:
                self._compute(candidates)
        result = a.computed.get(key)
        if result is None:
            return
        a.proposed_views.add(a.view)
        if result.error:
            return  # nothing to propose this view; the next leader tries its own set
        discretion: list[tuple[bytes, str]] = []
        for author, u in sorted(self._first_update.items()):
            if author in self._equivocators:
                discretion.append((author, REASON_EQUIVOCATION))
            elif self._delta_ok.get((author, u.delta)) is False:
                discretion.append((author, REASON_UNAVAILABLE))
        proposal = Proposal(
            task=self.config.task,
            round=self.round,
            attempt=a.number,
            view=a.view,
            base=self.base,
            included=result.included,
            rejected=tuple(sorted([*result.rejected, *discretion])),
            rule=self.config.rule,
            result=result.result,
            contributors_root=result.contributors_root,
            signer=self.address,
        )
        try:
            replace(proposal, signature=bytes(65)).validate()
        except InvalidMessage as exc:  # the shell's aggregate answer was malformed
            self.counters["proposal-invalid"] += 1
            self._emit(Rejected("bad-aggregate", self.address, False, str(exc)))
            return
        if self._conflicts_with_ours(proposal):
            return
        proposal = self._sign(proposal)  # type: ignore[assignment]
        self._statements[(self.address, proposal.statement_key())] = proposal
        self.counters["proposals-sent"] += 1
        self._emit(Publish(proposal, to=self._consensus_recipients()))
        a.proposal = proposal
        # Our own computation is the verification: vote at once.
        self._vote(a.view, proposal.result, proposal.contributors_root)

    # --- votes and certificates ----------------------------------------------------------------

    def _consensus_recipients(self) -> tuple[bytes, ...] | None:
        """Where our proposals and votes go: gossip to every node (None), or, when updates
        go to the committee, the attempt's other members alone (only members act on them;
        the others learn the outcome from the certificate and the chain)."""
        if not self.config.updates_to_committee:
            return None
        return tuple(m for m in self._attempt.committee if m != self.address)

    def _vote(self, view: int, result: bytes, root: bytes) -> None:
        a = self._attempt
        a.voted_views.add(view)
        vote = Vote(
            task=self.config.task,
            round=self.round,
            attempt=a.number,
            view=view,
            base=self.base,
            result=result,
            contributors_root=root,
            signer=self.address,
        )
        if self._conflicts_with_ours(vote):
            return
        vote = self._sign(vote)  # type: ignore[assignment]
        self._statements[(self.address, vote.statement_key())] = vote
        self.counters["votes-sent"] += 1
        self._emit(Publish(vote, to=self._consensus_recipients()))
        self._count_vote(vote)

    def _on_vote(self, event: VoteReceived) -> None:
        v = event.vote
        if self._checked_signer(event) is None:
            return
        if self._classify_round(event, v.signer, v.task, v.round, v.base) != _CURRENT:
            return
        if self._classify_attempt(event, v.signer, v.attempt) != _CURRENT:
            return
        if v.signer not in self._attempt.committee:
            self._drop("not-member", v.signer, True)
            return
        if v.view > self._max_view():
            self._drop("future-view", v.signer, False)
            return
        if not self._record_statement(v):
            return
        self.counters["votes-accepted"] += 1
        self._signers.add(v.signer)
        self._count_vote(v)

    def _count_vote(self, v: Vote) -> None:
        a = self._attempt
        voters = a.tally.setdefault((v.view, v.result, v.contributors_root), {})
        voters[v.signer] = v
        if self._certificate is None and len(voters) >= self.config.quorum:
            cert = Commit(
                task=v.task,
                round=v.round,
                attempt=v.attempt,
                view=v.view,
                base=v.base,
                result=v.result,
                contributors_root=v.contributors_root,
                votes=tuple(sorted((s, vote.signature) for s, vote in voters.items())),
            )
            self.counters["certificates-assembled"] += 1
            self._on_certificate(cert)

    def _on_commit_seen(self, event: CommitSeen) -> None:
        c = event.commit
        if self._classify_round(event, b"", c.task, c.round, c.base) != _CURRENT:
            return
        if self._classify_attempt(event, b"", c.attempt) != _CURRENT:
            return
        if self._certificate is not None:
            return  # one certificate is enough; the chain arbitrates between any others
        signers = [s for s, _ in c.votes]
        committee = set(self._attempt.committee)
        if len(signers) < self.config.quorum or not set(signers) <= committee:
            self._drop("bad-certificate", b"", True, "too few votes or a non-member signer")
            return
        try:
            c.verify_votes(self.domain)
        except InvalidMessage as exc:
            self._drop("bad-certificate", b"", True, str(exc))
            return
        for signer, signature in c.votes:  # a certificate may expose an equivocating vote
            vote = c.vote_for(signer, signature)
            if (signer, vote.statement_key()) in self._statements:
                self._record_statement(vote)
        self.counters["certificates-seen"] += 1
        self._on_certificate(c)

    def _on_certificate(self, cert: Commit) -> None:
        self._certificate = cert
        if not self._can(Trigger.CERTIFIED):
            return  # REDRAWING (our liveness guess skipped this draw): keep it, submit nothing
        self._goto(Trigger.CERTIFIED)
        committee = list(self._attempt.committee)
        if self.address in committee:
            # The view's leader submits at once; member at rank r after it, r delays later.
            rank = (committee.index(self.address) - cert.view) % len(committee)
            # (From the contract's bound for an attempt entered early: the ranks keep their
            # spacing, so the fallbacks still follow the leader instead of joining it.)
            start = max(self.now, self._commit_not_before(cert.attempt))
            self._submit_at = start + rank * self.config.commit_fallback_delay_s
            if rank == 0 and start == self.now:
                self._submit()
            elif rank == 0:
                self.counters["commits-deferred:redraw-bound"] += 1

    def _submit(self) -> None:
        assert self._certificate is not None
        self._submit_at = None
        self.counters["commits-submitted"] += 1
        self._emit(SubmitCommit(self._certificate))
        certified = self._certified_proposal()
        if certified is not None:  # proposals went to the members only: tell the others
            self._emit(Publish(certified))
        self._emit(Publish(self._certificate))

    def _certified_proposal(self) -> Proposal | None:
        """Updates to the committee: the proposal our certificate certifies, if we hold it
        (its leader does; a member that voted for it does), to be gossiped with the
        certificate: the nodes off the committee read the round's contributors from it
        (the reward tree, the round record)."""
        cert = self._certificate
        if not self.config.updates_to_committee or cert is None:
            return None
        return self._held_proposal(cert.attempt, cert.view, cert.result, cert.contributors_root)

    def _held_proposal(
        self, attempt: int, view: int, result: bytes, contributors_root: bytes
    ) -> Proposal | None:
        """The proposal of this round we hold for (attempt, view, result, root), if any."""
        wanted = (attempt, view, result, contributors_root)
        for statement in self._statements.values():
            if isinstance(statement, Proposal) and wanted == (
                statement.attempt,
                statement.view,
                statement.result,
                statement.contributors_root,
            ):
                return statement
        return None

    def _hear_committed(self, event: ChainCommitted) -> None:
        """The authors the committed proposal included, if we hold it, count as heard this
        round: the next round's history (`_recent_authors`). With updates to the committee
        a member may hold only some of the round's updates when it commits (they were
        pushed to others, the relay still under way); its history would then expect only
        those next round and close collection on them (5 nodes: a round committed with 3
        of the 5 updates)."""
        proposal = self._held_proposal(
            event.attempt, event.view, event.result, event.contributors_root
        )
        if proposal is not None:
            self._heard.update(a for a, _ in proposal.included if a in self._registered)

    # --- following the chain --------------------------------------------------------------------

    def _on_chain_committed(self, event: ChainCommitted) -> None:
        """A round under way: follow a commit of this round or a later one."""
        if event.round >= self.round:
            self._follow_chain(event)

    def _on_chain_committed_again(self, event: ChainCommitted) -> None:
        """ADVANCED: our round is followed already; only a later round is news (we lag)."""
        if event.round > self.round:
            self._follow_chain(event)

    def _follow_chain(self, event: ChainCommitted) -> None:
        cert = self._certificate
        if event.round == self.round and cert is not None and cert.result != event.result:
            # Possible across views (spec: safety): the chain's first commit is final.
            self.counters["chain-differs-from-certificate"] += 1
        if event.round == self.round:
            self._hear_committed(event)
        self._goto(Trigger.CHAIN_COMMITTED)
        self.round = event.round
        self.base = event.result
        self._submit_at = None
        self.counters["rounds-committed"] += 1
        self._emit(Advance(event.round + 1, event.result))


# --- what each phase does with each event -------------------------------------------------

_Handler = Callable[[RoundMachine, Any], None]  # each takes its own event type
_M = RoundMachine
_RUNNING = (Phase.REDRAWING, Phase.COLLECTING, Phase.FOLLOWING, Phase.VOTING, Phase.CERTIFIED)


def _each(phases: tuple[Phase, ...], handler: _Handler) -> dict[Phase, _Handler]:
    return dict.fromkeys(phases, handler)


# (event type, phase) -> handler. Every pair is listed (tests/core/test_round.py checks),
# so what a phase does with an event is read here, not inferred from `if`s in handlers.
# IDLE is before the first RoundStarted; _RUNNING phases have a round under way;
# ADVANCED has seen the chain commit it and waits for RoundStarted(round + 1).
HANDLERS: dict[type, dict[Phase, _Handler]] = {
    RoundStarted: {
        Phase.IDLE: _M._start_round,
        # Raises RoundStateError unless the round moves forward (a shell bug).
        **_each((*_RUNNING, Phase.ADVANCED), _M._start_next_round),
    },
    # Every phase keeps the clock; `TIMERS` says which deadlines a phase checks.
    Tick: _each(tuple(Phase), _M._on_tick),
    # Liveness only, in every phase (before the first round: stakes unknown, nothing kept).
    HeartbeatReceived: _each(tuple(Phase), _M._on_heartbeat),
    LocalUpdateReady: {
        Phase.IDLE: _M._ignore_local_update,  # no round to publish it in
        **_each(_RUNNING, _M._on_local_update),
        Phase.ADVANCED: _M._ignore_local_update,  # too late: the round is committed
    },
    # Gossip: before any round it is held; after the commit it is stale or for later.
    UpdateReceived: {
        Phase.IDLE: _M._hold,
        Phase.REDRAWING: _M._on_update,
        Phase.COLLECTING: _M._on_update_and_fetch,
        Phase.FOLLOWING: _M._on_update,
        Phase.VOTING: _M._on_update_and_fetch,
        Phase.CERTIFIED: _M._on_update,
        Phase.ADVANCED: _M._on_late_update,
    },
    ProposalReceived: {
        Phase.IDLE: _M._hold,
        Phase.REDRAWING: _M._watch_proposal,
        Phase.COLLECTING: _M._on_proposal_while_collecting,
        Phase.FOLLOWING: _M._watch_proposal,
        Phase.VOTING: _M._on_proposal,
        Phase.CERTIFIED: _M._watch_proposal,
        Phase.ADVANCED: _M._after_commit,
    },
    VoteReceived: {
        Phase.IDLE: _M._hold,
        **_each(_RUNNING, _M._on_vote),  # followers tally too: a certificate ends their wait
        Phase.ADVANCED: _M._after_commit,
    },
    CommitSeen: {
        Phase.IDLE: _M._hold,
        **_each(_RUNNING, _M._on_commit_seen),
        Phase.ADVANCED: _M._after_commit,
    },
    # Answers to our own requests; before the first round nothing was asked.
    DeltaAvailable: {Phase.IDLE: _M._ignore, **_each((*_RUNNING, Phase.ADVANCED), _M._on_delta)},
    AggregateComputed: {
        Phase.IDLE: _M._ignore,
        **_each((*_RUNNING, Phase.ADVANCED), _M._on_computed),
    },
    ChainCommitted: {
        Phase.IDLE: _M._follow_chain,
        **_each(_RUNNING, _M._on_chain_committed),
        Phase.ADVANCED: _M._on_chain_committed_again,
    },
    # Sealed updates: our own wraps come back from the shell while the round runs; an
    # author's Rewrap is held before any round and stale or for later once committed.
    WrapsReady: {
        Phase.IDLE: _M._ignore,
        **_each(_RUNNING, _M._on_wraps_ready),
        Phase.ADVANCED: _M._ignore,
    },
    RewrapReceived: {
        Phase.IDLE: _M._hold,
        **_each(_RUNNING, _M._on_rewrap),
        Phase.ADVANCED: _M._after_commit,
    },
}


@dataclass(frozen=True)
class _PhaseTable:
    """One phase's rows of `HANDLERS` (by event type) and `TRANSITIONS` (its triggers),
    looked up once per phase change rather than on every event."""

    handlers: dict[type, _Handler]
    # A tuple: its `in` compares members by identity, without hashing an enum in Python.
    triggers: tuple[Trigger, ...]


_PHASE_TABLES = {
    phase: _PhaseTable(
        {event: by_phase[phase] for event, by_phase in HANDLERS.items()},
        tuple(TRANSITIONS[phase]),
    )
    for phase in Phase
}
