"""Private tasks: the task model key, sealed models and the key's wraps (issue #12 item 3).

A private task's models travel sealed under one **task model key** (`p2pfl.sealing`):

- `key_digest(task, key)` is what the ledger stores (`modelKeyDigest`) so that anyone who
  unwraps a key can tell it is this task's (a wrap replayed from another task, or posted
  by a liar, does not match);
- `seal_model(key, blob)` is deterministic: the nonce is a keyed hash of the plaintext,
  so every committee member sealing the same aggregate gets the same bytes and the same
  CID (the chain's digest names the sealed blob). It leaks only whether two models are
  equal. `open_model` authenticates and decrypts. The key is fresh per task (and bound to
  it by the ledger's digest), so a model of another task does not open here; the task id
  cannot be the associated data, because it names the manifest, which names the sealed
  genesis model;
- `open_wraps(wraps, private_key, task, digest)` finds, among the wraps posted for us, one
  that opens with our X25519 key and holds this task's key, and says why none did.

protocol/spec/chain.md ("Private tasks") is the normative text.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from nacl import bindings
from nacl.public import PrivateKey

from p2pfl.errors import P2PFLError
from p2pfl.sealing import KEY_BYTES, NONCE_BYTES, SealError, open_sealed, unwrap_key, wrap_key

KEY_DIGEST_TAG = b"p2pfl-task-model-key"
# Where a node keeps task model keys it holds, under its data directory (one file per task,
# readable by its owner only): the creator's from `task create`, others' once unwrapped.
TASK_KEYS_DIR = "task-keys"
MODEL_NONCE_TAG = b"p2pfl-model-nonce"
MODEL_AAD = b"p2pfl-model-v1"  # associated data of every sealed model


class AccessError(P2PFLError):
    """No usable task model key: no wrap for us, or none that opens and matches."""


def key_digest(task: bytes, key: bytes) -> bytes:
    """sha256("p2pfl-task-model-key" || task || key): the ledger's modelKeyDigest."""
    if len(key) != KEY_BYTES or len(task) != 32:
        raise SealError("bad-key", f"a task is 32 bytes and a task model key {KEY_BYTES}")
    return hashlib.sha256(KEY_DIGEST_TAG + bytes(task) + bytes(key)).digest()


def seal_model(key: bytes, blob: bytes) -> bytes:
    """`nonce || XChaCha20-Poly1305(key, nonce, blob, aad="p2pfl-model-v1")` with
    nonce = BLAKE2b-192(key=key, "p2pfl-model-nonce" || blob): deterministic, so that
    equal models seal to equal bytes (one CID for the whole committee)."""
    if len(key) != KEY_BYTES:
        raise SealError("bad-key", f"a task model key is {KEY_BYTES} bytes")
    nonce = hashlib.blake2b(
        MODEL_NONCE_TAG + bytes(blob), key=bytes(key), digest_size=NONCE_BYTES
    ).digest()
    return nonce + bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
        bytes(blob), MODEL_AAD, nonce, bytes(key)
    )


def open_model(key: bytes, sealed: bytes) -> bytes:
    """The model blob of `seal_model(key, blob)`; SealError if it does not open."""
    return open_sealed(key, sealed, MODEL_AAD)


@dataclass(frozen=True)
class ModelKey:
    """A private task's model key, bound to its task: what a node seals the models it
    names with, and opens the models it reads with."""

    task: bytes
    key: bytes

    def __post_init__(self) -> None:
        key_digest(self.task, self.key)  # checks both lengths

    @property
    def digest(self) -> bytes:
        return key_digest(self.task, self.key)

    def seal(self, blob: bytes) -> bytes:
        return seal_model(self.key, blob)

    def open(self, sealed: bytes) -> bytes:
        return open_model(self.key, sealed)


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


def key_path(data_dir: str | os.PathLike[str], task: bytes) -> Path:
    return Path(data_dir) / TASK_KEYS_DIR / f"{task.hex()}.key"


def save_model_key(data_dir: str | os.PathLike[str], model_key: ModelKey) -> Path:
    """Keep a task model key in `data_dir` (mode 0600; an existing file is left alone)."""
    path = key_path(data_dir, model_key.task)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(model_key.key)
    return path


def load_model_key(data_dir: str | os.PathLike[str], task: bytes, digest: bytes) -> ModelKey | None:
    """The task model key kept in `data_dir`, None if none is; AccessError if the file
    holds a key that does not match the ledger's `digest`."""
    path = key_path(data_dir, task)
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        return None
    if len(key) != KEY_BYTES or key_digest(task, key) != digest:
        raise AccessError(f"{path} does not hold task 0x{task.hex()}'s model key; remove it")
    return ModelKey(task, key)
