"""Models and deltas as canonical safetensors bytes, and as flat float32 vectors.

One set of named float32 tensors has exactly one encoding (spec: protocol/spec/tensors.md),
so equal models have equal bytes and therefore equal CIDs. The encoding is the one
`safetensors.numpy.save` writes for float32 tensors without metadata:

    u64 little-endian header length N | N bytes of JSON header | tensor data

The header is compact JSON (no whitespace), names in ascending order, each
`"name":{"dtype":"F32","shape":[...],"data_offsets":[begin,end]}`, padded with spaces to a
multiple of 8 bytes; data is each tensor's little-endian float32 values, C order, in name
order, back to back. The decoder is strict: it accepts only what the encoder would write
(re-encoding must reproduce the input), never unpickles, and by default refuses NaN/Inf.

Aggregation works on flat vectors: `flatten` concatenates tensors in name order and
returns the layout `((name, shape), ...)` that `unflatten` needs to split them again.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from p2pfl.errors import InvalidMessage

# The only dtype on the wire: little-endian IEEE-754 binary32.
WIRE_DTYPE = np.dtype("<f4")
SAFETENSORS_F32 = "F32"
# A header costs ~80 bytes per tensor: 4 MiB allows ~50k tensors, far beyond any model
# here (safetensors' own reader allows 100 MB, which is more than we want to parse).
MAX_HEADER_BYTES = 4 * 1024 * 1024
# A canonical header nests exactly 3 deep: {"name":{"shape":[...]}}. Deeper input is
# refused before the JSON parser sees it (deep nesting can exhaust the C stack).
MAX_JSON_DEPTH = 3
# Default cap on a whole encoded model/delta: 1 GiB is far above the models this project
# trains (MNIST-sized to ResNet-sized, < 100 MB) and keeps a hostile blob from exhausting RAM.
DEFAULT_MAX_BYTES = 1 << 30
# Length prefix: u64 little-endian.
LENGTH_PREFIX_BYTES = 8
# safetensors pads the header with spaces so tensor data starts 8-byte aligned.
HEADER_ALIGNMENT = 8
# Tensor names: printable ASCII without `"` or `\` (so JSON needs no escapes and byte order
# equals code-point order), 1..256 chars; torch state_dict keys like "layer1.0.weight" fit.
MAX_NAME_LENGTH = 256
_NAME = re.compile(r"[\x20-\x21\x23-\x5b\x5d-\x7e]{1,256}")
# safetensors reserves this key for string metadata; we carry none.
METADATA_KEY = "__metadata__"
_JSON_STRING = re.compile(rb'"[^"]*"')
# Nesting step of each byte of a header without its strings: +1 opens, -1 closes, else 0
# (a table lookup: `np.isin` cost ~60 us a header, most of a delta's decode outside its data).
_NESTING_STEP = np.zeros(256, dtype=np.int64)
_NESTING_STEP[list(b"[{")] = 1
_NESTING_STEP[list(b"]}")] = -1

Layout = tuple[tuple[str, tuple[int, ...]], ...]


class InvalidTensors(InvalidMessage):
    """Tensors or safetensors bytes that break the canonical form; `reason` says which rule."""


# --- encoding -----------------------------------------------------------------------------


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name == METADATA_KEY:
        raise InvalidTensors(
            "tensors-name",
            f"{name!r}: names must be 1-{MAX_NAME_LENGTH} printable ASCII chars without "
            f'" or \\, and not {METADATA_KEY}',
        )
    return name


def _check_array(name: str, array: object, allow_nonfinite: bool) -> np.ndarray:
    if not isinstance(array, np.ndarray):
        raise InvalidTensors(
            "tensors-type", f"{name}: expected numpy.ndarray, got {type(array).__name__}"
        )
    if array.dtype != WIRE_DTYPE:
        raise InvalidTensors(
            "tensors-dtype",
            f"{name}: dtype {array.dtype} is not float32; cast it yourself "
            "(e.g. .astype(np.float32)) if that loses nothing you care about",
        )
    if not array.flags.c_contiguous:
        raise InvalidTensors(
            "tensors-layout", f"{name}: not C-contiguous; pass np.ascontiguousarray(x)"
        )
    if not allow_nonfinite and not bool(np.isfinite(array).all()):
        raise InvalidTensors("tensors-nonfinite", f"{name}: contains NaN or Inf")
    return array


def _header(entries: list[tuple[str, tuple[int, ...]]]) -> bytes:
    """Canonical, padded header for (name, shape) pairs already in sorted order."""
    parts = []
    offset = 0
    for name, shape in entries:
        end = offset + math.prod(shape) * WIRE_DTYPE.itemsize
        dims = ",".join(str(d) for d in shape)
        parts.append(
            f'"{name}":{{"dtype":"{SAFETENSORS_F32}","shape":[{dims}],'
            f'"data_offsets":[{offset},{end}]}}'
        )
        offset = end
    text = ("{" + ",".join(parts) + "}").encode("ascii")
    return text + b" " * (-len(text) % HEADER_ALIGNMENT)


def encode_tensors(tensors: Mapping[str, np.ndarray], allow_nonfinite: bool = False) -> bytes:
    """Canonical safetensors bytes for float32, C-contiguous tensors (names sorted).

    Raises `InvalidTensors` for a bad name, a non-ndarray, a dtype other than float32, a
    non-contiguous array, or (unless `allow_nonfinite`) NaN/Inf. Nothing is cast silently.
    """
    entries = []
    arrays = []
    for name in sorted(tensors):
        array = _check_array(_check_name(name), tensors[name], allow_nonfinite)
        entries.append((name, tuple(int(d) for d in array.shape)))
        arrays.append(array.reshape(-1).view(np.uint8))
    header = _header(entries)
    prefix = len(header).to_bytes(LENGTH_PREFIX_BYTES, "little")
    return b"".join([prefix, header, *arrays])  # type: ignore[list-item]  # ndarrays are buffers


# --- decoding -----------------------------------------------------------------------------


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise InvalidTensors("tensors-bad-header", f"duplicate key {key!r}")
        result[key] = value
    return result


def _reject_constant(name: str) -> None:
    raise InvalidTensors("tensors-bad-header", f"JSON constant {name} not allowed")


def _is_uint(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_nesting(raw: bytes) -> None:
    """Refuse escapes and nesting deeper than MAX_JSON_DEPTH, without recursion."""
    if b"\\" in raw:
        # Canonical headers have no escapes (names exclude `"` and `\`).
        raise InvalidTensors("tensors-bad-header", "escape sequences are not allowed")
    structure = _JSON_STRING.sub(b"", raw)  # without escapes, a string is "[^"]*"
    codes = np.frombuffer(structure, dtype=np.uint8)
    steps = _NESTING_STEP[codes]
    if steps.size and int(np.cumsum(steps).max()) > MAX_JSON_DEPTH:
        raise InvalidTensors("tensors-bad-header", f"JSON nested deeper than {MAX_JSON_DEPTH}")


def _parse_header(raw: bytes) -> list[tuple[str, tuple[int, ...], int, int]]:
    _check_nesting(raw)
    try:
        header = json.loads(
            raw.decode("utf-8"),
            object_pairs_hook=_no_duplicates,
            parse_constant=_reject_constant,
        )
    except InvalidTensors:
        raise
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise InvalidTensors("tensors-bad-header", f"header is not JSON: {exc}") from None
    if not isinstance(header, dict):
        raise InvalidTensors("tensors-bad-header", "header must be a JSON object")
    if METADATA_KEY in header:
        raise InvalidTensors("tensors-metadata", "metadata is not allowed")
    entries = []
    for name, info in header.items():
        _check_name(name)
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise InvalidTensors(
                "tensors-bad-header", f"{name}: need exactly dtype, shape, data_offsets"
            )
        if info["dtype"] != SAFETENSORS_F32:
            raise InvalidTensors("tensors-dtype", f"{name}: dtype {info['dtype']!r} is not F32")
        shape, offsets = info["shape"], info["data_offsets"]
        if not isinstance(shape, list) or not all(_is_uint(d) for d in shape):
            raise InvalidTensors("tensors-shape", f"{name}: shape must be a list of ints >= 0")
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(_is_uint(o) for o in offsets)
        ):
            raise InvalidTensors("tensors-offsets", f"{name}: data_offsets must be [begin, end]")
        entries.append((name, tuple(shape), offsets[0], offsets[1]))
    return entries


def decode_tensors(
    blob: bytes | bytearray | memoryview,
    max_bytes: int = DEFAULT_MAX_BYTES,
    allow_nonfinite: bool = False,
) -> dict[str, np.ndarray]:
    """Decode canonical safetensors bytes into float32 arrays, strictly.

    Refuses (with `InvalidTensors`, never another exception): more than `max_bytes`,
    truncation, a bad or oversized header, metadata, any dtype but F32, names outside the
    allowed set, offsets that are not back to back in name order, trailing bytes, any
    encoding other than the canonical one, and NaN/Inf unless `allow_nonfinite`.
    Arrays are views into `blob`, not copies (read-only when `blob` is `bytes`).
    """
    view = memoryview(blob).cast("B") if not isinstance(blob, bytes) else blob
    size = len(view)
    if size > max_bytes:
        raise InvalidTensors("tensors-too-large", f"{size} bytes is over the limit {max_bytes}")
    if size < LENGTH_PREFIX_BYTES:
        raise InvalidTensors("tensors-truncated", "shorter than the 8-byte length prefix")
    header_len = int.from_bytes(view[:LENGTH_PREFIX_BYTES], "little")
    if header_len > MAX_HEADER_BYTES:
        raise InvalidTensors("tensors-bad-header", f"header of {header_len} bytes is too large")
    data_start = LENGTH_PREFIX_BYTES + header_len
    if data_start > size:
        raise InvalidTensors("tensors-truncated", "header runs past the end")
    header_raw = bytes(view[LENGTH_PREFIX_BYTES:data_start])
    entries = _parse_header(header_raw)

    ordered = sorted(entries)
    offset = 0
    for name, shape, begin, end in ordered:
        nbytes = math.prod(shape) * WIRE_DTYPE.itemsize
        if begin != offset or end != begin + nbytes:
            raise InvalidTensors(
                "tensors-offsets",
                f"{name}: data_offsets [{begin},{end}] should be [{offset},{offset + nbytes}]",
            )
        offset = end
    if data_start + offset != size:
        raise InvalidTensors(
            "tensors-size", f"data is {size - data_start} bytes, header describes {offset}"
        )
    if _header([(n, s) for n, s, _, _ in ordered]) != header_raw:
        raise InvalidTensors("tensors-non-canonical", "header is not in canonical form")

    result: dict[str, np.ndarray] = {}
    for name, shape, begin, end in ordered:
        array = np.frombuffer(
            view, dtype=WIRE_DTYPE, count=(end - begin) // 4, offset=data_start + begin
        ).reshape(shape)
        if not allow_nonfinite and not bool(np.isfinite(array).all()):
            raise InvalidTensors("tensors-nonfinite", f"{name}: contains NaN or Inf")
        result[name] = array
    return result


# --- flat vectors -------------------------------------------------------------------------


def layout_of(tensors: Mapping[str, np.ndarray]) -> Layout:
    """The (name, shape) pairs of `tensors` in name order."""
    return tuple((name, tuple(int(d) for d in tensors[name].shape)) for name in sorted(tensors))


def layout_size(layout: Layout) -> int:
    """Number of float32 values a flat vector of `layout` holds."""
    return sum(math.prod(shape) for _, shape in layout)


def tensor_sizes(layout: Layout) -> tuple[int, ...]:
    """Values of each non-empty tensor of `layout`, in flat-vector order."""
    return tuple(n for n in (math.prod(shape) for _, shape in layout) if n > 0)


def flatten(tensors: Mapping[str, np.ndarray]) -> tuple[np.ndarray, Layout]:
    """Concatenate float32 tensors in name order into one new 1-D float32 vector."""
    for name in tensors:
        if not isinstance(tensors[name], np.ndarray) or tensors[name].dtype != WIRE_DTYPE:
            raise InvalidTensors("tensors-dtype", f"{name}: flatten needs float32 ndarrays")
    layout = layout_of(tensors)
    if not layout:
        return np.zeros(0, dtype=WIRE_DTYPE), layout
    vector = np.concatenate([tensors[name].reshape(-1) for name, _ in layout])
    return vector, layout


def unflatten(vector: np.ndarray, layout: Layout) -> dict[str, np.ndarray]:
    """Split a flat float32 vector back into named tensors (views into `vector`)."""
    if not isinstance(vector, np.ndarray) or vector.ndim != 1 or vector.dtype != WIRE_DTYPE:
        raise InvalidTensors("tensors-layout", "unflatten needs a 1-D float32 ndarray")
    expected = layout_size(layout)
    if vector.size != expected:
        raise InvalidTensors(
            "tensors-layout", f"vector has {vector.size} values, layout needs {expected}"
        )
    result: dict[str, np.ndarray] = {}
    offset = 0
    for name, shape in layout:
        count = math.prod(shape)
        result[name] = vector[offset : offset + count].reshape(shape)
        offset += count
    return result


# --- float16 packing (a transport form, never hashed) -------------------------------------

# First 8 bytes of a packed blob. Read as a canonical blob's u64 header length it is ~2^54,
# far over MAX_HEADER_BYTES, so no canonical blob starts with it.
FLOAT16_PACK_MAGIC = b"p2pfl16\x00"
_HALF = np.dtype("<f2")
_WORD = np.dtype("<u4")


def is_float16_packed(data: bytes | bytearray | memoryview) -> bool:
    """Whether `data` is a `pack_float16` form (else: bytes to take as they are)."""
    return bytes(data[: len(FLOAT16_PACK_MAGIC)]) == FLOAT16_PACK_MAGIC


def pack_float16(blob: bytes | bytearray | memoryview) -> bytes | None:
    """Canonical tensors bytes whose every value is a float16 value, in half the data bytes:

        magic (8) | u64 LE p | the blob's first p bytes (length prefix and header) | float16 data

    `unpack_float16` gives back the blob byte for byte (each float16 widens to the float32
    it came from), so the receiver checks the unpacked bytes against the CID as before.
    None when the blob's values are not all exact in float16 (-0.0 included) or the bytes
    are not laid out as tensors bytes: send those as they are."""
    view = memoryview(blob).cast("B")
    if len(view) < LENGTH_PREFIX_BYTES:
        return None
    (header_len,) = np.frombuffer(view[:LENGTH_PREFIX_BYTES], dtype="<u8")
    prefix = LENGTH_PREFIX_BYTES + int(header_len)
    if header_len > MAX_HEADER_BYTES or prefix > len(view) or (len(view) - prefix) % 4:
        return None
    values = np.frombuffer(view[prefix:], dtype=WIRE_DTYPE)
    with np.errstate(over="ignore"):
        half = values.astype(_HALF)
    if not np.array_equal(half.astype(WIRE_DTYPE).view(_WORD), values.view(_WORD)):
        return None
    return b"".join(
        [FLOAT16_PACK_MAGIC, int(prefix).to_bytes(8, "little"), view[:prefix], half.tobytes()]
    )


def unpack_float16(
    packed: bytes | bytearray | memoryview, max_bytes: int = DEFAULT_MAX_BYTES
) -> bytes:
    """The bytes `pack_float16` packed. Raises `InvalidTensors("tensors-packing")` for
    bytes that are not a packing or would unpack to more than `max_bytes`; what it returns
    is unchecked (compare it with the CID it should have)."""
    view = memoryview(packed).cast("B")
    head = len(FLOAT16_PACK_MAGIC) + 8
    if len(view) < head or not is_float16_packed(view):
        raise InvalidTensors("tensors-packing", "not a float16 packing")
    prefix = int.from_bytes(view[len(FLOAT16_PACK_MAGIC) : head], "little")
    if prefix > LENGTH_PREFIX_BYTES + MAX_HEADER_BYTES or head + prefix > len(view):
        raise InvalidTensors("tensors-packing", f"a {prefix}-byte header in {len(view)} bytes")
    data = view[head + prefix :]
    if len(data) % 2 or prefix + 2 * len(data) > max_bytes:
        raise InvalidTensors(
            "tensors-packing", f"{len(data)} bytes of float16 data (limit {max_bytes} unpacked)"
        )
    widened = np.frombuffer(data, dtype=_HALF).astype(WIRE_DTYPE)
    return b"".join([view[head : head + prefix], widened.tobytes()])


def round_to_float16(
    tensors: Mapping[str, np.ndarray], residual: Mapping[str, np.ndarray]
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Error feedback: each float32 tensor plus what rounding left over last time, rounded
    to the nearest float16 value (kept as float32), and the new remainders. A tensor with a
    value beyond float16's range, or whose residual does not match it, is rounded without
    the residual if that fits, else left as it is (its remainder zero)."""
    rounded: dict[str, np.ndarray] = {}
    remainders: dict[str, np.ndarray] = {}
    limit = float(np.finfo(_HALF).max)
    for name, value in tensors.items():
        carried = residual.get(name)
        target = value
        if carried is not None and carried.shape == value.shape and carried.dtype == WIRE_DTYPE:
            target = value + carried
        if not bool(np.all(np.abs(target) <= limit)):
            target = value
        if not bool(np.all(np.abs(target) <= limit)):
            rounded[name] = value
            remainders[name] = np.zeros_like(value)
            continue
        half = target.astype(_HALF).astype(WIRE_DTYPE)
        rounded[name] = np.ascontiguousarray(half)
        remainders[name] = target - half
    return rounded, remainders
