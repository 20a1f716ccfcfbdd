"""What the fuzz campaign attacks, and what each target promises.

Each target turns one byte string into one run of real p2pfl code and returns an
outcome label; it catches the exceptions that are the code's *documented* way to refuse
input and lets anything else escape (the engine counts that as a crash). After a
successful parse it also checks invariants (canonical round trips, verdict soundness,
the round machine's safety rules) and raises `InvariantBroken` when one fails.

- `messages`: `decode_message` raises only `InvalidMessage`; what it accepts re-encodes
  to the same bytes.
- `validator`: the node's gossip validator (`Node.validate`, which is
  `core.validation.check_gossip` over the node's state) returns a verdict, never raises;
  an ACCEPT is a decodable message of our task, in the round window, every signature
  recovering to a registered signer.
- `blocks`: `decode_dag_pb`, `decode_tensors`, `CID.parse`, `verify_block`, `assemble`,
  `missing_blocks` raise only `InvalidBlock` / `InvalidMessage`; accepted bytes are
  canonical. A DAG mini-language builds hostile but hash-consistent DAGs, since random
  bytes never contain the right sha256 digests.
- `round`: the `RoundMachine`, fed a program of events decoded from the bytes (rounds,
  ticks, signed updates/proposals/votes/certificates from members and strangers, fetch
  and aggregate answers - honest, lying, malformed). Network events must never raise;
  shell events may raise only `RoundStateError` (and `InvalidMessage` for a bad base
  CID, as documented). Invariants: every signed output verifies and decodes
  canonically, never two bodies signed under one statement key, every certificate is a
  quorum of distinct committee signatures, evidence is genuine, the buffer stays bounded.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import msgpack
from eth_utils import keccak

from p2pfl.core import round_events as ev
from p2pfl.core.cid import (
    CHUNK_SIZE,
    CID,
    CODEC_DAG_PB,
    CODEC_RAW,
    Link,
    _build,
    _encode_node,
    assemble,
    blob_blocks,
    blob_cid,
    block_cid,
    decode_dag_pb,
    encode_dag_pb,
    missing_blocks,
    verify_block,
)
from p2pfl.core.identity import NodeIdentity
from p2pfl.core.messages import (
    Commit,
    Heartbeat,
    Proposal,
    Rewrap,
    Signed,
    Update,
    Vote,
    decode_message,
)
from p2pfl.core.round import Phase, RoundConfig, RoundMachine, RoundStateError
from p2pfl.core.signing import Domain, address_of
from p2pfl.core.sortition import commit_quorum, committee_for, leader_of, round_seed
from p2pfl.core.tensors import decode_tensors, encode_tensors
from p2pfl.core.validation import ACCEPT, IGNORE, REJECT
from p2pfl.errors import InvalidBlock, InvalidMessage

VECTORS = Path(__file__).resolve().parents[2] / "protocol" / "vectors"


class InvariantBroken(AssertionError):
    """A target's post-condition failed: the code accepted or produced something wrong."""


def _check(condition: bool, what: str) -> None:
    if not condition:
        raise InvariantBroken(what)


def _vectors(name: str) -> dict[str, Any]:
    return json.loads((VECTORS / f"{name}.json").read_text())


# --- messages --------------------------------------------------------------------------

_MESSAGE_VECTORS = _vectors("messages")
DOMAIN = Domain(
    chain_id=_MESSAGE_VECTORS["domain"]["chain_id"],
    contract=bytes.fromhex(_MESSAGE_VECTORS["domain"]["contract"]),
)
_SEED_MESSAGES = [bytes.fromhex(m["encoding"]) for m in _MESSAGE_VECTORS["messages"]]
_SEED_INVALID = [bytes.fromhex(m["encoding"]) for m in _MESSAGE_VECTORS["invalid"]]
# The vectors' task and round: the validator target plays a node of that task.
VECTOR_TASK = decode_message(_SEED_MESSAGES[0]).task
VECTOR_ROUND = decode_message(_SEED_MESSAGES[0]).round
# Identities whose keys the mutators may re-sign with: the vectors' signers (registered)
# and one stranger (not registered).
IDENTITIES = [NodeIdentity.from_seed(s) for s in (b"alice", b"bob", b"carol", b"stranger")]
REGISTERED = frozenset(i.address for i in IDENTITIES[:3])
_KEY_OF = {i.address: i.private_key for i in IDENTITIES}


def _weird_value(rng: random.Random) -> Any:
    """A msgpack value of a random type, biased to the edges the checkers guard."""
    pick = rng.randrange(14)
    if pick == 0:
        return rng.choice((0, 1, -1, 2**32, 2**64 - 1, -(2**63), 2**32 - 1, 2**31))
    if pick == 1:
        return rng.choice((0.0, -0.0, 1.0, -1.0, math.inf, -math.inf, math.nan, 1e308, 5e-324))
    if pick == 2:
        return rng.randbytes(rng.choice((0, 1, 20, 31, 32, 33, 36, 65, 66)))
    if pick == 3:
        return "x" * rng.choice((0, 1, 64, 65, 256, 257, 1000))
    if pick == 4:
        return [rng.randbytes(20), rng.randbytes(36)]
    if pick == 5:
        return [
            [rng.randbytes(20), blob_cid(rng.randbytes(4)).to_bytes()]
            for _ in range(rng.randint(0, 3))
        ]
    if pick == 6:
        return None
    if pick == 7:
        return rng.choice((True, False))
    if pick == 8:
        return {"a": 1}
    if pick == 9:
        return blob_cid(rng.randbytes(8)).to_bytes()
    if pick == 10:
        return CID(CODEC_DAG_PB, rng.randbytes(32)).to_bytes()
    if pick == 11:
        return [[b"\x00" * 20, "norm"], [b"\x00" * 20, "dup"]]
    if pick == 12:
        return [[b"\x01" * 20, b"\x02" * 65], [b"\x00" * 20, b"\x03" * 65]]
    return rng.randint(0, 2**64 - 1)


def mutate_message(data: bytes, rng: random.Random, resign: bool = False) -> bytes | None:
    """Structure-aware mutation: edit the decoded msgpack map, re-pack, maybe re-sign."""
    try:
        wire = msgpack.unpackb(data, raw=False, strict_map_key=False, max_bin_len=1 << 20)
    except Exception:
        return None
    if not isinstance(wire, dict) or not wire:
        return None
    keys = list(wire)
    op = rng.randrange(8)
    if op <= 2:
        wire[rng.choice(keys)] = _weird_value(rng)
    elif op == 3:
        del wire[rng.choice(keys)]
    elif op == 4:
        wire[rng.choice(("extra", "kind", "round", "signature", "view"))] = _weird_value(rng)
    elif op == 5:
        wire["kind"] = rng.randint(0, 7)
    elif op == 6:
        key = rng.choice(keys)
        if isinstance(wire[key], int) and not isinstance(wire[key], bool):
            wire[key] = max(0, wire[key] + rng.choice((-1, 1, 2**32)))
    else:
        rng.shuffle(keys)
        wire = {k: wire[k] for k in keys}
    ordered = wire if op == 7 else {k: wire[k] for k in sorted(wire, key=str)}
    try:
        out = msgpack.packb(ordered, use_bin_type=rng.random() < 0.95)
    except Exception:
        return None
    if resign:
        out = resign_message(out, rng) or out
    return out


def resign_message(data: bytes, rng: random.Random) -> bytes | None:
    """Give a decodable message a valid signature (by a known key), so a validator's
    deeper checks are reached instead of the signature check."""
    try:
        message = decode_message(data)
    except InvalidMessage:
        return None
    identity = rng.choice(IDENTITIES)
    if isinstance(message, Commit):
        signers = sorted(
            rng.sample(IDENTITIES, rng.randint(1, len(IDENTITIES))), key=lambda i: i.address
        )
        signed: Any = [message.vote_for(i.address).signed(i.private_key, DOMAIN) for i in signers]
        votes = tuple((i.address, vote.signature) for i, vote in zip(signers, signed))
        return replace(message, votes=votes).encode()
    assert isinstance(message, Signed)
    signed = replace(message, signer=identity.address).signed(identity.private_key, DOMAIN)  # type: ignore[call-arg]
    return signed.encode()


class MessagesTarget:
    """`decode_message`: only InvalidMessage; accepted bytes are the canonical encoding."""

    name = "messages"

    def seeds(self) -> list[bytes]:
        return [*_SEED_MESSAGES, *_SEED_INVALID, b"", b"\x80", b"\xc0"]

    def mutate(self, data: bytes, rng: random.Random) -> bytes | None:
        return mutate_message(data, rng)

    def run(self, data: bytes) -> str:
        try:
            message = decode_message(data)
        except InvalidMessage as exc:
            return f"reject:{exc.reason}"
        _check(message.encode() == data, "accepted bytes are not canonical")
        _check(decode_message(message.encode()) == message, "decode is not idempotent")
        return f"ok:{type(message).__name__}"


# --- the gossip validator ------------------------------------------------------------------


def node_validator(
    task: bytes,
    registered: frozenset[bytes],
    current_round: int,
    machine: RoundMachine | None = None,
) -> Callable[[bytes], Any]:
    """The real node's gossip validator (`p2pfl.node.intake.Intake.validate`), bound to
    the least node state it reads (task, machine domain and round, registered peers),
    without starting a node."""
    from p2pfl.node.intake import Intake
    from p2pfl.node.queue import EventQueue

    if machine is None:
        machine = RoundMachine(
            RoundConfig(task=task, committee_size=3, rule="fedavg"),
            IDENTITIES[0].private_key,
            DOMAIN,
        )
        machine.round = current_round
    intake = Intake(
        task, b"", machine, {a: "peer" for a in registered}, EventQueue(), lambda name: None
    )
    return intake.validate


class ValidatorTarget:
    """The node's gossip validator: a Verdict for any bytes, ACCEPT only when sound."""

    name = "validator"

    def __init__(self) -> None:
        self.validate = node_validator(VECTOR_TASK, REGISTERED, VECTOR_ROUND)

    def seeds(self) -> list[bytes]:
        rng = random.Random(1)
        resigned = [resign_message(m, rng) for m in _SEED_MESSAGES]
        return [*_SEED_MESSAGES, *_SEED_INVALID, *(m for m in resigned if m)]

    def mutate(self, data: bytes, rng: random.Random) -> bytes | None:
        return mutate_message(data, rng, resign=rng.random() < 0.5)

    def run(self, data: bytes) -> str:
        verdict = self.validate(data)
        _check(verdict.action in (ACCEPT, REJECT, IGNORE), f"unknown verdict {verdict}")
        if verdict.action == ACCEPT:
            message = decode_message(data)
            _check(message.task == VECTOR_TASK, "accepted another task")
            _check(abs(message.round - VECTOR_ROUND) <= 1, "accepted a round outside the window")
            if isinstance(message, Commit):
                signers = message.verify_votes(DOMAIN)
            else:
                signers = (message.verify(DOMAIN),)
            _check(all(s in REGISTERED for s in signers), "accepted an unregistered signer")
        return f"{verdict.action}:{verdict.reason}"


# --- blocks, CIDs, tensors ----------------------------------------------------------------

_CID_VECTORS = _vectors("cid")
_TENSOR_VECTORS = _vectors("tensors")
# Sub-targets, chosen by the first byte of the input.
OP_DAG_PB, OP_TENSORS, OP_CID_BINARY, OP_CID_TEXT, OP_VERIFY, OP_DAG = range(6)
N_BLOCK_OPS = 6
# Chunk sizes the DAG mini-language builds with: tiny ones make deep, wide DAGs cheap.
_DAG_CHUNKS = (1, 2, 3, 4, 8, CHUNK_SIZE)
# Nodes one DAG program may declare.
_MAX_DAG_NODES = 64
# The most bytes, and leaves' worth of bytes, a DAG program may expand to (see
# run_dag_program): with the harness's tiny chunk sizes a megabyte is a million leaves, each
# visited by `assemble` (the node's chunks are 256 KiB: its walks stay short).
_MAX_DAG_CONTENT = 1 << 20
_MAX_DAG_LEAVES = 4096


class _Reader:
    """Consumes an input as a stream of small choices (0 once exhausted)."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def byte(self) -> int:
        if self.pos >= len(self.data):
            return 0
        self.pos += 1
        return self.data[self.pos - 1]

    def below(self, n: int) -> int:
        return self.byte() % n if n > 0 else 0

    def choice(self, options: Any) -> Any:
        return options[self.below(len(options))]

    def take(self, n: int) -> bytes:
        out = self.data[self.pos : self.pos + n]
        self.pos += len(out)
        return out

    @property
    def left(self) -> bool:
        return self.pos < len(self.data)


def _dag_seed_program() -> bytes:
    """A program building a valid 2-level DAG (chunk 2, leaves of 2, 2, 1 bytes)."""
    leaves = [0, 2, 0xAA, 0xBB, 0, 2, 0xCC, 0xDD, 0, 1, 0xEE]
    root = [1, 2, 0, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0]  # 3 links, no skews
    return bytes([OP_DAG, 1, *leaves, *root])


def run_dag_program(r: _Reader) -> str:
    """Build a DAG from a mini-language, with chosen corruptions, and walk it.

    Program: chunk-size choice, then nodes: `0 len bytes` = leaf, `1 n i1 .. in` =
    internal node linking earlier nodes i (with an optional Tsize/blocksize skew per
    link), `2 len bytes` = raw garbage block stored as dag-pb. The last node is the root.
    `assemble` and `missing_blocks` must refuse anything broken with InvalidBlock; what
    `assemble` accepts must be exactly the bytes of the leaves in order.
    """
    chunk = _DAG_CHUNKS[r.below(len(_DAG_CHUNKS))]
    store: dict[CID, bytes] = {}
    # per node: (cid, content bytes, tsize)
    nodes: list[tuple[CID, bytes, int]] = []
    while r.left and len(nodes) < _MAX_DAG_NODES:
        kind = r.below(3)
        if kind == 0 or not nodes:
            leaf = r.take(r.below(chunk + 2) if chunk < 256 else r.byte())
            cid = block_cid(CODEC_RAW, leaf)
            store[cid] = leaf
            nodes.append((cid, leaf, len(leaf)))
        elif kind == 1:
            n = 1 + r.below(6)
            links, sizes, content, tsize = [], [], b"", 0
            for _ in range(n):
                child_cid, child_content, child_tsize = nodes[r.below(len(nodes))]
                skew = r.choice((0, 0, 0, 0, 0, 0, 1, -1))
                links.append(Link(child_cid, max(0, child_tsize + (skew if r.below(2) else 0))))
                sizes.append(max(0, len(child_content) + (skew if r.below(2) else 0)))
                content += child_content
                tsize += child_tsize
                if len(content) > min(_MAX_DAG_CONTENT, chunk * _MAX_DAG_LEAVES):
                    # The harness keeps every node's expansion: links to the same children
                    # grow it exponentially. Past this the program is not run (the node's
                    # own bound is the model size: p2pfl.node.workers._read_delta).
                    return "dag:too-large"
            block = _encode_node(links, sizes, CID.to_bytes)
            cid = block_cid(CODEC_DAG_PB, block)
            store[cid] = block
            nodes.append((cid, content, tsize + len(block)))
        else:
            junk = r.take(r.byte())
            cid = block_cid(CODEC_DAG_PB, junk)
            store[cid] = junk
            nodes.append((cid, b"", len(junk)))
    if not nodes:
        return "dag:empty"
    root, content, _ = nodes[-1]
    drop = r.below(4) == 1 and len(store) > 1  # a missing block
    if drop:
        store.pop(next(iter(store)))
    max_size = r.choice((None, None, len(content), max(0, len(content) - 1)))

    def get(cid: CID) -> bytes:
        block = store.get(cid)
        if block is None:
            raise InvalidBlock(f"missing {cid}")  # what a block store does for a missing block
        return block

    outcome = ""
    try:
        missing = missing_blocks(root, lambda c: c in store, get)
        _check(all(c not in store for c in missing), "missing_blocks listed a held block")
        outcome = "walk-ok" if not missing else "walk-missing"
    except InvalidBlock:
        outcome = "walk-invalid"
    try:
        blob = assemble(root, get, max_size, chunk_size=chunk)
    except InvalidBlock:
        return f"dag:{outcome}:rejected"
    _check(blob == content, "assemble returned bytes other than the leaves in order")
    _check(max_size is None or len(blob) <= max_size, "assemble exceeded max_size_bytes")
    canonical = _build(blob, chunk, 174, None) == root
    # Non-canonical but hash-consistent DAGs (e.g. a leaf wrapped in a one-link node) are
    # accepted by design: every block still hashes to its CID (spec: cid.md, Verify).
    return f"dag:{outcome}:accepted:{'canonical' if canonical else 'non-canonical'}"


class BlocksTarget:
    """Block, DAG, CID and tensor decoding: only InvalidBlock / InvalidMessage."""

    name = "blocks"

    def seeds(self) -> list[bytes]:
        out = []
        for v in _CID_VECTORS["dag_pb_valid"] + _CID_VECTORS["dag_pb_invalid"]:
            out.append(bytes([OP_DAG_PB]) + bytes.fromhex(v["hex"]))
        for v in _TENSOR_VECTORS["valid"] + _TENSOR_VECTORS["invalid"]:
            out.append(bytes([OP_TENSORS]) + bytes.fromhex(v["hex"]))
        for v in _CID_VECTORS["cid_text_invalid"]:
            out.append(bytes([OP_CID_TEXT]) + v["text"].encode("utf-8", "surrogatepass"))
        for v in _CID_VECTORS["published_kubo_defaults"]:
            out.append(bytes([OP_CID_TEXT]) + v["cid"].encode())
            out.append(bytes([OP_CID_BINARY]) + CID.parse(v["cid"]).to_bytes())
            out.append(bytes([OP_VERIFY]) + v["data_ascii"].encode())
        out.append(_dag_seed_program())
        return out

    def run(self, data: bytes) -> str:
        if not data:
            return "empty"
        op, body = data[0] % N_BLOCK_OPS, data[1:]
        if op == OP_DAG_PB:
            try:
                node = decode_dag_pb(body)
            except InvalidBlock:
                return "dag-pb:rejected"
            _check(
                encode_dag_pb(node.links, node.blocksizes) == body, "non-canonical dag-pb accepted"
            )
            return "dag-pb:ok"
        if op == OP_TENSORS:
            try:
                tensors = decode_tensors(
                    body, max_bytes=1 << 20, allow_nonfinite=bool(data[0] & 0x80)
                )
            except InvalidMessage as exc:
                return f"tensors:{exc.reason}"
            _check(
                encode_tensors(dict(tensors), allow_nonfinite=True) == body,
                "non-canonical tensors accepted",
            )
            return "tensors:ok"
        if op == OP_CID_BINARY:
            try:
                cid = CID.parse(body)
            except InvalidMessage:
                return "cid-binary:rejected"
            _check(cid.to_bytes() == body, "non-canonical binary CID accepted")
            return "cid-binary:ok"
        if op == OP_CID_TEXT:
            text = body.decode("latin-1")
            try:
                cid = CID.parse(text)
            except InvalidMessage:
                return "cid-text:rejected"
            _check(str(cid) == text, "non-canonical CID text accepted")
            return "cid-text:ok"
        if op == OP_VERIFY:
            good = blob_cid(body)
            root, blocks = blob_blocks(body)
            _check(root == good, "blob_blocks and blob_cid disagree")
            for cid, block in blocks:
                verify_block(cid, block)
            try:
                verify_block(block_cid(CODEC_RAW, body[:-1]), body)
            except InvalidBlock:
                return "verify:ok"
            _check(len(body) == 0, "verify_block accepted bytes of another CID")
            return "verify:ok-empty"
        return run_dag_program(_Reader(body))


# --- the round machine ---------------------------------------------------------------------

ROUND_TASK = keccak(b"fuzz task")
ROUND_RULE = "fedavg"
ROUND_KEYS = [(i + 1).to_bytes(32, "big") for i in range(7)]
ROUND_ADDRS = [address_of(k) for k in ROUND_KEYS]
STRANGER_KEY = (99).to_bytes(32, "big")
STRANGER = address_of(STRANGER_KEY)
ROUND_KEY_OF = {**dict(zip(ROUND_ADDRS, ROUND_KEYS)), STRANGER: STRANGER_KEY}
ALL_SIGNERS = [*ROUND_ADDRS, STRANGER]
GENESIS = blob_cid(b"fuzz genesis").to_bytes()
OTHER_BASE = blob_cid(b"fuzz other base").to_bytes()
MAX_ROUND_EVENTS = 64
# Signatures cost ~0.1 ms; programs re-create the same statements often.
_SIGNATURE_CACHE_MAX = 50_000
# A key wrap as the round machine sees it: 80 opaque bytes (it never opens one).
_FAKE_WRAP = bytes(80)
_TICK_STEPS = (0.0, 0.1, 1.0, 5.0, 10.0, 15.0, 60.0, 75.0, 150.0, 1000.0, -5.0)
_N_SAMPLES = (1, 10, 600, 10**9, 10**9 + 1, 2**64 - 1)
_NORMS = (0.0, 1.0, 2.5, 500.0, 1e300)


def fake_aggregate(req: ev.ComputeAggregate, mode: int) -> ev.AggregateComputed:
    """Deterministic stand-in for filter + rule: mode 0 honest, 1 lie, 2 error, 3 malformed."""
    included = tuple((u.signer, u.delta) for u in req.updates if u.norm <= 100.0)
    rejected = tuple((u.signer, "norm-too-large") for u in req.updates if u.norm > 100.0)
    if mode == 2 or not included:
        return ev.AggregateComputed(
            req.round, req.attempt, req.candidates, error="nothing survived"
        )
    payload = req.base + b"".join(a + d for a, d in included)
    result = blob_cid((b"LIE" if mode == 1 else b"agg") + payload).to_bytes()
    root = keccak(b"".join(a for a, _ in included) + b"|" + b"".join(req.committee))
    if mode == 3:  # malformed answer from a buggy shell: the machine must refuse to propose it
        return ev.AggregateComputed(
            req.round,
            req.attempt,
            req.candidates,
            included[::-1],
            (*rejected, (b"\x00" * 20, "r" * 300)),
            b"\x01\x02",
            root[:5],
        )
    return ev.AggregateComputed(
        req.round, req.attempt, req.candidates, included, rejected, result, root
    )


class _Signer:
    """Signs with a cache keyed by (key, unsigned message): programs re-create the same
    statements often, and a signature costs ~0.1 ms of keccak and secp256k1."""

    def __init__(self) -> None:
        self.cache: dict[tuple[bytes, Signed], bytes] = {}
        self.committees: dict[tuple[Any, ...], list[bytes]] = {}

    def sign(self, message: Signed, key: bytes) -> Signed:
        slot = (key, message)
        sig = self.cache.get(slot)
        if sig is None:
            if len(self.cache) >= _SIGNATURE_CACHE_MAX:
                self.cache.clear()
            sig = self.cache[slot] = message.signed(key, DOMAIN).signature  # type: ignore[attr-defined]
        return replace(message, signature=sig)  # type: ignore[call-arg]

    def committee(
        self, round_: int, base: bytes, attempt: int, stakes: dict[bytes, int], k: int
    ) -> list[bytes]:
        slot = (round_, base, attempt, tuple(stakes.items()), k)
        drawn = self.committees.get(slot)
        if drawn is None:
            if len(self.committees) >= _SIGNATURE_CACHE_MAX:
                self.committees.clear()
            seed = round_seed(ROUND_TASK, round_, CID.parse(base).digest, attempt)
            drawn = self.committees[slot] = committee_for(seed, stakes, k)
        return drawn


class RoundTarget:
    """The round state machine under a program of hostile and honest events."""

    name = "round"

    def __init__(self) -> None:
        self.signer = _Signer()

    def seeds(self) -> list[bytes]:
        rng = random.Random(7)
        honest = bytes([0, 0, 0, 0, 0])  # config, then RoundStarted
        out = [honest + bytes([2, i, 0, 0, 0, 0, 0, 0]) for i in range(7)]
        out.append(
            honest
            + bytes(b for i in range(7) for b in (2, i, 0, 0, 0, 0, 0, 0))
            + bytes([1, 6, 7, 0, 7, 0, 3, 0, 0, 0, 0, 4, 0, 0, 0, 0] * 4)
        )
        out += [rng.randbytes(rng.randint(8, 200)) for _ in range(16)]
        return out

    def run(self, data: bytes) -> str:
        return _RoundProgram(self.signer, _Reader(data)).run()


class _RoundProgram:
    def __init__(self, signer: _Signer, r: _Reader) -> None:
        self.s = signer
        self.r = r
        k = r.choice((1, 3, 4, 5, 7))
        stakes_mode = r.below(4)
        stakes = {a: (100 if stakes_mode != 1 or i % 3 else 0) for i, a in enumerate(ROUND_ADDRS)}
        if stakes_mode == 2:
            stakes = {a: 10 * (i + 1) for i, a in enumerate(ROUND_ADDRS)}
        self.stakes = stakes
        self.me_index = r.below(7)
        self.me = ROUND_ADDRS[self.me_index]
        self.config = RoundConfig(
            task=ROUND_TASK,
            committee_size=k,
            rule=ROUND_RULE,
            max_buffered=r.choice((1024, 4, 1)),
            train=r.below(4) != 0,
            collect_quorum_percent=r.choice((80, 100, 1)),
            redraw_when_stuck=r.below(4) != 0,
            sealed=r.below(2) == 0,
        )
        self.machine = RoundMachine(self.config, ROUND_KEYS[self.me_index], DOMAIN)
        self.now = 0.0
        self.fetches: list[ev.Fetch] = []
        self.computes: list[ev.ComputeAggregate] = []
        self.sent: list[Any] = []  # network events fed so far (for replays)
        self.updates: list[Update] = []  # updates fed this round (proposal material)
        self.results: list[tuple[int, bytes, bytes]] = []  # (view, result, root) seen
        self.mine: dict[tuple[int, bytes, int, int, int], bytes] = {}  # our statements
        self.events = 0

    # -- helpers --
    def committee(self, round_: int, base: bytes, attempt: int) -> list[bytes]:
        return self.s.committee(
            round_, base, attempt, self.machine._stakes, self.config.committee_size
        )

    def rel_round(self) -> int:
        return max(0, self.machine.round + self.r.choice((0, 0, 0, 0, 1, -1, 2)))

    def base(self) -> bytes:
        return self.r.choice(
            (self.machine.base or GENESIS, self.machine.base or GENESIS, GENESIS, OTHER_BASE)
        )

    def delta(self, author: bytes, round_: int) -> bytes:
        return blob_cid(
            b"delta" + author + round_.to_bytes(8, "big") + bytes([self.r.below(3)])
        ).to_bytes()

    def signed(self, message: Signed) -> Signed:
        return self.s.sign(message, ROUND_KEY_OF[message.signer])  # type: ignore[attr-defined]

    def claimed(self, signer: bytes) -> bytes:
        """The signer the shell says it verified: the right one, mostly."""
        return signer if self.r.below(10) else self.r.choice(ALL_SIGNERS)

    # -- events --
    def ev_round_started(self) -> tuple[Any, bool]:
        m = self.machine
        round_ = m.round + self.r.choice((1, 1, 1, 1, 0, -1, 2))
        base = self.r.choice(
            (self.results[-1][1] if self.results else GENESIS, GENESIS, OTHER_BASE, b"\x01\x02")
        )
        self.updates = []
        return ev.RoundStarted(round_, base, self.stakes, self.now), True

    def ev_tick(self) -> tuple[Any, bool]:
        self.now += self.r.choice(_TICK_STEPS)
        return ev.Tick(self.now), False

    def ev_heartbeat(self) -> tuple[Any, bool]:
        signer = self.r.choice(ALL_SIGNERS)
        beat = Heartbeat(
            task=ROUND_TASK if self.r.below(16) else keccak(b"other task"),
            round=max(0, self.rel_round()),
            time_ms=int(self.now * 1000) % 2**63 if math.isfinite(self.now) else 0,
            phase=self.r.choice(("collecting", "voting", "")),
            signer=signer,
        )
        beat = self.signed(beat)  # type: ignore[assignment]
        return ev.HeartbeatReceived(beat, self.claimed(signer)), False

    def wraps(self, round_: int, base: bytes, attempt: int, author: bytes) -> Any:
        """Key wraps as a sealed task's author sends them (opaque to the machine): the
        attempt's committee and the author, mostly; sometimes none, or a stranger's."""
        members = (
            set(self.committee(round_, base, attempt)) if round_ == self.machine.round else set()
        )
        pick = self.r.below(8)
        if pick == 0 or not self.config.sealed and pick != 1:
            return ()
        if attempt == 0:
            members.add(author)
        if pick == 2:
            members.add(self.r.choice(ALL_SIGNERS))
        return tuple((m, _FAKE_WRAP) for m in sorted(members))

    def ev_rewrap(self) -> tuple[Any, bool]:
        m = self.machine
        author = self.r.choice(ALL_SIGNERS)
        round_ = self.rel_round()
        attempt = max(1, m.attempt + self.r.choice((0, 1, 1, -1, 2)))
        wraps = self.wraps(round_, m.base or GENESIS, attempt, author)
        rewrap = Rewrap(
            task=ROUND_TASK if self.r.below(16) else keccak(b"other task"),
            round=round_,
            attempt=attempt,
            delta=self.delta(author, round_),
            wraps=wraps,
            signer=author,
        )
        rewrap = self.signed(rewrap)  # type: ignore[assignment]
        return ev.event_for(rewrap, self.claimed(author)), False

    def ev_wraps_ready(self) -> tuple[Any, bool]:
        m = self.machine
        attempt = max(0, m.attempt + self.r.choice((0, 0, 1, -1)))
        wraps = self.wraps(m.round, m.base or GENESIS, attempt, self.me)
        return ev.WrapsReady(m.round, attempt, self.delta(self.me, m.round), wraps), True

    def ev_update(self) -> tuple[Any, bool]:
        author = self.r.choice(ALL_SIGNERS)
        round_ = self.rel_round()
        base = self.base()
        u = Update(
            task=ROUND_TASK if self.r.below(16) else keccak(b"other task"),
            round=round_,
            base=base,
            delta=self.delta(author, round_),
            n_samples=self.r.choice(_N_SAMPLES),
            norm=self.r.choice(_NORMS),
            inline=b"",
            signer=author,
            wraps=self.wraps(round_, base, 0, author),
        )
        u = self.signed(u)  # type: ignore[assignment]
        self.updates.append(u)
        return ev.event_for(u, self.claimed(author)), False

    def _attempt_view(self) -> tuple[int, int]:
        m = self.machine
        attempt = max(0, m.attempt + self.r.choice((0, 0, 0, 1, -1, 2)))
        view = max(0, m.view + self.r.choice((0, 0, 0, 1, 2, -1, 5)))
        return attempt, view

    def ev_proposal(self) -> tuple[Any, bool]:
        m = self.machine
        round_, base = self.rel_round(), self.base()
        attempt, view = self._attempt_view()
        committee = self.committee(round_, base, attempt) if round_ == m.round else []
        signer = (
            leader_of(committee, view)
            if committee and self.r.below(5)
            else self.r.choice(ALL_SIGNERS)
        )
        chosen = sorted(
            {(u.signer, u.delta): u for u in self.updates if self.r.below(3)}.values(),
            key=lambda u: u.signer,
        )
        by_author: dict[bytes, Any] = {}
        for u in chosen:
            by_author.setdefault(u.signer, u)
        candidates = tuple(by_author.values())
        req = ev.ComputeAggregate(round_, attempt, base, ROUND_RULE, tuple(committee), candidates)
        answer = fake_aggregate(req, self.r.choice((0, 0, 0, 1)))
        result = answer.result or blob_cid(b"nothing").to_bytes()
        root = answer.contributors_root or bytes(32)
        p = Proposal(
            task=ROUND_TASK,
            round=round_,
            attempt=attempt,
            view=view,
            base=base,
            included=answer.included,
            rejected=answer.rejected if self.r.below(4) else (*answer.rejected, (STRANGER, "x")),
            rule=ROUND_RULE if self.r.below(8) else "median",
            result=result,
            contributors_root=root,
            signer=signer,
        )
        p = self.signed(p)  # type: ignore[assignment]
        self.results.append((view, result, root))
        return ev.event_for(p, self.claimed(signer)), False

    def _vote(
        self,
        signer: bytes,
        round_: int,
        base: bytes,
        attempt: int,
        view: int,
        result: bytes,
        root: bytes,
    ) -> Vote:
        v = Vote(
            task=ROUND_TASK,
            round=round_,
            attempt=attempt,
            view=view,
            base=base,
            result=result,
            contributors_root=root,
            signer=signer,
        )
        return self.signed(v)  # type: ignore[return-value]

    def _vote_target(self) -> tuple[int, int, bytes, bytes]:
        attempt, view = self._attempt_view()
        if self.results and self.r.below(4):
            v, result, root = self.r.choice(self.results)
            return attempt, v, result, root
        return (
            attempt,
            view,
            blob_cid(bytes([self.r.byte()])).to_bytes(),
            keccak(bytes([self.r.byte()])),
        )

    def ev_vote(self) -> tuple[Any, bool]:
        m = self.machine
        round_, base = self.rel_round(), self.base()
        attempt, view, result, root = self._vote_target()
        committee = self.committee(round_, base, attempt) if round_ == m.round else []
        signer = (
            self.r.choice(committee)
            if committee and self.r.below(5)
            else self.r.choice(ALL_SIGNERS)
        )
        vote = self._vote(signer, round_, base, attempt, view, result, root)
        return ev.event_for(vote, self.claimed(signer)), False

    def ev_commit(self) -> tuple[Any, bool]:
        m = self.machine
        round_, base = self.rel_round(), self.base()
        attempt, view, result, root = self._vote_target()
        committee = self.committee(round_, base, attempt) if round_ == m.round else []
        pool = committee if committee and self.r.below(4) else ALL_SIGNERS
        signers = sorted({self.r.choice(pool) for _ in range(1 + self.r.below(8))})
        votes = [
            (s, self._vote(s, round_, base, attempt, view, result, root).signature) for s in signers
        ]
        if votes and self.r.below(6) == 0:  # one forged signature
            i = self.r.below(len(votes))
            votes[i] = (votes[i][0], votes[(i + 1) % len(votes)][1])
        c = Commit(ROUND_TASK, round_, attempt, view, base, result, root, tuple(votes))
        return ev.CommitSeen(c), False

    def ev_delta(self) -> tuple[Any, bool]:
        ok = self.r.below(5) != 0
        if self.fetches and self.r.below(6):
            f = self.fetches.pop(self.r.below(len(self.fetches)))
            return ev.DeltaAvailable(f.author, f.delta, ok), True
        author = self.r.choice(ALL_SIGNERS)
        return ev.DeltaAvailable(author, self.delta(author, self.machine.round), ok), True

    def ev_computed(self) -> tuple[Any, bool]:
        if self.computes and self.r.below(8):
            req = self.computes.pop(self.r.below(len(self.computes)))
            answer = fake_aggregate(req, self.r.choice((0, 0, 0, 0, 1, 2, 3)))
            if len(answer.result) == 36:
                self.results.append((self.machine.view, answer.result, answer.contributors_root))
            return answer, True
        return ev.AggregateComputed(self.rel_round(), self.machine.attempt, ()), True

    def ev_chain(self) -> tuple[Any, bool]:
        m = self.machine
        round_ = max(0, m.round + self.r.choice((0, 0, 0, 1, -1, 3)))
        view, result, root = (
            self.results[-1]
            if self.results and self.r.below(4)
            else (0, blob_cid(b"chain").to_bytes(), bytes(32))
        )
        return ev.ChainCommitted(round_, m.attempt, view, m.base or GENESIS, result, root), True

    def ev_local(self) -> tuple[Any, bool]:
        round_ = self.rel_round()
        return ev.LocalUpdateReady(
            round_,
            self.delta(self.me, round_),
            self.r.choice(_N_SAMPLES[:4]),
            self.r.choice(_NORMS),
            b"",
            self.wraps(round_, self.machine.base or GENESIS, 0, self.me),
        ), True

    def ev_replay(self) -> tuple[Any, bool]:
        if not self.sent:
            return self.ev_tick()
        event = self.r.choice(self.sent)
        if self.r.below(2) and isinstance(
            event, (ev.UpdateReceived, ev.ProposalReceived, ev.VoteReceived)
        ):
            # Equivocation: the same statement key, another body, genuinely signed.
            message: Any = (
                event.update
                if isinstance(event, ev.UpdateReceived)
                else event.proposal
                if isinstance(event, ev.ProposalReceived)
                else event.vote
            )
            twin: Any
            if isinstance(message, Update):
                twin = replace(message, n_samples=message.n_samples % 1000 + 1)
            elif isinstance(message, Proposal):
                twin = replace(message, result=blob_cid(message.result).to_bytes())
            else:
                twin = replace(message, result=blob_cid(message.result).to_bytes())
            twin = self.signed(twin)
            event = type(event)(twin, twin.signer)
        return event, False

    def ev_echo(self) -> tuple[Any, bool]:
        # Our own published messages coming back (the node filters them; the machine must cope).
        own = [a.message for a in getattr(self, "published", []) if isinstance(a.message, Signed)]
        if not own:
            return self.ev_tick()
        message = self.r.choice(own)
        kind = {
            Update: ev.UpdateReceived,
            Proposal: ev.ProposalReceived,
            Vote: ev.VoteReceived,
        }.get(type(message))
        if kind is None:
            return self.ev_tick()
        return kind(message, message.signer), False

    # -- the run --
    def run(self) -> str:
        ops = (
            self.ev_round_started,
            self.ev_tick,
            self.ev_update,
            self.ev_proposal,
            self.ev_vote,
            self.ev_commit,
            self.ev_delta,
            self.ev_computed,
            self.ev_chain,
            self.ev_local,
            self.ev_replay,
            self.ev_echo,
            self.ev_heartbeat,
            self.ev_rewrap,
            self.ev_wraps_ready,
        )
        self.published: list[ev.Publish] = []
        m = self.machine
        # Every program starts a round, so the rest of the program meets a live machine.
        first = ev.RoundStarted(1, GENESIS, self.stakes, 0.0)
        self.apply(first, shell=True)
        while self.r.left and self.events < MAX_ROUND_EVENTS:
            event, shell = ops[self.r.below(len(ops))]()
            if not shell:
                self.sent.append(event)
            self.apply(event, shell)
        # What the program made the machine do, as coarse flags: new combinations join the
        # corpus, steering mutation towards programs that reach proposals, votes, evidence.
        kinds = {type(a.message).__name__[0] for a in self.published}
        flags = (
            "".join(sorted(kinds))
            + ("E" if m.counters["evidence"] else "")
            + ("C" if m.certificate else "")
        )
        return f"{m.phase.value}:r{min(m.round, 3)}:{flags}"

    def apply(self, event: Any, shell: bool) -> None:
        self.events += 1
        m = self.machine
        if not shell and not _wire_valid(event):
            return  # decode_message would have refused it: it cannot reach the machine
        before = (m.round, m.base, m.attempt)
        try:
            actions = m.handle(event)
        except RoundStateError:
            # Documented: the shell drove the machine illegally (here: a RoundStarted that
            # does not move forward). Network input must never get here.
            if not isinstance(event, ev.RoundStarted):
                raise
            return
        except InvalidMessage as exc:
            if not (isinstance(event, ev.RoundStarted) and exc.reason == "bad-cid"):
                raise
            return
        self.check(event, actions, before)

    def check(self, event: Any, actions: list[Any], before: tuple[int, bytes, int]) -> None:
        m = self.machine
        _check(len(m._buffer) <= self.config.max_buffered, "buffer over max_buffered")
        verified = [
            u
            for a, u in m._first_update.items()
            if a not in m._equivocators and m._delta_ok.get((a, u.delta)) is True
        ]  # `_collected` before the sealed `_usable` filter: what the collect quorum counts
        _check(
            m._counted() == sum(1 for u in verified if u.signer not in m._probation),
            "the incremental collect count differs from the updates collected",
        )
        _check(all(m._usable(u) for u in m._collected()), "an unusable update among the collected")
        _check(m.phase in Phase, "unknown phase")
        for action in actions:
            if isinstance(action, ev.Fetch):
                self.fetches.append(action)
            elif isinstance(action, ev.ComputeAggregate):
                self.computes.append(action)
                _check(action.round == m.round, "aggregate requested for another round")
                _check(
                    list(action.updates) == sorted(action.updates, key=lambda u: u.signer),
                    "updates not sorted",
                )
                _check(
                    len({u.signer for u in action.updates}) == len(action.updates),
                    "two updates of one author aggregated",
                )
            elif isinstance(action, ev.Publish):
                self.published.append(action)
                message = action.message
                _check(
                    decode_message(message.encode()) == message,
                    f"published a non-canonical {type(message).__name__}",
                )
                if isinstance(message, Signed):
                    _check(
                        message.verify(DOMAIN) == self.me, "published a statement not signed by us"
                    )
                    key, body = message.statement_key(), message.body()
                    _check(
                        self.mine.setdefault(key, body) == body,
                        f"signed two bodies for statement {key}",
                    )
                    if isinstance(message, Update):
                        _check(
                            self.stakes.get(self.me, 0) > 0, "unregistered node published an update"
                        )
                else:
                    self.check_certificate(message)
            elif isinstance(action, ev.SubmitCommit):
                self.check_certificate(action.commit)
            elif isinstance(action, ev.ReportEvidence):
                first, second = action.evidence.first, action.evidence.second
                _check(
                    first.verify(DOMAIN) == second.verify(DOMAIN), "evidence with forged signatures"
                )
            elif isinstance(action, ev.Advance):
                _check(action.round == m.round + 1, "advance to a round other than the next")

    def check_certificate(self, c: Commit) -> None:
        signers = c.verify_votes(DOMAIN)
        _check(len(set(signers)) == len(signers), "certificate with a repeated signer")
        committee = self.committee(c.round, c.base, c.attempt)
        _check(set(signers) <= set(committee), "certificate signed by a non-member")
        _check(
            len(signers) >= commit_quorum(self.config.committee_size, self.config.task_quorum),
            "certificate below quorum",
        )


def _wire_valid(event: Any) -> bool:
    message = (
        getattr(event, "update", None)
        or getattr(event, "proposal", None)
        or getattr(event, "vote", None)
        or getattr(event, "commit", None)
        or getattr(event, "rewrap", None)
    )
    try:
        return message is not None and decode_message(message.encode()) == message
    except InvalidMessage:
        return False


def all_targets() -> list[Any]:
    """Every fuzz target, in report order."""
    return [MessagesTarget(), ValidatorTarget(), BlocksTarget(), RoundTarget()]
