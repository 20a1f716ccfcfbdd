"""Sealing throughput: `python -m sim.bench seal`.

The node's sealing path (`p2pfl.sealing.seal` / `open_sealed` under a delta's
`delta_aad`, as `p2pfl.node.workers` calls them) against the raw AEAD it wraps
(`nacl.bindings` XChaCha20-Poly1305-IETF, nonce drawn, no framing), in the same process
and the same run, for a quickstart-sized delta (the quickstart CNN's 52,138 float32
parameters as canonical safetensors) and a 10 MiB one. Prints MB/s of each and the ratio
(target >= 0.8), and what one key wrap and unwrap cost (one per committee member).
Best of SEAL_BENCH_REPEATS (default 7) timings of enough calls to last ~0.2 s each.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import numpy as np

from sim.bench import figure

QUICKSTART_PARAMS = 52_138  # the quickstart CNN (docs/PRIVACY.md's CKKS table)
TEN_MIB = 10 * 2**20


def _best_rate(fn: Callable[[], object], size_bytes: int, repeats: int) -> float:
    """MB/s (10^6 bytes) of the best of `repeats` timings, each of enough calls for ~0.2 s."""
    start = time.perf_counter()
    fn()
    once = max(time.perf_counter() - start, 1e-6)
    calls = max(1, int(0.2 / once))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - start) / calls)
    return size_bytes / best / 1e6


def run() -> None:
    from nacl import bindings
    from nacl.utils import random as random_bytes

    from p2pfl.core.identity import NodeIdentity
    from p2pfl.core.sealed import delta_aad
    from p2pfl.core.tensors import encode_tensors
    from p2pfl.sealing import NONCE_BYTES, new_key, open_sealed, seal, unwrap_key, wrap_key

    repeats = int(os.environ.get("SEAL_BENCH_REPEATS", "7"))
    rng = np.random.default_rng(0)
    author = NodeIdentity.from_seed(b"bench-author")
    aad = delta_aad(bytes(32), 1, author.address)
    deltas = {
        "quickstart": encode_tensors(
            {"w": rng.standard_normal(QUICKSTART_PARAMS).astype(np.float32)}
        ),
        "10mib": encode_tensors({"w": rng.standard_normal(TEN_MIB // 4 - 64).astype(np.float32)}),
    }
    key = new_key()
    encrypt = bindings.crypto_aead_xchacha20poly1305_ietf_encrypt
    decrypt = bindings.crypto_aead_xchacha20poly1305_ietf_decrypt
    for name, blob in deltas.items():
        figure(f"seal-{name}-delta-bytes", len(blob), "bytes")
        sealed = seal(key, blob, aad)
        nonce, body = sealed[:NONCE_BYTES], sealed[NONCE_BYTES:]
        raw_seal = _best_rate(
            lambda: encrypt(blob, aad, random_bytes(NONCE_BYTES), key), len(blob), repeats
        )
        ours_seal = _best_rate(lambda: seal(key, blob, aad), len(blob), repeats)
        raw_open = _best_rate(lambda: decrypt(body, aad, nonce, key), len(blob), repeats)
        ours_open = _best_rate(lambda: open_sealed(key, sealed, aad), len(blob), repeats)
        figure(f"seal-{name}-raw-aead-seal", raw_seal, "MB/s")
        figure(f"seal-{name}-seal", ours_seal, "MB/s")
        figure(f"seal-{name}-raw-aead-open", raw_open, "MB/s")
        figure(f"seal-{name}-open", ours_open, "MB/s")
        figure(f"seal-{name}-seal-ratio", ours_seal / raw_seal, "x raw AEAD")
        figure(f"seal-{name}-open-ratio", ours_open / raw_open, "x raw AEAD")
    member = NodeIdentity.from_seed(b"bench-member")
    wrap = wrap_key(key, member.x25519_public_key)
    private = member.x25519_private_key
    n = 200
    start = time.perf_counter()
    for _ in range(n):
        wrap_key(key, member.x25519_public_key)
    figure("seal-wrap-per-member", (time.perf_counter() - start) / n * 1e6, "us")
    start = time.perf_counter()
    for _ in range(n):
        unwrap_key(wrap, private)
    figure("seal-unwrap", (time.perf_counter() - start) / n * 1e6, "us")
