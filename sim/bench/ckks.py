"""Homomorphic aggregation, measured: `python -m sim.bench ckks`.

TrainAI_FHE's row of the seeds: could the committee aggregate updates it cannot read? This
benchmark runs FedAvg's linear part under CKKS (TenSEAL, Microsoft SEAL underneath) for 10
authors, on deltas of the quickstart model (`cnn`, 52,138 parameters) and of a 1.6M-parameter
CNN (`cnn` with channels (32, 64) and a 512-unit hidden layer), and prints for each:

- `ckks-<model>-ciphertext-ratio`: serialized ciphertext bytes per author / float32 bytes;
- `ckks-<model>-encrypt-s`: one author's encryption of its weighted delta;
- `ckks-<model>-add10-s`: the sum of the 10 ciphertexts (what an aggregator would do);
- `ckks-<model>-decrypt-s`: decrypting the sum;
- `ckks-<model>-plain-aggregate-s`: the same weighted sum on plaintext float64 (context);
- `ckks-<model>-max-abs-error`: |CKKS aggregate - float64 aggregate|, max over parameters;
- `ckks-<model>-max-rel-error`: that error / the aggregate's RMS;
- `ckks-<model>-float32-mismatch`: the share of float32 parameters that differ from the
  plaintext float32 aggregate (bitwise agreement is what the committee certifies).

Each author encrypts n_i * delta_i and the aggregator adds, so the weighted mean is
sum / sum(n_i) after decryption: no ciphertext-plaintext products (each would cost a
rescale and a level). Parameters: poly modulus degree 8192 (4096 slots per ciphertext),
coefficient moduli [60, 40, 40, 60] bits, scale 2^40: 128-bit security by SEAL's tables.
Deltas are seeded Gaussian noise at 0.01 (the scale of a local epoch's delta), sample counts
500-1500. The decision drawn from these figures is in docs/PRIVACY.md.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np

from sim.bench import BenchError, figure

AUTHORS = 10
MODELS: dict[str, tuple[str, dict[str, Any]]] = {
    "cnn52k": ("cnn", {}),
    "cnn1.6M": ("cnn", {"channels": (32, 64), "hidden": 512}),
}
POLY_MODULUS_DEGREE = 8192
COEFF_MOD_BIT_SIZES = [60, 40, 40, 60]
SCALE = 2.0**40
DELTA_SCALE = 0.01


def ckks_context() -> Any:
    """A CKKS context with the parameters above (secret key included: a single key holder)."""
    import tenseal as ts

    ctx = ts.context(
        ts.SCHEME_TYPE.CKKS,
        poly_modulus_degree=POLY_MODULUS_DEGREE,
        coeff_mod_bit_sizes=COEFF_MOD_BIT_SIZES,
    )
    ctx.global_scale = SCALE
    return ctx


def aggregate(ctx: Any, deltas: list[np.ndarray], samples: list[int]) -> dict[str, Any]:
    """FedAvg of flat float32 `deltas` weighted by `samples`, under CKKS and in plaintext;
    timings, sizes and errors."""
    import tenseal as ts

    total = float(sum(samples))
    started = time.perf_counter()
    ciphertexts = [
        ts.ckks_vector(ctx, (n * d.astype(np.float64)).tolist()) for d, n in zip(deltas, samples)
    ]
    encrypt_s = (time.perf_counter() - started) / len(deltas)
    size = len(ciphertexts[0].serialize())
    started = time.perf_counter()
    summed = ciphertexts[0]
    for c in ciphertexts[1:]:
        summed = summed + c
    add_s = time.perf_counter() - started
    started = time.perf_counter()
    decrypted = np.asarray(summed.decrypt(), dtype=np.float64) / total
    decrypt_s = time.perf_counter() - started
    started = time.perf_counter()
    plain = np.zeros(deltas[0].size, dtype=np.float64)
    for d, n in zip(deltas, samples):
        plain += n * d.astype(np.float64)
    plain /= total
    plain_s = time.perf_counter() - started
    error = np.abs(decrypted - plain)
    rms = float(np.sqrt(np.mean(plain**2)))
    return {
        "ciphertext_ratio": size / (deltas[0].size * 4),
        "encrypt_s": encrypt_s,
        "add_s": add_s,
        "decrypt_s": decrypt_s,
        "plain_s": plain_s,
        "max_abs_error": float(error.max()),
        "max_rel_error": float(error.max()) / rms if rms else 0.0,
        "float32_mismatch": float(
            np.mean(decrypted.astype(np.float32) != plain.astype(np.float32))
        ),
    }


def run(argv: list[str] | None = None) -> None:
    try:
        import tenseal  # noqa: F401
    except ImportError:
        raise BenchError("tenseal is not installed: run scripts/setup.sh") from None
    from p2pfl.train.models import build_model

    rng = np.random.default_rng(7)
    ctx = ckks_context()
    for label, (name, kwargs) in MODELS.items():
        size = sum(p.numel() for p in build_model(name, **kwargs).parameters())
        deltas = [
            (DELTA_SCALE * rng.standard_normal(size)).astype(np.float32) for _ in range(AUTHORS)
        ]
        samples = [int(n) for n in rng.integers(500, 1501, AUTHORS)]
        out = aggregate(ctx, deltas, samples)
        figure(f"ckks-{label}-parameters", size, "parameters")
        figure(f"ckks-{label}-ciphertext-ratio", out["ciphertext_ratio"], "x-float32")
        figure(f"ckks-{label}-encrypt-s", out["encrypt_s"], "s")
        figure(f"ckks-{label}-add10-s", out["add_s"], "s")
        figure(f"ckks-{label}-decrypt-s", out["decrypt_s"], "s")
        figure(f"ckks-{label}-plain-aggregate-s", out["plain_s"], "s")
        figure(f"ckks-{label}-max-abs-error", out["max_abs_error"], "abs")
        figure(f"ckks-{label}-max-rel-error", out["max_rel_error"], "x-rms")
        figure(f"ckks-{label}-float32-mismatch", out["float32_mismatch"], "share")


if __name__ == "__main__":
    run(sys.argv[1:])
