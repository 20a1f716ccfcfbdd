"""Protocol messages and their canonical encoding.

Each message is a frozen dataclass. On the wire it is one msgpack map whose keys are
the field names in sorted order plus `"kind"`; integers in their shortest form, floats
as float64, byte strings as msgpack `bin`. That is exactly what `msgpack.packb` emits
for a dict built in sorted order, so encoding is canonical by construction, and
decoding enforces it: the decoder re-encodes what it parsed and rejects any input
that is not byte-identical (unsorted keys, long-form ints, str-for-bin...). Any byte
string therefore maps to at most one message, so `keccak256(bytes)` names a message.

Decoding is strict and total: any input gives a message or `InvalidMessage(reason)`,
never another exception.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Union

import msgpack
from eth_utils import keccak

from p2pfl.core.cid import CID
from p2pfl.core.signing import (
    SIGNATURE_SIZE,
    UINT32_MAX,
    UINT64_MAX,
    Domain,
    Kind,
    recover_signer,
    sign_digest,
    statement_digest,
    vote_body,
    vote_digest,
)
from p2pfl.errors import InvalidMessage, InvalidSignature

# Gossipsub in py-libp2p 0.8.1 silently drops messages over 1 MiB; stay well below so
# the protobuf envelope (topic, seqno, from, signature) always fits.
MAX_MESSAGE_BYTES = 1_000_000
# Small deltas may ride inline in an Update; anything larger goes by CID.
MAX_INLINE_BYTES = 512 * 1024
# A proposal lists every included and rejected update; 4096 covers any committee's
# view of a round by a wide margin and bounds decode work.
MAX_LIST_ITEMS = 4096
MAX_REASON_CHARS = 64
MAX_RULE_CHARS = 256
MAX_PHASE_CHARS = 32
MAX_CID_BYTES = 64
# A content key (32 bytes) in a libsodium sealed box (ephemeral X25519 key 32, MAC 16):
# p2pfl.sealing.WRAP_BYTES, restated here because core stays free of the crypto library.
WRAP_BYTES = 80
# Wraps one message may carry: one per committee member, and committees are tens of nodes.
MAX_WRAPS = 1024


# --- field types ---------------------------------------------------------------------
# A field type is a checker: value -> value (possibly converted) or InvalidMessage.

Checker = Callable[[str, Any], Any]


def _fail(name: str, what: str) -> InvalidMessage:
    return InvalidMessage("bad-field", f"{name}: {what}")


def fixed_bytes(size: int) -> Checker:
    def check(name: str, value: Any) -> bytes:
        if type(value) is not bytes or len(value) != size:
            raise _fail(name, f"expected {size} bytes")
        return value

    return check


def var_bytes(max_size: int) -> Checker:
    def check(name: str, value: Any) -> bytes:
        if type(value) is not bytes or len(value) > max_size:
            raise _fail(name, f"expected at most {max_size} bytes")
        return value

    return check


def uint(max_value: int, min_value: int = 0) -> Checker:
    def check(name: str, value: Any) -> int:
        if type(value) is not int or not min_value <= value <= max_value:
            raise _fail(name, f"expected integer in [{min_value}, {max_value}]")
        return value

    return check


def finite_float(name: str, value: Any) -> float:
    if type(value) is not float or not math.isfinite(value) or value < 0:
        raise _fail(name, "expected a finite non-negative float")
    return value


def text(max_chars: int) -> Checker:
    def check(name: str, value: Any) -> str:
        if type(value) is not str or len(value) > max_chars:
            raise _fail(name, f"expected text of at most {max_chars} characters")
        return value

    return check


def cid_bytes(name: str, value: Any) -> bytes:
    if type(value) is not bytes or len(value) > MAX_CID_BYTES:
        raise _fail(name, "expected a binary CID")
    CID.parse(value)  # raises InvalidMessage("bad-cid")
    return value


def sorted_pairs(first: Checker, second: Checker, max_items: int = MAX_LIST_ITEMS) -> Checker:
    """A list of [key, value] pairs, strictly ascending by key (so keys are unique)."""

    def check(name: str, value: Any) -> tuple[tuple[Any, Any], ...]:
        if type(value) is not list or len(value) > max_items:
            raise _fail(name, f"expected a list of at most {max_items} pairs")
        out = []
        for i, item in enumerate(value):
            if type(item) is not list or len(item) != 2:
                raise _fail(name, "expected [key, value] pairs")
            out.append((first(f"{name}[{i}]", item[0]), second(f"{name}[{i}]", item[1])))
        if any(a[0] >= b[0] for a, b in zip(out, out[1:])):
            raise _fail(name, "keys must be strictly ascending (sorted, no duplicates)")
        return tuple(out)

    return check


BYTES32 = fixed_bytes(32)
ADDRESS = fixed_bytes(20)
SIGNATURE = fixed_bytes(SIGNATURE_SIZE)
U64 = uint(UINT64_MAX)
U32 = uint(UINT32_MAX)
# (member address, content key wrapped to the member's registered X25519 key), by address.
WRAPS = sorted_pairs(ADDRESS, fixed_bytes(WRAP_BYTES), MAX_WRAPS)


# --- messages ------------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    """Base of all messages: schema-driven canonical codec."""

    KIND: ClassVar[Kind]
    SCHEMA: ClassVar[dict[str, Checker]]

    def to_wire(self) -> dict[str, Any]:
        """Field values in wire form (tuples become lists), keys sorted, plus kind."""
        out: dict[str, Any] = {}
        for key in sorted([*self.SCHEMA, "kind"]):
            value = int(self.KIND) if key == "kind" else getattr(self, key)
            if isinstance(value, tuple):
                value = [list(item) for item in value]
            out[key] = value
        return out

    def encode(self) -> bytes:
        """Canonical bytes of this message."""
        return msgpack.packb(self.to_wire(), use_bin_type=True)

    def validate(self) -> None:
        """Check every field against the schema (raises InvalidMessage)."""
        wire = self.to_wire()
        for key, check in self.SCHEMA.items():
            check(key, wire[key])


@dataclass(frozen=True)
class Signed(Message):
    """A message that is a signed statement (see signing.py)."""

    def unsigned_bytes(self) -> bytes:
        """Canonical bytes with the signature field removed: what `body` hashes."""
        wire = self.to_wire()
        del wire["signature"]
        return msgpack.packb(wire, use_bin_type=True)

    def body(self) -> bytes:
        return keccak(self.unsigned_bytes())

    def statement_key(self) -> tuple[int, bytes, int, int, int]:
        """(kind, task, round, attempt, view): two bodies under one key = equivocation."""
        task, round_ = self.task, self.round  # type: ignore[attr-defined]  # every subclass has both
        return (int(self.KIND), task, round_, getattr(self, "attempt", 0), getattr(self, "view", 0))

    def digest(self, domain: Domain) -> bytes:
        kind, task, round_, attempt, view = self.statement_key()
        return statement_digest(domain, kind, task, round_, attempt, view, self.body())

    def signed(self, private_key: bytes, domain: Domain) -> Signed:
        """A copy signed by `private_key`; `signer` must already be its address."""
        return replace(self, signature=sign_digest(private_key, self.digest(domain)))  # type: ignore[call-arg]

    def verify(self, domain: Domain) -> bytes:
        """Check the signature; returns the signer address or raises InvalidSignature."""
        recovered = recover_signer(self.digest(domain), self.signature)  # type: ignore[attr-defined]
        if recovered != self.signer:  # type: ignore[attr-defined]
            raise InvalidSignature("signature does not match the signer field")
        return recovered


@dataclass(frozen=True)
class Update(Signed):
    """A participant's trained delta for one round (DESIGN §4 step 1).

    Sealed (spec sealing.md): `delta` names the ciphertext, `inline` carries ciphertext,
    and `wraps` holds the content key wrapped to each member of the round's opening
    committee (its first draw that reaches quorum, sealing.md §2; the author excepted).
    Plain (the task's `[privacy] sealed = false`): `delta` names canonical safetensors and
    `wraps` is empty.
    """

    KIND: ClassVar[Kind] = Kind.UPDATE
    task: bytes
    round: int
    base: bytes  # binary CID of the model the delta applies to
    delta: bytes  # binary CID of the delta (sealed bytes, or canonical safetensors)
    n_samples: int
    norm: float  # L2 norm of the (plaintext) delta as claimed by its author
    inline: bytes  # the delta's (sealed) bytes when small enough, else b""
    signer: bytes
    signature: bytes = b""
    wraps: tuple[tuple[bytes, bytes], ...] = ()  # (member, wrapped key), sorted; () = plain

    SCHEMA: ClassVar[dict[str, Checker]] = {
        "task": BYTES32,
        "round": U64,
        "base": cid_bytes,
        "delta": cid_bytes,
        "n_samples": uint(UINT64_MAX, min_value=1),
        "norm": finite_float,
        "inline": var_bytes(MAX_INLINE_BYTES),
        "signer": ADDRESS,
        "signature": SIGNATURE,
        "wraps": WRAPS,
    }


@dataclass(frozen=True)
class Rewrap(Signed):
    """A sealed update's content key wrapped for the committee of a re-draw (attempt > 0):
    the members the `Update`'s own wraps do not cover. Never the delta again (spec
    sealing.md). Wraps are random, so two rewraps of one attempt differ without being
    equivocation: the first one counts, later ones are duplicates (never slashed)."""

    KIND: ClassVar[Kind] = Kind.REWRAP
    task: bytes
    round: int
    attempt: int
    delta: bytes  # the ciphertext CID of the author's update this round
    wraps: tuple[tuple[bytes, bytes], ...]  # (member, wrapped key), sorted by member
    signer: bytes
    signature: bytes = b""

    SCHEMA: ClassVar[dict[str, Checker]] = {
        "task": BYTES32,
        "round": U64,
        "attempt": uint(UINT32_MAX, min_value=1),
        "delta": cid_bytes,
        "wraps": WRAPS,
        "signer": ADDRESS,
        "signature": SIGNATURE,
    }


@dataclass(frozen=True)
class Proposal(Signed):
    """The leader's proposed aggregate for (round, attempt, view) (DESIGN §4 step 5)."""

    KIND: ClassVar[Kind] = Kind.PROPOSAL
    task: bytes
    round: int
    attempt: int
    view: int
    base: bytes
    included: tuple[tuple[bytes, bytes], ...]  # (author address, delta CID), sorted
    rejected: tuple[tuple[bytes, str], ...]  # (author address, reason), sorted
    rule: str
    result: bytes  # binary CID of the new model
    contributors_root: bytes
    signer: bytes
    signature: bytes = b""

    SCHEMA: ClassVar[dict[str, Checker]] = {
        "task": BYTES32,
        "round": U64,
        "attempt": U32,
        "view": U32,
        "base": cid_bytes,
        "included": sorted_pairs(ADDRESS, cid_bytes),
        "rejected": sorted_pairs(ADDRESS, text(MAX_REASON_CHARS)),
        "rule": text(MAX_RULE_CHARS),
        "result": cid_bytes,
        "contributors_root": BYTES32,
        "signer": ADDRESS,
        "signature": SIGNATURE,
    }


@dataclass(frozen=True)
class Vote(Signed):
    """A committee member's signed agreement with a proposal's result (step 6).

    Its body is `vote_body(base, result, contributors_root)` over CID digests, so the
    contract verifies these very signatures in `commitRound`.
    """

    KIND: ClassVar[Kind] = Kind.VOTE
    task: bytes
    round: int
    attempt: int
    view: int
    base: bytes
    result: bytes
    contributors_root: bytes
    signer: bytes
    signature: bytes = b""

    SCHEMA: ClassVar[dict[str, Checker]] = {
        "task": BYTES32,
        "round": U64,
        "attempt": U32,
        "view": U32,
        "base": cid_bytes,
        "result": cid_bytes,
        "contributors_root": BYTES32,
        "signer": ADDRESS,
        "signature": SIGNATURE,
    }

    def body(self) -> bytes:
        return vote_body(
            CID.parse(self.base).digest, CID.parse(self.result).digest, self.contributors_root
        )

    def digest(self, domain: Domain) -> bytes:
        return vote_digest(
            domain,
            self.task,
            self.round,
            self.attempt,
            self.view,
            CID.parse(self.base).digest,
            CID.parse(self.result).digest,
            self.contributors_root,
        )


@dataclass(frozen=True)
class Commit(Message):
    """Certificate: the votes that commit a round (gossiped, and sent on-chain)."""

    KIND: ClassVar[Kind] = Kind.COMMIT
    task: bytes
    round: int
    attempt: int
    view: int
    base: bytes
    result: bytes
    contributors_root: bytes
    votes: tuple[tuple[bytes, bytes], ...]  # (signer, signature), sorted by signer

    SCHEMA: ClassVar[dict[str, Checker]] = {
        "task": BYTES32,
        "round": U64,
        "attempt": U32,
        "view": U32,
        "base": cid_bytes,
        "result": cid_bytes,
        "contributors_root": BYTES32,
        "votes": sorted_pairs(ADDRESS, SIGNATURE),
    }

    def vote_for(self, signer: bytes, signature: bytes = b"") -> Vote:
        """The Vote statement this certificate claims `signer` made."""
        return Vote(
            task=self.task,
            round=self.round,
            attempt=self.attempt,
            view=self.view,
            base=self.base,
            result=self.result,
            contributors_root=self.contributors_root,
            signer=signer,
            signature=signature,
        )

    def verify_votes(self, domain: Domain) -> tuple[bytes, ...]:
        """Verify every vote; returns the signers or raises InvalidSignature."""
        return tuple(self.vote_for(s, sig).verify(domain) for s, sig in self.votes)


@dataclass(frozen=True)
class Heartbeat(Signed):
    """Liveness and progress of a node (round and phase it is in)."""

    KIND: ClassVar[Kind] = Kind.HEARTBEAT
    task: bytes
    round: int
    time_ms: int
    phase: str
    signer: bytes
    signature: bytes = b""

    SCHEMA: ClassVar[dict[str, Checker]] = {
        "task": BYTES32,
        "round": U64,
        "time_ms": U64,
        "phase": text(MAX_PHASE_CHARS),
        "signer": ADDRESS,
        "signature": SIGNATURE,
    }


AnyMessage = Union[Update, Proposal, Vote, Commit, Heartbeat, Rewrap]
MESSAGE_TYPES: dict[int, type[Message]] = {
    int(cls.KIND): cls for cls in (Update, Proposal, Vote, Commit, Heartbeat, Rewrap)
}


def decode_message(data: bytes, *, max_bytes: int = MAX_MESSAGE_BYTES) -> AnyMessage:
    """Parse canonical bytes into a message, or raise InvalidMessage(reason).

    Checks, in order: size, msgpack well-formedness (with container limits so hostile
    input cannot make us allocate much), a known kind, exactly the schema's keys,
    every field's type and range, and canonical form (re-encoding is byte-identical).
    Signatures are not checked here: that needs a Domain (see `Signed.verify`).
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InvalidMessage("bad-type", "message must be bytes")
    data = bytes(data)
    if len(data) > max_bytes:
        raise InvalidMessage("oversize", f"{len(data)} bytes > {max_bytes}")
    try:
        wire = msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=True,
            max_bin_len=max_bytes,
            max_str_len=max_bytes,
            max_array_len=MAX_LIST_ITEMS,
            max_map_len=32,
            max_ext_len=0,
        )
    except Exception as exc:  # msgpack raises many types for bad bytes; all mean one thing
        raise InvalidMessage("malformed", f"not msgpack: {type(exc).__name__}") from None
    if type(wire) is not dict:
        raise InvalidMessage("malformed", "top level must be a map")
    kind = wire.get("kind")
    if type(kind) is not int or kind not in MESSAGE_TYPES:
        raise InvalidMessage("unknown-kind", repr(kind)[:32])
    cls = MESSAGE_TYPES[kind]
    expected = {*cls.SCHEMA, "kind"}
    keys = set(wire)
    if keys != expected:
        unknown = sorted(str(k) for k in keys - expected)
        missing = sorted(expected - keys)
        raise InvalidMessage(
            "unknown-field" if unknown else "missing-field", f"unknown={unknown} missing={missing}"
        )
    values = {key: check(key, wire[key]) for key, check in cls.SCHEMA.items()}
    message = cls(**values)
    if message.encode() != data:
        raise InvalidMessage("non-canonical", "bytes are not the canonical encoding")
    return message  # type: ignore[return-value]


def conflicting(a: Signed, b: Signed) -> bool:
    """True when a and b are equivocation: same signer and statement key, different body."""
    return (
        type(a) is type(b)
        and a.signer == b.signer  # type: ignore[attr-defined]
        and a.statement_key() == b.statement_key()
        and a.body() != b.body()
    )
