"""Messages: canonical codec, strict total decoding, signatures, equivocation."""

import json
import math
from dataclasses import replace
from pathlib import Path

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pfl.core import messages as m
from p2pfl.core.cid import blob_cid
from p2pfl.core.identity import NodeIdentity
from p2pfl.core.signing import Domain
from p2pfl.errors import InvalidMessage, InvalidSignature

VECTORS = json.loads((Path(__file__).parents[2] / "protocol/vectors/messages.json").read_text())
DOMAIN = Domain(chain_id=31337, contract=bytes.fromhex("5fbdb2315678afecb367f032d93f642f64180aa3"))
ALICE = NodeIdentity.from_seed(b"alice")
BOB = NodeIdentity.from_seed(b"bob")
TASK = bytes(range(32))
BASE = blob_cid(b"base model").to_bytes()
DELTA = blob_cid(b"delta").to_bytes()
RESULT = blob_cid(b"result").to_bytes()

cids = st.binary(min_size=1, max_size=64).map(lambda b: blob_cid(b).to_bytes())
addresses = st.binary(min_size=20, max_size=20)
u64 = st.integers(0, 2**64 - 1)
u32 = st.integers(0, 2**32 - 1)
sigs = st.binary(min_size=65, max_size=65)


def sorted_unique(pairs):
    seen = {}
    for k, v in pairs:
        seen.setdefault(k, v)
    return tuple(sorted(seen.items()))


updates = st.builds(
    m.Update,
    task=st.binary(min_size=32, max_size=32),
    round=u64,
    base=cids,
    delta=cids,
    n_samples=st.integers(1, 2**64 - 1),
    norm=st.floats(0, 1e300, allow_nan=False),
    inline=st.binary(max_size=300),
    signer=addresses,
    signature=sigs,
)
proposals = st.builds(
    m.Proposal,
    task=st.binary(min_size=32, max_size=32),
    round=u64,
    attempt=u32,
    view=u32,
    base=cids,
    included=st.lists(st.tuples(addresses, cids), max_size=5).map(sorted_unique),
    rejected=st.lists(st.tuples(addresses, st.text(max_size=20)), max_size=5).map(sorted_unique),
    rule=st.text(max_size=40),
    result=cids,
    contributors_root=st.binary(min_size=32, max_size=32),
    signer=addresses,
    signature=sigs,
)
votes = st.builds(
    m.Vote,
    task=st.binary(min_size=32, max_size=32),
    round=u64,
    attempt=u32,
    view=u32,
    base=cids,
    result=cids,
    contributors_root=st.binary(min_size=32, max_size=32),
    signer=addresses,
    signature=sigs,
)
commits = st.builds(
    m.Commit,
    task=st.binary(min_size=32, max_size=32),
    round=u64,
    attempt=u32,
    view=u32,
    base=cids,
    result=cids,
    contributors_root=st.binary(min_size=32, max_size=32),
    votes=st.lists(st.tuples(addresses, sigs), max_size=9).map(sorted_unique),
)
heartbeats = st.builds(
    m.Heartbeat,
    task=st.binary(min_size=32, max_size=32),
    round=u64,
    time_ms=u64,
    phase=st.text(max_size=32),
    signer=addresses,
    signature=sigs,
)
any_message = st.one_of(updates, proposals, votes, commits, heartbeats)


@given(any_message)
@settings(max_examples=300)
def test_round_trip_is_identity_and_canonical(msg):
    data = msg.encode()
    assert m.decode_message(data) == msg
    assert m.decode_message(data).encode() == data


@given(st.binary(max_size=400))
@settings(max_examples=2000)
def test_any_bytes_give_a_message_or_invalid_message(data):
    try:
        msg = m.decode_message(data)
    except InvalidMessage as exc:
        assert exc.reason
        return
    assert msg.encode() == data


@given(any_message, st.data())
@settings(max_examples=300)
def test_mutated_encodings_never_raise_other_errors(msg, data):
    raw = bytearray(msg.encode())
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        pos = data.draw(st.integers(0, max(len(raw) - 1, 0)))
        if op == "flip" and raw:
            raw[pos] ^= data.draw(st.integers(1, 255))
        elif op == "cut":
            del raw[pos:]
        else:
            raw.insert(pos, data.draw(st.integers(0, 255)))
    try:
        decoded = m.decode_message(bytes(raw))
    except InvalidMessage:
        return
    assert decoded.encode() == bytes(raw)


def _wire(msg, **changes):
    wire = msg.to_wire()
    wire.update(changes)
    return msgpack.packb(dict(sorted(wire.items())), use_bin_type=True)


def sample_update(**kw):
    fields = dict(
        task=TASK,
        round=3,
        base=BASE,
        delta=DELTA,
        n_samples=600,
        norm=1.5,
        inline=b"",
        signer=ALICE.address,
        signature=b"\x00" * 65,
    )
    fields.update(kw)
    return m.Update(**fields)


@pytest.mark.parametrize(
    "mutate, reason",
    [
        (lambda w: {**w, "extra": 1}, "unknown-field"),
        (lambda w: {k: v for k, v in w.items() if k != "norm"}, "missing-field"),
        (lambda w: {**w, "kind": 99}, "unknown-kind"),
        (lambda w: {**w, "round": -1}, "bad-field"),
        (lambda w: {**w, "inline": "text, not bin"}, "bad-field"),
        (lambda w: {**w, "round": True}, "bad-field"),
        (lambda w: {**w, "round": 3.0}, "bad-field"),
        (lambda w: {**w, "norm": math.nan}, "bad-field"),
        (lambda w: {**w, "norm": math.inf}, "bad-field"),
        (lambda w: {**w, "norm": 1}, "bad-field"),
        (lambda w: {**w, "n_samples": 0}, "bad-field"),
        (lambda w: {**w, "task": b"\x00" * 31}, "bad-field"),
        (lambda w: {**w, "task": "x" * 32}, "bad-field"),
        (lambda w: {**w, "base": b"\x01\x55\x12\x20" + b"\x00" * 31}, "bad-cid"),
        (lambda w: {**w, "inline": b"\x00" * (m.MAX_INLINE_BYTES + 1)}, "bad-field"),
    ],
)
def test_strict_decoding_reasons(mutate, reason):
    wire = mutate(sample_update().to_wire())
    data = msgpack.packb(dict(sorted(wire.items())), use_bin_type=True)
    with pytest.raises(InvalidMessage) as err:
        m.decode_message(data)
    assert err.value.reason == reason


def test_non_canonical_encodings_are_rejected():
    wire = sample_update().to_wire()
    unsorted = msgpack.packb(dict(reversed(list(wire.items()))), use_bin_type=True)
    with pytest.raises(InvalidMessage, match="non-canonical"):
        m.decode_message(unsorted)
    # float32 where the canonical form is float64 decodes to the same value but other bytes
    f32 = msgpack.packb(dict(sorted(wire.items())), use_bin_type=True, use_single_float=True)
    with pytest.raises(InvalidMessage, match="non-canonical"):
        m.decode_message(f32)


def test_oversize_and_garbage():
    with pytest.raises(InvalidMessage, match="oversize"):
        m.decode_message(b"\x00" * (m.MAX_MESSAGE_BYTES + 1))
    with pytest.raises(InvalidMessage, match="malformed"):
        m.decode_message(b"\xc1")
    with pytest.raises(InvalidMessage, match="malformed"):
        m.decode_message(msgpack.packb([1, 2, 3]))
    with pytest.raises(InvalidMessage, match="malformed"):  # a 4 GiB bin header, no data
        m.decode_message(b"\x81\xc6\xff\xff\xff\xff")


def test_proposal_lists_must_be_sorted_and_unique():
    p = m.Proposal(
        task=TASK,
        round=1,
        attempt=0,
        view=0,
        base=BASE,
        included=((b"\x02" * 20, DELTA), (b"\x01" * 20, DELTA)),
        rejected=(),
        rule="fedavg",
        result=RESULT,
        contributors_root=b"\x00" * 32,
        signer=ALICE.address,
        signature=b"\x00" * 65,
    )
    with pytest.raises(InvalidMessage, match="ascending"):
        m.decode_message(p.encode())


def test_sign_and_verify_every_signed_kind():
    u = sample_update().signed(ALICE.private_key, DOMAIN)
    assert u.verify(DOMAIN) == ALICE.address
    with pytest.raises(InvalidSignature):
        u.verify(Domain(1, DOMAIN.contract))  # another chain
    with pytest.raises(InvalidSignature):
        replace(u, n_samples=601).verify(DOMAIN)  # tampered
    with pytest.raises(InvalidSignature):
        replace(u, signer=BOB.address).verify(DOMAIN)  # claimed by someone else
    v = m.Vote(
        task=TASK,
        round=3,
        attempt=0,
        view=1,
        base=BASE,
        result=RESULT,
        contributors_root=b"\x07" * 32,
        signer=BOB.address,
    ).signed(BOB.private_key, DOMAIN)
    assert m.decode_message(v.encode()).verify(DOMAIN) == BOB.address
    c = m.Commit(
        task=TASK,
        round=3,
        attempt=0,
        view=1,
        base=BASE,
        result=RESULT,
        contributors_root=b"\x07" * 32,
        votes=((BOB.address, v.signature),),
    )
    assert c.verify_votes(DOMAIN) == (BOB.address,)
    with pytest.raises(InvalidSignature):
        replace(c, result=DELTA).verify_votes(DOMAIN)


def test_equivocation_is_detected_only_for_different_bodies_under_one_key():
    a = sample_update().signed(ALICE.private_key, DOMAIN)
    b = sample_update(delta=RESULT).signed(ALICE.private_key, DOMAIN)
    assert m.conflicting(a, b)
    assert not m.conflicting(a, a)
    assert not m.conflicting(
        a, sample_update(round=4, delta=RESULT).signed(ALICE.private_key, DOMAIN)
    )
    assert not m.conflicting(
        a, sample_update(delta=RESULT, signer=BOB.address).signed(BOB.private_key, DOMAIN)
    )


@pytest.mark.parametrize("vector", VECTORS["messages"], ids=lambda v: v["name"])
def test_vectors(vector):
    """Encodings, bodies, digests and signatures every implementation must reproduce."""
    msg = m.decode_message(bytes.fromhex(vector["encoding"]))
    assert msg.encode().hex() == vector["encoding"]
    domain = Domain(VECTORS["domain"]["chain_id"], bytes.fromhex(VECTORS["domain"]["contract"]))
    if "digest" in vector:
        assert msg.body().hex() == vector["body"]
        assert msg.digest(domain).hex() == vector["digest"]
        assert msg.verify(domain).hex() == vector["signer"]
        key = NodeIdentity.from_seed(vector["key_seed"].encode()).private_key
        assert msg.signed(key, domain).signature == msg.signature  # RFC 6979: deterministic


@pytest.mark.parametrize("vector", VECTORS["invalid"], ids=lambda v: v["name"])
def test_invalid_vectors(vector):
    with pytest.raises(InvalidMessage) as err:
        m.decode_message(bytes.fromhex(vector["encoding"]))
    assert err.value.reason == vector["reason"]
