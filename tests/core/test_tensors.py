"""Canonical safetensors encoding, strict decoding, flat vectors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from p2pfl.core.cid import blob_cid
from p2pfl.core.tensors import (
    InvalidTensors,
    decode_tensors,
    encode_tensors,
    flatten,
    layout_of,
    layout_size,
    unflatten,
)
from p2pfl.errors import InvalidMessage, P2PFLError

VECTORS = json.loads(
    (Path(__file__).parents[2] / "protocol" / "vectors" / "tensors.json").read_text()
)


def tensors_from_vector(entry: dict) -> dict[str, np.ndarray]:
    out = {}
    for name, spec in entry["tensors"].items():
        bits = np.array([int(h, 16) for h in spec["f32_bits_hex"]], dtype="<u4")
        out[name] = bits.view("<f4").reshape(spec["shape"])
    return out


@pytest.mark.parametrize("entry", VECTORS["valid"], ids=lambda e: e["name"])
def test_valid_vectors(entry: dict) -> None:
    tensors = tensors_from_vector(entry)
    blob = encode_tensors(tensors)
    assert blob.hex() == entry["hex"]
    assert str(blob_cid(blob)) == entry["cid"]
    decoded = decode_tensors(bytes.fromhex(entry["hex"]))
    assert list(decoded) == sorted(tensors)
    for name, array in tensors.items():
        assert decoded[name].shape == array.shape
        assert decoded[name].tobytes() == array.tobytes()  # bit-exact, -0.0 included


@pytest.mark.parametrize("entry", VECTORS["invalid"], ids=lambda e: e["name"])
def test_invalid_vectors(entry: dict) -> None:
    with pytest.raises(InvalidTensors) as info:
        decode_tensors(bytes.fromhex(entry["hex"]))
    assert info.value.reason == entry["reason"]


# --- properties ---------------------------------------------------------------------------

names = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters='"\\'),
    min_size=1,
    max_size=20,
).filter(lambda n: n != "__metadata__")
arrays = hnp.arrays(
    dtype=np.float32,
    shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4),
    elements=st.floats(width=32, allow_nan=False, allow_infinity=False),
)
tensor_dicts = st.dictionaries(names, arrays, max_size=5)


@settings(max_examples=150)
@given(tensor_dicts)
def test_round_trip_and_matches_safetensors(tensors: dict[str, np.ndarray]) -> None:
    blob = encode_tensors(tensors)
    assert blob == safetensors.numpy.save(tensors)  # the reference writer agrees byte for byte
    decoded = decode_tensors(blob)
    assert encode_tensors(decoded) == blob
    for name, array in tensors.items():
        assert decoded[name].shape == array.shape
        assert decoded[name].tobytes() == array.tobytes()
    reference = safetensors.numpy.load(blob)
    assert set(reference) == set(tensors)


@settings(max_examples=150)
@given(tensor_dicts)
def test_flatten_unflatten_round_trip(tensors: dict[str, np.ndarray]) -> None:
    vector, layout = flatten(tensors)
    assert vector.dtype == np.float32 and vector.ndim == 1
    assert vector.size == layout_size(layout) == sum(a.size for a in tensors.values())
    assert [name for name, _ in layout] == sorted(tensors)
    assert layout == layout_of(tensors)
    back = unflatten(vector, layout)
    assert list(back) == sorted(tensors)
    for name, array in tensors.items():
        assert back[name].shape == array.shape
        assert back[name].tobytes() == array.tobytes()


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_decode_arbitrary_bytes_only_raises_invalid_tensors(blob: bytes) -> None:
    try:
        decoded = decode_tensors(blob)
    except InvalidTensors:
        return
    assert encode_tensors(decoded) == blob


@settings(max_examples=300)
@given(tensor_dicts, st.data())
def test_decode_mutated_blobs_rejected_or_canonical(
    tensors: dict[str, np.ndarray], data: st.DataObject
) -> None:
    blob = bytearray(encode_tensors(tensors))
    index = data.draw(st.integers(0, len(blob) - 1))
    op = data.draw(st.sampled_from(["flip", "insert", "delete"]))
    if op == "flip":
        blob[index] ^= data.draw(st.integers(1, 255))
    elif op == "insert":
        blob.insert(index, data.draw(st.integers(0, 255)))
    else:
        del blob[index]
    try:
        decoded = decode_tensors(bytes(blob), allow_nonfinite=True)
    except InvalidTensors:
        return
    assert encode_tensors(decoded, allow_nonfinite=True) == bytes(blob)


# --- encode errors ------------------------------------------------------------------------


def test_encode_rejects_other_dtypes_without_casting() -> None:
    for dtype in (np.float64, np.float16, np.int32, ">f4"):
        with pytest.raises(InvalidTensors) as info:
            encode_tensors({"x": np.zeros(3, dtype=dtype)})
        assert info.value.reason == "tensors-dtype"


def test_encode_rejects_non_contiguous_and_non_arrays() -> None:
    with pytest.raises(InvalidTensors, match="C-contiguous"):
        encode_tensors({"x": np.zeros((4, 4), dtype=np.float32)[:, ::2]})
    with pytest.raises(InvalidTensors, match="ndarray"):
        encode_tensors({"x": [1.0, 2.0]})  # type: ignore[dict-item]


@pytest.mark.parametrize("name", ["", 'a"b', "a\\b", "é", "tab\t", "__metadata__", "x" * 257])
def test_encode_rejects_bad_names(name: str) -> None:
    with pytest.raises(InvalidTensors) as info:
        encode_tensors({name: np.zeros(1, dtype=np.float32)})
    assert info.value.reason == "tensors-name"


def test_nonfinite_is_a_flag() -> None:
    tensors = {"x": np.array([np.nan, np.inf, -np.inf], dtype=np.float32)}
    with pytest.raises(InvalidTensors, match="NaN or Inf"):
        encode_tensors(tensors)
    blob = encode_tensors(tensors, allow_nonfinite=True)
    with pytest.raises(InvalidTensors, match="NaN or Inf"):
        decode_tensors(blob)
    back = decode_tensors(blob, allow_nonfinite=True)
    assert back["x"].tobytes() == tensors["x"].tobytes()


def test_errors_are_in_the_shared_hierarchy() -> None:
    assert issubclass(InvalidTensors, InvalidMessage)
    assert issubclass(InvalidTensors, P2PFLError)


# --- decode limits ------------------------------------------------------------------------


def test_decode_max_bytes() -> None:
    blob = encode_tensors({"x": np.zeros(100, dtype=np.float32)})
    assert decode_tensors(blob, max_bytes=len(blob))["x"].shape == (100,)
    with pytest.raises(InvalidTensors) as info:
        decode_tensors(blob, max_bytes=len(blob) - 1)
    assert info.value.reason == "tensors-too-large"


def test_decode_rejects_huge_declared_shape_without_allocating() -> None:
    header = b'{"x":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,4]}}'
    header += b" " * (-len(header) % 8)
    blob = len(header).to_bytes(8, "little") + header + bytes(4)
    with pytest.raises(InvalidTensors) as info:
        decode_tensors(blob)
    assert info.value.reason == "tensors-offsets"


def test_decode_rejects_deeply_nested_json() -> None:
    header = b"[" * 100_000 + b"]" * 100_000
    blob = len(header).to_bytes(8, "little") + header
    with pytest.raises(InvalidTensors) as info:
        decode_tensors(blob)
    assert info.value.reason == "tensors-bad-header"


def test_decode_accepts_buffers_and_returns_views() -> None:
    blob = encode_tensors({"x": np.arange(4, dtype=np.float32)})
    from_bytes = decode_tensors(blob)["x"]
    assert not from_bytes.flags.writeable  # a view into immutable bytes
    assert decode_tensors(memoryview(blob))["x"].tolist() == [0.0, 1.0, 2.0, 3.0]
    assert decode_tensors(bytearray(blob))["x"].tolist() == [0.0, 1.0, 2.0, 3.0]


# --- flat vectors -------------------------------------------------------------------------


def test_unflatten_checks_vector() -> None:
    vector, layout = flatten({"a": np.ones((2, 2), np.float32), "b": np.zeros(3, np.float32)})
    assert vector.tolist() == [1, 1, 1, 1, 0, 0, 0]
    with pytest.raises(InvalidTensors, match="layout needs 7"):
        unflatten(vector[:-1], layout)
    with pytest.raises(InvalidTensors):
        unflatten(vector.astype(np.float64), layout)
    with pytest.raises(InvalidTensors):
        unflatten(vector.reshape(7, 1), layout)


def test_flatten_rejects_non_float32() -> None:
    with pytest.raises(InvalidTensors):
        flatten({"a": np.ones(2, np.float64)})


def test_flatten_empty() -> None:
    vector, layout = flatten({})
    assert vector.shape == (0,) and vector.dtype == np.float32 and layout == ()
    assert unflatten(vector, layout) == {}


def test_core_imports_no_io_libraries() -> None:
    import p2pfl.core.tensors as module

    source = Path(module.__file__).read_text()
    for name in ("trio", "libp2p", "web3", "torch"):
        assert f"import {name}" not in source and f"from {name}" not in source


def test_flat_vector_bytes_are_the_blob_data_section() -> None:
    tensors = {"b": np.arange(3, dtype=np.float32), "a": np.ones((2, 2), np.float32)}
    blob = encode_tensors(tensors)
    header_len = int.from_bytes(blob[:8], "little")
    vector, _ = flatten(tensors)
    assert blob[8 + header_len :] == vector.tobytes()
