"""Signed protocol statements: EIP-712 digests that `ecrecover` checks on-chain.

Every signed message (Update, Proposal, Vote, Heartbeat) is a *statement*:

    Statement(uint8 kind, bytes32 task, uint64 round, uint32 attempt, uint32 view, bytes32 body)

hashed per EIP-712 under the domain (name "p2pfl", version "1", chainId, RoundLedger
address). Domain separation therefore binds chain, contract, task and round; `kind`
keeps an update from ever verifying as a vote. `body` is keccak256 of the message's
canonical bytes, except for votes, whose body is keccak256(abi.encode(base, result,
contributorsRoot)) so that the contract can rebuild it from `commitRound` arguments.

Signatures are 65 bytes r || s || v with v in {27, 28} and low s (EIP-2): a high-s twin
of a valid signature is rejected here and on-chain, so evidence cannot be replayed by
malleating it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from enum import IntEnum

import coincurve
from eth_utils import keccak

from p2pfl.errors import InvalidMessage, InvalidSignature

SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
SECP256K1_HALF_N = SECP256K1_N // 2
SIGNATURE_SIZE = 65

# Signers recovered, kept by (digest, signature): ~150 bytes each.
RECOVERED_CACHE_SIZE = 8192

UINT64_MAX = 2**64 - 1
UINT32_MAX = 2**32 - 1


class Kind(IntEnum):
    """Statement kinds; the numbers are part of the signed bytes and of the contract."""

    UPDATE = 1
    PROPOSAL = 2
    VOTE = 3
    COMMIT = 4  # unsigned certificate of votes; never signed itself
    HEARTBEAT = 5
    REWRAP = 6  # a sealed update's key wrapped for a re-drawn committee; not slashable


DOMAIN_NAME = "p2pfl"
DOMAIN_VERSION = "1"
EIP712_DOMAIN_TYPEHASH = keccak(
    b"EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
)
STATEMENT_TYPEHASH = keccak(
    b"Statement(uint8 kind,bytes32 task,uint64 round,uint32 attempt,uint32 view,bytes32 body)"
)


def _word(value: int) -> bytes:
    return value.to_bytes(32, "big")


def _check_bytes(name: str, value: bytes, size: int) -> None:
    if not isinstance(value, (bytes, bytearray)) or len(value) != size:
        raise InvalidMessage("bad-field", f"{name} must be {size} bytes")


@dataclass(frozen=True)
class Domain:
    """Where a signature is valid: one chain, one RoundLedger contract."""

    chain_id: int
    contract: bytes  # 20-byte RoundLedger address

    def __post_init__(self) -> None:
        _check_bytes("contract", self.contract, 20)
        if not 0 <= self.chain_id < 2**256:
            raise InvalidMessage("bad-field", "chain_id out of range")

    def separator(self) -> bytes:
        """EIP-712 domainSeparator (computed once per domain: every signature uses it)."""
        return _separator(self.chain_id, self.contract)


@functools.lru_cache(maxsize=64)
def _separator(chain_id: int, contract: bytes) -> bytes:
    return keccak(
        EIP712_DOMAIN_TYPEHASH
        + keccak(DOMAIN_NAME.encode())
        + keccak(DOMAIN_VERSION.encode())
        + _word(chain_id)
        + bytes(12)
        + contract
    )


def statement_digest(
    domain: Domain, kind: int, task: bytes, round: int, attempt: int, view: int, body: bytes
) -> bytes:
    """The 32-byte EIP-712 digest that a node signs for one statement."""
    _check_bytes("task", task, 32)
    _check_bytes("body", body, 32)
    if not 0 <= kind <= 255:
        raise InvalidMessage("bad-field", "kind out of range")
    if not 0 <= round <= UINT64_MAX:
        raise InvalidMessage("bad-field", "round out of range")
    if not (0 <= attempt <= UINT32_MAX and 0 <= view <= UINT32_MAX):
        raise InvalidMessage("bad-field", "attempt/view out of range")
    struct_hash = keccak(
        STATEMENT_TYPEHASH + _word(kind) + task + _word(round) + _word(attempt) + _word(view) + body
    )
    return keccak(b"\x19\x01" + domain.separator() + struct_hash)


def vote_body(base: bytes, result: bytes, contributors_root: bytes) -> bytes:
    """Body of a VOTE statement: keccak256(abi.encode(base, result, contributorsRoot))."""
    _check_bytes("base", base, 32)
    _check_bytes("result", result, 32)
    _check_bytes("contributors_root", contributors_root, 32)
    return keccak(base + result + contributors_root)


def vote_digest(
    domain: Domain,
    task: bytes,
    round: int,
    attempt: int,
    view: int,
    base: bytes,
    result: bytes,
    contributors_root: bytes,
) -> bytes:
    """The digest a committee member signs for a VOTE: the one definition of the vote
    statement, shared by `messages.Vote`, the chain client (`commitRound` arguments) and
    the devnet. `base` and `result` are the 32-byte digests the contract sees (a Vote
    message carries CIDs and passes their digests).
    """
    body = vote_body(base, result, contributors_root)
    return statement_digest(domain, Kind.VOTE, task, round, attempt, view, body)


def sign_digest(private_key: bytes, digest: bytes) -> bytes:
    """Sign a 32-byte digest; returns r || s || v with v in {27, 28} and low s."""
    secret = _secret(private_key)
    _check_bytes("digest", digest, 32)
    rsv = secret.sign_recoverable(bytes(digest), hasher=None)
    s, v = int.from_bytes(rsv[32:64], "big"), rsv[64]
    if s > SECP256K1_HALF_N:  # normalise; libsecp256k1 already emits low s
        s = SECP256K1_N - s
        v ^= 1
    return rsv[:32] + _word(s) + bytes([v + 27])


def recover_signer(digest: bytes, signature: bytes) -> bytes:
    """Return the 20-byte address that signed `digest`, or raise InvalidSignature."""
    if not isinstance(signature, (bytes, bytearray)) or len(signature) != SIGNATURE_SIZE:
        raise InvalidSignature("signature must be 65 bytes")
    _check_bytes("digest", digest, 32)
    r = int.from_bytes(signature[0:32], "big")
    s = int.from_bytes(signature[32:64], "big")
    v = signature[64]
    if v not in (27, 28):
        raise InvalidSignature("v must be 27 or 28")
    if not (0 < r < SECP256K1_N and 0 < s <= SECP256K1_HALF_N):
        raise InvalidSignature("r/s out of range (high-s signatures are rejected)")
    return _recover(bytes(digest), bytes(signature))


@functools.lru_cache(maxsize=RECOVERED_CACHE_SIZE)
def _recover(digest: bytes, signature: bytes) -> bytes:
    """The signer of a checked (digest, signature); a pure function of its bytes, so a
    process that sees the same signed statement again (a node checking a pushed update
    then the round's pulled copy, or the nodes a simulation shard hosts checking one
    certificate) recovers it once. Failures raise and are not kept."""
    try:
        public = coincurve.PublicKey.from_signature_and_message(
            signature[:64] + bytes([signature[64] - 27]), digest, hasher=None
        )
    except ValueError as exc:
        raise InvalidSignature(f"cannot recover: {exc}") from None
    return _address(public)


def _address(public: coincurve.PublicKey) -> bytes:
    """The Ethereum address of a public key: the last 20 bytes of keccak256(x || y)."""
    return keccak(public.format(compressed=False)[1:])[-20:]


def address_of(private_key: bytes) -> bytes:
    """The 20-byte Ethereum address of a secp256k1 private key."""
    return _address(_secret(private_key).public_key)


def _secret(private_key: bytes) -> coincurve.PrivateKey:
    """A 32-byte secp256k1 private key; InvalidMessage if it is not one (0, or >= n)."""
    _check_bytes("private_key", private_key, 32)
    try:
        return coincurve.PrivateKey(bytes(private_key))
    except ValueError as exc:
        raise InvalidMessage("bad-field", f"private_key: {exc}") from None
