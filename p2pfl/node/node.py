"""The node's life cycle and its tree of nurseries (drawn in p2pfl/node/__init__.py):
join the task at the chain's latest commit, run the event loop that feeds the round
machine, perform its actions through one table, start each round."""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import trio

from p2pfl.chain.client import RoundCommitted
from p2pfl.chain.follower import CommitFollower, SharedCommitReads
from p2pfl.chain.trio_client import run_chain
from p2pfl.core import round_events as ev
from p2pfl.core.cid import CID
from p2pfl.core.identity import NodeIdentity
from p2pfl.core.messages import Commit, Proposal, Rewrap, Update, decode_message
from p2pfl.core.round import Phase, RoundMachine
from p2pfl.core.sortition import draw
from p2pfl.core.tensors import is_float16_packed, pack_float16
from p2pfl.core.validation import Verdict
from p2pfl.errors import InvalidMessage, P2PFLError
from p2pfl.manifest import TaskManifest
from p2pfl.node.chain_tx import ChainTransactions
from p2pfl.node.committed import CommittedRounds
from p2pfl.node.heartbeat import HEARTBEAT_INTERVAL_S, send_heartbeats
from p2pfl.node.intake import Intake
from p2pfl.node.models import ModelCache
from p2pfl.node.peers import PeerDirectory, SharedRegistryReads
from p2pfl.node.ports import ChainPort, NodeNet
from p2pfl.node.queue import EventQueue
from p2pfl.node.roundlog import Behaviour, RoundLog, Trainer
from p2pfl.node.rounds import RoundNurseries
from p2pfl.node.workers import RoundWorkers
from p2pfl.task_access import ModelKey
from p2pfl.train.privacy import ledger_for

log = logging.getLogger("p2pfl.node")

# The ticker (`Node._ticker`). The machine acts on time only at its deadlines
# (`RoundMachine.next_deadline`), but stamps what it hears with its clock (when a node was
# last heard, a grace window's end), and while it collects the live quorum moves with each
# message: so Tick at the next deadline, every DEFAULT_TICK_S while collecting, and before
# any other event once the machine's clock is DEFAULT_TICK_S old (as `sim.des.node` models
# it); otherwise every IDLE_TICK_S only (what `p2pfl status` reads of liveness is then at
# most that old). A node off the committee spends most of a round following: before, it
# ticked 4 times a second regardless (100 nodes: 400 wake-ups, queue hops and machine
# calls a second, ~2% of their shards' event loops).
DEFAULT_TICK_S = 0.25
IDLE_TICK_S = 2.0
# How often the chain is polled for commits: a round cannot start before its
# predecessor's commit is seen, so this latency is paid every round.
DEFAULT_FOLLOW_POLL_S = 0.5
# How often to re-read the chain while waiting for a commit to become visible.
CHAIN_WAIT_POLL_S = 0.2
# A round whose start (snapshot read, base model) took longer than this after the commit
# was learned is counted `rounds-started-late` (its attempt clock starts at the commit).
LATE_START_S = 5.0

# A direct send (`Publish.to`) that fails or is ignored is tried again after 1, 2, 4, ...
# up to 16 s apart: 10 tries span ~2 minutes, a collection window at scale.
PUSH_TRIES = 10
PUSH_RETRY_FIRST_S = 1.0
PUSH_RETRY_MAX_S = 16.0

# A node off the committee asks up to this many of its members for a committed round's
# updates (updates to the committee only).
ROUND_PULL_TRIES = 3
# A round's pull waits until our update of the next round is sent (the next round's own
# work comes first: the members of the committed attempt serve the new model meanwhile),
# but no longer than this (a node that does not train sends none).
PULL_AFTER_OWN_UPDATE_MAX_S = 60.0
# Pulled updates checked (decoded, signature recovered) per step of the event loop: 100 in
# one step held a shard's loop ~35 ms, every other node's task waiting (100 nodes, 2 cores).
PULLED_CHECKS_PER_STEP = 10
# A committed round whose proposal has not reached us when the chain shows the commit (the
# certificate and the chain can outrun the proposal's gossip: 100 nodes in 2 shards, ~1 node
# in 5 each round) is settled once it arrives: we wait this long for the gossip (checking
# every PROPOSAL_POLL_S), then pull it from the committing attempt's members. Before, such
# a node wrote no reward file and no round record for the round, and its probation history
# had a hole.
PROPOSAL_WAIT_S = 2.0
PROPOSAL_POLL_S = 0.1
# The next round's start waits at most this long for the last one's settlement (its strikes
# fix the round's probation record).
SETTLE_WAIT_S = 10.0

# Updates to the committee: our update goes to at least this many members directly (every
# member we hold a connection to, else the first of an order of our own), and each member
# pulls from two other members every MEMBER_PULL_S, while it collects or votes, what was
# pushed to them (spec round.md). A node then opens 0-2 new connections a round instead of
# one to each member of each round's new committee (100 nodes: ~550 a round, ~28 ms of
# CPU each, `python -m sim.bench netcost`); two, so that one member that keeps what it is
# sent does not keep an update from the others.
DIRECT_MEMBERS_MIN = 2
MEMBER_PULL_S = 0.4
MEMBER_PULLS_AT_ONCE = 2
# A member relays once no update was pushed to it for MEMBER_PULL_QUIET_S, or every
# MEMBER_PULL_BUSY_S while pushes keep coming: a pull answer (up to 8 MiB of deltas) asked
# for in the middle of the pushes takes seconds on a loaded machine and brings mostly
# updates their authors push to us meanwhile (100 nodes on 2 cores: half of the ~300 MB a
# round's relay pulls moved were updates the member already held when they arrived, and
# 8 MiB answers took 10-12 s during the pushes, 0.1-0.8 s after them). Both clocks start
# at the round's first push to us (a quiet spell before it is the training, not the end of
# the pushes: pulls asked for then met the push storm, 6.9 s at the median, and held the
# relay that long); with none, a member relays MEMBER_PULL_UNPUSHED_S into the round.
# Both 0.4 s, not 1 s: traced at 100 nodes, the members' last pushes landed 1.5 s after the
# last update went out and their first relay pulls 1.1-2.4 s after that (the quiet second
# plus up to a tick); 8 MiB answers then took 0.3-1 s each. Direct runs alternating 1 s and
# 0.4 s, median rounds: 15.0 / 12.3, 11.9 / 10.5, 11.8 / 10.4, 11.9 / 12.3 s.
MEMBER_PULL_QUIET_S = 0.4
MEMBER_PULL_BUSY_S = 5.0
MEMBER_PULL_UNPUSHED_S = 10.0
# A relay pull that takes longer than this (a member that stopped answering) is given up
# for the tick, so that it does not hold up the pulls from the others (it held them up to
# a push's 60 s); an 8 MiB answer takes ~0.3 s at the median with 100 nodes on 2 cores.
MEMBER_PULL_TIMEOUT_S = 10.0

TOPIC_UPDATES = "updates"
TOPIC_CONSENSUS = "consensus"
TOPIC_COMMITS = "commits"


def topic_of(message: Any) -> str:
    if isinstance(message, (Update, Rewrap)):
        return TOPIC_UPDATES
    if isinstance(message, Commit):
        return TOPIC_COMMITS
    return TOPIC_CONSENSUS


def relay_due(
    now: float, pushed_at: float, first_pushed_at: float, pulled_at: float, voting: bool = False
) -> bool:
    """Whether a member pulls from the others on this tick (`Node._pull_from_members`).
    `pushed_at` is when an update was last pushed to it, `first_pushed_at` when the first
    of the round was (-inf: none yet), `pulled_at` its last pulls (or the round start).
    Due once no update was pushed for MEMBER_PULL_QUIET_S, or MEMBER_PULL_BUSY_S after the
    last pulls (or the first push) while pushes keep coming; before any push,
    MEMBER_PULL_UNPUSHED_S after the last pulls (or the round start). Always while
    `voting`: a leader's proposal closed our collection, so the pushes are over, and
    every update it names that we lack holds up our vote (a member pushed nothing waited
    MEMBER_PULL_UNPUSHED_S, past a 6 s view timeout, then led the next view with 2 of 5
    updates)."""
    if voting:
        return True
    if first_pushed_at == float("-inf"):
        return now - pulled_at >= MEMBER_PULL_UNPUSHED_S
    quiet = now - pushed_at >= MEMBER_PULL_QUIET_S
    return quiet or now - max(pulled_at, first_pushed_at) >= MEMBER_PULL_BUSY_S


class Node:
    """One participant in one task."""

    def __init__(
        self,
        identity: NodeIdentity,
        manifest: TaskManifest,
        chain: ChainPort,
        net: NodeNet,
        data: Any,  # p2pfl.train.data.Dataset (the node's private training data)
        data_dir: str | Path,
        *,
        client_index: int | bytes | None = None,
        num_threads: int = 1,
        cpu_limiter: trio.CapacityLimiter | None = None,
        clock: Callable[[], float] = time.monotonic,
        behaviour: Behaviour | None = None,
        on_round: Callable[[RoundLog], None] | None = None,
        round_overrides: dict[str, Any] | None = None,
        trainer: Trainer | None = None,
        train_context: Callable[[], AbstractContextManager[Any]] | None = None,
        follow_poll_s: float = DEFAULT_FOLLOW_POLL_S,
        heartbeat_interval_s: float = HEARTBEAT_INTERVAL_S,  # 0 = send none
        progress: Callable[[str], None] | None = None,
        model_key: ModelKey | None = None,
        peer_reads: SharedRegistryReads | None = None,  # shared registry reads (PeerDirectory)
        commit_reads: SharedCommitReads | None = None,  # shared chain polls (the follower)
    ) -> None:
        self.identity = identity
        self.address = identity.address
        self.manifest = manifest
        self.task = manifest.task_id
        self.chain = chain
        self.net = net
        self.data = data
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.client_index = client_index if client_index is not None else identity.address
        self.num_threads = num_threads
        self.cpu = cpu_limiter or trio.CapacityLimiter(1)
        self.clock = clock
        self.behaviour = behaviour or Behaviour()
        # Called with a committed round's log once the node holds the committed model
        # (`entry.result` can be read from `net.store`).
        self.on_round = on_round
        # How local training runs: by default `train_local` on `data` in a worker thread;
        # a simulation passes a trainer backed by a process pool whose workers hold the
        # partitions, keeping torch's Python work off the event loop's GIL.
        self.trainer = trainer
        # Entered around the default training in its worker thread (a node process's
        # allocator settings for training, `sim.node_proc.malloc_for_training`); None: none.
        self.train_context = train_context
        # Progress lines for a person (training epochs, model fetches; p2pfl.cli.progress).
        self.progress = progress
        self.follow_poll_s = follow_poll_s
        self.commit_reads = commit_reads
        self.heartbeat_interval_s = heartbeat_interval_s
        # When we last published a signed message (heartbeats skip while we are heard).
        self._last_signed_at = -math.inf
        self.spec = manifest.rule_spec()
        self.machine = RoundMachine(
            manifest.round_config(**(round_overrides or {})), identity.private_key, chain.domain()
        )
        self.rounds: dict[int, RoundLog] = {}
        # DP-SGD's spent epsilon (p2pfl.train.privacy); None when the task trains without DP.
        self.privacy = ledger_for(self.data_dir, {**manifest.train, "seed": manifest.seed})
        self.counters: dict[str, int] = {}
        self.queue = EventQueue()
        self.peers = PeerDirectory(
            chain, net, self.address, lambda: self.machine.committee, self.count, peer_reads
        )
        self.peer_ids = self.peers.ids  # address -> libp2p peer id, from the registry
        self.intake = Intake(
            self.task, self.address, self.machine, self.peers.ids, self.queue, self.count, clock
        )
        # A private task's model key (p2pfl.task_access): the models the chain names are
        # sealed under it; None for a public task.
        self.model_key = model_key
        self.models = ModelCache(
            net, self.peers, self.count, progress, model_key.open if model_key else None
        )
        self.committed = CommittedRounds(
            self.data_dir,
            manifest,
            self.spec,
            self.intake,
            self.count,
            keys_of=lambda round_: self.workers.keys.get(round_, {}),
        )
        self.workers = RoundWorkers(self)
        self.chain_tx = ChainTransactions(chain, self.rounds, self.count)
        self.round_nurseries = RoundNurseries()
        self._round_record: tuple[int, dict[bytes, int]] = (0, {})  # (round, its probation record)
        self._nursery: trio.Nursery | None = None
        self._tick_wait: trio.CancelScope | None = None  # the ticker's wait for its next Tick
        self.follower: CommitFollower | None = None  # once run() joined (read by metrics)
        self._stop_round: int | None = None
        self.finished = trio.Event()
        self._updates_sent: dict[int, trio.Event] = {}  # round -> our update pushed (_send_direct)
        # Round -> its commit as the chain follower read it (the last two): the next round's
        # start takes the registry snapshot from it instead of asking the chain again.
        self._chain_commits: dict[int, RoundCommitted] = {}
        # Committed rounds waiting for their proposal (`_settle_late`): set once settled.
        self._unsettled: dict[int, trio.Event] = {}
        # The machine's actions, each to what performs it (p2pfl.core.round_events).
        self._actions: dict[type, Callable[[Any], None]] = {
            ev.StartTraining: self._start_training,
            ev.Publish: self._publish_soon,
            ev.Fetch: self._fetch,
            ev.ComputeAggregate: self._compute,
            ev.SubmitCommit: lambda a: self._node_task(self.chain_tx.submit_commit, a.commit),
            ev.Advance: self._advance_soon,
            ev.ReportEvidence: lambda a: self._node_task(self.chain_tx.report_evidence, a.evidence),
            ev.Rejected: lambda a: self.count(f"rejected-{a.reason}"),
            ev.WrapKey: lambda a: self._round_task(a.round, self.workers.rewrap, a),
        }

    # ------------------------------------------------------------------ life cycle

    async def run(self, stop_after_round: int | None = None) -> None:
        """Join the task at the chain's latest commit and run rounds until cancelled
        (or until `stop_after_round` is committed)."""
        self._stop_round = stop_after_round
        # The highest round an Advance asked to start (a start for an older one is dropped).
        self._advancing_to = 0
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            joined_block = await run_chain(self.chain, self.chain.block_number)
            info = await run_chain(self.chain, self.chain.task_info, self.task)
            if not info.exists:
                raise P2PFLError(
                    f"task {self.task.hex()} is not on-chain; create it first (`p2pfl task create`)"
                )
            if stop_after_round is not None and info.last_round >= stop_after_round:
                self.finished.set()
                nursery.cancel_scope.cancel()
                return
            # The chain stores models as bare digests, and a CID's codec depends on the
            # model's size, which the genesis model tells (local after a restart, else
            # fetched from peers): load it before following the chain, so no commit event
            # can arrive that we cannot name.
            genesis = CID.parse(self.manifest.initial_model)
            await self.models.ensure(genesis.to_bytes())
            base = genesis if info.last_round == 0 else self.models.cid_for_digest(info.last_result)
            for kind in (TOPIC_UPDATES, TOPIC_CONSENSUS, TOPIC_COMMITS):
                # Updates to the committee: nothing is gossiped on the updates topic, so
                # its sync rounds would only ever exchange empty lists, and its gossipsub
                # mesh would be kept (grafts, prunes, heartbeats) for nothing.
                pushed = kind == TOPIC_UPDATES and self.machine.config.updates_to_committee
                channel = await self.net.join(
                    self.topic(kind), self.intake.validator, not pushed, gossip=not pushed
                )
                nursery.start_soon(self.intake.run, channel)
            # A new follower starts at the block we joined at: `info` already reflects every
            # earlier commit (one seen twice is a replay the machine drops), and scanning the
            # task's whole history costs O(chain) per node -- quadratic on eth-tester, whose
            # getLogs looks every receipt up from the head. A saved cursor takes precedence.
            follower = self.follower = CommitFollower(
                self.chain if self.commit_reads is None else self.commit_reads.source(self.chain),
                task=self.task,
                start_block=joined_block,
                state_path=self.data_dir / "follower.json",
            )
            nursery.start_soon(follower.follow, self._on_chain_commit, self.follow_poll_s)
            nursery.start_soon(self._ticker)
            if not self.behaviour.silent and self.heartbeat_interval_s > 0:
                nursery.start_soon(
                    send_heartbeats,
                    self.machine,
                    self.identity.private_key,
                    self._publish_heartbeat,
                    self.clock,
                    self.heartbeat_interval_s,
                    lambda: self._last_signed_at,
                )
            nursery.start_soon(self._start_round, info.last_round + 1, base.to_bytes())
            async for event in self.queue:
                self._handle(event)

    def stop(self) -> None:
        """End `run` now, wherever the node is (it returns normally) and set `finished`.

        For a node that will never finish its rounds on its own, e.g. one every peer has
        banned, which waits forever for a model nobody will serve it.
        """
        self.finished.set()
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    def topic(self, kind: str) -> str:
        from p2pfl.net.config import topic_name

        return topic_name(self.task.hex(), kind)

    def validate(self, data: bytes) -> Verdict:
        """The gossip validator's verdict on `data` (p2pfl.node.intake.Intake.validate)."""
        return self.intake.validate(data)

    def count(self, name: str, amount: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + amount

    # ------------------------------------------------------------------ the event loop

    def _handle(self, event: Any) -> None:
        if not isinstance(event, ev.Tick) and self.clock() - self.machine.now >= DEFAULT_TICK_S:
            self._dispatch(ev.Tick(self.clock()))  # (the machine stamps the event with it)
        self._dispatch(event)
        wait = self._tick_wait
        if wait is not None:  # a deadline the event armed may be nearer than the ticker's
            wait.deadline = min(wait.deadline, self._tick_due())

    def _dispatch(self, event: Any) -> None:
        try:
            actions = self.machine.handle(event)
        except P2PFLError:
            log.exception("round machine refused %s", type(event).__name__)
            return
        for action in actions:
            self._actions[type(action)](action)

    def _node_task(self, fn: Callable[..., Any], *args: Any) -> None:
        """Work that outlives a round (publishing, chain transactions, round starts)."""
        assert self._nursery is not None
        self._nursery.start_soon(fn, *args)

    def _round_task(self, round_: int, fn: Callable[..., Any], *args: Any) -> None:
        """Work of round `round_`, in its nursery (cancelled when the node moves past it)."""
        if not self.round_nurseries.start_soon(round_, fn, *args):
            self.count("work-for-closed-round")

    def _start_training(self, action: ev.StartTraining) -> None:
        self._round_task(
            action.round,
            self.workers.train,
            action.round,
            action.base,
            action.recipients,
            action.sealed,
        )

    def _fetch(self, action: ev.Fetch) -> None:
        round_ = self.machine.round  # the machine asks for deltas of the round it is in
        self._round_task(
            round_, self.workers.fetch_delta, round_, action.author, action.delta, action.wrap
        )

    def _compute(self, action: ev.ComputeAggregate) -> None:
        entry = self.rounds.get(action.round)
        if entry is not None and not entry.collect_closed_at:
            entry.collect_closed_at = self.clock()
        self._round_task(action.round, self.workers.compute, action)

    def _publish_soon(self, action: ev.Publish) -> None:
        message = action.message
        if isinstance(message, Proposal):
            self.intake.remember(message)
        entry = self.rounds.get(message.round)
        if entry is not None:
            if isinstance(message, Update) and not entry.published_at:  # (re-sent on a re-draw)
                entry.published_at = self.clock()
            elif isinstance(message, Commit) and not entry.certified_at:
                entry.certified_at = self.clock()
        if action.to is None:
            self._node_task(self._publish, message)
            return
        if isinstance(message, Update):
            self.intake.remember(message)  # its inline bytes serve fetches
        self._round_task(message.round, self._send_direct, message, action.to)

    async def _send_direct(self, message: Any, to: tuple[bytes, ...]) -> None:
        """`Publish.to`: push the message to each node of `to`; an update's delta (unless
        inline) rides beside it, so a member needs no fetch (it checks the bytes against
        the update's CID first, and fetches as usual if they do not match)."""
        if self.behaviour.silent:
            return
        data = message.encode()
        attachment = b""
        if isinstance(message, Update) and not message.inline:
            try:
                cid = CID.parse(message.delta)
                attachment = await trio.to_thread.run_sync(self._attachment, cid)
                if is_float16_packed(attachment):
                    self.count("deltas-sent-packed")
            except P2PFLError as exc:  # (members fetch it from us as usual)
                self.count("push-attachment-unreadable")
                log.warning("our delta %s is unreadable: %s", message.delta.hex(), exc)
        async with trio.open_nursery() as nursery:
            for address in self._direct_recipients(message, to):
                nursery.start_soon(self._push, message, data, attachment, address)
        if isinstance(message, Update) and message.signer == self.address:
            self._update_sent(message.round).set()

    def _attachment(self, cid: CID) -> bytes:
        """(In a worker thread.) The bytes pushed beside an update naming `cid`: the delta,
        packed in half the bytes when the task rounds deltas to float16 and all of it is
        (`pack_float16`; the member unpacks and checks it against the CID). A sealed delta
        is packed inside its seal already: its ciphertext goes as it is."""
        blob = self.net.store.read_blob(cid)
        if self.manifest.train.get("delta_float16") and not self.manifest.sealed:
            packed = pack_float16(blob)
            if packed is not None:
                return packed
        return blob

    def _direct_recipients(self, message: Any, to: tuple[bytes, ...]) -> tuple[bytes, ...]:
        """Who our own update (or re-wrap, after a re-draw) is pushed to of the members
        `to`: those we hold a connection to, or, if fewer than DIRECT_MEMBERS_MIN, those and
        the first others in an order of our own (authors spread over the members); the rest
        pull it from them. Anything else goes to every node of `to`. (A re-draw's re-wraps
        went to every new member: 100 nodes dialled ~450 members in that round.)"""
        if not (isinstance(message, (Update, Rewrap)) and message.signer == self.address):
            return to
        linked = self.peers.linked(to)
        if len(linked) < DIRECT_MEMBERS_MIN:
            others = sorted(
                (a for a in to if a not in linked),
                key=lambda a: hashlib.sha256(self.address + a).digest(),
            )
            linked += others[: DIRECT_MEMBERS_MIN - len(linked)]
        cap = self.behaviour.direct_members
        return tuple(linked[:cap] if cap > 0 else linked)

    async def _pull_from_members(self, round_: int) -> None:
        """Updates to the committee, a round task: while we are a member of the round's
        attempt, collecting or voting, pull from MEMBER_PULLS_AT_ONCE other members in turn
        every MEMBER_PULL_S the updates (and re-wraps) of the round pushed to them that we
        lack; they are judged and delivered as pushed ones, and their deltas fetched from
        the member they came from (`Intake.relayed_by`). One pull after the other: the
        second asks without what the first brought (an update is pushed to 2-3 members;
        at once, both would send its delta). While updates are still being pushed to us,
        only every MEMBER_PULL_BUSY_S, and not before the first push of the round unless
        none came for MEMBER_PULL_UNPUSHED_S (see `relay_due`). A tick whose pulls brought
        something is followed by the next at once. A pull is given up after
        MEMBER_PULL_TIMEOUT_S."""
        topic = self.topic(TOPIC_UPDATES)
        turn = 0
        pulled_at = started = self.clock()
        first_pushed_at = float("-inf")
        brought = 0
        while True:
            if not brought:  # (else the others may hold more: an answer is 8 MiB at most)
                await trio.sleep(MEMBER_PULL_S)
            brought = 0
            if first_pushed_at == float("-inf") and self.intake.pushed_at >= started:
                first_pushed_at = self.intake.pushed_at  # (to a tick: the last push by then)
            machine = self.machine
            if machine.round != round_ or machine.phase not in (Phase.COLLECTING, Phase.VOTING):
                continue
            now = self.clock()
            voting = machine.phase is Phase.VOTING
            if not relay_due(now, self.intake.pushed_at, first_pushed_at, pulled_at, voting):
                continue  # updates still being pushed to us: relay when they quiet down
            pulled_at = now
            others = [m for m in machine.committee if m != self.address]
            if not others:
                continue
            picks = dict.fromkeys(
                others[(turn + i) % len(others)] for i in range(MEMBER_PULLS_AT_ONCE)
            )
            turn += MEMBER_PULLS_AT_ONCE
            for member in picks:
                peer = self.peer_ids.get(member)
                if peer is not None:
                    brought += await self._pull_member(peer, topic, round_)

    async def _pull_member(self, peer: str, topic: str, round_: int) -> int:
        """One relay pull: how many updates (and re-wraps) it brought."""
        try:
            admitted = await self.net.pull_and_admit(
                peer, topic, since=round_, timeout_s=MEMBER_PULL_TIMEOUT_S
            )
        except P2PFLError as exc:
            self.count("member-pull-failed")
            log.debug("pull from member %s failed: %s", peer, exc)
            return 0
        self.count("member-pulls")
        if admitted:
            self.count("member-pulled", admitted)
        return admitted

    def _update_sent(self, round_: int) -> trio.Event:
        """Set once our update of `round_` was pushed to its attempt's members."""
        if round_ not in self._updates_sent:
            for old in [r for r in self._updates_sent if r < round_ - 1]:
                del self._updates_sent[old]
            self._updates_sent[round_] = trio.Event()
        return self._updates_sent[round_]

    async def _push(self, message: Any, data: bytes, attachment: bytes, address: bytes) -> None:
        """Send a message to one node directly (an update or re-wrap to a committee
        member, `Publish.to`), again while it fails or is ignored (the member may not have
        reached the round yet), until it is judged or the round's nursery is cancelled.
        Only the recipient hears it, so it does not stand in for a heartbeat."""
        topic = self.topic(topic_of(message))
        delay = PUSH_RETRY_FIRST_S
        for _ in range(PUSH_TRIES):
            peer = self.peer_ids.get(address)
            if peer is None:
                self.count("push-unknown-peer")
            else:
                try:
                    answer = await self.net.push(peer, topic, data, attachment)
                except P2PFLError as exc:
                    self.count("push-failed")
                    log.debug("push %s to %s failed: %s", type(message).__name__, peer, exc)
                else:
                    if answer != "ignore":
                        self.count(f"push-{answer}")
                        return
                    self.count("push-ignored")
            await trio.sleep(delay)
            delay = min(delay * 2, PUSH_RETRY_MAX_S)
        self.count("push-gave-up")
        log.warning("gave up sending %s to %s", type(message).__name__, address.hex())

    async def _publish(self, message: Any) -> None:
        if self.behaviour.silent:
            return
        if isinstance(message, Update):
            self.intake.remember(message)
        try:
            await self.net.publish(self.topic(topic_of(message)), message.encode())
        except P2PFLError as exc:
            self.count("publish-failed")
            log.warning("publish %s failed: %s", type(message).__name__, exc)
            return
        if getattr(message, "signer", b"") == self.address:  # peers hear us: no beat needed
            self._last_signed_at = self.clock()  # for a while (not so for another's message)

    async def _publish_heartbeat(self, data: bytes) -> None:
        # Kept out of the sync logs: the next beat supersedes this one (validation.py).
        await self.net.publish(self.topic(TOPIC_CONSENSUS), data, synced=False)
        self._last_signed_at = self.clock()
        self.count("heartbeats-sent")

    def live_nodes(self) -> dict[bytes, float]:
        """Registered node -> seconds since we last heard it, for those the round machine
        counts live (what `p2pfl status` shows)."""
        now = self.machine.now
        return {a: now - t for a, t in self.machine.last_heard().items() if self.machine.is_live(a)}

    def _advance_soon(self, action: ev.Advance) -> None:
        # Round action.round - 1 is committed: its workers' results can only be stale.
        self._advancing_to = max(self._advancing_to, action.round)
        self.round_nurseries.close_before(action.round)
        self.workers.forget_before(action.round)
        self._node_task(self._advance, action.round, action.base)

    async def _ticker(self) -> None:
        """Tick(now) when `_tick_due` says; `_handle` brings the wait forward when an event
        arms a nearer deadline."""
        while True:
            with trio.CancelScope(deadline=self._tick_due()) as self._tick_wait:
                await trio.sleep_forever()
            self._tick_wait = None
            await self.queue.put(ev.Tick(self.clock()))

    def _tick_due(self) -> float:
        """The trio time of the next Tick: the machine's next deadline, but no later than
        DEFAULT_TICK_S from now while it collects, IDLE_TICK_S otherwise."""
        machine = self.machine
        cap = DEFAULT_TICK_S if machine.phase is Phase.COLLECTING else IDLE_TICK_S
        deadline = machine.next_deadline()
        delay = cap if deadline is None else min(cap, max(0.0, deadline - self.clock()))
        return trio.current_time() + max(delay, 0.01)

    # ------------------------------------------------------------------ rounds

    def round_record(self, round_: int) -> dict[bytes, int]:
        """The probation record of `round_` (fixed when the round started)."""
        held_round, record = self._round_record
        return record if held_round == round_ else self.committed.record(round_)

    async def _start_round(self, round_: int, base: bytes, learned_at: float | None = None) -> None:
        """Have the base model locally, read the registry snapshot, open the round's
        nursery, start the round.

        `learned_at`: when we learned that round_-1 committed. The round's attempt schedule
        starts there, not when the snapshot and the model are in: a node held up by the
        chain (an RPC outage) or a slow fetch then runs the same attempt clock as the
        others instead of one shifted by its delay (spec round.md, "attempt").
        """
        _, stakes = await run_chain(
            self.chain, self.chain.committee_stakes, self.task, self._chain_commits.get(round_ - 1)
        )
        self.committed.round_stakes[round_] = stakes
        await self.peers.refresh(stakes)
        await self.models.ensure(base)
        if round_ < self._advancing_to:
            # A later commit arrived while this start waited on the chain or a model (a
            # node catching up): the later start supersedes it.
            self.count("round-starts-superseded")
            return
        now = self.clock()
        self.intake.forget_attachments(round_)
        self.rounds[round_] = RoundLog(round=round_, started=now, base=str(CID.parse(base)))
        started = now if learned_at is None else min(now, learned_at)
        if now - started > LATE_START_S:
            self.count("rounds-started-late")
        # The probation record is fixed for the round: the collect quorum leaves its
        # authors out, and every aggregate of the round uses it. It needs the last round's
        # strikes: from its proposal, which may still be on its way (`_settle_late`).
        unsettled = self._unsettled.get(round_ - 1)
        if unsettled is not None:
            with trio.move_on_after(SETTLE_WAIT_S):
                await unsettled.wait()
        self._round_record = (round_, self.committed.record(round_))
        probation = (
            self.spec.probation.on_probation(self._round_record[1])
            if self.spec.probation
            else frozenset()
        )
        assert self._nursery is not None
        await self.round_nurseries.open(self._nursery, round_)
        if self.machine.config.updates_to_committee:
            self._round_task(round_, self._pull_from_members, round_)
        unsealable = frozenset(a for a in stakes if a in self.peers.unsealable)
        await self.queue.put(ev.RoundStarted(round_, base, stakes, started, probation, unsealable))

    async def _advance(self, round_: int, base: bytes) -> None:
        """Round round_-1 committed `base`: hold that model, report the round, wait until
        the chain shows the commit, then start round_."""
        learned_at = self.clock()
        entry = self.rounds.get(round_ - 1)
        if entry is not None:
            # The machine is still on the committed attempt: record its committee.
            entry.committee = self.machine.committee
            entry.member = self.machine.is_member
            entry.committed_at = learned_at
            counters = self.net.metrics()
            entry.bytes_sent = int(counters.get("bytes_sent", 0))  # type: ignore[call-overload]
            entry.bytes_received = int(counters.get("bytes_received", 0))  # type: ignore[call-overload]
        # Nothing reads a committed model before the node holds it: a node off the
        # committee learns of the commit before it has fetched the new model, so the round
        # is reported (`entry.result`, `on_round`) only once it is in the store.
        await self.models.ensure(base)
        if entry is not None:
            entry.result = str(CID.parse(base))
            if self.on_round is not None:
                self.on_round(entry)
        if self._stop_round is not None and round_ - 1 >= self._stop_round:
            self.finished.set()
            assert self._nursery is not None
            self._nursery.cancel_scope.cancel()
            return
        # A commit learned from its certificate may not be on our chain yet; one the
        # follower delivered is.
        while (
            round_ - 1 not in self._chain_commits
            and (await run_chain(self.chain, self.chain.task_info, self.task)).last_round
            < round_ - 1
        ):
            await trio.sleep(CHAIN_WAIT_POLL_S)
        await self._start_round(round_, base, learned_at)

    async def _on_chain_commit(self, event: RoundCommitted) -> None:
        if event.task != self.task:
            return
        self._chain_commits[event.round] = event
        for old in [r for r in self._chain_commits if r < event.round - 1]:
            del self._chain_commits[old]
        entry = self.rounds.get(event.round)
        if entry is not None:
            entry.commit_tx = "0x" + event.tx_hash.hex()
        result = self.models.cid_for_digest(event.result).to_bytes()
        base = (
            self.models.cid_for_digest(event.base).to_bytes()
            if event.round > 1
            else CID.parse(self.manifest.initial_model).to_bytes()
        )
        # The round's strikes enter the probation history before the machine hears of the
        # commit (the next round's probation reads them); the files are written after. A
        # proposal not seen yet is waited for (`_settle_late`), and so is the settlement by
        # the next round's start.
        committed = ev.ChainCommitted(
            event.round, event.attempt, event.view, base, result, event.contributors_root
        )
        if not self.committed.knows_proposal(event, result):
            settled = self._unsettled[event.round] = trio.Event()
            await self.queue.put(committed)
            self._node_task(self._settle_late, event, base, result, settled)
            return
        write_files = self.committed.settle(event, base, result)
        await self.queue.put(committed)
        await self._after_settle(event, base, result, write_files)

    async def _after_settle(
        self, event: RoundCommitted, base: bytes, result: bytes, write_files: Any
    ) -> None:
        """A settled round's files written; its updates pulled if we lack some."""
        if write_files is not None:
            await trio.to_thread.run_sync(write_files)
        proposal = self.committed.missing_updates(event, result)
        if proposal is not None and self.machine.config.updates_to_committee:
            self._node_task(self._pull_round_updates, event, base, result, proposal)

    async def _settle_late(
        self, event: RoundCommitted, base: bytes, result: bytes, settled: trio.Event
    ) -> None:
        """Settle a committed round whose proposal had not reached us when the chain showed
        it: wait PROPOSAL_WAIT_S for the gossip to bring it, else pull it from the members
        of the committing attempt (each was sent it), then settle as `_on_chain_commit`
        does. `settled` is set once the round's strikes are in (or settling gave up)."""
        try:
            self.count("settle-waited-for-proposal")
            with trio.move_on_after(PROPOSAL_WAIT_S):
                while not self.committed.knows_proposal(event, result):
                    await trio.sleep(PROPOSAL_POLL_S)
            if not self.committed.knows_proposal(event, result):
                await self._pull_committed_proposal(event, base, result)
            write_files = self.committed.settle(event, base, result)
        finally:
            settled.set()
            if self._unsettled.get(event.round) is settled:
                del self._unsettled[event.round]
        await self._after_settle(event, base, result, write_files)

    async def _member_pull(
        self, address: bytes, topic: str, round_: int, what: str
    ) -> list[bytes] | None:
        """A member's answer to a pull on `topic` of what was pushed to it in `round_` or
        later; None if we cannot reach it or the pull fails (counted `<what>-pull-failed`)."""
        peer = self.peer_ids.get(address)
        if peer is None:
            return None
        try:
            return await self.net.pull(peer, topic, since=round_)
        except P2PFLError as exc:
            self.count(f"{what}-pull-failed")
            log.debug("round %d: %s pull from %s failed: %s", round_, what, peer, exc)
            return None

    def _committing_members(self, event: RoundCommitted, base: bytes) -> list[bytes]:
        """The members of the attempt that committed `event`'s round (we excepted), those we
        hold a connection to first, each node starting at its own place in the draw's order
        (so that no member serves every node)."""
        stakes = self.committed.round_stakes.get(event.round, {})
        base_digest = CID.parse(base).digest
        members = draw(
            self.task, event.round, base_digest, event.attempt, stakes, self.manifest.committee_size
        )
        members = [m for m in members if m != self.address]
        if not members:
            return []
        start = int.from_bytes(self.address, "big") % len(members)
        rotated = members[start:] + members[:start]
        linked = self.peers.linked(rotated)
        return linked + [m for m in rotated if m not in linked]

    async def _pull_committed_proposal(
        self, event: RoundCommitted, base: bytes, result: bytes
    ) -> None:
        """Ask up to ROUND_PULL_TRIES members of the committing attempt for the proposal the
        chain's (round, result, contributors root) names; keep it once its signature, by a
        member, checks out."""
        members = self._committing_members(event, base)
        topic = self.topic(TOPIC_CONSENSUS)
        for address in members[:ROUND_PULL_TRIES]:
            messages = await self._member_pull(address, topic, event.round, "proposal")
            for data in messages or ():
                proposal = self._pulled_proposal(data, event, result, members)
                if proposal is not None:
                    self.intake.remember(proposal)
                    self.count("proposal-pulled")
                    return
        self.count("proposal-pull-incomplete")
        log.warning("round %d: the committed proposal could not be had", event.round)

    def _pulled_proposal(
        self, data: bytes, event: RoundCommitted, result: bytes, members: list[bytes]
    ) -> Proposal | None:
        """A pulled message, if it is the committed proposal validly signed by a member."""
        try:
            message = decode_message(data)
        except InvalidMessage:
            self.count("proposal-pull-rejected")
            return None
        if not isinstance(message, Proposal) or (
            message.round,
            message.result,
            message.contributors_root,
        ) != (event.round, result, event.contributors_root):
            return None  # (a vote, or another attempt's proposal: not what we asked for)
        try:
            if message.task != self.task or message.signer not in members:
                raise InvalidMessage("bad-signer", "pulled proposal")
            if message.verify(self.machine.domain) != message.signer:
                raise InvalidMessage("bad-signature", "pulled proposal")
        except InvalidMessage:
            self.count("proposal-pull-rejected")
            return None
        return message

    async def _pull_round_updates(
        self, event: RoundCommitted, base: bytes, result: bytes, proposal: Proposal
    ) -> None:
        """Updates to the committee: a node off the committee holds none of the updates a
        committed round aggregated, so it asks the committing attempt's members for them
        (each holds them all), checks each signature, then writes the round record and
        the reward file `settle` had to leave out. Each node starts with a different
        member, so no member serves every node; and it starts once its own update of the
        next round is sent (at most PULL_AFTER_OWN_UPDATE_MAX_S later), so that the round
        start, when the members serve the new model to everyone, is not also when they
        serve every node's pull (100 nodes in 2 shards: the median node held the new model
        3.0-6.6 s after the commit, 5.3-7.8 s with the pulls at once)."""
        if self._stop_round is None or event.round < self._stop_round:
            with trio.move_on_after(PULL_AFTER_OWN_UPDATE_MAX_S):
                await self._update_sent(event.round + 1).wait()
        wanted = set(proposal.included)
        # Members we hold a connection to first (we pushed our update to some).
        order = self._committing_members(event, base) or [proposal.signer]
        topic = self.topic(TOPIC_UPDATES)
        for address in order[:ROUND_PULL_TRIES]:
            messages = await self._member_pull(address, topic, event.round, "round")
            if messages is None:
                continue
            for i, data in enumerate(messages):
                if i and i % PULLED_CHECKS_PER_STEP == 0:
                    await trio.lowlevel.checkpoint()  # (100 signatures: ~35 ms of a shard's loop)
                update = self._pulled_update(data, wanted)
                if update is not None:
                    self.intake.remember(update)
            if all(key in self.intake.updates for key in wanted):
                break
        else:
            # (settle wrote the round record with the updates we held; no reward file)
            self.count("round-pull-incomplete")
            log.warning("round %d: the committed updates could not be pulled", event.round)
            return
        write = self.committed.complete(event, base, result)
        if write is not None:
            await trio.to_thread.run_sync(write)
            self.count("round-updates-pulled")

    def _pulled_update(self, data: bytes, wanted: set[ev.UpdateKey]) -> Update | None:
        """A pulled message, if it is a validly signed update the committed round names."""
        try:
            message = decode_message(data)
            if not isinstance(message, Update) or (message.signer, message.delta) not in wanted:
                return None
            if message.task != self.task or message.verify(self.machine.domain) != message.signer:
                raise InvalidMessage("bad-signature", "pulled update")
        except InvalidMessage:
            self.count("round-pull-rejected")
            return None
        return message
