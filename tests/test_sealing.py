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
