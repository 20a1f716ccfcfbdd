"""Generate protocol/vectors/private_task.json (run once from the repo root:
`PYTHONPATH=. .venv/bin/python protocol/vectors/make_private_task.py`).

A private task's models (protocol/spec/chain.md, "Private tasks"): for a task model key
and canonical model bytes, the sealed bytes (deterministic), their CID (what the chain's
digest names) and the ledger's key digest; and one key wrap with the X25519 private key
that opens it (wraps are random sealed boxes: a second implementation must open this one
and produce its own that this one opens).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from nacl.public import PrivateKey

from p2pfl.core.cid import blob_cid
from p2pfl.core.tensors import encode_tensors
from p2pfl.sealing import wrap_key
from p2pfl.task_access import key_digest, seal_model

OUT = Path(__file__).with_name("private_task.json")


def main() -> None:
    key = bytes(range(32))
    task = bytes.fromhex("5e" * 32)
    models = [
        encode_tensors({"w": np.zeros(4, np.float32)}),
        encode_tensors({"b": np.arange(3, dtype=np.float32), "w": np.ones((2, 2), np.float32)}),
    ]
    x25519 = PrivateKey(bytes([7]) * 32)
    doc = {
        "task_model_key": key.hex(),
        "task": task.hex(),
        "key_digest": key_digest(task, key).hex(),
        "models": [
            {
                "plaintext": m.hex(),
                "sealed": seal_model(key, m).hex(),
                "sealed_cid": str(blob_cid(seal_model(key, m))),
            }
            for m in models
        ],
        "wrap": {
            "x25519_private_key": bytes(x25519).hex(),
            "x25519_public_key": bytes(x25519.public_key).hex(),
            "wrap": wrap_key(key, bytes(x25519.public_key)).hex(),
        },
    }
    OUT.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
