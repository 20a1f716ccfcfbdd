"""Private tasks: the task model key, sealed models and the key's wraps (issue #12 item 3).

A private task's models travel sealed under one **task model key** (`p2pfl.sealing`):

- `key_digest(task, key)` is what the ledger stores (`modelKeyDigest`) so that anyone who
  unwraps a key can tell it is this task's (a wrap replayed from another task, or posted
  by a liar, does not match);
- `seal_model(key, task, blob)` is deterministic: the nonce is a keyed hash of the
  plaintext, so every committee member sealing the same aggregate gets the same bytes and
  the same CID (the chain's digest names the sealed blob). It leaks only whether two
  models are equal. `open_model` authenticates and decrypts; the task id is the
  associated data, so a model of another task does not open here;
- `open_wraps(wraps, private_key, task, digest)` finds, among the wraps posted for us, one
  that opens with our X25519 key and holds this task's key, and says why none did.

protocol/spec/chain.md ("Private tasks") is the normative text.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from nacl import bindings
from nacl.public import PrivateKey

from p2pfl.errors import P2PFLError
from p2pfl.sealing import KEY_BYTES, NONCE_BYTES, SealError, open_sealed, unwrap_key, wrap_key

KEY_DIGEST_TAG = b"p2pfl-task-model-key"
MODEL_NONCE_TAG = b"p2pfl-model-nonce"


class AccessError(P2PFLError):
    """No usable task model key: no wrap for us, or none that opens and matches."""


def key_digest(task: bytes, key: bytes) -> bytes:
    """sha256("p2pfl-task-model-key" || task || key): the ledger's modelKeyDigest."""
    if len(key) != KEY_BYTES or len(task) != 32:
        raise SealError("bad-key", f"a task is 32 bytes and a task model key {KEY_BYTES}")
    return hashlib.sha256(KEY_DIGEST_TAG + bytes(task) + bytes(key)).digest()


def seal_model(key: bytes, task: bytes, blob: bytes) -> bytes:
    """`nonce || XChaCha20-Poly1305(key, nonce, blob, aad=task)` with
    nonce = BLAKE2b-192(key=key, "p2pfl-model-nonce" || blob): deterministic, so that
    equal models seal to equal bytes (one CID for the whole committee)."""
    key_digest(task, key)  # checks both lengths
    nonce = hashlib.blake2b(
        MODEL_NONCE_TAG + bytes(blob), key=bytes(key), digest_size=NONCE_BYTES
    ).digest()
    return nonce + bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
        bytes(blob), bytes(task), nonce, bytes(key)
    )


def open_model(key: bytes, task: bytes, sealed: bytes) -> bytes:
    """The model blob of `seal_model(key, task, blob)`; SealError if it does not open."""
    return open_sealed(key, sealed, bytes(task))


def wrap_for(key: bytes, enc_key: bytes) -> bytes:
    """The task model key wrapped to an X25519 public key (what postKeyWrap carries)."""
    return wrap_key(key, enc_key)


@dataclass(frozen=True)
class PostedWrap:
    """One KeyWrapped event: who posted a wrap for whom, and where."""

    task: bytes
    recipient: bytes
    poster: bytes
    enc_key: bytes
    wrap: bytes
    block_number: int


def open_wraps(
    wraps: Iterable[PostedWrap], private_key: PrivateKey, task: bytes, digest: bytes
) -> bytes:
    """The task model key from the first wrap that opens with `private_key` and matches the
    ledger's `digest`; AccessError listing why each wrap failed when none does. Replayed
    and duplicate wraps are harmless: they are tried like any other."""
    ours = bytes(private_key.public_key)
    reasons: list[str] = []
    for w in wraps:
        where = f"wrap by 0x{w.poster.hex()} at block {w.block_number}"
        if w.enc_key != ours:
            reasons.append(f"{where} is for another key (0x{w.enc_key.hex()[:16]}...)")
            continue
        try:
            key = unwrap_key(w.wrap, private_key)
        except SealError as exc:
            reasons.append(f"{where} does not open with our key ({exc.reason})")
            continue
        if key_digest(task, key) != digest:
            reasons.append(f"{where} holds a key that is not this task's")
            continue
        return key
    if not reasons:
        raise AccessError(
            f"no key wrap posted for us on task 0x{task.hex()} yet: a participant's node "
            "posts one after a purchase; wait for it and retry"
        )
    raise AccessError("no usable key wrap: " + "; ".join(reasons))
