"""Statement signing: digests, recovery, low-s, domain separation."""

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pfl.core import signing
from p2pfl.core.signing import Domain, Kind
from p2pfl.errors import InvalidMessage, InvalidSignature

KEY = bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")
DOMAIN = Domain(chain_id=131277322940537, contract=bytes.fromhex("11" * 20))


def typed_data(kind, task, round_, attempt, view, body, domain=DOMAIN):
    return {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"},
            ],
            "Statement": [
                {"name": "kind", "type": "uint8"},
                {"name": "task", "type": "bytes32"},
                {"name": "round", "type": "uint64"},
                {"name": "attempt", "type": "uint32"},
                {"name": "view", "type": "uint32"},
                {"name": "body", "type": "bytes32"},
            ],
        },
        "primaryType": "Statement",
        "domain": {
            "name": "p2pfl",
            "version": "1",
            "chainId": domain.chain_id,
            "verifyingContract": "0x" + domain.contract.hex(),
        },
        "message": {
            "kind": kind,
            "task": task,
            "round": round_,
            "attempt": attempt,
            "view": view,
            "body": body,
        },
    }


@given(
    kind=st.sampled_from(list(Kind)),
    task=st.binary(min_size=32, max_size=32),
    round_=st.integers(0, 2**64 - 1),
    attempt=st.integers(0, 2**32 - 1),
    view=st.integers(0, 2**32 - 1),
    body=st.binary(min_size=32, max_size=32),
)
@settings(max_examples=40, deadline=None)
def test_digest_matches_eth_account_eip712(kind, task, round_, attempt, view, body):
    """Our hand-written EIP-712 hash equals eth-account's reference implementation."""
    ours = signing.statement_digest(DOMAIN, int(kind), task, round_, attempt, view, body)
    signed = Account.sign_message(
        encode_typed_data(full_message=typed_data(int(kind), task, round_, attempt, view, body)),
        KEY,
    )
    assert signing.recover_signer(ours, signing.sign_digest(KEY, ours)) == signing.address_of(KEY)
    # eth-account signs the same digest it computes: compare recovered digests via signature.
    assert Account._recover_hash(ours, signature=signed.signature) == Account.from_key(KEY).address


def test_sign_recover_roundtrip_and_v_range():
    digest = signing.statement_digest(DOMAIN, Kind.VOTE, b"\x01" * 32, 7, 0, 1, b"\x02" * 32)
    sig = signing.sign_digest(KEY, digest)
    assert len(sig) == 65 and sig[64] in (27, 28)
    assert int.from_bytes(sig[32:64], "big") <= signing.SECP256K1_HALF_N
    assert signing.recover_signer(digest, sig) == signing.address_of(KEY)


def test_high_s_twin_is_rejected():
    digest = signing.statement_digest(DOMAIN, Kind.UPDATE, b"\x01" * 32, 1, 0, 0, b"\x03" * 32)
    sig = signing.sign_digest(KEY, digest)
    s = int.from_bytes(sig[32:64], "big")
    twin = sig[:32] + (signing.SECP256K1_N - s).to_bytes(32, "big") + bytes([sig[64] ^ 1])
    with pytest.raises(InvalidSignature):
        signing.recover_signer(digest, twin)


def test_domain_separation_changes_digest():
    args = (Kind.VOTE, b"\x01" * 32, 7, 0, 0, b"\x02" * 32)
    base = signing.statement_digest(DOMAIN, *args)
    assert signing.statement_digest(Domain(1, DOMAIN.contract), *args) != base
    assert signing.statement_digest(Domain(DOMAIN.chain_id, b"\x12" * 20), *args) != base
    assert signing.statement_digest(DOMAIN, Kind.UPDATE, *args[1:]) != base
    assert signing.statement_digest(DOMAIN, Kind.VOTE, b"\x01" * 32, 8, 0, 0, b"\x02" * 32) != base


@given(st.binary(max_size=80))
def test_recover_rejects_garbage_signatures(sig):
    digest = b"\x05" * 32
    try:
        signer = signing.recover_signer(digest, sig)
    except InvalidSignature:
        return
    assert len(signer) == 20


def test_vote_body_is_abi_encode_hash():
    from eth_abi import encode
    from eth_utils import keccak

    a, b, c = b"\x01" * 32, b"\x02" * 32, b"\x03" * 32
    assert signing.vote_body(a, b, c) == keccak(
        encode(["bytes32", "bytes32", "bytes32"], [a, b, c])
    )


def test_vote_digest_is_the_vote_statement_everywhere():
    """One definition: a Vote message, the chain client and the devnet all sign vote_digest."""
    from p2pfl.core.cid import blob_cid
    from p2pfl.core.messages import Vote

    task, root = b"\x01" * 32, b"\x03" * 32
    base, result = blob_cid(b"base"), blob_cid(b"result")
    digest = signing.vote_digest(DOMAIN, task, 7, 2, 1, base.digest, result.digest, root)
    body = signing.vote_body(base.digest, result.digest, root)
    assert digest == signing.statement_digest(DOMAIN, Kind.VOTE, task, 7, 2, 1, body)
    vote = Vote(task, 7, 2, 1, base.to_bytes(), result.to_bytes(), root, signing.address_of(KEY))
    assert vote.digest(DOMAIN) == digest


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=32, max_size=32), st.binary(min_size=32, max_size=32))
def test_signatures_and_addresses_are_eth_accounts(secret, digest):
    """libsecp256k1 called directly gives what eth-account signs and recovers (RFC 6979
    nonces: the very same bytes), for any key and digest."""
    from eth_keys import keys

    if not 0 < int.from_bytes(secret, "big") < signing.SECP256K1_N:
        with pytest.raises(InvalidMessage):
            signing.sign_digest(secret, digest)
        return
    reference = keys.PrivateKey(secret).sign_msg_hash(digest)
    signature = signing.sign_digest(secret, digest)
    assert signature == reference.to_bytes()[:64] + bytes([reference.v + 27])
    address = keys.PrivateKey(secret).public_key.to_canonical_address()
    assert signing.address_of(secret) == address
    assert signing.recover_signer(digest, signature) == address


def test_keccak_runs_on_the_c_backend():
    """Importing p2pfl points eth-hash at pysha3 (unless the user chose a backend)."""
    import os

    from eth_hash.auto import keccak as auto_keccak
    from eth_utils import keccak

    assert keccak(b"") == bytes.fromhex(
        "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"
    )
    assert os.environ.get("ETH_HASH_BACKEND") == "pysha3"
    assert type(auto_keccak.hasher.__self__).__name__ == "PySha3Backend"


def test_a_signer_is_recovered_once_per_signed_statement():
    """The same (digest, signature) bytes recover from a cache, the same signer; a
    signature that does not recover raises every time and is not kept."""
    digest = bytes(range(32))
    signature = signing.sign_digest(KEY, digest)
    signing._recover.cache_clear()
    first = signing.recover_signer(digest, signature)
    assert signing.recover_signer(bytearray(digest), bytearray(signature)) == first
    assert signing._recover.cache_info().hits == 1
    assert first == signing.address_of(KEY)
    # Another digest under the same signature recovers another (wrong) address: the
    # cache keys on both.
    assert signing.recover_signer(bytes(32), signature) != first
    unrecoverable = (5).to_bytes(32, "big") + (7).to_bytes(32, "big") + bytes([27])
    for _ in range(2):
        with pytest.raises(InvalidSignature):
            signing.recover_signer(digest, unrecoverable)
    assert signing._recover.cache_info().currsize == 2
