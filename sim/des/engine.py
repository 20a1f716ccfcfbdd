"""The discrete-event engine: a simpy `Environment` driving one `SimNode` (the unmodified
round machine and its shell) per node over the network, chain and training models, with
churn, per-round outages and attackers; it records what the report needs and checks safety.

Cost control (what is done once although the real network does it many times):
- a gossiped message is encoded and checked by the real validator (`check_gossip`:
  decode, task, signature, registration) once, not once per copy; every hop still pays
  `network.validate_s` of virtual time;
- one engine event per (message, `quantum_s` bucket of arrivals), not one per receiver;
- an aggregate is computed once per distinct request (round, attempt, base, committee,
  updates): members asking the same question get the same bytes, as they would;
- heartbeats nobody reads ("members" scope) are neither signed nor checked.
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, cast

import numpy as np
import simpy
from eth_utils import keccak
from simpy.events import NORMAL

from p2pfl.core import aggregate as agg
from p2pfl.core import round as round_module
from p2pfl.core import round_events as ev
from p2pfl.core import sortition
from p2pfl.core.cid import blob_cid
from p2pfl.core.messages import Commit, Heartbeat, Signed, Update
from p2pfl.core.round import RoundConfig, RoundMachine
from p2pfl.core.round_result import compute_aggregate
from p2pfl.core.signing import Domain, address_of
from p2pfl.core.tensors import decode_tensors, encode_tensors
from p2pfl.core.validation import ACCEPT, check_gossip
from sim import GC_THRESHOLDS
from sim.attacks import INLINE_MAX_BYTES, behaviour_for, make_plan
from sim.des.chain import Chain
from sim.des.network import Links, Overlay
from sim.des.node import Roles, SimNode
from sim.des.scenario import DesScenario
from sim.des.training import Training, encoded, genesis_model
from sim.scenario import round_timing

DOMAIN = Domain(chain_id=31337, contract=bytes.fromhex("de" * 20))
# The protocol roles the DES runs (sim.attacks.PROTOCOL_ROLES minus those that need a
# real host: censors, replayers, spammers, sybils) and the stateless poisons.
DES_ROLES = ("equivocators", "liars", "withholders", "silent_leaders")
DES_POISONS = ("none", "sign_flip", "scale", "noise", "zero", "inflate")
KEY_SALT = b"p2pfl-des-key"
# What the task pays per round (sim/run.py: 0.01 ether): only the reward tree reads it.
REWARD_PER_ROUND_WEI = 10**16
# A node's own copy of gossip state is kept this long after it goes offline: gossipsub's
# anti-entropy sync offers it the messages it missed (p2pfl.net.config.SYNC_LOG_TTL_S).
SYNC_LOG_TTL_S = 600.0
# p2pfl.node.workers: a delta fetch is not retried once the round is certified or advanced.
NO_MORE_FETCHES = ("certified", "advanced")


@dataclass
class Safety:
    """Violations of the protocol's safety properties (each expected to stay 0)."""

    certified_conflicts: int = 0  # rounds with certificates for two different results
    committed_mismatches: int = 0  # a node advanced on a result the chain did not commit
    honest_double_signs: int = 0  # an honest node signed two bodies under one key
    certified: dict[int, set[bytes]] = field(default_factory=dict)


class SharedSortition:
    """`committee_for` computed once per (seed, stakes, k) for all the machines of the run.

    Every machine draws the same committees from the same inputs (a pure function: one
    keccak per registered node); in one process, 1,000 machines would repeat the same
    1,000 hashes each. Installed in p2pfl.core.round for the run only, then restored.
    """

    def __init__(self) -> None:
        self._cache: dict[tuple[bytes, int, int], list[bytes]] = {}
        self._stakes_ids: dict[int, tuple[Any, int]] = {}

    def __call__(self, seed: bytes, stakes: Any, k: int) -> list[bytes]:
        key = (seed, k, hash(frozenset(stakes.items())))
        drawn = self._cache.get(key)
        if drawn is None:
            drawn = self._cache[key] = sortition.committee_for(seed, stakes, k)
        return list(drawn)


def node_key(seed: int, index: int) -> bytes:
    return keccak(KEY_SALT + seed.to_bytes(8, "big") + index.to_bytes(8, "big"))


def round_config(s: DesScenario, task: bytes, rule: str) -> RoundConfig:
    """The manifest's round parameters as sim/run.py derives them from a scenario."""
    c = s.committee
    return RoundConfig(
        task=task,
        committee_size=c.size,
        rule=rule,
        **round_timing(c),
        live_quorum=c.live_quorum,
        updates_to_committee=c.updates == "committee",
    )


class Engine:
    def __init__(self, scenario: DesScenario, progress: Callable[[str], None] | None = None):
        s = self.s = scenario
        self.progress = progress
        self.env = simpy.Environment()
        self.rounds = s.rounds
        self.rng = np.random.default_rng([s.seed, 0xDE5])
        plan = make_plan(s.attacks, s.nodes, s.seed)
        unsupported = [r for r, members in plan.roles.items() if members and r not in DES_ROLES]
        if plan.spec.poison not in DES_POISONS or unsupported:
            from p2pfl.errors import ConfigError

            raise ConfigError(
                f"the DES runs poisons {DES_POISONS} and roles {DES_ROLES}; "
                f"got poison {plan.spec.poison!r}, roles {unsupported}"
            )
        self.plan = plan
        self.task = keccak(b"p2pfl-des-task" + s.name.encode() + s.seed.to_bytes(8, "big"))
        self.spec = (
            agg.RuleSpec.from_dict(s.aggregation) if s.aggregation else agg.RuleSpec.default()
        )
        self.config = round_config(s, self.task, self.spec.name)
        keys = [node_key(s.seed, i) for i in range(s.nodes)]
        addresses = [address_of(k) for k in keys]
        self.index_of = {a: i for i, a in enumerate(addresses)}
        stakes = {a: s.stake for a in addresses}
        self.registered = set(addresses)
        # Models and deltas by binary CID: the bytes (deltas) or the tensors (models).
        genesis = genesis_model(s.train.params)
        self.genesis = blob_cid(encode_tensors(genesis)).to_bytes()
        self.models: dict[bytes, dict[str, np.ndarray]] = {self.genesis: genesis}
        self.blobs: dict[bytes, bytes] = {}
        self.holders: dict[bytes, set[int]] = {self.genesis: set(range(s.nodes))}
        self.inline: set[bytes] = set()
        self.training = Training(s.train, s.nodes, s.seed)
        self.overlay = Overlay(s.nodes, s.network, self.rng)
        self.links = Links(s.nodes, self.overlay.bandwidth_bps)
        self.online_mask = np.ones(s.nodes, dtype=np.int64)
        self.chain = Chain(
            s.chain,
            self.task,
            DOMAIN,
            self.genesis,
            stakes,
            s.committee.size,
            self.at,
            redraw_delay_s=self.config.small_redraw_delay_s,
        )
        self.chain.on_commit(self._on_chain_commit)
        self.nodes = [
            SimNode(
                i,
                RoundMachine(self.config, keys[i], DOMAIN),
                keys[i],
                self,
                Roles(plan.role_of(i), behaviour_for(plan, s.seed, i)),
            )
            for i in range(s.nodes)
        ]
        for node in self.nodes:
            node.tick_s = s.tick_s
        self.safety = Safety()
        self._statements: dict[tuple[bytes, tuple[Any, ...]], bytes] = {}
        self._aggregates: dict[tuple[Any, ...], tuple[tuple[Any, Any], float]] = {}
        self._collecting: set[int] = set()
        self._beats: dict[int, Heartbeat] = {}  # node -> its latest heartbeat (unsigned)
        self._signed_beats: dict[tuple[int, int], ev.HeartbeatReceived] = {}
        self._recent: list[tuple[float, int, Any]] = []  # (published, round, event) for sync
        self.bytes_at_commit: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.equivocations: list[tuple[bytes, int, float]] = []  # (signer, round, time)
        self.evidence_at: dict[bytes, float] = {}
        self._out_this_round: list[SimNode] = []  # sitting out the current round
        self.gossip_rejected: dict[str, int] = {}
        self.messages = 0
        self.deliveries = 0
        self.wall_s = 0.0
        self.cpu_s = 0.0  # this process's CPU time (the machine may be shared)

    # ------------------------------------------------------------ engine plumbing

    @property
    def now(self) -> float:
        return float(self.env.now)

    def at(self, t: float, fn: Callable[[], None]) -> None:
        """Call `fn` at virtual time `t` (one engine event; simpy's schedule, no process)."""
        event = simpy.Event(self.env)
        event._ok = True  # a triggered event, as Timeout makes it (without its checks)
        event._value = None
        event.callbacks.append(lambda _event: fn())
        self.env.schedule(event, NORMAL, max(0.0, t - self.env.now))

    def rpc_s(self) -> float:
        return self.s.chain.rpc_s

    def round_stakes(self, round_: int) -> dict[bytes, int]:
        return self.chain.stakes_of_round[round_]

    # ------------------------------------------------------------ gossip

    def publish(self, node: SimNode, message: Any, to: tuple[bytes, ...] | None = None) -> None:
        """Gossip `message` to every node, or send it to the nodes `to` directly (an update
        of a task whose updates go to the committee only: `Publish.to`)."""
        if node.roles.honest and isinstance(message, Signed) and not isinstance(message, Heartbeat):
            slot = (node.address, message.statement_key())
            body = message.body()
            if self._statements.setdefault(slot, body) != body:
                self.safety.honest_double_signs += 1
        if isinstance(message, Commit):
            results = self.safety.certified.setdefault(message.round, set())
            results.add(message.result)
            if len(results) == 2:
                self.safety.certified_conflicts += 1
        data = message.encode()
        verdict = check_gossip(data, task=self.task, domain=DOMAIN, registered=self.registered)
        if verdict.action != ACCEPT:
            self.gossip_rejected[verdict.reason] = self.gossip_rejected.get(verdict.reason, 0) + 1
            return  # dropped at the first honest hop
        event = ev.event_for(message)
        size = len(data)
        if isinstance(message, Update) and message.inline:
            size += self.s.train.model_bytes - len(message.inline)  # the wire size
        if to is not None:
            self._direct(node.index, event, size, to)
            return
        if not isinstance(message, Heartbeat):
            self._recent.append((self.now, message.round, event))
        self._flood(node.index, event, size, None)

    def _direct(self, src: int, event: Any, size: int, to: tuple[bytes, ...]) -> None:
        """Deliver `event` to each node of `to` over its own transfer (both links' queues,
        then the direct latency), not over the mesh."""
        for address in to:
            dst = self.index_of.get(address)
            if dst is None or dst == src:
                continue
            self.messages += 1
            sent = self.links.transfer(src, dst, size, self.now)
            receiver = self.nodes[dst]

            def deliver(receiver: SimNode = receiver) -> None:
                self.deliveries += 1
                if receiver.online:
                    receiver.handle(event)

            self.at(sent + self.overlay.direct_latency(src, dst), deliver)

    def _flood(self, src: int, event: Any, size: int, only: list[int] | None) -> None:
        """Deliver `event` to every node (or `only`) at its overlay arrival time."""
        self.messages += 1
        self.links.count_gossip(src, self.online_mask, self.overlay.degree, size)
        arrive = self.now + self.overlay.arrivals(src, size)
        targets = np.arange(len(self.nodes)) if only is None else np.array(only, dtype=np.int64)
        targets = targets[targets != src]
        if not len(targets):
            return
        times = arrive[targets]
        order = np.argsort(times, kind="stable")
        targets, times = targets[order], times[order]
        q = self.s.network.quantum_s
        buckets = np.ceil(times / q)
        cuts = np.flatnonzero(np.diff(buckets)) + 1
        nodes = self.nodes
        for group, bucket in zip(np.split(targets, cuts), buckets[np.r_[0, cuts]]):
            receivers = [nodes[i] for i in group.tolist()]

            def deliver(receivers: list[SimNode] = receivers) -> None:
                self.deliveries += len(receivers)
                for node in receivers:
                    if node.online:  # (SimNode.receive, inlined: a million calls a round)
                        node.handle(event)

            self.at(float(bucket) * q, deliver)

    # ------------------------------------------------------------ heartbeats

    def _heartbeats(self, i: int) -> None:
        node = self.nodes[i]
        interval = self.s.committee.heartbeat_interval_s
        if node.online and not node.done:
            m = node.machine
            beat = Heartbeat(
                task=self.task,
                round=max(m.round, 0),
                time_ms=max(int(self.now * 1000), 0),
                phase=m.phase.value,
                signer=node.address,
            )
            scope = self.s.committee.heartbeats
            if scope == "all":
                self.publish(node, beat.signed(node.key, DOMAIN))
            else:
                self._beats[i] = beat
                size = 186  # an encoded signed heartbeat
                if scope == "members" and self._collecting - {i}:
                    self._flood(i, self._beat_event(i, beat), size, sorted(self._collecting))
                else:
                    self.messages += 1
                    self.links.count_gossip(i, self.online_mask, self.overlay.degree, size)
        if not all(n.done for n in self.nodes):
            self.at(self.now + interval, lambda: self._heartbeats(i))

    def _beat_event(self, i: int, beat: Heartbeat) -> ev.HeartbeatReceived:
        """The signed, checked heartbeat (signed only when some machine reads it)."""
        key = (i, beat.time_ms)
        event = self._signed_beats.get(key)
        if event is None:
            signed = cast(Heartbeat, beat.signed(self.nodes[i].key, DOMAIN))
            check_gossip(signed.encode(), task=self.task, domain=DOMAIN, registered=self.registered)
            event = self._signed_beats[key] = ev.HeartbeatReceived(signed, signed.signer)
            if len(self._signed_beats) > 4 * len(self.nodes):
                self._signed_beats.clear()
                self._signed_beats[key] = event
        return event

    def collecting(self, node: SimNode, yes: bool) -> None:
        """A node starts or stops collecting: in the "members" heartbeat scope it now reads
        liveness, so it gets the latest beat of every node heard within the live window."""
        if not yes:
            self._collecting.discard(node.index)
            return
        self._collecting.add(node.index)
        if self.s.committee.heartbeats != "members":
            return
        window = self.config.live_window_s
        for j, beat in list(self._beats.items()):
            if j != node.index and beat.time_ms / 1000 >= self.now - window:
                node.receive(self._beat_event(j, beat))

    # ------------------------------------------------------------ blocks

    def hold(self, node: SimNode, cid: bytes, blob: bytes | None) -> None:
        if blob is not None:
            self.blobs[cid] = blob
        self.holders.setdefault(cid, set()).add(node.index)

    def delta(self, cid: bytes) -> dict[str, Any]:
        return {k: np.array(v) for k, v in decode_tensors(self.blobs[cid]).items()}

    def _transfer(
        self,
        node: SimNode,
        cid: bytes,
        size: int,
        first: int | None,
        done: Callable[[], None],
        give_up: Callable[[], None],
        started: float,
        delta: bool = True,
    ) -> None:
        """Fetch `cid` from an online holder (`first` if it is one), retrying lost attempts."""
        holders = [h for h in self.holders.get(cid, ()) if self.nodes[h].online]
        if not holders:
            worth_it = not delta or node.machine.phase.value not in NO_MORE_FETCHES
            if self.now - started >= self.s.network.fetch_give_up_s or not worth_it:
                give_up()
            else:
                retry = self.now + self.s.network.fetch_retry_s
                self.at(
                    retry,
                    lambda: self._transfer(node, cid, size, first, done, give_up, started, delta),
                )
            return
        if first in holders:
            holder = first
        else:
            holder = holders[int(self.rng.integers(len(holders)))]
        lat = self.overlay.direct_latency(holder, node.index)
        if self.s.network.loss and self.rng.random() < self.s.network.loss:
            retry = self.now + self.s.network.fetch_retry_s
            self.at(
                retry, lambda: self._transfer(node, cid, size, first, done, give_up, started, delta)
            )
            return
        end = self.links.transfer(holder, node.index, size, self.now + lat)
        self.at(end + lat, done)

    def fetch_delta(self, node: SimNode, author: bytes, delta: bytes, answer: Any) -> None:
        def done() -> None:
            self.holders.setdefault(delta, set()).add(node.index)
            node.receive(answer)

        def give_up() -> None:
            node.receive(ev.DeltaAvailable(author, delta, False))

        if delta in self.inline or node.index in self.holders.get(delta, ()):
            self.at(self.now, done)
            return
        size = self.s.train.model_bytes
        self._transfer(node, delta, size, self.index_of.get(author), done, give_up, self.now)

    def fetch_model(self, node: SimNode, cid: bytes, done: Callable[[], None]) -> None:
        if node.index in self.holders.get(cid, ()):
            self.at(self.now, done)
            return

        def fetched() -> None:
            self.holders.setdefault(cid, set()).add(node.index)
            done()

        def give_up() -> None:  # nobody online holds it yet: keep trying (ModelCache.ensure)
            size = self.s.train.model_bytes
            self._transfer(node, cid, size, None, fetched, give_up, self.now, False)

        self._transfer(node, cid, self.s.train.model_bytes, None, fetched, give_up, self.now, False)

    # ------------------------------------------------------------ training, aggregation

    def train_time(self, node: SimNode, round_: int) -> float:
        return self.training.compute_s(node.index, round_)

    def trained(self, node: SimNode, round_: int) -> tuple[bytes, bytes, float, int]:
        b = node.roles.behaviour
        delta = self.training.delta(node.index, round_, b.poison)
        blob, cid, norm = encoded(delta)
        self.hold(node, cid, blob)
        inline = b""
        if self.s.train.model_bytes <= INLINE_MAX_BYTES:
            inline = blob
            self.inline.add(cid)
        n_samples = max(1, int(self.s.train.n_samples * b.n_samples_factor))
        return cid, inline, norm, n_samples

    def aggregate(self, node: SimNode, request: ev.ComputeAggregate) -> tuple[Any, float]:
        key = (request.round, request.attempt, request.base, request.committee, request.candidates)
        cached = self._aggregates.get(key)
        if cached is None:
            base = self.models[request.base]
            blobs = [self.blobs[u.delta] for u in request.updates]
            answer, model = compute_aggregate(self.spec, request, base, blobs, REWARD_PER_ROUND_WEI)
            cid = None
            if model is not None:
                cid = model.cid.to_bytes()
                if cid not in self.models:
                    self.models[cid] = {
                        k: np.array(v) for k, v in decode_tensors(model.blob).items()
                    }
            t = self.s.train
            mb = t.model_bytes / 1e6
            seconds = mb * (
                t.aggregate_model_s_per_mb + len(request.updates) * t.aggregate_s_per_mb
            )
            cached = self._aggregates[key] = ((answer, cid), seconds)
        return cached

    # ------------------------------------------------------------ chain

    def submit_commit(self, node: SimNode, commit: Commit) -> None:
        self.chain.submit_commit(commit, self.now)

    def report_evidence(self, node: SimNode, evidence: ev.Evidence) -> None:
        self.evidence_at.setdefault(evidence.signer, self.now)
        self.chain.submit_evidence(evidence, self.now)

    def advanced(self, node: SimNode, round_: int, result: bytes) -> None:
        """A node moved past `round_` on `result`: it must be what the chain committed."""
        committed = self.chain.committed.get(round_)
        if committed is None or committed.result != result:
            self.safety.committed_mismatches += 1

    def equivocated(self, node: SimNode, update: Update) -> None:
        self.equivocations.append((node.address, update.round, self.now))

    def _on_chain_commit(self, event: ev.ChainCommitted, at: float) -> None:
        self.bytes_at_commit[event.round] = (
            self.links.bytes_up.copy(),
            self.links.bytes_down.copy(),
        )
        if self.progress is not None:
            self.progress(
                f"round {event.round} committed at {at:.1f} s (attempt {event.attempt}, "
                f"view {event.view}); wall {time.perf_counter() - self._t0:.1f} s, "
                f"cpu {time.process_time():.1f} s"
            )
        for node in self.nodes:
            learn = at + float(self.rng.uniform(0, self.s.chain.follow_poll_s)) + self.s.chain.rpc_s
            self.at(learn, partial(node.receive, event))
        self._recent = [r for r in self._recent if r[1] >= event.round]
        self._round_outages(event.round + 1)

    # ------------------------------------------------------------ faults

    def leave(self, node: SimNode) -> None:
        if not node.online:
            return
        node.online = False
        node.offline_since = self.now
        node.stop_timers()
        self.online_mask[node.index] = 0
        self._collecting.discard(node.index)

    def rejoin(self, node: SimNode) -> None:
        """Back online: sync missed gossip, follow the chain, restart a stalled round start."""
        if node.online:
            return
        node.online = True
        self.online_mask[node.index] = 1
        m = node.machine
        node.handle(ev.Tick(self.now))
        last = self.chain.last_round
        if last and last >= m.round and not (last == m.round and m.phase.value == "advanced"):
            node.handle(self.chain.committed[last])
        elif m.phase.value in ("advanced", "idle") and node.starting is None and not node.done:
            node.start_round(m.round + 1, m.base)
        elif node.starting is not None:
            node.start_round(
                node.starting, m.base if m.phase.value == "advanced" else self.chain.last_result
            )
        since = max(node.offline_since, self.now - SYNC_LOG_TTL_S)
        for published, _round, event in list(self._recent):
            if published >= since:
                node.receive(event)
        node._rearm()

    def _churn(self, i: int) -> None:
        f = self.s.faults
        node = self.nodes[i]
        mean_on = f.mean_offline_s * (1 - f.churn_fraction) / f.churn_fraction
        if node.online:
            self.leave(node)
            wait = float(self.rng.exponential(f.mean_offline_s))
        else:
            self.rejoin(node)
            wait = float(self.rng.exponential(mean_on))
        if not all(n.done for n in self.nodes):
            self.at(self.now + wait, lambda: self._churn(i))

    def _round_outages(self, round_: int) -> None:
        """`offline_per_round` of the nodes sit out `round_` (back when it commits)."""
        share = self.s.faults.offline_per_round
        for node in self._out_this_round:
            self.rejoin(node)
        self._out_this_round = []
        if not share or round_ > self.rounds:
            return
        count = int(round(share * len(self.nodes)))
        for i in self.rng.choice(len(self.nodes), count, replace=False).tolist():
            node = self.nodes[i]
            if node.online:
                self.leave(node)
                self._out_this_round.append(node)

    # ------------------------------------------------------------ run

    def run(self) -> None:
        installed = round_module.committee_for
        round_module.committee_for = SharedSortition()  # type: ignore[assignment]
        thresholds = gc.get_threshold()
        # The run's heap is a few million long-lived containers (every machine's updates
        # and statements of the round) and makes little cyclic garbage: at the default
        # thresholds the full collections that walk it took 30% of a 1,000-node run.
        gc.collect()
        gc.freeze()  # the setup (keys, overlay, machines) is never garbage
        gc.set_threshold(*GC_THRESHOLDS)
        try:
            self._run()
        finally:
            round_module.committee_for = installed
            gc.set_threshold(*thresholds)
            gc.unfreeze()

    def _run(self) -> None:
        self._t0 = time.perf_counter()
        cpu0 = time.process_time()
        s = self.s
        for node in self.nodes:
            node.start_round(1, self.genesis)
        interval = s.committee.heartbeat_interval_s
        if s.committee.heartbeats != "none" and interval > 0:
            for i in range(s.nodes):
                self.at(float(self.rng.uniform(0, interval)), partial(self._heartbeats, i))
        if s.faults.churn_fraction > 0:
            f = s.faults
            mean_on = f.mean_offline_s * (1 - f.churn_fraction) / f.churn_fraction
            for i in range(s.nodes):
                self.at(float(self.rng.exponential(mean_on)), partial(self._churn, i))
        self._round_outages(1)
        while self.chain.last_round < s.rounds and self.env.peek() != math.inf:
            until = min(self.env.peek() + 60.0, s.max_virtual_s)
            if self.env.now >= s.max_virtual_s:
                break
            self.env.run(until=until)
        self.wall_s = time.perf_counter() - self._t0
        self.cpu_s = time.process_time() - cpu0
