"""Generate protocol/vectors/messages.json (run once; tests only read the file)."""

import json
from pathlib import Path

import msgpack

from p2pfl.core import messages as m
from p2pfl.core.cid import blob_cid
from p2pfl.core.identity import NodeIdentity
from p2pfl.core.sealed import delta_aad
from p2pfl.core.signing import Domain
from p2pfl.core.tensors import encode_tensors
from p2pfl.sealing import seal_with_nonce, wrap_key

DOMAIN = Domain(chain_id=31337, contract=bytes.fromhex("5fbdb2315678afecb367f032d93f642f64180aa3"))
TASK = bytes(range(32))
BASE = blob_cid(b"base model").to_bytes()
DELTA = blob_cid(b"delta").to_bytes()
RESULT = blob_cid(b"result").to_bytes()


def main() -> None:
    import numpy as np

    alice, bob = NodeIdentity.from_seed(b"alice"), NodeIdentity.from_seed(b"bob")
    # A sealed update (spec sealing.md): a tiny delta sealed under a fixed key and nonce,
    # the key wrapped to bob (a sealed box is random: the vector records the one drawn).
    key, nonce = bytes(range(32, 64)), bytes(range(24))
    plain = encode_tensors({"w": np.array([0.5, -1.0], dtype=np.float32)})
    sealed = seal_with_nonce(key, nonce, plain, delta_aad(TASK, 3, alice.address))
    sealed_cid = blob_cid(sealed).to_bytes()
    wraps = ((bob.address, wrap_key(key, bob.x25519_public_key)),)
    signed = [
        ("update", "alice", m.Update(task=TASK, round=3, base=BASE, delta=DELTA, n_samples=600, norm=1.25,
                                     inline=b"", signer=alice.address)),
        ("update-inline", "alice", m.Update(task=TASK, round=3, base=BASE, delta=DELTA, n_samples=1, norm=0.0,
                                            inline=b"\x00\x01\x02", signer=alice.address)),
        ("proposal", "bob", m.Proposal(task=TASK, round=3, attempt=1, view=2, base=BASE,
                                       included=((alice.address, DELTA),), rejected=((bob.address, "norm"),),
                                       rule="filter(3,-0.1)+fedavg", result=RESULT,
                                       contributors_root=b"\x42" * 32, signer=bob.address)),
        ("vote", "bob", m.Vote(task=TASK, round=3, attempt=1, view=2, base=BASE, result=RESULT,
                               contributors_root=b"\x42" * 32, signer=bob.address)),
        ("heartbeat", "alice", m.Heartbeat(task=TASK, round=3, time_ms=1_700_000_000_000, phase="collect",
                                           signer=alice.address)),
        ("update-sealed", "alice", m.Update(task=TASK, round=3, base=BASE, delta=sealed_cid, n_samples=600,
                                            norm=1.25, inline=sealed, signer=alice.address, wraps=wraps)),
        ("rewrap", "alice", m.Rewrap(task=TASK, round=3, attempt=1, delta=sealed_cid, wraps=wraps,
                                     signer=alice.address)),
    ]
    keys = {"alice": alice, "bob": bob}
    out = []
    for name, who, msg in signed:
        msg = msg.signed(keys[who].private_key, DOMAIN)
        out.append({"name": name, "key_seed": who, "encoding": msg.encode().hex(), "body": msg.body().hex(),
                    "digest": msg.digest(DOMAIN).hex(), "signer": keys[who].address.hex()})
    vote = m.decode_message(bytes.fromhex(out[3]["encoding"]))
    commit = m.Commit(task=TASK, round=3, attempt=1, view=2, base=BASE, result=RESULT,
                      contributors_root=b"\x42" * 32, votes=((bob.address, vote.signature),))
    out.append({"name": "commit", "encoding": commit.encode().hex()})
    good = m.decode_message(bytes.fromhex(out[0]["encoding"])).to_wire()

    def enc(wire):
        return msgpack.packb(dict(sorted(wire.items())), use_bin_type=True).hex()

    invalid = [
        {"name": "unknown-field", "encoding": enc({**good, "zzz": 0}), "reason": "unknown-field"},
        {"name": "missing-field", "encoding": enc({k: v for k, v in good.items() if k != "inline"}), "reason": "missing-field"},
        {"name": "unknown-kind", "encoding": enc({**good, "kind": 42}), "reason": "unknown-kind"},
        {"name": "nan-norm", "encoding": enc({**good, "norm": float("nan")}), "reason": "bad-field"},
        {"name": "int-for-float", "encoding": enc({**good, "norm": 1}), "reason": "bad-field"},
        {"name": "short-task", "encoding": enc({**good, "task": TASK[:31]}), "reason": "bad-field"},
        {"name": "cidv0-base", "encoding": enc({**good, "base": b"\x12\x20" + b"\x00" * 32}), "reason": "bad-cid"},
        {"name": "unsorted-keys", "encoding": msgpack.packb(dict(reversed(list(good.items()))), use_bin_type=True).hex(),
         "reason": "non-canonical"},
        {"name": "truncated", "encoding": out[0]["encoding"][:-10], "reason": "malformed"},
        {"name": "not-a-map", "encoding": msgpack.packb([1]).hex(), "reason": "malformed"},
    ]
    doc = {
        "about": "Canonical encodings, EIP-712 bodies/digests and RFC 6979 signatures of p2pfl messages. "
                 "Keys: NodeIdentity.from_seed(key_seed) = keccak256('p2pfl/test-identity/v1' || seed). "
                 "update-sealed: its inline bytes are the delta sealed (sealing.json's layout) under "
                 "key 0x20..0x3f, nonce 0x00..0x17 and delta_aad(task, 3, alice); its wrap opens with "
                 "bob's X25519 key (identity.md: keccak256('p2pfl/x25519/v1' || bob's private key)).",
        "domain": {"chain_id": DOMAIN.chain_id, "contract": DOMAIN.contract.hex()},
        "messages": out,
        "invalid": invalid,
    }
    path = Path(__file__).with_name("messages.json")
    path.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
