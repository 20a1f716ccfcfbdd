"""A node's key on disk: fresh keys from OS entropy and encrypted keystore files.

The key lives in an encrypted eth-account JSON keystore (scrypt + AES-128-CTR, the
ecosystem convention); `p2pfl.core.identity.NodeIdentity` derives everything else from it.
Kept out of `p2pfl.core`, which is pure (no files, no randomness).
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Literal

from eth_account import Account

from p2pfl.core.identity import NodeIdentity
from p2pfl.errors import KeystoreError


def generate_identity() -> NodeIdentity:
    """A fresh random identity (OS entropy)."""
    return NodeIdentity(secrets.token_bytes(32))


def save_keystore(
    identity: NodeIdentity,
    path: str | os.PathLike[str],
    password: str,
    *,
    kdf: Literal["scrypt", "pbkdf2"] = "scrypt",
) -> Path:
    """Write an encrypted eth-account JSON keystore (refuses to overwrite)."""
    target = Path(path)
    if target.exists():
        raise KeystoreError(f"{target} exists; refusing to overwrite a key")
    target.parent.mkdir(parents=True, exist_ok=True)
    document = Account.encrypt(identity.private_key, password, kdf=kdf)
    document["p2pfl"] = {
        "peer_id": identity.peer_id,
        "x25519_public_key": identity.x25519_public_key.hex(),
    }
    tmp = target.with_suffix(target.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(document, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, target)
    return target


def load_keystore(path: str | os.PathLike[str], password: str) -> NodeIdentity:
    """Decrypt a keystore written by `save_keystore` (or any eth-account keystore)."""
    try:
        document = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise KeystoreError(f"no keystore at {path}; create one with `p2pfl keygen`") from None
    except (OSError, ValueError) as exc:
        raise KeystoreError(f"cannot read keystore {path}: {exc}") from None
    try:
        key = bytes(Account.decrypt(document, password))
    except ValueError as exc:
        raise KeystoreError(f"cannot decrypt {path}: {exc} (wrong password?)") from None
    return NodeIdentity(key)
