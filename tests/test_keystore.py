import json

import pytest

from p2pfl.errors import KeystoreError
from p2pfl.keystore import generate_identity, load_keystore, save_keystore


def test_keystore_round_trip_and_wrong_password(tmp_path):
    node = generate_identity()
    path = save_keystore(node, tmp_path / "key.json", "pw", kdf="pbkdf2")
    doc = json.loads(path.read_text())
    assert doc["address"].lower() == node.address.hex()
    assert doc["p2pfl"]["peer_id"] == node.peer_id
    assert load_keystore(path, "pw") == node
    with pytest.raises(KeystoreError, match="wrong password"):
        load_keystore(path, "nope")
    with pytest.raises(KeystoreError, match="refusing to overwrite"):
        save_keystore(node, path, "pw")
    with pytest.raises(KeystoreError, match="p2pfl keygen"):
        load_keystore(tmp_path / "missing.json", "pw")
