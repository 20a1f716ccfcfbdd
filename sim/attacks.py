"""Attacks for simulations: poisoned updates and protocol misbehaviour.

A scenario's `[attacks]` table picks the attack and how many nodes run it; the nodes
are chosen by the scenario seed. Everything here is attacker code: it never runs in an
honest node, and the protocol code it attacks is the unmodified `p2pfl` node.

    [attacks]
    poison = "sign_flip"   # see POISONS
    fraction = 0.3         # of the nodes (rounded half up)
    equivocators = 1       # protocol attackers, counts of further nodes (see AttackSpec)

Poisoning works on the attacker's *honest* local delta (it trains like everybody, on
labels flipped for "label_flip"), through three seams of the node: `Behaviour.poison`
(stateless transforms), `Behaviour.n_samples_factor`, and a trainer wrapper for the
attacks that need other deltas (ALIE's colluders, a copied update, a stale one).
Protocol attacks sit in the attacker's network adapter (`HostileNet`): it rewrites,
drops, duplicates or replays the signed messages the honest machine hands it, signing
forgeries with the node's own key — the machine itself refuses to sign two statements.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from statistics import NormalDist
from typing import Any

import numpy as np
import trio

from p2pfl.core.cid import CID, blob_cid
from p2pfl.core.messages import Commit, Proposal, Signed, Update, Vote, decode_message
from p2pfl.core.signing import Domain
from p2pfl.core.tensors import decode_tensors, encode_tensors
from p2pfl.errors import ConfigError, InvalidMessage
from p2pfl.node import Behaviour
from sim.strict import build

log = logging.getLogger("p2pfl.sim.attacks")

Delta = dict[str, np.ndarray]

POISONS = (
    "none",
    "sign_flip",
    "scale",
    "noise",
    "label_flip",
    "alie",
    "zero",
    "stale",
    "copy",
    "inflate",
)
# Protocol roles, in the order they take nodes after the poisoners (seeded permutation).
PROTOCOL_ROLES = (
    "equivocators",
    "liars",
    "withholders",
    "silent_leaders",
    "censors",
    "replayers",
    "spammers",
)
# Classes in every dataset we simulate (digits, Fashion-MNIST): label flip maps y -> 9 - y.
NUM_CLASSES = 10
# ALIE colluders wait this long for each other's honest deltas before crafting with
# what they have (a killed colluder must not stall the others forever).
ALIE_WAIT_S = 60.0
# Deltas up to this size ride inline in forged updates, like the node's own.
INLINE_MAX_BYTES = 16 * 1024
# A replayer re-sends at most this many recorded old messages each time it publishes.
REPLAY_BATCH = 20
# Salt of the attacker choice, so the attacker set does not coincide with other seeded
# choices (overlay, partitions, kills) made from the same scenario seed.
ATTACKER_SALT = 0xA77AC


@dataclass(frozen=True)
class AttackSpec:
    """The scenario's `[attacks]` table (strict: unknown keys are errors)."""

    poison: str = "none"  # one of POISONS
    fraction: float = 0.0  # poisoners, as a fraction of the nodes
    scale: float = -10.0  # "scale": delta x scale
    noise_scale: float = (
        10.0  # "noise": N(0, s^2) per coordinate with norm ~ noise_scale x honest norm
    )
    alie_z: float = 0.0  # "alie": 0 = Baruch et al.'s z_max for (n, f)
    # "alie": each colluder adds N(0, (alie_jitter x std)^2) per coordinate (std over the
    # colluders' honest deltas), so their updates differ and the duplicate rule keeps them all.
    alie_jitter: float = 0.0
    samples_factor: float = 100.0  # "inflate": claimed n_samples x factor
    equivocators: int = 0  # sign a second, different update every round
    liars: int = 0  # vote (and propose) for a bogus aggregate
    withholders: int = 0  # never send votes or certificates
    silent_leaders: int = 0  # never send proposals
    censors: int = 0  # drop the updates of one honest victim (and so leave it out as leader)
    replayers: int = 0  # re-send old rounds' messages
    spammers: int = 0  # flood the topics with garbage and duplicates
    spam_per_s: float = 20.0
    sybils: int = 0  # extra peers with keys but no stake, publishing signed updates

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> AttackSpec:
        spec = build(cls, raw, "attacks", non_negative=(int,))
        if spec.poison not in POISONS:
            raise ConfigError(f"attacks.poison: {spec.poison!r} is not one of {POISONS}")
        if not 0.0 <= spec.fraction < 1.0:
            raise ConfigError("attacks.fraction must be in [0, 1)")
        if spec.alie_jitter < 0.0:
            raise ConfigError("attacks.alie_jitter must be >= 0")
        return spec

    @property
    def active(self) -> bool:
        return (
            (self.poison != "none" and self.fraction > 0)
            or self.sybils > 0
            or any(getattr(self, r) for r in PROTOCOL_ROLES)
        )


@dataclass(frozen=True)
class AttackPlan:
    """Who does what: node indices per role (disjoint), chosen by the seed."""

    spec: AttackSpec
    nodes: int
    poisoners: tuple[int, ...]
    roles: dict[str, tuple[int, ...]]
    victim: int | None  # the honest node censors silence

    def role_of(self, index: int) -> set[str]:
        out = {"poison"} if index in self.poisoners else set()
        return out | {r for r, members in self.roles.items() if index in members}

    @property
    def attackers(self) -> tuple[int, ...]:
        return tuple(sorted(set(self.poisoners).union(*self.roles.values())))


def attacker_count(fraction: float, nodes: int) -> int:
    """round(fraction x nodes), halves up: 30% of 10 is 3, of 6 is 2."""
    return int(math.floor(fraction * nodes + 0.5))


def make_plan(attacks: dict[str, Any], nodes: int, seed: int) -> AttackPlan:
    """Parse `[attacks]` and choose the attackers (seeded, disjoint roles)."""
    spec = AttackSpec.from_dict(attacks)
    order = np.random.default_rng([seed, ATTACKER_SALT]).permutation(nodes).tolist()
    n_poison = attacker_count(spec.fraction, nodes) if spec.poison != "none" else 0
    need = n_poison + sum(getattr(spec, r) for r in PROTOCOL_ROLES)
    if need >= nodes:
        raise ConfigError(
            f"attacks: {need} attacker nodes requested out of {nodes}; leave at least one honest "
            "node"
        )
    poisoners = tuple(sorted(order[:n_poison]))
    at = n_poison
    roles: dict[str, tuple[int, ...]] = {}
    for role in PROTOCOL_ROLES:
        count = getattr(spec, role)
        roles[role] = tuple(sorted(order[at : at + count]))
        at += count
    victim = order[at] if spec.censors else None
    return AttackPlan(spec, nodes, poisoners, roles, victim)


# ----------------------------------------------------------------- poisoning (pure)


def sign_flip(delta: Delta) -> Delta:
    return {k: np.negative(v) for k, v in delta.items()}


def scaled(delta: Delta, factor: float) -> Delta:
    return {k: (v * np.float32(factor)).astype(np.float32) for k, v in delta.items()}


def delta_norm(delta: Delta) -> float:
    return float(
        math.sqrt(sum(float(np.sum(np.square(v, dtype=np.float64))) for v in delta.values()))
    )


def gaussian(delta: Delta, noise_scale: float, rng: np.random.Generator) -> Delta:
    """Pure noise N(0, s^2) per coordinate, s chosen so its norm is ~noise_scale x ||delta||."""
    size = sum(v.size for v in delta.values())
    s = noise_scale * delta_norm(delta) / math.sqrt(max(size, 1))
    return {k: rng.normal(0.0, s, v.shape).astype(np.float32) for k, v in sorted(delta.items())}


def zero(delta: Delta) -> Delta:
    return {k: np.zeros_like(v) for k, v in delta.items()}


def alie_z_max(nodes: int, attackers: int) -> float:
    """Baruch et al. 2019, "A little is enough": s = floor(n/2 + 1) - f supporters needed,
    z = Phi^-1((n - s) / n): the largest shift that keeps the attackers inside the spread."""
    s = nodes // 2 + 1 - attackers
    p = (nodes - s) / nodes
    return NormalDist().inv_cdf(min(max(p, 0.5), 0.999))


def alie(
    deltas: Sequence[Delta], z: float, jitter: float = 0.0, rng: np.random.Generator | None = None
) -> Delta:
    """mean - z x std per coordinate over the colluders' honest deltas (one shared update);
    with `jitter`, plus N(0, (jitter x std)^2) per coordinate drawn from `rng` (this colluder's)."""
    out = {}
    for k in sorted(deltas[0]):
        stack = np.stack([d[k].astype(np.float64) for d in deltas])
        std = stack.std(axis=0)
        value = stack.mean(axis=0) - z * std
        if jitter:
            assert rng is not None, "a jittered ALIE needs the colluder's rng"
            value = value + jitter * std * rng.standard_normal(std.shape)
        out[k] = value.astype(np.float32)
    return out


def flip_labels(y: np.ndarray) -> np.ndarray:
    return (NUM_CLASSES - 1 - y).astype(y.dtype)


def noise_rng(seed: int, round_: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, round_, index, ATTACKER_SALT])


def stateless_poison(
    spec: AttackSpec, seed: int, index: int
) -> Callable[[int, Delta], Delta] | None:
    """The per-delta transform for `Behaviour.poison`, or None if the attack needs more."""
    if spec.poison == "sign_flip":
        return lambda r, d: sign_flip(d)
    if spec.poison == "scale":
        return lambda r, d: scaled(d, spec.scale)
    if spec.poison == "noise":
        return lambda r, d: gaussian(d, spec.noise_scale, noise_rng(seed, r, index))
    if spec.poison == "zero":
        return lambda r, d: zero(d)
    return None


def craft_round(
    plan: AttackPlan,
    seed: int,
    round_: int,
    honest: Sequence[Delta],
    n_samples: Sequence[int],
    previous_global: Delta | None,
) -> tuple[list[Delta], list[int]]:
    """What every node publishes in one round, given what each trained honestly.

    Used by the aggregation-level campaign (sim/robustness.py); the full simulation
    applies the same functions through the node's hooks. `honest[i]` of a label-flip
    attacker is already trained on flipped labels. `previous_global` is the last
    committed model step (for "stale" free riders).
    """
    spec = plan.spec
    out, claims = list(honest), list(n_samples)
    bad = plan.poisoners
    if not bad:
        return out, claims
    if spec.poison == "alie":
        z = spec.alie_z or alie_z_max(plan.nodes, len(bad))
        colluders = [honest[i] for i in bad]
        for i in bad:
            out[i] = alie(colluders, z, spec.alie_jitter, noise_rng(seed, round_, i))
    elif spec.poison == "stale":
        for i in bad:
            out[i] = previous_global if previous_global is not None else zero(honest[i])
    elif spec.poison == "copy":
        victim = copy_victim(plan)
        for i in bad:
            out[i] = honest[victim]
    elif spec.poison == "inflate":
        for i in bad:
            claims[i] = int(claims[i] * spec.samples_factor)
    else:
        for i in bad:
            transform = stateless_poison(spec, seed, i)
            if transform is not None:
                out[i] = transform(round_, honest[i])
    return out, claims


def copy_victim(plan: AttackPlan) -> int:
    """The honest node whose update copy-free-riders republish: the lowest honest index."""
    return min(i for i in range(plan.nodes) if i not in plan.attackers)


# ----------------------------------------------------------------- full simulation hooks


def behaviour_for(plan: AttackPlan, seed: int, index: int) -> Behaviour:
    """The node's Behaviour: poison transform and n_samples factor (honest: defaults)."""
    if index not in plan.poisoners:
        return Behaviour()
    factor = plan.spec.samples_factor if plan.spec.poison == "inflate" else 1.0
    return Behaviour(poison=stateless_poison(plan.spec, seed, index), n_samples_factor=factor)


def base_key(base: dict[str, np.ndarray]) -> bytes:
    """Names a round by its base model (every node of a round trains from the same one)."""
    h = hashlib.sha256()
    for k in sorted(base):
        h.update(k.encode())
        h.update(np.ascontiguousarray(base[k]).tobytes())
    return h.digest()


class RoundBoard:
    """In-process rendezvous of attacker code: honest deltas per (round, node).

    Colluders (ALIE) and copy-free-riders read what others trained; a real attacker gets
    the same from its colluders' channel or from gossip."""

    def __init__(self) -> None:
        self._deltas: dict[bytes, dict[int, Any]] = {}
        self._changed = trio.Event()

    def post(self, key: bytes, index: int, result: Any) -> None:
        self._deltas.setdefault(key, {})[index] = result
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(
        self, key: bytes, indices: Sequence[int], timeout_s: float
    ) -> dict[int, Any]:
        with trio.move_on_after(timeout_s):
            while not all(i in self._deltas.get(key, {}) for i in indices):
                await self._changed.wait()
        return dict(self._deltas.get(key, {}))


Trainer = Callable[[dict[str, np.ndarray], Any, int], Awaitable[Any]]


def wrap_trainer(
    plan: AttackPlan, index: int, trainer: Trainer, board: RoundBoard, claim: int
) -> Trainer:
    """Trainer seam: post our honest result; colluding/free-riding attackers rewrite theirs.

    `claim` is the sample count a free rider (who does not train) claims."""
    spec = plan.spec
    role = spec.poison if index in plan.poisoners else "honest"
    previous: list[dict[str, np.ndarray]] = []

    async def train(base: dict[str, np.ndarray], cfg: Any, seed: int) -> Any:
        from p2pfl.train.trainer import TrainResult

        key = base_key(base)
        last = previous[-1] if previous else None
        previous[:] = [base]
        if role == "stale":
            step = (
                zero(base)
                if last is None
                else {k: (base[k] - last[k]).astype(np.float32) for k in base}
            )
            return TrainResult(step, claim, math.nan, 0.0)
        if role == "copy":
            victim = copy_victim(plan)
            got = await board.wait_for(key, [victim], ALIE_WAIT_S)
            if victim in got:
                return TrainResult(got[victim].delta, claim, math.nan, 0.0)
            return TrainResult(zero(base), claim, math.nan, 0.0)
        result = await trainer(base, cfg, seed)
        board.post(key, index, result)
        if role == "alie":
            got = await board.wait_for(key, plan.poisoners, ALIE_WAIT_S)
            mine = [got[i].delta for i in plan.poisoners if i in got]
            z = spec.alie_z or alie_z_max(plan.nodes, len(plan.poisoners))
            rng = np.random.default_rng(
                [seed, ATTACKER_SALT]
            )  # `seed` is this client's, this round's
            return replace(result, delta=alie(mine, z, spec.alie_jitter, rng))
        return result

    return train


def poison_datasets(plan: AttackPlan, datasets: list[Any]) -> list[Any]:
    """Label flipping: the poisoners' local data with y -> 9 - y."""
    if plan.spec.poison != "label_flip":
        return datasets
    out = list(datasets)
    for i in plan.poisoners:
        d = datasets[i]
        out[i] = replace(d, y=flip_labels(np.asarray(d.y)))
    return out


# ----------------------------------------------------------------- protocol attacks


@dataclass
class AttackLog:
    """What the attackers did (for the run's robustness audit)."""

    equivocated: dict[int, set[bytes]]  # round -> addresses that signed two updates
    lies: int = 0
    withheld: int = 0
    silenced: int = 0
    censored: int = 0
    replayed: int = 0
    spam_sent: int = 0
    sybil_sent: int = 0

    @classmethod
    def empty(cls) -> AttackLog:
        return cls(equivocated={})


def bogus_cid(tag: bytes) -> bytes:
    """A CID naming no model anybody can compute: what a lying member votes for."""
    return blob_cid(b"p2pfl-sim-lie:" + tag).to_bytes()


class _FilteredChannel:
    """Gossip intake with some messages silently dropped (censor) or recorded (replayer)."""

    def __init__(self, channel: Any, keep: Callable[[bytes], bool]) -> None:
        self._channel = channel
        self._keep = keep

    def __aiter__(self) -> Any:
        return self._iterate()

    async def _iterate(self) -> Any:
        async for message in self._channel:
            if self._keep(message.data):
                yield message


class HostileNet:
    """An attacker's network adapter around the real NodeNet (everything else delegates)."""

    def __init__(
        self,
        inner: Any,
        *,
        roles: set[str],
        private_key: bytes,
        address: bytes,
        domain: Domain,
        record: AttackLog,
        victim: bytes | None = None,
    ) -> None:
        self._inner = inner
        self._roles = roles
        self._key = private_key
        self._address = address
        self._domain = domain
        self._log = record
        self._victim = victim
        self._old: list[tuple[int, str, bytes]] = []  # (round, topic, data) seen, for replay

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def connected_peers(self) -> list[str]:
        return self._inner.connected_peers()  # type: ignore[no-any-return]

    def metrics(self) -> dict[str, object]:
        return self._inner.metrics()  # type: ignore[no-any-return]

    async def join(self, topic: str, validate: Any, sync: bool = True, gossip: bool = True) -> Any:
        channel = await self._inner.join(topic, validate, sync, gossip)
        if not self._roles & {"censors", "replayers", "spammers"}:
            return channel
        return _FilteredChannel(channel, lambda data: self._intake(topic, data))

    def _intake(self, topic: str, data: bytes) -> bool:
        try:
            message = decode_message(data)
        except InvalidMessage:
            return True
        if self._roles & {"replayers", "spammers"} and len(self._old) < 10 * REPLAY_BATCH:
            self._old.append((message.round, topic, data))
        if (
            "censors" in self._roles
            and isinstance(message, Update)
            and message.signer == self._victim
        ):
            self._log.censored += 1
            return False
        return True

    async def publish(self, topic: str, data: bytes, synced: bool = True) -> bytes:
        message = decode_message(data)
        out: list[bytes] = []
        if isinstance(message, Vote) and "withholders" in self._roles:
            self._log.withheld += 1
        elif isinstance(message, Commit) and "withholders" in self._roles:
            self._log.withheld += 1
        elif isinstance(message, Proposal) and "silent_leaders" in self._roles:
            self._log.silenced += 1
        elif isinstance(message, (Vote, Proposal)) and "liars" in self._roles:
            lie = replace(message, result=bogus_cid(message.body()), signature=b"")
            out.append(self._sign(lie).encode())
            self._log.lies += 1
        else:
            out.append(data)
        if isinstance(message, Update) and "equivocators" in self._roles:
            out.append(self._second_update(message).encode())
            self._log.equivocated.setdefault(message.round, set()).add(self._address)
        msg_id = b""
        for item in out:
            msg_id = await self._inner.publish(topic, item, synced)
        if "replayers" in self._roles:
            await self._replay(message.round)
        return msg_id

    def _sign(self, message: Signed) -> Signed:
        return message.signed(self._key, self._domain)

    def _second_update(self, first: Update) -> Update:
        """Another valid update for the same round: the same delta halved, signed by us.
        A sealed update (its bytes are ciphertext) gets the same sealed delta with half the
        norm claimed: another body under the same statement key all the same."""
        if first.wraps:
            return self._sign(replace(first, norm=first.norm * 0.5, signature=b""))  # type: ignore[return-value]
        blob = first.inline or self._inner.store.read_blob(CID.parse(first.delta))
        delta = scaled(decode_tensors(blob), 0.5)
        blob2 = encode_tensors(delta)
        cid = self._inner.put_blob(blob2)
        second = replace(
            first,
            delta=cid.to_bytes(),
            norm=first.norm * 0.5,
            inline=blob2 if len(blob2) <= INLINE_MAX_BYTES else b"",
            signature=b"",
        )
        return self._sign(second)  # type: ignore[return-value]

    async def _replay(self, current_round: int) -> None:
        old = [(t, d) for r, t, d in self._old if r < current_round - 1][:REPLAY_BATCH]
        for topic, data in old:
            try:
                await self._inner.publish(topic, data)
                self._log.replayed += 1
            except Exception as exc:  # a replay that the network refuses is fine
                log.debug("replay refused: %r", exc)


async def spam(
    net: Any,
    topics: Sequence[str],
    per_s: float,
    record: AttackLog,
    sample: Callable[[], bytes | None],
    rng: np.random.Generator,
) -> None:
    """Flood `topics`: garbage bytes, truncated and repeated copies of real messages."""
    i = 0
    while True:
        await trio.sleep(1.0 / per_s)
        real = sample()
        kind = i % 3
        if kind == 0 or real is None:
            data = rng.bytes(int(rng.integers(1, 4096)))
        elif kind == 1:
            data = real[: max(1, len(real) // 2)]
        else:
            data = real
        try:
            await net.publish(topics[i % len(topics)], data)
            record.spam_sent += 1
        except Exception as exc:
            log.debug("spam publish refused: %r", exc)
        i += 1


def hostile_net(
    plan: AttackPlan,
    index: int,
    net: Any,
    identity: Any,
    domain: Domain,
    identities: Sequence[Any],
    record: AttackLog,
) -> Any:
    """The node's network adapter: the real one for honest nodes, a HostileNet otherwise."""
    roles = plan.role_of(index) - {"poison"}
    if not roles:
        return net
    victim = identities[plan.victim].address if plan.victim is not None else None
    return HostileNet(
        net,
        roles=roles,
        private_key=identity.private_key,
        address=identity.address,
        domain=domain,
        record=record,
        victim=victim,
    )


# Sybil peers publish one forged update per round at most this often (seconds).
SYBIL_PERIOD_S = 1.0


async def run_background(
    plan: AttackPlan,
    nodes: Sequence[Any],
    nets: Sequence[Any],
    tmp: Any,
    seed: int,
    record: AttackLog,
) -> None:
    """Attacker tasks that are not a node: spam floods, and Sybil peers with no stake."""
    from p2pfl.core.identity import NodeIdentity
    from p2pfl.net.config import NetConfig
    from p2pfl.net.gossip import ValidationResult
    from p2pfl.net.host import open_node_host

    rng = np.random.default_rng([seed, ATTACKER_SALT, 7])
    honest = [i for i in range(len(nodes)) if i not in plan.attackers]
    topics = [nodes[0].topic(k) for k in ("updates", "consensus", "commits")]

    def done() -> bool:
        return all(nodes[i].finished.is_set() for i in honest)

    def sample() -> bytes | None:
        seen = [m for i in plan.roles["spammers"] for m in getattr(nodes[i].net, "_old", [])]
        if not seen:
            return None
        return seen[int(rng.integers(len(seen)))][2]

    async def sybil(k: int, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        key = hashlib.sha256(
            b"p2pfl-sim-sybil" + seed.to_bytes(8, "big") + k.to_bytes(4, "big")
        ).digest()
        ident = NodeIdentity(key)
        cfg = NetConfig(
            data_dir=tmp / f"sybil{k}",
            bootstrap=(nets[honest[k % len(honest)]].listen_addrs[0],),
            dht=False,
        )
        async with open_node_host(cfg, key) as net:
            for t in topics:
                await net.join(t, lambda topic, data, peer: ValidationResult.accept())
            task_status.started()
            domain = nodes[0].machine.domain
            sent_round = 0
            while True:
                await trio.sleep(SYBIL_PERIOD_S)
                m = nodes[honest[0]].machine
                if m.round <= 0 or m.round == sent_round:
                    continue
                blob = encode_tensors({"w": rng.normal(0, 0.01, 64).astype(np.float32)})
                cid = net.put_blob(blob)
                u = Update(
                    task=nodes[0].task,
                    round=m.round,
                    base=m.base,
                    delta=cid.to_bytes(),
                    n_samples=1000,
                    norm=1.0,
                    inline=blob,
                    signer=ident.address,
                ).signed(key, domain)
                try:
                    await net.publish(topics[0], u.encode())
                    record.sybil_sent += 1
                except Exception as exc:
                    log.debug("sybil publish refused: %r", exc)
                sent_round = m.round

    async with trio.open_nursery() as nursery:
        for k in range(plan.spec.sybils):
            await nursery.start(sybil, k)
        for i in plan.roles["spammers"]:
            nursery.start_soon(
                spam,
                nodes[i].net._inner,
                topics,
                plan.spec.spam_per_s,
                record,
                sample,
                np.random.default_rng([seed, ATTACKER_SALT, i]),
            )
        while not done():
            await trio.sleep(0.5)
        nursery.cancel_scope.cancel()
    # The run is over once every honest node is. An attacker node may never finish on its
    # own: its peers ban a spammer within a second or two, and it then waits forever for
    # round models nobody will serve it (its fetches end in StreamEOF); the simulation,
    # which waits for every node, stalled with all rounds committed.
    for i in plan.attackers:
        if not nodes[i].finished.is_set():
            log.info("stopping attacker node %d: the honest nodes are done", i)
            nodes[i].stop()
