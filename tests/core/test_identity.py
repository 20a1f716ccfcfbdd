"""Identity: one key gives the address and the libp2p peer ID."""

import pytest
from libp2p.crypto.secp256k1 import create_new_key_pair
from libp2p.peer.id import ID

from p2pfl.core import identity
from p2pfl.core.identity import NodeIdentity
from p2pfl.core.signing import address_of
from p2pfl.errors import KeystoreError


def test_peer_id_matches_libp2p_and_address_matches_signing():
    node = NodeIdentity.from_seed(b"node-1")
    libp2p_id = ID.from_pubkey(create_new_key_pair(node.private_key).public_key)
    assert node.peer_id == libp2p_id.to_base58()
    assert node.address == address_of(node.private_key)
    assert identity.address_from_peer_id(node.peer_id) == node.address


def test_x25519_key_is_derived_and_stable():
    a = NodeIdentity.from_seed(b"a")
    assert a.x25519_public_key == NodeIdentity.from_seed(b"a").x25519_public_key
    assert a.x25519_public_key != NodeIdentity.from_seed(b"b").x25519_public_key
    assert len(a.x25519_public_key) == 32


def test_bad_peer_id_is_a_clear_error():
    with pytest.raises(KeystoreError):
        identity.address_from_peer_id("QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N")
