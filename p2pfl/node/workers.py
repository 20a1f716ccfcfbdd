"""The work a round's actions start -- local training, delta fetches, aggregation --
each a task in the round's nursery (p2pfl.node.rounds), cancelled with it. Heavy work
(training, hashing, disk reads, decoding, aggregating) runs in worker threads or the
simulator's process pool, never on the event loop."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import trio

from p2pfl.core import aggregate as agg
from p2pfl.core import round_events as ev
from p2pfl.core.cid import CID, blob_blocks
from p2pfl.core.round_result import compute_aggregate
from p2pfl.core.sealed import delta_aad
from p2pfl.core.tensors import (
    DEFAULT_MAX_BYTES,
    InvalidTensors,
    decode_tensors,
    encode_tensors,
    flatten,
    is_float16_packed,
    pack_float16,
    round_to_float16,
    unpack_float16,
)
from p2pfl.errors import P2PFLError
from p2pfl.node.models import PROGRESS_EVERY_S, fetch_with_retries
from p2pfl.parallel import threaded
from p2pfl.sealing import SEAL_OVERHEAD, SealError, new_key, open_delta, seal, unwrap_key, wrap_key

if TYPE_CHECKING:
    from p2pfl.core.identity import NodeIdentity
    from p2pfl.core.round import RoundMachine
    from p2pfl.manifest import TaskManifest
    from p2pfl.node.intake import Intake
    from p2pfl.node.models import ModelCache
    from p2pfl.node.peers import PeerDirectory
    from p2pfl.node.ports import NodeNet
    from p2pfl.node.queue import EventQueue
    from p2pfl.node.roundlog import Behaviour, RoundLog, Trainer
    from p2pfl.task_access import ModelKey
    from p2pfl.train.privacy import PrivacyLedger

log = logging.getLogger("p2pfl.node")

# Deltas up to this size ride inline in the Update (one gossip message, no fetch);
# larger ones go by CID over the block exchange: pubsub is slow and drops big bursts.
DEFAULT_INLINE_MAX_BYTES = 16 * 1024
# A fetch that fails once the round is certified is not retried: no vote needs it any more.
_NO_MORE_FETCHES = ("certified", "advanced")
# Delta fetches a node runs at once. A member of a 100-node round holds 100 updates at
# the same moment; fetched all at once, they asked the same few providers (the author and
# the first committee members) for blocks faster than a peer's request rate limit (50/s,
# burst 100), were refused and penalised for it, and banned within minutes.
DELTA_FETCHES_AT_ONCE = 8


class NodeContext(Protocol):
    """What the workers use of the node (p2pfl.node.node.Node provides it)."""

    address: bytes
    identity: NodeIdentity
    task: bytes
    manifest: TaskManifest
    spec: agg.RuleSpec
    net: NodeNet
    machine: RoundMachine
    models: ModelCache
    peers: PeerDirectory
    intake: Intake
    queue: EventQueue
    rounds: dict[int, RoundLog]
    behaviour: Behaviour
    trainer: Trainer | None
    train_context: Callable[[], AbstractContextManager[Any]] | None
    progress: Callable[[str], None] | None
    data: Any
    privacy: PrivacyLedger | None
    model_key: ModelKey | None
    client_index: int | bytes
    num_threads: int
    cpu: trio.CapacityLimiter
    clock: Callable[[], float]

    def count(self, name: str, amount: int = 1) -> None: ...

    def round_record(self, round_: int) -> dict[bytes, int]: ...


class RoundWorkers:
    """Training, fetching and aggregating for the node; keeps the round's delta bytes
    (verified once, on arrival) for its aggregates."""

    def __init__(self, node: NodeContext) -> None:
        self.node = node
        self._deltas: dict[int, dict[ev.UpdateKey, bytes]] = {}  # round -> verified delta bytes
        # Sealed updates: round -> update key -> the content key we sealed or opened it
        # with (our own, for re-wraps; any, for the round record an audit opens them from).
        self.keys: dict[int, dict[ev.UpdateKey, bytes]] = {}
        self._fetches = trio.CapacityLimiter(DELTA_FETCHES_AT_ONCE)
        # `delta_float16`: what rounding our last delta to float16 left over, per tensor,
        # added to the next one (error feedback). In memory: a restart starts from zero.
        self._float16_residual: dict[str, np.ndarray] = {}

    def forget_before(self, round_: int) -> None:
        for held in (self._deltas, self.keys):
            for r in [r for r in held if r < round_]:
                del held[r]

    async def train(
        self,
        round_: int,
        base_bytes: bytes,
        recipients: tuple[bytes, ...] = (),
        sealed: bool = False,
    ) -> None:
        """Train from `base`, store the delta (sealed, its key wrapped to `recipients`, in
        a sealed task), answer `LocalUpdateReady`."""
        from p2pfl.train.trainer import TrainConfig, client_seed, train_local

        n = self.node
        if n.behaviour.silent:
            return
        if n.privacy is not None and n.privacy.exhausted:
            n.count("dp-budget-spent:no-training")
            return  # the privacy budget is spent: this node contributes no more updates
        base = await n.models.ensure(base_bytes)
        cfg = TrainConfig.from_dict({**n.manifest.train, "seed": n.manifest.seed})
        seed = client_seed(n.manifest.seed, round_, n.client_index)
        if n.trainer is None:
            job = functools.partial(
                train_local,
                n.manifest.model,
                base,
                n.data,
                cfg,
                seed,
                model_kwargs=n.manifest.model_kwargs,
                num_threads=n.num_threads,
                on_epoch=epoch_reporter(n.progress, round_, cfg.epochs, n.clock),
            )
            if n.train_context is not None:
                job = functools.partial(_within, n.train_context, job)
            result = await trio.to_thread.run_sync(job, limiter=n.cpu)
        else:
            result = await n.trainer(base, cfg, seed)
        if n.privacy is not None and not self._within_budget(round_, result):
            return
        delta = result.delta
        if cfg.delta_float16:
            delta, self._float16_residual = await trio.to_thread.run_sync(
                round_to_float16, delta, self._float16_residual
            )
        if n.behaviour.poison is not None:
            delta = n.behaviour.poison(round_, delta)
        wraps: tuple[tuple[bytes, bytes], ...] = ()
        if sealed:
            key = new_key()
            aad = delta_aad(n.task, round_, n.address)
            blob, ciphertext, cid, norm = await trio.to_thread.run_sync(
                _store_sealed_delta,
                n.net.store,
                delta,
                key,
                aad,
                n.behaviour.tamper_sealed,
                cfg.delta_float16,
            )
            wraps = await trio.to_thread.run_sync(self._wraps, key, recipients)
            self.keys.setdefault(round_, {})[(n.address, cid.to_bytes())] = key
            published = ciphertext
        else:
            blob, cid, norm = await trio.to_thread.run_sync(_store_delta, n.net.store, delta)
            published = blob
        self._deltas.setdefault(round_, {})[(n.address, cid.to_bytes())] = blob
        n_samples = max(1, int(result.n_samples * n.behaviour.n_samples_factor))
        inline = published if len(published) <= DEFAULT_INLINE_MAX_BYTES else b""
        entry = n.rounds.get(round_)
        if entry is not None:
            entry.train_s = result.seconds
            entry.train_loss = result.train_loss
        await n.queue.put(
            ev.LocalUpdateReady(round_, cid.to_bytes(), n_samples, norm, inline, wraps)
        )

    def _wraps(self, key: bytes, recipients: tuple[bytes, ...]) -> tuple[tuple[bytes, bytes], ...]:
        """`key` wrapped to each recipient's registered X25519 key, sorted by member. A
        member whose registered key is missing or unusable gets no wrap (counted): it cannot
        open this delta, and the round machine leaves the update out of its attempts."""
        n = self.node
        wraps = []
        for member in recipients:
            recipient = n.peers.enc_keys.get(member)
            try:
                if recipient is None:
                    raise SealError("bad-recipient", "no registered X25519 key")
                wrap = wrap_key(key, recipient)
                if n.behaviour.tamper_wrap is not None:
                    wrap = n.behaviour.tamper_wrap(member, wrap)
                wraps.append((member, wrap))
            except SealError as exc:
                n.count("wrap-failed")
                log.warning("no key wrap for %s: %s", member.hex()[:8], exc)
        return tuple(sorted(wraps))

    async def rewrap(self, action: ev.WrapKey) -> None:
        """Our update's key wrapped for a re-drawn committee; answer `WrapsReady`. Without
        the key (a restart since we sealed) there is nothing to send: the update is left
        out of this attempt."""
        n = self.node
        key = self.keys.get(action.round, {}).get((n.address, action.delta))
        if n.behaviour.silent or n.behaviour.withhold_rewraps:
            return
        if key is None:
            n.count("rewrap-without-key")
            return
        wraps = await trio.to_thread.run_sync(self._wraps, key, action.recipients)
        await n.queue.put(ev.WrapsReady(action.round, action.attempt, action.delta, wraps))

    def _within_budget(self, round_: int, result: Any) -> bool:
        """Record the DP steps of an update about to be published, or withhold it (and stop
        training for good) when it would take the node past its privacy budget."""
        n = self.node
        ledger = n.privacy
        assert ledger is not None
        steps = getattr(result, "dp", None)
        if steps is None:
            raise P2PFLError("the task trains with differential privacy, the trainer did not")
        after = ledger.epsilon_with(round_, steps)
        entry = n.rounds.get(round_)
        if after > ledger.budget:
            ledger.close()
            n.count("dp-budget-spent")
            log.warning(
                "privacy budget spent: publishing round %d's update would take epsilon from"
                " %.3f to %.3f, past the task's %.3f (delta %g); this node trains no more and"
                " keeps following the task",
                round_,
                ledger.epsilon(),
                after,
                ledger.budget,
                ledger.delta,
            )
            if entry is not None:
                entry.epsilon = ledger.epsilon()
            return False
        spent = ledger.spend(round_, steps)
        if entry is not None:
            entry.epsilon = spent
        return True

    async def fetch_delta(
        self, round_: int, author: bytes, delta: bytes, wrap: bytes = b""
    ) -> None:
        """Get a delta's bytes (inline in its Update, else from holders, retrying), check
        they are canonical tensors, keep them for the round's aggregates; answer
        `DeltaAvailable`. Sealed (`wrap` given): unwrap the key first (no fetch for a wrap
        that does not open), then open the ciphertext the CID names, then check the
        plaintext; a failure of either is the author's, answered with its reason."""
        n = self.node
        cid = CID.parse(delta)
        started = n.clock()
        ok = True
        reason = ""
        try:
            key = None
            if wrap:
                key = await trio.to_thread.run_sync(unwrap_key, wrap, n.identity.x25519_private_key)
            blob: bytes | None = None
            attached = n.intake.take_attachment((author, delta))
            if not await trio.to_thread.run_sync(n.net.store.has_blob, cid):
                if attached and is_float16_packed(attached):  # (only if it is to be used)
                    try:
                        attached = await trio.to_thread.run_sync(
                            unpack_float16, attached, n.models.blob_size or DEFAULT_MAX_BYTES
                        )
                    except InvalidTensors:
                        n.count("delta-packing-invalid")  # (fetched as blocks instead)
                        attached = b""
                update = n.intake.updates.get((author, delta))
                if update is not None and update.inline:
                    blob = await trio.to_thread.run_sync(
                        _store_inline, n.net.store, cid, update.inline, key is None
                    )
                elif attached and await _stored_attached(n.net.store, cid, attached, key is None):
                    blob = attached
                    n.count("deltas-attached")
                else:
                    if attached:
                        n.count("delta-attachment-mismatch")
                    relayed = n.intake.relayed_by.get((author, delta))
                    via = relayed[1] if relayed else None
                    if via is not None:
                        n.count("delta-fetches-from-relay")
                    await fetch_with_retries(
                        n.net,
                        cid,
                        lambda: n.peers.providers(first=author, via=via),
                        lambda: n.machine.phase.value not in _NO_MORE_FETCHES,
                        n.count,
                        self._fetches,
                    )
            if key is None:
                if blob is None:
                    blob = await trio.to_thread.run_sync(
                        _read_delta, n.net.store, cid, n.models.blob_size
                    )
            else:
                aad = delta_aad(n.task, round_, author)
                blob = await trio.to_thread.run_sync(
                    _open_delta, n.net.store, cid, blob, key, aad, n.models.blob_size
                )
                self.keys.setdefault(round_, {})[(author, delta)] = key
            self._deltas.setdefault(round_, {})[(author, delta)] = blob
        except SealError as exc:
            ok, reason = False, exc.reason
            n.count(f"sealed-{exc.reason}")
            log.info("delta %s from %s rejected: %s", cid, author.hex()[:8], exc)
        except (P2PFLError, OSError) as exc:
            ok = False
            n.count("fetch-failed")
            log.info("delta %s from %s unavailable: %s", cid, author.hex()[:8], exc)
        entry = n.rounds.get(round_)
        if entry is not None:
            entry.fetch_s = max(entry.fetch_s, n.clock() - started)
        await n.queue.put(ev.DeltaAvailable(author, delta, ok, reason))

    async def compute(self, request: ev.ComputeAggregate) -> None:
        """Filter + aggregate the request's updates (p2pfl.core.round_result), store the
        new model for others to fetch; answer `AggregateComputed`."""
        n = self.node
        started = n.clock()
        base = await n.models.ensure(request.base)
        try:
            blobs = await self._blobs_of(request)
            record = n.round_record(request.round)
            job = functools.partial(
                compute_aggregate,
                n.spec,
                request,
                base,
                blobs,
                n.manifest.reward_per_round_wei,
                record,
                parallel=threaded,
                seal=n.model_key.seal if n.model_key is not None else None,
            )
            answer, model = await trio.to_thread.run_sync(job, limiter=n.cpu)
        except (P2PFLError, OSError) as exc:
            answer = ev.AggregateComputed(
                request.round, request.attempt, request.candidates, error=str(exc) or "failed"
            )
            model = None
        if model is not None:
            # Others fetch the new model from members. Its blocks were hashed once, to
            # name it: the store takes them without hashing again.
            await trio.to_thread.run_sync(n.net.store.put_dag, model.cid, model.blocks)
        entry = n.rounds.get(request.round)
        if entry is not None:
            entry.aggregate_s += n.clock() - started
            entry.computed_at = entry.computed_at or n.clock()
            entry.included = tuple(a for a, _ in answer.included)
            entry.rejected = answer.rejected
        await n.queue.put(answer)

    async def _blobs_of(self, request: ev.ComputeAggregate) -> list[bytes]:
        """The request's delta bytes: kept from their fetch (verified then), else read
        from the store in a worker thread (e.g. after a restart)."""
        kept = self._deltas.get(request.round, {})
        keys = self.keys.get(request.round, {})
        blobs: list[bytes] = []
        for u in request.updates:
            held = kept.get((u.signer, u.delta))
            if held is not None:
                blobs.append(held)
                continue
            stored: bytes = await trio.to_thread.run_sync(
                self.node.net.store.read_blob, CID.parse(u.delta)
            )
            if u.wraps:  # sealed: open it with the key we opened it with before
                key = keys.get((u.signer, u.delta))
                if key is None:
                    raise P2PFLError(f"no key for the sealed delta of {u.signer.hex()[:8]}")
                aad = delta_aad(u.task, u.round, u.signer)
                stored = await trio.to_thread.run_sync(open_delta, key, stored, aad)
            blobs.append(stored)
        return blobs


def _within(context: Callable[[], AbstractContextManager[Any]], job: Callable[[], Any]) -> Any:
    """`job()` inside a fresh `context()`."""
    with context():
        return job()


def epoch_reporter(
    progress: Callable[[str], None] | None,
    round_: int,
    epochs: int,
    clock: Callable[[], float],
) -> Callable[[int, float], None] | None:
    """`train_local`'s `on_epoch` for progress lines: the last epoch always, others at
    most every PROGRESS_EVERY_S (short epochs would flood the terminal)."""
    if progress is None:
        return None
    last = [clock()]

    def on_epoch(epoch: int, loss: float) -> None:
        now = clock()
        if epoch == epochs or now - last[0] >= PROGRESS_EVERY_S:
            last[0] = now
            progress(f"round {round_}: training epoch {epoch}/{epochs}, loss {loss:.4f}")

    return on_epoch


def _store_delta(store: Any, delta: dict[str, np.ndarray]) -> tuple[bytes, CID, float]:
    """Our own delta: canonical bytes, stored (hashed once, to name it); its CID and
    norm (worker thread)."""
    blob = encode_tensors(delta)
    cid, blocks = blob_blocks(blob)
    store.put_dag(cid, blocks)
    vector, _ = flatten(delta)
    return blob, cid, agg.norm(vector)


def _store_sealed_delta(
    store: Any,
    delta: dict[str, np.ndarray],
    key: bytes,
    aad: bytes,
    tamper: Callable[[bytes], bytes] | None = None,
    packed: bool = False,
) -> tuple[bytes, bytes, CID, float]:
    """Our own delta, sealed: its canonical bytes, the sealed bytes (stored, hashed once to
    name them), their CID and the plaintext's norm (worker thread). `packed`: the
    plaintext sealed is the float16 packing of the canonical bytes when it has one (a task
    with `delta_float16`: half the bytes to every member)."""
    blob = encode_tensors(delta)
    plaintext = (pack_float16(blob) if packed else None) or blob
    sealed = seal(key, plaintext, aad)
    if tamper is not None:
        sealed = tamper(sealed)
    cid, blocks = blob_blocks(sealed)
    store.put_dag(cid, blocks)
    vector, _ = flatten(delta)
    return blob, sealed, cid, agg.norm(vector)


async def _stored_attached(store: Any, cid: CID, attached: bytes, plain: bool) -> bool:
    """Bytes pushed beside an update, stored (in a worker thread) if they are the delta its
    CID names (and, plain, canonical tensors); False otherwise (anyone may push a signed
    update with other bytes: then the delta is fetched as usual, and the author is not
    blamed)."""
    try:
        await trio.to_thread.run_sync(_store_inline, store, cid, attached, plain)
    except P2PFLError:
        return False
    return True


def _store_inline(store: Any, cid: CID, inline: bytes, plain: bool = True) -> bytes:
    """An update's inline delta: canonical tensors (or, sealed, any bytes: they are opened
    after), stored if they are the CID's bytes (one hash: `put_blob` checks the root it
    computes; InvalidBlock otherwise)."""
    if plain:
        decode_tensors(inline)  # canonical float32 tensors or bust
    store.put_blob(inline, cid)
    return inline


def _open_delta(
    store: Any,
    cid: CID,
    sealed: bytes | None,
    key: bytes,
    aad: bytes,
    max_size_bytes: int | None,
) -> bytes:
    """A sealed delta's plaintext, checked to be canonical tensors (worker thread). The
    sealed bytes match the CID already (the store verified them); SealError
    "undecryptable" when they do not open under the key and the author's aad."""
    if sealed is None:
        limit = None if max_size_bytes is None else max_size_bytes + SEAL_OVERHEAD
        sealed = store.read_blob(cid, limit)
    blob = open_delta(key, sealed, aad, max_size_bytes or DEFAULT_MAX_BYTES)
    decode_tensors(blob)  # canonical float32 tensors or bust
    return blob


def _read_delta(store: Any, cid: CID, max_size_bytes: int | None) -> bytes:
    """A stored delta's bytes, checked to be canonical tensors (worker thread).

    A delta has the task's model size (`ModelCache.blob_size`): a DAG whose root claims more
    is refused before it is walked. Its distinct blocks are few and cheap to fetch, but one
    that links the same children again and again (a fuzz campaign's hang) would otherwise
    expand to gigabytes in `assemble`."""
    blob: bytes = store.read_blob(cid, max_size_bytes)
    decode_tensors(blob)  # canonical float32 tensors or bust
    return blob
