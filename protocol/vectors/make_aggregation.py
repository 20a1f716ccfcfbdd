"""Generate protocol/vectors/aggregation.json (run once; tests only read the file).

Each case: an aggregation spec (manifest dict), contributions, and the expected
result: sha256 of the output float32 bytes (little-endian), accepted peers and
rejected (peer, reason) pairs, or the expected error class.

A case may give `record`: strike points per peer (the `record` argument of `aggregate`).
Contribution deltas are either explicit (`delta_hex`: little-endian float32 bytes)
or a recipe (`terms`: [[seed, scale], ...], `size`): delta = zeros, plus each term left
to right in float32, of float32(scale) * standard_normal(size, dtype=float32) from
numpy's `default_rng(seed)` (PCG64); then `patch`: [[index, float32 hex], ...] overwrites
single elements.

    .venv/bin/python -m protocol.vectors.make_aggregation   (from the repo root)
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np

from p2pfl.core.cid import blob_cid
from p2pfl.core.tensors import encode_tensors
from p2pfl.core.aggregate import Contribution, RuleSpec, aggregate
from p2pfl.errors import AggregationError

OUT = Path(__file__).with_name("aggregation.json")


def peer(i: int) -> str:
    return bytes([0x10 + i] * 20).hex()


def delta_from(entry: dict[str, Any]) -> np.ndarray:
    """Materialise a contribution's delta from its vector entry (shared with the tests)."""
    if "delta_hex" in entry:
        return np.frombuffer(bytes.fromhex(entry["delta_hex"]), dtype="<f4").astype(np.float32)
    out = np.zeros(entry["size"], dtype=np.float32)
    for seed, scale in entry["terms"]:
        out += np.float32(scale) * np.random.default_rng(seed).standard_normal(
            entry["size"], dtype=np.float32
        )
    for index, value_hex in entry.get("patch", []):
        out[index] = np.frombuffer(bytes.fromhex(value_hex), dtype="<f4")[0]
    return out


def record_of(case: dict[str, Any]) -> dict[bytes, int]:
    """The case's strike points per author (none unless listed)."""
    return {bytes.fromhex(p): n for p, n in case.get("record", {}).items()}


def hex32(values: list[float]) -> str:
    return b"".join(struct.pack("<f", v) for v in values).hex()


def honest(i: int, size: int, n_samples: int = 100) -> dict[str, Any]:
    # common direction (seed 1) + personal noise: a population of similar updates
    return {
        "peer": peer(i),
        "n_samples": n_samples,
        "size": size,
        "terms": [[1, 1.0], [100 + i, 0.5]],
    }


def attacker(i: int, size: int, scale: float, n_samples: int = 100) -> dict[str, Any]:
    return {
        "peer": peer(i),
        "n_samples": n_samples,
        "size": size,
        "terms": [[1, scale], [200 + i, 0.5]],
    }


def cases() -> list[dict[str, Any]]:
    size = 5000  # > LANES, not a multiple of it
    big = 70001  # > BLOCK: exercises the block boundary
    seven = [honest(i, size) for i in range(5)] + [
        attacker(5, size, -10.0),
        attacker(6, size, -10.0),
    ]
    small = [
        {
            "peer": peer(0),
            "n_samples": 3,
            "delta_hex": hex32([1.0, -0.0, 2.5, 1e-45, 3.0e38, -1.0]),
        },
        {"peer": peer(1), "n_samples": 1, "delta_hex": hex32([0.5, 0.0, -2.5, 0.0, 3.0e38, 1.0])},
        {
            "peer": peer(2),
            "n_samples": 2,
            "delta_hex": hex32([1.5, -0.0, 0.25, -1e-45, -3.0e38, 2.0]),
        },
        {"peer": peer(3), "n_samples": 5, "delta_hex": hex32([-1.0, 0.0, 0.125, 0.0, 1.0, 0.5])},
    ]
    freeriders = [honest(i, size) for i in range(5)] + [
        {"peer": peer(5), "n_samples": 100, "size": size, "terms": []},  # zero update
        dict(honest(0, size), peer=peer(6)),  # copy of peer 0's delta
        dict(honest(7, size), patch=[[3, "0000c07f"]]),  # one NaN
        dict(honest(8, size), n_samples=0),
        dict(honest(9, size), n_samples=10**9),  # inflated sample count
        {"peer": peer(10), "n_samples": 100, "size": size, "terms": [[300, 0.7]]},  # pure noise
    ]
    ties = [honest(i, 64) for i in range(4)] + [
        dict(honest(i, 64), peer=peer(4 + i)) for i in range(3)
    ]
    d = RuleSpec.default().to_dict()
    return [
        {"name": "fedavg-small", "spec": {"rule": "fedavg"}, "contributions": small},
        {"name": "median-small", "spec": {"rule": "median"}, "contributions": small},
        {
            "name": "trimmed-small",
            "spec": {"rule": "trimmed_mean", "trim_fraction": 0.25},
            "contributions": small,
        },
        {
            "name": "fedavg-big",
            "spec": {"rule": "fedavg"},
            "contributions": [honest(i, big, 10 + i) for i in range(3)],
        },
        {
            "name": "median-big",
            "spec": {"rule": "median"},
            "contributions": [honest(i, big) for i in range(4)],
        },
        {"name": "fedavg-signflip", "spec": {"rule": "fedavg"}, "contributions": seven},
        {"name": "median-signflip", "spec": {"rule": "median"}, "contributions": seven},
        {
            "name": "trimmed-signflip",
            "spec": {"rule": "trimmed_mean", "trim_fraction": 0.3},
            "contributions": seven,
        },
        {
            "name": "krum-signflip",
            "spec": {"rule": "krum", "byzantine_f": 2},
            "contributions": seven,
        },
        {
            "name": "multikrum-signflip",
            "spec": {"rule": "multikrum", "byzantine_f": 2},
            "contributions": seven,
        },
        {
            "name": "multikrum-m3-cap",
            "spec": {"rule": "multikrum", "byzantine_f": 2, "multikrum_m": 3, "samples_cap": 1.5},
            "contributions": seven,
        },
        {
            "name": "multikrum-ties",
            "spec": {"rule": "multikrum", "byzantine_f": 1, "multikrum_m": 2},
            "contributions": ties,
        },
        {"name": "default-signflip", "spec": d, "contributions": seven},
        {"name": "default-freeriders", "spec": d, "contributions": freeriders},
        {
            # peer 1 passes the filter but is on probation; peer 5 is on probation and
            # fails the filter anyway (keeps its filter reason, which is a strike); peer 2
            # has one point: it counts for a quarter of its weight.
            "name": "default-probation",
            "spec": d,
            "contributions": seven,
            "record": {peer(1): 2, peer(2): 1, peer(5): 3},
        },
        {
            "name": "filter-trimmed-ref-clip5",
            "spec": {
                "filter": {"norm_factor": 2.0, "min_cosine": -0.1, "reference": "trimmed_mean"},
                "clip_norm": 5.0,
                "rule": "fedavg",
            },
            "contributions": seven,
        },
        {
            "name": "nothing-left",
            "spec": d,
            "contributions": [{"peer": peer(0), "n_samples": 1, "delta_hex": hex32([0.0, 0.0])}],
        },
    ]


def run_case(case: dict[str, Any]) -> dict[str, Any]:
    spec = RuleSpec.from_dict(case["spec"])
    cs = [
        Contribution(bytes.fromhex(e["peer"]), e["n_samples"], delta_from(e))
        for e in case["contributions"]
    ]
    try:
        r = aggregate(spec, cs, record=record_of(case))
    except AggregationError as exc:
        return {"error": type(exc).__name__}
    return {
        "rule": r.rule,
        "sha256": r.digest,
        # CIDv1 of the canonical safetensors {"delta": output}: how an aggregate travels.
        "cid": str(blob_cid(encode_tensors({"delta": r.delta}))),
        "accepted": [p.hex() for p in r.accepted],
        "rejected": [[p.hex(), why] for p, why in r.rejected],
        "head": [float(x) for x in r.delta[:4]],  # for people debugging a mismatch
    }


def main() -> None:
    out = []
    for case in cases():
        case["expected"] = run_case(case)
        out.append(case)
    doc = {
        "description": "p2pfl aggregation vectors; see protocol/spec/aggregation.md "
        "and make_aggregation.py",
        "cases": out,
    }
    OUT.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {len(out)} cases to {OUT}")


if __name__ == "__main__":
    main()
