"""Sealing: authenticated encryption of bytes under a fresh key, and that key wrapped to
X25519 public keys (issue #12).

- `seal(key, plaintext, aad)` encrypts with XChaCha20-Poly1305 (IETF, libsodium through
  pynacl): `nonce (24 bytes) || ciphertext || tag (16 bytes)`. The nonce is random, so
  sealing the same bytes twice gives two different ciphertexts; `open_sealed` needs the
  same key and `aad` (associated data: authenticated, not encrypted, e.g. the task and
  round a delta belongs to, so a ciphertext cannot be replayed into another context).
- `wrap_key(key, recipient)` is a libsodium sealed box (an ephemeral X25519 key, the
  recipient's public key, XSalsa20-Poly1305): `WRAP_BYTES` = 80 bytes for a 32-byte key;
  only the holder of the recipient's X25519 private key (`Identity.x25519_private_key`)
  opens it with `unwrap_key`.

Both raise `SealError` (with a short `reason`) on anything that does not open: a wrong
key, a tampered byte, a truncated input. This module draws fresh randomness, so it sits
beside the layers (like `p2pfl.keystore`), not in the pure `p2pfl.core`.
"""

from __future__ import annotations

from nacl import bindings
from nacl.exceptions import CryptoError
from nacl.public import PrivateKey, PublicKey, SealedBox
from nacl.utils import random as random_bytes

from p2pfl.core.tensors import DEFAULT_MAX_BYTES, is_float16_packed, unpack_float16
from p2pfl.errors import P2PFLError

KEY_BYTES = bindings.crypto_aead_xchacha20poly1305_ietf_KEYBYTES  # 32
NONCE_BYTES = bindings.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES  # 24
TAG_BYTES = bindings.crypto_aead_xchacha20poly1305_ietf_ABYTES  # 16
# What sealing adds to a plaintext.
SEAL_OVERHEAD = NONCE_BYTES + TAG_BYTES
# A wrapped key: the key (32) + a sealed box's overhead (ephemeral public key 32, MAC 16).
WRAP_BYTES = bindings.crypto_box_SEALBYTES + KEY_BYTES
X25519_KEY_BYTES = bindings.crypto_box_PUBLICKEYBYTES  # 32


class SealError(P2PFLError):
    """Sealed bytes or a wrapped key that do not open; `reason` is a short tag."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


def new_key() -> bytes:
    """A fresh random 32-byte content key (one per sealed object, never reused)."""
    return random_bytes(KEY_BYTES)


def _check_key(key: bytes) -> None:
    if not isinstance(key, (bytes, bytearray)) or len(key) != KEY_BYTES:
        raise SealError("bad-key", f"a content key is {KEY_BYTES} bytes")


def seal(key: bytes, plaintext: bytes, aad: bytes = b"") -> bytes:
    """`nonce || XChaCha20-Poly1305(key, nonce, plaintext, aad)` with a random nonce."""
    _check_key(key)
    nonce = random_bytes(NONCE_BYTES)
    return nonce + bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
        bytes(plaintext), bytes(aad) or None, nonce, bytes(key)
    )


def seal_with_nonce(key: bytes, nonce: bytes, plaintext: bytes, aad: bytes = b"") -> bytes:
    """`seal` with a given nonce: for test vectors only (a nonce must never repeat under
    one key; `seal` draws a fresh one)."""
    _check_key(key)
    if len(nonce) != NONCE_BYTES:
        raise SealError("bad-nonce", f"a nonce is {NONCE_BYTES} bytes")
    return bytes(nonce) + bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
        bytes(plaintext), bytes(aad) or None, bytes(nonce), bytes(key)
    )


def open_sealed(key: bytes, sealed: bytes, aad: bytes = b"") -> bytes:
    """The plaintext of `seal(key, plaintext, aad)`; SealError if anything differs."""
    _check_key(key)
    if len(sealed) < SEAL_OVERHEAD:
        raise SealError("truncated", f"{len(sealed)} bytes, a sealed object has >= {SEAL_OVERHEAD}")
    nonce, body = bytes(sealed[:NONCE_BYTES]), bytes(sealed[NONCE_BYTES:])
    try:
        return bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
            body, bytes(aad) or None, nonce, bytes(key)
        )
    except CryptoError:
        raise SealError(
            "undecryptable", "wrong key or associated data, or tampered bytes"
        ) from None


def open_delta(
    key: bytes, sealed: bytes, aad: bytes = b"", max_bytes: int = DEFAULT_MAX_BYTES
) -> bytes:
    """A sealed delta's tensors bytes: `open_sealed`, then widened when the plaintext is a
    float16 packing (a task with `delta_float16` seals its deltas packed: spec sealing.md);
    `InvalidTensors("tensors-packing")` for a bad packing. The bytes are not decoded here."""
    plaintext = open_sealed(key, sealed, aad)
    if is_float16_packed(plaintext):
        return unpack_float16(plaintext, max_bytes)
    return plaintext


def wrap_key(key: bytes, recipient: bytes) -> bytes:
    """`key` in a sealed box to the X25519 public key `recipient` (WRAP_BYTES long)."""
    _check_key(key)
    if len(recipient) != X25519_KEY_BYTES:
        raise SealError("bad-recipient", f"an X25519 public key is {X25519_KEY_BYTES} bytes")
    try:
        return bytes(SealedBox(PublicKey(bytes(recipient))).encrypt(bytes(key)))
    except (CryptoError, RuntimeError):
        # libsodium refuses a low-order point (the shared secret would be all zeros);
        # pynacl reports it as "Unexpected library error". A registry entry is input.
        raise SealError("bad-recipient", "not a usable X25519 public key") from None


def usable_recipient(recipient: bytes) -> bool:
    """Whether keys can be wrapped to `recipient` (a registered X25519 key): 32 bytes and
    not a point libsodium refuses. The same answer on every node, so a committee agrees on
    which members can never hold a wrap (spec sealing.md, section 4)."""
    try:
        wrap_key(bytes(KEY_BYTES), recipient)
    except SealError:
        return False
    return True


def unwrap_key(wrapped: bytes, private_key: PrivateKey) -> bytes:
    """The content key in `wrapped`, opened with our X25519 private key; SealError when it
    was not wrapped to us, is tampered or is not a key."""
    if len(wrapped) != WRAP_BYTES:
        raise SealError("bad-wrap", f"{len(wrapped)} bytes, a wrapped key is {WRAP_BYTES}")
    try:
        key = SealedBox(private_key).decrypt(bytes(wrapped))
    except CryptoError:
        raise SealError("unwrap-failed", "not wrapped to this key, or tampered") from None
    _check_key(key)
    return bytes(key)
