"""Generate protocol/vectors/tensors.json (run once from the repo root:
`PYTHONPATH=. .venv/bin/python protocol/vectors/make_tensors.py`).

`valid`: tensors (values as float32 bit patterns, hex, C order) and their canonical bytes,
plus the CID of those bytes. `invalid`: byte strings a decoder must refuse, with the
`reason` p2pfl reports (other implementations need only refuse). `float16_packing`:
canonical bytes and their float16 packing (`packed` null: the bytes do not pack).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

from p2pfl.core.cid import blob_cid
from p2pfl.core.tensors import (
    InvalidTensors,
    decode_tensors,
    encode_tensors,
    pack_float16,
    unpack_float16,
)

OUT = Path(__file__).with_name("tensors.json")


def f32_bits(array: np.ndarray) -> list[str]:
    return [f"{v:08x}" for v in array.reshape(-1).view("<u4").tolist()]


def header_blob(header: str, data: bytes = b"", pad: bool = True) -> bytes:
    raw = header.encode()
    if pad:
        raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + data


VALID = {
    "empty": {},
    "one-scalar": {"bias": np.array(1.5, dtype=np.float32)},
    "sorted-names-and-padding": {
        "layer2.weight": np.arange(6, dtype=np.float32).reshape(2, 3) / 7,
        "layer1.bias": np.array([-0.0, 1e-45, 3.4028235e38], dtype=np.float32),
        "a": np.zeros((0, 4), dtype=np.float32),
    },
}


def invalid_cases() -> list[tuple[str, str, bytes]]:
    four = struct.pack("<f", 1.0)
    return [
        ("empty-input", "tensors-truncated", b""),
        ("short-prefix", "tensors-truncated", b"\x08\x00\x00"),
        ("header-past-end", "tensors-truncated", struct.pack("<Q", 64) + b"{}"),
        ("not-json", "tensors-bad-header", header_blob("{not json")),
        ("not-object", "tensors-bad-header", header_blob("[]")),
        ("too-deep", "tensors-bad-header", header_blob('{"a":{"b":[[1]]}}')),
        (
            "bad-name-non-ascii",
            "tensors-name",
            header_blob('{"\u00e9":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', four),
        ),
        ("metadata", "tensors-metadata", header_blob('{"__metadata__":{"k":"v"}}')),
        (
            "dtype-f64",
            "tensors-dtype",
            header_blob('{"x":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}}', bytes(8)),
        ),
        (
            "dtype-f16",
            "tensors-dtype",
            header_blob('{"x":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}}', bytes(4)),
        ),
        (
            "extra-field",
            "tensors-bad-header",
            header_blob('{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":1}}', four),
        ),
        (
            "duplicate-name",
            "tensors-bad-header",
            header_blob(
                '{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
                '"x":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}',
                four * 2,
            ),
        ),
        (
            "unsorted-names",
            "tensors-non-canonical",
            header_blob(
                '{"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]},'
                '"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}',
                four * 2,
            ),
        ),
        (
            "whitespace",
            "tensors-non-canonical",
            header_blob('{"x": {"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', four),
        ),
        (
            "unpadded-header",
            "tensors-non-canonical",
            header_blob('{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', four, pad=False),
        ),
        (
            "gap-in-offsets",
            "tensors-offsets",
            header_blob('{"x":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}', four * 2),
        ),
        (
            "trailing-data",
            "tensors-size",
            header_blob('{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', four * 2),
        ),
        (
            "float-in-shape",
            "tensors-shape",
            header_blob('{"x":{"dtype":"F32","shape":[1.0],"data_offsets":[0,4]}}', four),
        ),
        (
            "nan",
            "tensors-nonfinite",
            header_blob(
                '{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}',
                struct.pack("<I", 0x7FC00000),
            ),
        ),
        (
            "inf",
            "tensors-nonfinite",
            header_blob(
                '{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}',
                struct.pack("<I", 0x7F800000),
            ),
        ),
        (
            "bad-name-quote-escape",
            "tensors-bad-header",
            header_blob('{"a\\"b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', four),
        ),
    ]


FLOAT16 = {
    "float16-values": {
        "b": np.array([-0.0, 2.0**-24, 65504.0, -(2.0**-14)], dtype=np.float32),
        "a": (np.arange(6, dtype=np.float32).reshape(2, 3) / 8),
    },
    "not-float16-values": {"x": np.array([0.1, 1.0], dtype=np.float32)},
    "beyond-float16-range": {"x": np.array([65536.0], dtype=np.float32)},
}


def main() -> None:
    valid = []
    for name, tensors in VALID.items():
        blob = encode_tensors(tensors)
        valid.append(
            {
                "name": name,
                "tensors": {
                    k: {"shape": list(v.shape), "f32_bits_hex": f32_bits(v)}
                    for k, v in sorted(tensors.items())
                },
                "hex": blob.hex(),
                "cid": str(blob_cid(blob)),
            }
        )
    invalid = []
    for name, reason, blob in invalid_cases():
        try:
            decode_tensors(blob)
        except InvalidTensors as exc:
            assert exc.reason == reason, (name, exc.reason)
        else:
            raise AssertionError(name)
        invalid.append({"name": name, "reason": reason, "hex": blob.hex()})
    packings = []
    for name, tensors in FLOAT16.items():
        blob = encode_tensors(tensors)
        packed = pack_float16(blob)
        if packed is not None:
            assert unpack_float16(packed) == blob, name
        packings.append(
            {"name": name, "hex": blob.hex(), "packed": packed.hex() if packed else None}
        )
    doc = {
        "about": "Canonical safetensors for float32 tensors; see protocol/spec/tensors.md. "
        "Generated by protocol/vectors/make_tensors.py.",
        "valid": valid,
        "invalid": invalid,
        "float16_packing": packings,
    }
    OUT.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
