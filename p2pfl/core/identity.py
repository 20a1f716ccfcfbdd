"""Node identity: one secp256k1 key -> Ethereum address and libp2p peer ID.

The same private key signs protocol statements (verified on-chain by `ecrecover`)
and authenticates the libp2p host (Noise handshake), so a peer ID seen on the wire
and an address seen on-chain name the same node. Pure derivations only: drawing a new
key and the encrypted keystore file live in `p2pfl.keystore`.

The node's X25519 encryption key is derived from the secp256k1 key with domain
separation (keccak256("p2pfl/x25519/v1" ‖ key)): one secret to back up, nothing lost
if the keystore is the only file a user keeps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import base58
from eth_keys import keys
from eth_utils import keccak, to_checksum_address
from nacl.public import PrivateKey as X25519PrivateKey

from p2pfl.errors import KeystoreError

# libp2p PublicKey protobuf: field 1 (KeyType) = 2 (Secp256k1), field 2 (Data) = 33-byte
# compressed point. Encoded keys of <= 42 bytes use the identity multihash (peer-id spec).
_LIBP2P_SECP256K1_PREFIX = bytes([0x08, 0x02, 0x12, 0x21])
_IDENTITY_MULTIHASH = 0x00
X25519_DERIVATION_TAG = b"p2pfl/x25519/v1"


def peer_id_bytes_from_public(compressed_public_key: bytes) -> bytes:
    """Binary libp2p peer ID (identity multihash of the protobuf-encoded key)."""
    if len(compressed_public_key) != 33:
        raise KeystoreError("secp256k1 compressed public key must be 33 bytes")
    encoded = _LIBP2P_SECP256K1_PREFIX + compressed_public_key
    return bytes([_IDENTITY_MULTIHASH, len(encoded)]) + encoded


def peer_id_from_public(compressed_public_key: bytes) -> str:
    """Base58 peer ID string ("16Uiu2...") as libp2p prints it."""
    return base58.b58encode(peer_id_bytes_from_public(compressed_public_key)).decode()


def public_key_from_peer_id(peer_id: str | bytes) -> bytes:
    """The 33-byte compressed secp256k1 key inside a peer ID, or KeystoreError."""
    raw = base58.b58decode(peer_id) if isinstance(peer_id, str) else bytes(peer_id)
    if len(raw) != 39 or raw[:2] != bytes([0, 37]) or raw[2:6] != _LIBP2P_SECP256K1_PREFIX:
        raise KeystoreError("not a secp256k1 identity peer ID")
    return raw[6:]


def address_from_peer_id(peer_id: str | bytes) -> bytes:
    """The Ethereum address of the node behind a secp256k1 peer ID."""
    compressed = public_key_from_peer_id(peer_id)
    try:
        public = keys.PublicKey.from_compressed_bytes(compressed)
    except Exception as exc:  # eth_keys raises several types for bad points
        raise KeystoreError(f"invalid public key in peer ID: {exc}") from None
    return public.to_canonical_address()


@dataclass(frozen=True)
class NodeIdentity:
    """A node's keys. `private_key` is 32 raw secp256k1 bytes; what derives from it is
    derived once (a delta fetch reads the X25519 key, a signature the address)."""

    private_key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.private_key) != 32:
            raise KeystoreError("private key must be 32 bytes")
        keys.PrivateKey(self.private_key)  # validates the scalar range

    @classmethod
    def from_seed(cls, seed: bytes) -> NodeIdentity:
        """Deterministic identity for simulations and tests; never for real keys."""
        return cls(keccak(b"p2pfl/test-identity/v1" + seed))

    @cached_property
    def address(self) -> bytes:
        return keys.PrivateKey(self.private_key).public_key.to_canonical_address()

    @cached_property
    def checksum_address(self) -> str:
        return to_checksum_address(self.address)

    @cached_property
    def compressed_public_key(self) -> bytes:
        return keys.PrivateKey(self.private_key).public_key.to_compressed_bytes()

    @cached_property
    def peer_id(self) -> str:
        return peer_id_from_public(self.compressed_public_key)

    @cached_property
    def x25519_private_key(self) -> X25519PrivateKey:
        return X25519PrivateKey(keccak(X25519_DERIVATION_TAG + self.private_key))

    @cached_property
    def x25519_public_key(self) -> bytes:
        return bytes(self.x25519_private_key.public_key)
