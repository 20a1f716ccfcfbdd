"""The manifest's `privacy` table (spec protocol/spec/sealing.md): sealed by default,
strict, and left out of the canonical bytes when empty (old task ids stay)."""

import json
from dataclasses import replace

import pytest

from p2pfl.core.cid import blob_cid
from p2pfl.errors import ConfigError
from p2pfl.manifest import TaskManifest

BASE = TaskManifest(
    name="t",
    model="mlp",
    initial_model=str(blob_cid(b"genesis")),
    chain_id=1,
    registry="0x" + "11" * 20,
    ledger="0x" + "22" * 20,
)


def test_sealed_by_default_and_switchable() -> None:
    assert BASE.sealed and BASE.round_config().sealed
    plain = replace(BASE, privacy={"sealed": False})
    assert not plain.sealed and not plain.round_config().sealed
    assert TaskManifest.decode(plain.encode()) == plain
    assert plain.task_id != BASE.task_id


def test_an_empty_privacy_table_keeps_the_old_encoding() -> None:
    raw = json.loads(BASE.encode())
    assert "privacy" not in raw
    assert TaskManifest.decode(BASE.encode()).task_id == BASE.task_id


@pytest.mark.parametrize(
    "privacy, says",
    [({"sealed": "yes"}, "true or false"), ({"sealed": 1}, "true or false"),
     ({"seal": True}, "unknown keys"), ([], "table")],
)  # fmt: skip
def test_unknown_keys_and_values_are_errors(privacy: object, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        replace(BASE, privacy=privacy)  # type: ignore[arg-type]
