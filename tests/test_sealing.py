"""p2pfl.sealing: what opens, and every way it refuses to."""

import pytest
from nacl.public import PrivateKey

from p2pfl.sealing import (
    SEAL_OVERHEAD,
    WRAP_BYTES,
    SealError,
    new_key,
    open_sealed,
    seal,
    unwrap_key,
    wrap_key,
)


def test_seal_round_trip_and_fresh_nonces() -> None:
    key = new_key()
    data = bytes(range(256)) * 10
    a, b = seal(key, data, b"ctx"), seal(key, data, b"ctx")
    assert a != b  # random nonces
    assert len(a) == len(data) + SEAL_OVERHEAD
    assert open_sealed(key, a, b"ctx") == data == open_sealed(key, b, b"ctx")
    assert data not in a


@pytest.mark.parametrize("change", ["key", "aad", "flip", "truncate"])
def test_open_refuses(change: str) -> None:
    key = new_key()
    sealed = seal(key, b"delta bytes", b"task|round")
    other_key, aad = key, b"task|round"
    if change == "key":
        other_key = new_key()
    elif change == "aad":
        aad = b"task|other round"
    elif change == "flip":
        sealed = sealed[:30] + bytes([sealed[30] ^ 1]) + sealed[31:]
    else:
        sealed = sealed[: SEAL_OVERHEAD - 1]
    with pytest.raises(SealError) as err:
        open_sealed(other_key, sealed, aad)
    assert err.value.reason in {"undecryptable", "truncated"}


def test_wrap_opens_only_for_its_recipient() -> None:
    key, alice, bob = new_key(), PrivateKey.generate(), PrivateKey.generate()
    wrapped = wrap_key(key, bytes(alice.public_key))
    assert len(wrapped) == WRAP_BYTES
    assert unwrap_key(wrapped, alice) == key
    with pytest.raises(SealError, match="unwrap-failed"):
        unwrap_key(wrapped, bob)
    with pytest.raises(SealError, match="unwrap-failed"):
        unwrap_key(wrapped[:-1] + bytes([wrapped[-1] ^ 1]), alice)
    with pytest.raises(SealError, match="bad-wrap"):
        unwrap_key(wrapped[:-1], alice)
    with pytest.raises(SealError, match="bad-recipient"):
        wrap_key(key, b"short")
    with pytest.raises(SealError, match="bad-key"):
        seal(b"short", b"x")


# --- vectors (protocol/vectors/sealing.json, spec protocol/spec/sealing.md) -----------------


def _sealing_vectors() -> dict:
    import json
    from pathlib import Path

    return json.loads((Path(__file__).parents[1] / "protocol/vectors/sealing.json").read_text())


def test_sealing_vectors_seal_and_open() -> None:
    from p2pfl.sealing import seal_with_nonce

    doc = _sealing_vectors()
    for case in doc["seal"]:
        key, nonce, plain, aad, sealed = (
            bytes.fromhex(case[k]) for k in ("key", "nonce", "plaintext", "aad", "sealed")
        )
        assert seal_with_nonce(key, nonce, plain, aad) == sealed, case["name"]
        assert open_sealed(key, sealed, aad) == plain


def test_sealing_vectors_delta_aad_and_wraps() -> None:
    from p2pfl.core.identity import NodeIdentity
    from p2pfl.core.sealed import delta_aad

    doc = _sealing_vectors()
    d = doc["delta_aad"]
    aad = delta_aad(bytes.fromhex(d["task"]), d["round"], bytes.fromhex(d["signer"]))
    assert aad.hex() == d["aad"]
    for case in doc["wrap"]:
        recipient = NodeIdentity.from_seed(case["recipient_seed"].encode())
        assert bytes(recipient.x25519_private_key).hex() == case["recipient_x25519_private"]
        private = PrivateKey(bytes.fromhex(case["recipient_x25519_private"]))
        assert unwrap_key(bytes.fromhex(case["wrap"]), private).hex() == case["key"]


def test_the_sealed_update_vector_opens_for_its_member() -> None:
    """messages.json's `update-sealed`: bob unwraps the key, the inline bytes open under
    the delta's aad to canonical tensors, and the CID names the sealed bytes."""
    import json
    from pathlib import Path

    from p2pfl.core.cid import CID, blob_cid
    from p2pfl.core.identity import NodeIdentity
    from p2pfl.core.messages import WRAP_BYTES as CORE_WRAP_BYTES
    from p2pfl.core.messages import decode_message
    from p2pfl.core.sealed import delta_aad, wrap_for
    from p2pfl.core.tensors import decode_tensors

    assert CORE_WRAP_BYTES == WRAP_BYTES
    doc = json.loads((Path(__file__).parents[1] / "protocol/vectors/messages.json").read_text())
    entry = next(m for m in doc["messages"] if m["name"] == "update-sealed")
    u = decode_message(bytes.fromhex(entry["encoding"]))
    bob = NodeIdentity.from_seed(b"bob")
    key = unwrap_key(wrap_for(u.wraps, bob.address), bob.x25519_private_key)  # type: ignore[arg-type, union-attr]
    assert blob_cid(u.inline) == CID.parse(u.delta)  # type: ignore[union-attr]
    plain = open_sealed(key, u.inline, delta_aad(u.task, u.round, u.signer))  # type: ignore[union-attr]
    assert decode_tensors(plain)["w"].tolist() == [0.5, -1.0]


def test_a_low_order_or_malformed_recipient_is_a_seal_error_not_a_crash() -> None:
    from p2pfl.core.identity import NodeIdentity
    from p2pfl.sealing import usable_recipient

    for bad in (bytes(32), bytes([1]) + bytes(31)):
        with pytest.raises(SealError) as info:
            wrap_key(new_key(), bad)
        assert info.value.reason == "bad-recipient"
        assert not usable_recipient(bad)
    assert not usable_recipient(b"short")
    assert usable_recipient(NodeIdentity.from_seed(b"x").x25519_public_key)
