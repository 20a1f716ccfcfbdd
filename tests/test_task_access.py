"""p2pfl.task_access: the vectors of protocol/vectors/private_task.json, kept keys."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from nacl.public import PrivateKey

from p2pfl.core.cid import blob_cid
from p2pfl.sealing import SealError, new_key, unwrap_key
from p2pfl.task_access import (
    AccessError,
    ModelKey,
    key_digest,
    key_path,
    load_model_key,
    open_model,
    save_model_key,
    seal_model,
)

VECTORS = json.loads(
    (Path(__file__).parents[1] / "protocol" / "vectors" / "private_task.json").read_text()
)


def test_vectors_seal_open_digest_and_wrap() -> None:
    key = bytes.fromhex(VECTORS["task_model_key"])
    task = bytes.fromhex(VECTORS["task"])
    assert key_digest(task, key).hex() == VECTORS["key_digest"]
    for case in VECTORS["models"]:
        plain, sealed = bytes.fromhex(case["plaintext"]), bytes.fromhex(case["sealed"])
        assert seal_model(key, plain) == sealed
        assert str(blob_cid(sealed)) == case["sealed_cid"]
        assert open_model(key, sealed) == plain
    w = VECTORS["wrap"]
    private = PrivateKey(bytes.fromhex(w["x25519_private_key"]))
    assert bytes(private.public_key).hex() == w["x25519_public_key"]
    assert unwrap_key(bytes.fromhex(w["wrap"]), private) == key


def test_sealed_models_refuse_another_key_and_tampering() -> None:
    key = new_key()
    sealed = seal_model(key, b"model bytes")
    with pytest.raises(SealError, match="undecryptable"):
        open_model(new_key(), sealed)
    with pytest.raises(SealError, match="undecryptable"):
        open_model(key, sealed[:30] + bytes([sealed[30] ^ 1]) + sealed[31:])
    with pytest.raises(SealError, match="bad-key"):
        seal_model(b"short", b"x")


def test_kept_keys_are_private_files_and_checked(tmp_path: Path) -> None:
    task = b"\x01" * 32
    key = ModelKey(task, new_key())
    assert load_model_key(tmp_path, task, key.digest) is None
    path = save_model_key(tmp_path, key)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_model_key(tmp_path, task, key.digest) == key
    # A file holding another key is an error that says what to do, not a silent miss.
    with pytest.raises(AccessError, match="remove it"):
        load_model_key(tmp_path, task, key_digest(task, new_key()))
    assert key_path(tmp_path, task) == path
