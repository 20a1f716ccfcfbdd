"""The node: one trio nursery tree running the round protocol for one task.

    Node.run()
      ├── event loop      feeds the core RoundMachine, performs its actions
      ├── ticker          Tick(now) at the machine's next deadline (or every tick_s)
      ├── chain follower  RoundCommitted events -> ChainCommitted (resumes from its state file)
      ├── gossip intake   validated messages from the network -> *Received events
      └── workers         training, fetching, aggregating, chain calls: each a task in
                          the node's nursery, heavy numpy/torch work in worker threads

The protocol logic lives entirely in `p2pfl.core.round.RoundMachine`; this module only
turns its actions into I/O and the I/O's outcomes back into events. Everything a
restarted node needs is on disk (block store, follower state) or on-chain (latest
committed model digest), so a node killed at any point rejoins from the chain.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import trio

from p2pfl.chain.client import ChainClient, RoundCommitted
from p2pfl.chain.follower import CommitFollower
from p2pfl.chain.trio_client import run_chain
from p2pfl.core import aggregate as agg
from p2pfl.core import round_events as ev
from p2pfl.core.cid import CHUNK_SIZE, CODEC_DAG_PB, CODEC_RAW, CID, blob_cid, digest_to_cid
from p2pfl.core.identity import NodeIdentity
from p2pfl.core.probation_history import StrikeHistory, decode_strikes, encode_strikes, forget_before
from p2pfl.core.round_result import committed_reward_tree, compute_aggregate
from p2pfl.core.messages import Commit, Proposal, Update, Vote, decode_message
from p2pfl.core.round import RoundMachine
from p2pfl.core.validation import ACCEPT, Verdict, check_gossip
from p2pfl.core.tensors import decode_tensors, encode_tensors, flatten
from p2pfl.errors import ChainError, InvalidMessage, P2PFLError
from p2pfl.files import write_text_atomic
from p2pfl.manifest import TaskManifest
from p2pfl.net.config import BAN_S
from p2pfl.parallel import threaded

log = logging.getLogger("p2pfl.node")

# Timer resolution when no deadline is armed: the machine's timers are seconds long.
DEFAULT_TICK_S = 0.25
# Deltas up to this size ride inline in the Update (one gossip message, no fetch);
# larger ones go by CID over the block exchange: pubsub is slow and drops big bursts.
DEFAULT_INLINE_MAX_BYTES = 16 * 1024
# How often the chain is polled for commits: a round cannot start before its
# predecessor's commit is seen, so this latency is paid every round.
DEFAULT_FOLLOW_POLL_S = 0.5
# Retry a failed delta fetch after this long, doubling up to the cap, while the round lasts.
FETCH_RETRY_S = 0.5
FETCH_RETRY_MAX_S = 4.0
# Providers one model fetch asks (p2pfl.net.config.BLOCKS_MAX_PROVIDERS); retries rotate by it.
MODEL_FETCH_PROVIDERS_PER_TRY = 4
# After this many failed fetches of a model, warn the operator (once per model): with the
# 4 s backoff cap that is about a minute without the model.
MODEL_FETCH_WARN_AFTER = 20
# How often to re-read the chain while waiting for a commit to become visible.
CHAIN_WAIT_POLL_S = 0.2
# A round whose start (snapshot read, base model) took longer than this after the commit
# was learned is counted `rounds-started-late` (its attempt clock starts at the commit).
LATE_START_S = 5.0

TOPIC_UPDATES = "updates"
TOPIC_CONSENSUS = "consensus"
TOPIC_COMMITS = "commits"


def topic_of(message: Any) -> str:
    if isinstance(message, Update):
        return TOPIC_UPDATES
    if isinstance(message, Commit):
        return TOPIC_COMMITS
    return TOPIC_CONSENSUS


class NodeNet(Protocol):
    """What the node needs from the network layer (p2pfl.net.host.NodeNet)."""

    peer_id: str
    store: Any  # p2pfl.net.blockstore.BlockStore

    async def join(self, topic: str, validate: Any) -> Any: ...

    async def publish(self, topic: str, data: bytes) -> bytes: ...

    async def fetch_blob(self, root: CID, providers: Sequence[str] | None = None) -> None: ...


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


# (base weights, training config, seed) -> p2pfl.train.trainer.TrainResult
Trainer = Callable[[dict[str, np.ndarray], Any, int], Awaitable[Any]]


@dataclass
class Behaviour:
    """Hooks for simulations of faulty and malicious nodes (all off = honest)."""

    # delta -> delta, applied to our own trained delta before publishing (poisoning)
    poison: Callable[[int, dict[str, np.ndarray]], dict[str, np.ndarray]] | None = None
    n_samples_factor: float = 1.0
    silent: bool = False  # never publish anything (crash-like but stays connected)


class Node:
    """One participant in one task."""

    def __init__(
        self,
        identity: NodeIdentity,
        manifest: TaskManifest,
        chain: ChainClient,
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
        follow_poll_s: float = DEFAULT_FOLLOW_POLL_S,
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
        self.on_round = on_round
        # How local training runs: by default `train_local` on `data` in a worker thread;
        # a simulation passes a trainer backed by a process pool whose workers hold the
        # partitions, keeping torch's Python work off the event loop's GIL.
        self.trainer = trainer
        self.follow_poll_s = follow_poll_s
        self.spec = manifest.rule_spec()
        self.machine = RoundMachine(manifest.round_config(**(round_overrides or {})), identity.private_key, chain.domain())
        self.rounds: dict[int, RoundLog] = {}
        self.counters: dict[str, int] = {}
        self.peer_ids: dict[bytes, str] = {}  # address -> libp2p peer id, from the registry
        self._updates: dict[tuple[bytes, bytes], Update] = {}
        # (round, result CID, contributors root) -> proposal. Two proposals can share a
        # result and differ in their rejected list (an equivocator's second version seen
        # by one leader and not by another), so the root is part of the key.
        self._proposals: dict[tuple[int, bytes, bytes], Proposal] = {}
        self._round_stakes: dict[int, dict[bytes, int]] = {}  # registry snapshot each round drew from
        # Committed round -> {author: strike points} (the aggregation's probation history),
        # from the proposal the chain's (result, contributors root) names, once its reward
        # tree matched the root (or could not be rebuilt for a missing update); kept on
        # disk so a restarted node computes the same probation as the others.
        self._strikes: dict[int, dict[bytes, int]] = load_strikes(self.data_dir / STRIKES_FILE)
        self._round_record: tuple[int, dict[bytes, int]] = (0, {})  # (round, its record)
        self._models: dict[bytes, dict[str, np.ndarray]] = {}  # CID bytes -> weights (small LRU)
        self._model_blob_size: int | None = None
        self._events_send, self._events_recv = trio.open_memory_channel[Any](math.inf)
        self._nursery: trio.Nursery | None = None
        self._stop_round: int | None = None
        self.finished = trio.Event()

    # ------------------------------------------------------------------ running

    async def run(self, stop_after_round: int | None = None) -> None:
        """Join the task at the chain's latest commit and run rounds until cancelled
        (or until `stop_after_round` is committed)."""
        self._stop_round = stop_after_round
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            joined_block = await run_chain(self.chain, self.chain.block_number)
            info = await run_chain(self.chain, self.chain.task_info, self.task)
            if not info.exists:
                raise P2PFLError(f"task {self.task.hex()} is not on-chain; create it first (`p2pfl task create`)")
            if stop_after_round is not None and info.last_round >= stop_after_round:
                self.finished.set()
                nursery.cancel_scope.cancel()
                return
            # The chain stores models as bare digests, and a CID's codec depends on the
            # model's size, which the genesis model tells (local after a restart, else
            # fetched from peers): load it before following the chain, so no commit event
            # can arrive that we cannot name.
            genesis = CID.parse(self.manifest.initial_model)
            await self._ensure_model(genesis.to_bytes())
            base = genesis if info.last_round == 0 else self._cid_for_digest(info.last_result)
            for kind in (TOPIC_UPDATES, TOPIC_CONSENSUS, TOPIC_COMMITS):
                channel = await self.net.join(self.topic(kind), self._validator)
                nursery.start_soon(self._intake, channel)
            # A new follower starts at the block we joined at: `info` already reflects every
            # earlier commit (one seen twice is a replay the machine drops), and scanning the
            # task's whole history costs O(chain) per node -- quadratic on eth-tester, whose
            # getLogs looks every receipt up from the head. A saved cursor takes precedence.
            follower = CommitFollower(self.chain, task=self.task, start_block=joined_block,
                                      state_path=self.data_dir / "follower.json")
            nursery.start_soon(follower.follow, self._on_chain_commit, self.follow_poll_s)
            nursery.start_soon(self._ticker)
            nursery.start_soon(self._start_round, info.last_round + 1, base.to_bytes())
            async for event in self._events_recv:
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

    def _validator(self, topic: str, data: bytes, from_peer: str) -> Any:
        from p2pfl.net.gossip import ValidationResult

        verdict = self.validate(data)
        if verdict.action != ACCEPT:
            self._count(f"gossip-{verdict.action}-{verdict.reason}")
        return ValidationResult.of(verdict)

    async def _intake(self, channel: Any) -> None:
        async for message in channel:
            self.deliver(message.data, message.from_peer)

    def deliver(self, data: bytes, from_peer: str = "") -> None:
        """Gossip intake for a message that passed `validate`: queue it for the machine."""
        try:
            message = decode_message(data)
        except InvalidMessage:
            self._count("decode-rejected")
            return
        if getattr(message, "signer", None) == self.address:
            return  # our own message echoed back; the machine already has it
        if isinstance(message, Update):
            self._updates[(message.signer, message.delta)] = message  # inline bytes for Fetch
        elif isinstance(message, Proposal):
            self._proposals.setdefault((message.round, message.result, message.contributors_root), message)
        event = ev.event_for(message)  # `validate` checked the signature
        if event is not None:
            self._events_send.send_nowait(event)

    def validate(self, data: bytes) -> Verdict:
        """The gossip validator's checks (p2pfl.core.validation): canonical decoding, our
        task, a round near ours, valid signatures by registered nodes. The round machine
        does the stateful checks afterwards (base, membership, duplicates)."""
        return check_gossip(
            data,
            task=self.task,
            domain=self.machine.domain,
            registered=self.peer_ids or None,
            current_round=self.machine.round if self.machine.round > 0 else None,
        )

    # ------------------------------------------------------------------ machine I/O

    def _handle(self, event: Any) -> None:
        try:
            actions = self.machine.handle(event)
        except P2PFLError:
            log.exception("round machine refused %s", type(event).__name__)
            return
        for action in actions:
            self._perform(action)

    def _perform(self, action: Any) -> None:
        assert self._nursery is not None
        n = self._nursery
        if isinstance(action, ev.StartTraining):
            n.start_soon(self._train, action.round, action.base)
        elif isinstance(action, ev.Publish):
            self._note_published(action.message)
            n.start_soon(self._publish, action.message)
        elif isinstance(action, ev.Fetch):
            n.start_soon(self._fetch_delta, action.author, action.delta)
        elif isinstance(action, ev.ComputeAggregate):
            entry = self.rounds.get(action.round)
            if entry is not None and not entry.collect_closed_at:
                entry.collect_closed_at = self.clock()
            n.start_soon(self._compute, action)
        elif isinstance(action, ev.SubmitCommit):
            n.start_soon(self._submit_commit, action.commit)
        elif isinstance(action, ev.Advance):
            n.start_soon(self._advance, action.round, action.base)
        elif isinstance(action, ev.ReportEvidence):
            n.start_soon(self._report_evidence, action.evidence)
        elif isinstance(action, ev.Rejected):
            self._count(f"rejected-{action.reason}")

    def _count(self, name: str, amount: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + amount

    async def _ticker(self) -> None:
        while True:
            now = self.clock()
            deadline = self.machine.next_deadline()
            delay = DEFAULT_TICK_S if deadline is None else min(DEFAULT_TICK_S, max(0.0, deadline - now))
            await trio.sleep(max(delay, 0.01))
            self._events_send.send_nowait(ev.Tick(self.clock()))

    # ------------------------------------------------------------------ rounds

    async def _start_round(self, round_: int, base: bytes, learned_at: float | None = None) -> None:
        """Have the base model locally, read the registry snapshot, start the round.

        `learned_at`: when we learned that round_-1 committed. The round's attempt schedule
        starts there, not when the snapshot and the model are in: a node held up by the
        chain (an RPC outage) or a slow fetch then runs the same attempt clock as the
        others instead of one shifted by its delay (spec round.md, "attempt").
        """
        _, stakes = await run_chain(self.chain, self.chain.committee_stakes, self.task)
        self._round_stakes[round_] = stakes
        await self._refresh_peer_ids(stakes)
        await self._ensure_model(base)
        now = self.clock()
        log_entry = RoundLog(round=round_, started=now, base=str(CID.parse(base)))
        self.rounds[round_] = log_entry
        started = now if learned_at is None else min(now, learned_at)
        if now - started > LATE_START_S:
            self._count("rounds-started-late")
        # The probation record is fixed for the round: the collect quorum leaves its
        # authors out, and every aggregate of the round uses it.
        self._round_record = (round_, self._record(round_))
        probation = self.spec.probation.on_probation(self._round_record[1]) if self.spec.probation else frozenset()
        self._events_send.send_nowait(ev.RoundStarted(round_, base, stakes, started, probation))

    async def _refresh_peer_ids(self, stakes: dict[bytes, int]) -> None:
        missing = [a for a in stakes if a not in self.peer_ids]
        for address in missing:
            info = await run_chain(self.chain, self.chain.node_info, address)
            try:
                self.peer_ids[address] = _peer_id_text(info.peer_id)
            except P2PFLError:
                self._count("bad-registered-peer-id")

    async def _advance(self, round_: int, base: bytes) -> None:
        """Round round_-1 committed `base`: wait until the chain shows it, then start round_."""
        learned_at = self.clock()
        entry = self.rounds.get(round_ - 1)
        if entry is not None:
            # The machine is still on the committed attempt: record its committee.
            entry.committee = self.machine.committee
            entry.member = self.machine.is_member
            entry.committed_at = self.clock()
            if hasattr(self.net, "metrics"):
                counters = self.net.metrics()
                entry.bytes_sent = int(counters.get("bytes_sent", 0))
                entry.bytes_received = int(counters.get("bytes_received", 0))
            entry.result = str(CID.parse(base))
            if self.on_round is not None:
                self.on_round(entry)
        if self._stop_round is not None and round_ - 1 >= self._stop_round:
            await self._ensure_model(base)
            self.finished.set()
            assert self._nursery is not None
            self._nursery.cancel_scope.cancel()
            return
        while (await run_chain(self.chain, self.chain.task_info, self.task)).last_round < round_ - 1:
            await trio.sleep(CHAIN_WAIT_POLL_S)
        await self._start_round(round_, base, learned_at)

    async def _on_chain_commit(self, event: RoundCommitted) -> None:
        if event.task != self.task:
            return
        entry = self.rounds.get(event.round)
        if entry is not None:
            entry.commit_tx = "0x" + event.tx_hash.hex()
        result = self._cid_for_digest(event.result).to_bytes()
        base = self._cid_for_digest(event.base).to_bytes() if event.round > 1 else CID.parse(self.manifest.initial_model).to_bytes()
        self._events_send.send_nowait(
            ev.ChainCommitted(event.round, event.attempt, event.view, base, result, event.contributors_root)
        )
        self._write_reward_file(event, base, result)

    def _write_reward_file(self, event: RoundCommitted, base: bytes, result: bytes) -> None:
        """Rebuild the committed round's reward tree from its proposal and the updates it
        names, check it against the on-chain root, and save it for `p2pfl claim`; record
        the round's strikes (probation history) from the same proposal."""
        from p2pfl.chain.rewards import write_reward_file

        proposal = self._proposals.get((event.round, result, event.contributors_root))
        stakes = self._round_stakes.get(event.round)
        if proposal is None or stakes is None:
            self._count("reward-file-unknown-proposal")
            return
        tree = committed_reward_tree(
            proposal, self._updates, task=self.task, attempt=event.attempt, base_digest=CID.parse(base).digest,
            stakes=stakes, committee_size=self.manifest.committee_size,
            reward_per_round_wei=self.manifest.reward_per_round_wei,
        )
        if tree is None:
            # No weights, so no tree to check; the strikes need only the proposal the
            # chain's (result, root) names, so the history does not get a hole.
            self._count("reward-file-missing-update")
            self._record_strikes(event.round, proposal)
            return
        if tree.root != event.contributors_root:
            self._count("reward-root-mismatch")
            log.warning("round %d: rebuilt reward root differs from the chain's", event.round)
            return
        folder = self.data_dir / "rewards"
        folder.mkdir(exist_ok=True)
        write_reward_file(folder / f"round-{event.round:06d}.json", self.task, event.round, tree)
        self._record_strikes(event.round, proposal)

    def _record_strikes(self, round_: int, proposal: Proposal) -> None:
        """Add the committed round's strike points to the probation history (on disk)."""
        if self.spec.probation is not None:
            self._strikes[round_] = agg.strike_points(proposal.rejected, self.spec.probation)
            save_strikes(self.data_dir / STRIKES_FILE, self._strikes, keep_from=round_ - self.spec.probation.window)

    def _record(self, round_: int) -> dict[bytes, int]:
        """Authors' strike points over the probation window before `round_` (`aggregate`'s
        `record`; empty without a probation rule)."""
        rule = self.spec.probation
        if rule is None:
            return {}
        missing = [r for r in rule.rounds(round_) if r not in self._strikes]
        if missing:
            # Joined late or missed a proposal: our probation may differ from the
            # committee's, and then we cannot verify (we do not vote) -- never a wrong vote.
            self._count("probation-history-missing")
        return rule.record(round_, self._strikes)

    # ------------------------------------------------------------------ models and blocks

    def _cid_for_digest(self, digest: bytes) -> CID:
        """Rebuild a model CID from the 32-byte digest the chain stores.

        Every model of a task has one size (same architecture, float32), and the
        IPFS layout makes blobs up to one chunk a raw block and larger ones dag-pb.
        """
        size = self._model_blob_size
        if size is None:
            raise P2PFLError("model size unknown before the genesis model is loaded")
        return digest_to_cid(digest, CODEC_RAW if size <= CHUNK_SIZE else CODEC_DAG_PB)

    def _providers(self, first: bytes | None = None) -> list[str]:
        """Peers to ask for blocks: the author (if given), committee members (they fetch
        every delta of the round), then everyone else; connected peers before the rest,
        since a peer we hold no address for cannot be dialled."""
        connected = set(self.net.connected_peers()) if hasattr(self.net, "connected_peers") else set()
        order = ([first] if first is not None else []) + list(self.machine.committee) + list(self.peer_ids)
        peers = [self.peer_ids[a] for a in dict.fromkeys(order) if a in self.peer_ids and a != self.address]
        return sorted(peers, key=lambda p: p not in connected)  # stable: keeps the order within each group

    async def _ensure_model(self, cid_bytes: bytes) -> dict[str, np.ndarray]:
        if cid_bytes in self._models:
            return self._models[cid_bytes]
        cid = CID.parse(cid_bytes)
        delay = FETCH_RETRY_S
        attempt = 0
        while not self.net.store.has_blob(cid):
            # Without the model there is nothing to do: keep asking, backing off. A fetch
            # asks only the first few providers, so each retry starts further down the list:
            # otherwise the same peers that lack the model (or are unreachable) are asked forever.
            # Rotate among connected peers only: a peer we hold no address for cannot be dialled.
            providers = self._providers()
            connected = set(self.net.connected_peers()) if hasattr(self.net, "connected_peers") else set()
            n_connected = sum(1 for p in providers if p in connected) or len(providers)
            shift = (attempt * MODEL_FETCH_PROVIDERS_PER_TRY) % max(1, n_connected)
            attempt += 1
            try:
                await self.net.fetch_blob(cid, providers[shift:n_connected] + providers[:shift] + providers[n_connected:])
            except P2PFLError as exc:
                self._count("model-fetch-retries")
                log.info("model %s not fetched yet (%s); retrying in %.1f s", cid, exc, delay)
                if attempt == MODEL_FETCH_WARN_AFTER:
                    # Say it once, loudly: the usual cause is on our side, and only the
                    # operator can fix it.
                    log.warning(
                        "model %s: %d fetches failed (last: %s). If every peer refuses, they have "
                        "banned this node (it sent them invalid or too many messages; bans lapse "
                        "after %d s); otherwise check the bootstrap peers and the network.",
                        cid, attempt, exc, int(BAN_S),
                    )
                await trio.sleep(delay)
                delay = min(delay * 2, FETCH_RETRY_MAX_S)
        blob = self.net.store.read_blob(cid)
        weights = decode_tensors(blob)
        self._model_blob_size = len(blob)
        if len(self._models) > 4:
            self._models.pop(next(iter(self._models)))
        self._models[cid_bytes] = weights
        return weights

    # ------------------------------------------------------------------ workers

    async def _train(self, round_: int, base_bytes: bytes) -> None:
        from p2pfl.train.trainer import TrainConfig, client_seed, train_local

        if self.behaviour.silent:
            return
        base = await self._ensure_model(base_bytes)
        cfg = TrainConfig.from_dict({**self.manifest.train, "seed": self.manifest.seed})
        seed = client_seed(self.manifest.seed, round_, self.client_index)
        if self.trainer is None:
            job = functools.partial(train_local, self.manifest.model, base, self.data, cfg, seed,
                                    model_kwargs=self.manifest.model_kwargs, num_threads=self.num_threads)
            result = await trio.to_thread.run_sync(job, limiter=self.cpu)
        else:
            result = await self.trainer(base, cfg, seed)
        delta = result.delta
        if self.behaviour.poison is not None:
            delta = self.behaviour.poison(round_, delta)
        blob = encode_tensors(delta)
        cid = self.net.store.put_blob(blob)
        vector, _ = flatten(delta)
        norm = agg.norm(vector)
        n_samples = max(1, int(result.n_samples * self.behaviour.n_samples_factor))
        inline = blob if len(blob) <= DEFAULT_INLINE_MAX_BYTES else b""
        entry = self.rounds.get(round_)
        if entry is not None:
            entry.train_s = result.seconds
            entry.train_loss = result.train_loss
        self._events_send.send_nowait(ev.LocalUpdateReady(round_, cid.to_bytes(), n_samples, norm, inline))

    def _note_published(self, message: Any) -> None:
        if isinstance(message, Proposal):
            self._proposals.setdefault((message.round, message.result, message.contributors_root), message)
        if isinstance(message, Update):
            entry = self.rounds.get(message.round)
            if entry is not None:
                entry.published_at = self.clock()
        elif isinstance(message, Commit):
            entry = self.rounds.get(message.round)
            if entry is not None and not entry.certified_at:
                entry.certified_at = self.clock()

    async def _publish(self, message: Any) -> None:
        if self.behaviour.silent:
            return
        if isinstance(message, Update):
            self._updates[(message.signer, message.delta)] = message
        try:
            await self.net.publish(self.topic(topic_of(message)), message.encode())
        except P2PFLError as exc:
            self._count("publish-failed")
            log.warning("publish %s failed: %s", type(message).__name__, exc)

    async def _fetch_delta(self, author: bytes, delta: bytes) -> None:
        cid = CID.parse(delta)
        started = self.clock()
        ok = True
        try:
            if not self.net.store.has_blob(cid):
                update = self._updates.get((author, delta))
                if update is not None and update.inline:
                    if blob_cid(update.inline) != cid:
                        raise InvalidMessage("inline-mismatch", "inline bytes do not match the delta CID")
                    self.net.store.put_blob(update.inline)
                else:
                    await self._fetch_with_retries(cid, author)
            decode_tensors(self.net.store.read_blob(cid))  # canonical float32 tensors or bust
        except (P2PFLError, OSError) as exc:
            ok = False
            self._count("fetch-failed")
            log.info("delta %s from %s unavailable: %s", cid, author.hex()[:8], exc)
        entry = self.rounds.get(self.machine.round)
        if entry is not None:
            entry.fetch_s = max(entry.fetch_s, self.clock() - started)
        self._events_send.send_nowait(ev.DeltaAvailable(author, delta, ok))

    async def _fetch_with_retries(self, cid: CID, author: bytes) -> None:
        """Fetch a delta, retrying while the round lasts: holders multiply as the committee
        fetches, so a first failure (author busy, no route yet) is often temporary."""
        round_ = self.machine.round
        delay = FETCH_RETRY_S
        while True:
            try:
                await self.net.fetch_blob(cid, self._providers(first=author))
                return
            except P2PFLError as exc:
                if self.machine.round != round_ or self.machine.phase.value in ("certified", "advanced"):
                    raise
                self._count("fetch-retries")
                log.debug("fetch %s failed (%s); retrying in %.1f s", cid, exc, delay)
                await trio.sleep(delay)
                delay = min(delay * 2, FETCH_RETRY_MAX_S)

    async def _compute(self, request: ev.ComputeAggregate) -> None:
        started = self.clock()
        base = await self._ensure_model(request.base)
        reward = self.manifest.reward_per_round_wei
        try:
            blobs = [self.net.store.read_blob(CID.parse(u.delta)) for u in request.updates]
            record = self._round_record[1] if self._round_record[0] == request.round else self._record(request.round)
            answer, model_blob = await trio.to_thread.run_sync(
                lambda: compute_aggregate(self.spec, request, base, blobs, reward, record, parallel=threaded), limiter=self.cpu
            )
        except (P2PFLError, OSError) as exc:
            answer, model_blob = ev.AggregateComputed(request.round, request.attempt, request.candidates, error=str(exc) or "failed"), b""
        if model_blob:
            self.net.store.put_blob(model_blob)  # others fetch the new model from members
        entry = self.rounds.get(request.round)
        if entry is not None:
            entry.aggregate_s += self.clock() - started
            entry.computed_at = entry.computed_at or self.clock()
            entry.included = tuple(a for a, _ in answer.included)
            entry.rejected = answer.rejected
        self._events_send.send_nowait(answer)

    async def _submit_commit(self, commit: Commit) -> None:
        try:
            result = await run_chain(
                self.chain, self.chain.commit_round, commit.task, commit.round, commit.attempt, commit.view,
                CID.parse(commit.base).digest, CID.parse(commit.result).digest, commit.contributors_root,
                commit.votes,  # (signer, signature) pairs the machine verified
            )
        except ChainError as exc:
            # Another member's commit usually landed first; the follower will see it.
            self._count("commit-not-ours")
            log.info("commit of round %d not submitted by us: %s", commit.round, exc.revert_reason or exc)
            return
        self._count("commits-landed")
        entry = self.rounds.get(commit.round)
        if entry is not None:
            entry.commit_gas = result.gas_used
            entry.commit_tx = "0x" + result.tx_hash.hex()

    async def _report_evidence(self, evidence: ev.Evidence) -> None:
        try:
            await run_chain(self.chain, self.chain.submit_equivocation, *evidence.contract_args())
            self._count("evidence-submitted")
        except ChainError as exc:
            self._count("evidence-not-ours")
            log.info("evidence against %s not submitted: %s", evidence.signer.hex()[:8], exc.revert_reason or exc)


STRIKES_FILE = "strikes.json"


def load_strikes(path: Path) -> StrikeHistory:
    """The probation history saved by `save_strikes` ({} if there is none yet)."""
    try:
        return decode_strikes(path.read_bytes())
    except FileNotFoundError:
        return {}
    except P2PFLError as exc:
        raise P2PFLError(f"{exc} in {path}; delete it to start afresh") from exc


def save_strikes(path: Path, strikes: StrikeHistory, keep_from: int) -> None:
    """Write the history atomically, dropping rounds before `keep_from` (out of every window)."""
    forget_before(strikes, keep_from)
    write_text_atomic(path, encode_strikes(strikes).decode())


def _peer_id_text(raw: bytes) -> str:
    """Registered peer IDs are stored as the binary multihash; the network uses base58."""
    import base58

    if not raw:
        raise P2PFLError("node registered no peer id")
    return base58.b58encode(raw).decode()
