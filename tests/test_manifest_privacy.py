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


def test_updates_go_to_everyone_unless_the_task_says_committee() -> None:
    assert not BASE.round_config().updates_to_committee
    to_committee = replace(BASE, privacy={"updates": "committee"})
    assert to_committee.round_config().updates_to_committee and to_committee.sealed
    assert TaskManifest.decode(to_committee.encode()) == to_committee
    assert to_committee.task_id != BASE.task_id


def test_an_empty_privacy_table_keeps_the_old_encoding() -> None:
    raw = json.loads(BASE.encode())
    assert "privacy" not in raw
    assert TaskManifest.decode(BASE.encode()).task_id == BASE.task_id


@pytest.mark.parametrize(
    "privacy, says",
    [({"sealed": "yes"}, "true or false"), ({"sealed": 1}, "true or false"),
     ({"seal": True}, "unknown keys"), ([], "table"),
     ({"updates": "members"}, "must be one of"), ({"updates": True}, "must be one of")],
)  # fmt: skip
def test_unknown_keys_and_values_are_errors(privacy: object, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        replace(BASE, privacy=privacy)  # type: ignore[arg-type]


def test_task_create_writes_sealed_by_default_and_plain_on_request(
    tmp_path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`p2pfl task create` seals updates unless `--plain-updates`."""
    import p2pfl.chain.providers
    from p2pfl.chain.devnet import ETHER, DevNet
    from p2pfl.chain.providers import embedded_web3, fund
    from p2pfl.cli.app import main
    from p2pfl.keystore import generate_identity, save_keystore

    devnet = DevNet.create(embedded_web3(), 1, seed=21)
    monkeypatch.setattr(p2pfl.chain.providers, "rpc_web3", lambda url: devnet.w3)
    creator = generate_identity()
    save_keystore(creator, tmp_path / "creator.json", "pw", kdf="pbkdf2")
    fund(devnet.w3, creator.checksum_address, 10 * ETHER)
    devnet.deployment.save(tmp_path / "deployment.json")
    (tmp_path / "pw").write_text("pw")
    cases = (
        ("a", [], True, False),
        ("b", ["--plain-updates"], False, False),
        ("c", ["--updates-to-committee"], True, True),
    )
    for name, extra, sealed, to_committee in cases:
        args = [
            "task", "create", "--deployment", str(tmp_path / "deployment.json"),
            "--keystore", str(tmp_path / "creator.json"), "--password-file", str(tmp_path / "pw"),
            "--model", "mlp", "--committee-size", "1", "--rounds-budget", "1", "--name", name,
            "--data-dir", str(tmp_path / "creator"), "--out", str(tmp_path / f"{name}.json"),
            *extra,
        ]  # fmt: skip
        assert main(args) == 0
        out = capsys.readouterr().out
        assert ("sealed to each round committee" in out) is sealed
        assert ("to the committee only" in out) is to_committee
        manifest = TaskManifest.load(tmp_path / f"{name}.json")
        assert manifest.sealed is sealed
        assert manifest.round_config().updates_to_committee is to_committee
