"""Generate protocol/vectors/sealing.json (run once; tests only read the file).

Sealed bytes (spec sealing.md): `nonce (24) || XChaCha20-Poly1305-IETF(key, nonce,
plaintext, aad)` (ciphertext || 16-byte tag). A wrap is a libsodium sealed box of the
32-byte key to an X25519 public key; it is random, so a vector gives the recipient's
private key and the wrap, and a second implementation checks that it opens to the key.
"""

import json
from pathlib import Path

from p2pfl.core.identity import NodeIdentity
from p2pfl.core.sealed import delta_aad
from p2pfl.sealing import seal_with_nonce, wrap_key

TASK = bytes(range(32))


def main() -> None:
    alice, bob = NodeIdentity.from_seed(b"alice"), NodeIdentity.from_seed(b"bob")
    key = bytes(range(32, 64))
    cases = [
        ("empty", bytes(range(24)), b"", b""),
        ("short", bytes(range(1, 25)), b"p2pfl sealed delta", b"aad"),
        (
            "delta-aad",
            bytes(range(2, 26)),
            bytes(range(256)) * 3,
            delta_aad(TASK, 3, alice.address),
        ),
    ]
    seals = [
        {
            "name": name,
            "key": key.hex(),
            "nonce": nonce.hex(),
            "plaintext": plaintext.hex(),
            "aad": aad.hex(),
            "sealed": seal_with_nonce(key, nonce, plaintext, aad).hex(),
        }
        for name, nonce, plaintext, aad in cases
    ]
    wraps = [
        {
            "name": "to-bob",
            "recipient_seed": "bob",
            "recipient_x25519_private": bytes(bob.x25519_private_key).hex(),
            "recipient_x25519_public": bob.x25519_public_key.hex(),
            "key": key.hex(),
            "wrap": wrap_key(key, bob.x25519_public_key).hex(),
        }
    ]
    doc = {
        "about": "Sealed deltas and key wraps (spec protocol/spec/sealing.md). seal: nonce || "
        "XChaCha20-Poly1305-IETF(key, nonce, plaintext, aad). aad of a delta: "
        "'p2pfl/delta/v1' || task (32) || round (u64 BE) || signer (20); the delta-aad case "
        "uses task 0x00..0x1f, round 3 and alice's address. wrap: crypto_box_seal of the key "
        "to the recipient's X25519 public key; opening with its private key gives the key.",
        "delta_aad": {
            "task": TASK.hex(),
            "round": 3,
            "signer": alice.address.hex(),
            "aad": delta_aad(TASK, 3, alice.address).hex(),
        },
        "seal": seals,
        "wrap": wraps,
    }
    path = Path(__file__).with_name("sealing.json")
    path.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
