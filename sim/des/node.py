"""One simulated node: the unmodified `RoundMachine` and a shell that performs its actions
on the simulated network, chain and trainer (as p2pfl/node/node.py does on the real ones).

What the shell does, action by action (the real node's counterpart in brackets):
- StartTraining: train for the laptop's compute time, store the delta, answer
  LocalUpdateReady [workers.train];
- Publish: gossip the message, through the attacker's adapter if the node is one
  [Node._publish, sim.attacks.HostileNet.publish];
- Fetch: inline bytes at once, else a block transfer from a holder, answer DeltaAvailable
  [workers.fetch_delta];
- ComputeAggregate: the real `compute_aggregate`, answered after its modelled time
  [workers.compute];
- SubmitCommit / ReportEvidence: a transaction to the chain [chain_tx];
- Advance: fetch the committed model, read the stakes snapshot, RoundStarted
  [Node._advance, Node._start_round].
Time reaches the machine as the real ticker gives it: Tick at the machine's next deadline,
every DEFAULT_TICK_S while collecting (the live quorum and grace windows move with every
message there), and before an event when the machine's clock is DEFAULT_TICK_S old.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from p2pfl.core import round_events as ev
from p2pfl.core.messages import Commit, Proposal, Signed, Update, Vote
from p2pfl.core.round import Phase, RoundMachine
from p2pfl.errors import P2PFLError
from p2pfl.node.roundlog import Behaviour
from sim.attacks import INLINE_MAX_BYTES, bogus_cid, scaled
from sim.des.training import encoded

# p2pfl.node.node.DEFAULT_TICK_S: the real ticker's resolution when no deadline is near.
DEFAULT_TICK_S = 0.25


@dataclass
class RoundEntry:
    """One node's timeline of one round (p2pfl.node.roundlog.RoundLog's fields we use)."""

    started: float
    published_at: float = 0.0
    collect_closed_at: float = 0.0
    computed_at: float = 0.0
    certified_at: float = 0.0
    committed_at: float = 0.0
    member: bool = False
    committee: tuple[bytes, ...] = ()


class World(Protocol):
    """What a node uses of the simulation (sim.des.engine.Engine provides it)."""

    rounds: int

    @property
    def now(self) -> float: ...

    def at(self, t: float, fn: Callable[[], None]) -> None: ...
    def publish(self, node: SimNode, message: Any, to: tuple[bytes, ...] | None = None) -> None: ...
    def fetch_delta(self, node: SimNode, author: bytes, delta: bytes, done: Any) -> None: ...
    def fetch_model(self, node: SimNode, cid: bytes, done: Callable[[], None]) -> None: ...
    def aggregate(self, node: SimNode, request: ev.ComputeAggregate) -> tuple[Any, float]: ...
    def hold(self, node: SimNode, cid: bytes, blob: bytes | None) -> None: ...
    def trained(self, node: SimNode, round_: int) -> tuple[bytes, bytes, float, int]: ...
    def delta(self, cid: bytes) -> dict[str, Any]: ...
    def train_time(self, node: SimNode, round_: int) -> float: ...
    def submit_commit(self, node: SimNode, commit: Commit) -> None: ...
    def report_evidence(self, node: SimNode, evidence: ev.Evidence) -> None: ...
    def round_stakes(self, round_: int) -> dict[bytes, int]: ...
    def collecting(self, node: SimNode, yes: bool) -> None: ...
    def equivocated(self, node: SimNode, update: Update) -> None: ...
    def rpc_s(self) -> float: ...
    def advanced(self, node: SimNode, round_: int, base: bytes) -> None: ...


@dataclass
class Roles:
    """Attacker roles of this node (sim.attacks.AttackPlan.role_of) and its Behaviour."""

    names: set[str] = field(default_factory=set)
    behaviour: Behaviour = field(default_factory=Behaviour)

    @property
    def honest(self) -> bool:
        return not self.names


class SimNode:
    def __init__(
        self,
        index: int,
        machine: RoundMachine,
        private_key: bytes,
        world: World,
        roles: Roles,
    ) -> None:
        self.index = index
        self.machine = machine
        self.address = machine.address
        self.key = private_key
        self.world = world
        self.roles = roles
        self.tick_s = DEFAULT_TICK_S
        self.online = True
        self.offline_since = 0.0
        self.log: dict[int, RoundEntry] = {}
        self.counters: dict[str, int] = {}
        self.handled = 0
        self.starting: int | None = None  # the round whose start (model fetch) is under way
        self.done = False  # finished the scenario's rounds
        self._key: tuple[Any, ...] = ()
        self._timer_gen = 0
        self._timer_at = math.inf
        self._actions: dict[type, Callable[[Any], None]] = {
            ev.StartTraining: self._start_training,
            ev.Publish: self._publish,
            ev.Fetch: self._fetch,
            ev.ComputeAggregate: self._compute,
            ev.SubmitCommit: lambda a: self.world.submit_commit(self, a.commit),
            ev.Advance: self._advance,
            ev.ReportEvidence: lambda a: self.world.report_evidence(self, a.evidence),
            ev.Rejected: lambda a: self.count(f"rejected-{a.reason}"),
            # The DES models plain updates (RoundConfig.sealed is False there): the machine
            # asks for no key wraps; counted should a scenario ever turn sealing on.
            ev.WrapKey: lambda a: self.count("wrap-key-unmodelled"),
        }

    def count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1

    # ------------------------------------------------------------ events in

    def receive(self, event: Any) -> None:
        """A gossiped or answered event reaches the node's queue (dropped while offline)."""
        if self.online:
            self.handle(event)

    def handle(self, event: Any) -> None:
        now = self.world.now
        if now - self.machine.now >= self.tick_s and not isinstance(event, ev.Tick):
            self._run(ev.Tick(now))
        self._run(event)

    def _run(self, event: Any) -> None:
        m = self.machine
        self.handled += 1
        try:
            actions = m.handle(event)
        except P2PFLError as exc:
            self.count(f"refused-{type(exc).__name__}")
            return
        for action in actions:
            self._actions[type(action)](action)
        key = (m.round, m.phase, m.attempt, m.view)
        if key != self._key:
            was_collecting = bool(self._key) and self._key[1] is Phase.COLLECTING
            self._key = key
            self._rearm()
            collecting = m.phase is Phase.COLLECTING
            if collecting != was_collecting:
                self.world.collecting(self, collecting)
        elif actions and m.phase is not Phase.COLLECTING:
            # (collecting, the DEFAULT_TICK_S ticker is armed anyway: no deadline it sets
            # there is nearer than that)
            self._rearm()

    def _rearm(self) -> None:
        """Tick at the machine's next deadline (and every tick while collecting)."""
        if not self.online:
            return
        m = self.machine
        now = self.world.now
        deadline = m.next_deadline()
        due = math.inf if deadline is None else max(deadline, now)
        if m.phase is Phase.COLLECTING:
            due = min(due, now + self.tick_s)
        if due == self._timer_at or due == math.inf:
            if due == math.inf:
                self._timer_gen += 1
                self._timer_at = math.inf
            return
        self._timer_gen += 1
        self._timer_at = due
        gen = self._timer_gen
        self.world.at(due, lambda: self._on_timer(gen))

    def _on_timer(self, gen: int) -> None:
        if gen != self._timer_gen or not self.online:
            return
        self._timer_at = math.inf
        self._run(ev.Tick(self.world.now))
        self._rearm()

    def stop_timers(self) -> None:
        self._timer_gen += 1
        self._timer_at = math.inf

    # ------------------------------------------------------------ actions out

    def _start_training(self, action: ev.StartTraining) -> None:
        r = action.round
        done_at = self.world.now + self.world.train_time(self, r)
        self.world.at(done_at, lambda: self._trained(r))

    def _trained(self, round_: int) -> None:
        if not self.online or self.machine.round != round_:
            return  # the laptop slept through it, or the round nursery was cancelled
        cid, inline, norm, n_samples = self.world.trained(self, round_)
        self.handle(ev.LocalUpdateReady(round_, cid, n_samples, norm, inline))

    def _publish(self, action: ev.Publish) -> None:
        message = action.message
        entry = self.log.get(message.round)
        if entry is not None:
            if isinstance(message, Update) and not entry.published_at:  # (re-sent on a re-draw)
                entry.published_at = self.world.now
            elif isinstance(message, Commit) and not entry.certified_at:
                entry.certified_at = self.world.now
        for out in self._hostile(message):
            self.world.publish(self, out, action.to)

    def _hostile(self, message: Any) -> list[Any]:
        """sim.attacks.HostileNet.publish: what an attacker's adapter makes of a message."""
        roles = self.roles.names
        if not roles:
            return [message]
        out: list[Any] = []
        if isinstance(message, (Vote, Commit)) and "withholders" in roles:
            self.count("withheld")
        elif isinstance(message, Proposal) and "silent_leaders" in roles:
            self.count("silenced")
        elif isinstance(message, (Vote, Proposal)) and "liars" in roles:
            lie = replace(message, result=bogus_cid(message.body()), signature=b"")
            out.append(self._sign(lie))
            self.count("lies")
        else:
            out.append(message)
        if isinstance(message, Update) and "equivocators" in roles:
            second = self._second_update(message)
            out.append(second)
            self.world.equivocated(self, second)
        return out

    def _sign(self, message: Signed) -> Signed:
        return message.signed(self.key, self.machine.domain)

    def _second_update(self, first: Update) -> Update:
        """Another valid update for the round: our delta halved (HostileNet._second_update)."""
        delta = scaled(self.world.delta(first.delta), 0.5)
        blob, cid, _ = encoded(delta)
        self.world.hold(self, cid, blob)
        second = replace(
            first,
            delta=cid,
            norm=first.norm * 0.5,
            inline=blob if first.inline and len(blob) <= INLINE_MAX_BYTES else b"",
            signature=b"",
        )
        return self._sign(second)  # type: ignore[return-value]

    def _fetch(self, action: ev.Fetch) -> None:
        answer = ev.DeltaAvailable(action.author, action.delta, True)
        self.world.fetch_delta(self, action.author, action.delta, answer)

    def _compute(self, action: ev.ComputeAggregate) -> None:
        entry = self.log.get(action.round)
        if entry is not None and not entry.collect_closed_at:
            entry.collect_closed_at = self.world.now
        (answer, model_cid), seconds = self.world.aggregate(self, action)

        def computed() -> None:
            if not self.online:
                return
            if model_cid is not None:
                self.world.hold(self, model_cid, None)
            e = self.log.get(action.round)
            if e is not None and not e.computed_at:
                e.computed_at = self.world.now
            self.receive(answer)

        self.world.at(self.world.now + seconds, computed)

    def _advance(self, action: ev.Advance) -> None:
        m = self.machine
        entry = self.log.get(action.round - 1)
        if entry is not None:
            entry.committed_at = self.world.now
            entry.committee = m.committee
            entry.member = m.is_member
        self.world.advanced(self, action.round - 1, action.base)
        self.start_round(action.round, action.base)

    def start_round(self, round_: int, base: bytes) -> None:
        """Hold the base model, read the stakes snapshot, then RoundStarted (Node._advance)."""
        if round_ > self.world.rounds:
            self.done = True
            return
        self.starting = round_
        learned_at = self.world.now

        def have_model() -> None:
            self.world.at(self.world.now + self.world.rpc_s(), snapshot_read)

        def snapshot_read() -> None:
            if not self.online or self.starting != round_:
                return
            self.starting = None
            self.log[round_] = RoundEntry(started=self.world.now)
            stakes = self.world.round_stakes(round_)
            self.handle(ev.RoundStarted(round_, base, stakes, learned_at))

        self.world.fetch_model(self, base, have_model)
