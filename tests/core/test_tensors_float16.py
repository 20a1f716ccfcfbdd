"""Float16 rounding with error feedback, and the float16 packing of tensors bytes (a
transport form: the unpacked bytes are what the CID names)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from p2pfl.core.tensors import (
    FLOAT16_PACK_MAGIC,
    InvalidTensors,
    encode_tensors,
    is_float16_packed,
    pack_float16,
    round_to_float16,
    unpack_float16,
)
from p2pfl.errors import ConfigError
from p2pfl.train.config import TrainConfig


def _delta(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "fc.weight": rng.normal(0, 1e-3, (128, 784)).astype(np.float32),
        "fc.bias": rng.normal(0, 1e-5, 128).astype(np.float32),
        "out.bias": np.array([0.0, -0.0, 1e-8, -7e-6, 3.0], np.float32),
    }


def test_a_rounded_delta_packs_to_half_its_bytes_and_unpacks_to_the_same_bytes() -> None:
    rounded, _ = round_to_float16(_delta(1), {})
    blob = encode_tensors(rounded)
    packed = pack_float16(blob)
    assert packed is not None and is_float16_packed(packed)
    data = len(blob) - 8 - int.from_bytes(blob[:8], "little")
    assert len(packed) == len(blob) - data // 2 + len(FLOAT16_PACK_MAGIC) + 8
    assert unpack_float16(packed) == blob
    assert not is_float16_packed(blob)  # (a canonical blob never starts with the magic)


def test_bytes_that_are_not_all_float16_values_are_not_packed() -> None:
    blob = encode_tensors(_delta(2))  # float32 values, most not float16 ones
    assert pack_float16(blob) is None
    assert pack_float16(encode_tensors({"x": np.array([70000.0], np.float32)})) is None
    assert pack_float16(b"short") is None
    assert pack_float16((1 << 40).to_bytes(8, "little") + b"\0" * 16) is None  # header length


def test_a_bad_packing_is_refused_with_a_reason() -> None:
    rounded, _ = round_to_float16(_delta(3), {})
    blob = encode_tensors(rounded)
    packed = pack_float16(blob)
    assert packed is not None
    head = len(FLOAT16_PACK_MAGIC) + 8
    bad = [
        blob,  # no magic
        packed[: head - 1],  # cut in its header
        packed[:-1],  # an odd number of float16 bytes
        FLOAT16_PACK_MAGIC + (1 << 40).to_bytes(8, "little") + b"\0" * 64,  # prefix too large
        FLOAT16_PACK_MAGIC + (64).to_bytes(8, "little") + b"\0" * 8,  # prefix past the end
    ]
    for data in bad:
        with pytest.raises(InvalidTensors) as info:
            unpack_float16(data)
        assert info.value.reason == "tensors-packing"
    with pytest.raises(InvalidTensors, match="limit"):
        unpack_float16(packed, max_bytes=len(blob) - 1)
    assert unpack_float16(packed, max_bytes=len(blob)) == blob


def test_error_feedback_carries_what_rounding_left_to_the_next_delta() -> None:
    """Over rounds, the rounded deltas sum to the raw ones but the last remainder (each
    remainder at most half a float16 step), instead of losing every round's rounding."""
    residual: dict[str, np.ndarray] = {}
    raw_sum = {k: np.zeros_like(v, dtype=np.float64) for k, v in _delta(0).items()}
    sent_sum = {k: np.zeros_like(v, dtype=np.float64) for k, v in _delta(0).items()}
    for r in range(20):
        delta = _delta(r)
        rounded, residual = round_to_float16(delta, residual)
        for k in delta:
            assert rounded[k].dtype == np.float32 and rounded[k].flags.c_contiguous
            assert np.array_equal(rounded[k].astype(np.float16).astype(np.float32), rounded[k])
            raw_sum[k] += delta[k]
            sent_sum[k] += rounded[k]
    for k in raw_sum:
        gap = np.abs(raw_sum[k] - sent_sum[k] - residual[k])
        assert float(gap.max()) <= 1e-6 * max(1.0, float(np.abs(raw_sum[k]).max())), k
        # The last remainder is at most one float16 step of the last rounded value: it
        # does not pile up round by round.
        spacing = np.spacing(np.abs(rounded[k]).astype(np.float16)).astype(np.float64)
        assert np.all(np.abs(residual[k]) <= spacing), k
    without, _ = round_to_float16(_delta(19), {})
    assert any(not np.array_equal(without[k], rounded[k]) for k in without)  # it carried


def test_values_beyond_float16_range_are_left_as_they_are() -> None:
    delta = {"big": np.array([1e6, 1.0], np.float32), "small": np.array([0.1], np.float32)}
    rounded, residual = round_to_float16(delta, {"big": np.zeros(2, np.float32)})
    assert np.array_equal(rounded["big"], delta["big"]) and not residual["big"].any()
    assert rounded["small"][0] == np.float32(np.float16(0.1))
    assert pack_float16(encode_tensors(rounded)) is None  # (sent as it is)


@settings(max_examples=60, deadline=None)
@given(
    hnp.arrays(
        np.float16,
        st.integers(0, 300),
        elements=st.floats(allow_nan=False, allow_infinity=False, width=16),
    )
)
def test_any_float16_values_pack_and_unpack_exactly(values: np.ndarray) -> None:
    blob = encode_tensors({"x": values.astype(np.float32)})
    packed = pack_float16(blob)
    assert packed is not None
    assert unpack_float16(packed) == blob


def test_the_train_table_takes_delta_float16_as_a_boolean_and_omits_it_when_off() -> None:
    assert TrainConfig.from_dict({"delta_float16": True}).delta_float16 is True
    assert TrainConfig.from_dict({"delta_float16": True}).to_dict()["delta_float16"] is True
    assert "delta_float16" not in TrainConfig().to_dict()  # (manifests keep their bytes)
    with pytest.raises(ConfigError, match="delta_float16"):
        TrainConfig.from_dict({"delta_float16": "yes"})


VECTORS = json.loads(
    (Path(__file__).parents[2] / "protocol" / "vectors" / "tensors.json").read_text()
)


@pytest.mark.parametrize("entry", VECTORS["float16_packing"], ids=lambda e: e["name"])
def test_float16_packing_vectors(entry: dict) -> None:
    blob = bytes.fromhex(entry["hex"])
    packed = pack_float16(blob)
    if entry["packed"] is None:
        assert packed is None
    else:
        assert packed == bytes.fromhex(entry["packed"])
        assert unpack_float16(packed) == blob
