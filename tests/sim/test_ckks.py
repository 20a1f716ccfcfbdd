"""The CKKS measurement (sim.bench ckks): the encrypted sum decrypts to the weighted mean
within CKKS's approximation, and what it reports about sizes and agreement is real."""

from __future__ import annotations

import numpy as np

from sim.bench.ckks import aggregate, ckks_context


def test_ckks_fedavg_matches_the_plaintext_mean_approximately() -> None:
    rng = np.random.default_rng(0)
    deltas = [(0.01 * rng.standard_normal(5000)).astype(np.float32) for _ in range(3)]
    out = aggregate(ckks_context(), deltas, [100, 300, 600])
    assert out["max_abs_error"] < 1e-8  # approximate, not exact
    assert out["ciphertext_ratio"] > 10  # ciphertexts are much larger than float32
    assert 0.0 <= out["float32_mismatch"] < 0.1
    assert out["encrypt_s"] > 0 and out["decrypt_s"] > 0
