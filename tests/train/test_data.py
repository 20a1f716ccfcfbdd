"""Loaders: IDX parsing, Fashion-MNIST from the Debian package, digits, a user's own data."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from p2pfl.errors import ConfigError
from p2pfl.train.data import (
    FASHION_MNIST_ENV,
    IDX_IMAGES_MAGIC,
    IDX_LABELS_MAGIC,
    DataError,
    Dataset,
    load_digits,
    load_fashion_mnist,
    load_user_data,
    parse_idx,
    read_idx,
    split_dataset,
)


def idx_bytes(arr: np.ndarray, code: int = 0x08) -> bytes:
    """Encode an array as IDX by hand (big-endian header, big-endian payload)."""
    dtype = {0x08: ">u1", 0x0B: ">i2", 0x0D: ">f4"}[code]
    header = bytes([0, 0, code, arr.ndim]) + b"".join(d.to_bytes(4, "big") for d in arr.shape)
    return header + arr.astype(dtype).tobytes()


def test_idx_roundtrip_raw_and_gzip(tmp_path: Path) -> None:
    images = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5)
    raw = idx_bytes(images)
    assert int.from_bytes(raw[:4], "big") == IDX_IMAGES_MAGIC
    np.testing.assert_array_equal(parse_idx(raw, IDX_IMAGES_MAGIC), images)
    path = tmp_path / "imgs.gz"
    path.write_bytes(gzip.compress(raw))
    np.testing.assert_array_equal(read_idx(path, IDX_IMAGES_MAGIC), images)


def test_idx_multibyte_types_come_back_in_native_order() -> None:
    shorts = np.array([[1, -2], [300, -32768]], dtype=np.int16)
    out = parse_idx(idx_bytes(shorts, 0x0B))
    assert out.dtype == np.dtype("int16") and out.dtype.isnative
    np.testing.assert_array_equal(out, shorts)
    floats = np.array([0.5, -1.25, 3.0], dtype=np.float32)
    np.testing.assert_array_equal(parse_idx(idx_bytes(floats, 0x0D)), floats)


@pytest.mark.parametrize(
    "raw, message",
    [
        (b"\x00\x00", "too short"),
        (b"\x01\x00\x08\x01\x00\x00\x00\x01\x05", "bad IDX magic"),
        (b"\x00\x00\x07\x01\x00\x00\x00\x01\x05", "bad IDX magic"),
        (b"\x00\x00\x08\x03\x00\x00", "truncated"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x03\x05", "payload bytes"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x01\x05\x06", "payload bytes"),
        (b"\x1f\x8bnot gzip at all", "corrupt gzip"),
    ],
)
def test_idx_rejects_malformed(raw: bytes, message: str) -> None:
    with pytest.raises(DataError, match=message):
        parse_idx(raw)


def test_idx_checks_expected_magic() -> None:
    labels = idx_bytes(np.array([1, 2, 3], dtype=np.uint8))
    assert parse_idx(labels, IDX_LABELS_MAGIC).tolist() == [1, 2, 3]
    with pytest.raises(DataError, match="expected 0x00000803"):
        parse_idx(labels, IDX_IMAGES_MAGIC)


def test_fashion_mnist_from_a_folder_of_idx_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    images = np.full((2, 28, 28), 255, dtype=np.uint8)
    images[1] = 0
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images)))
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(idx_bytes(np.array([7, 3], dtype=np.uint8)))
    )
    monkeypatch.setenv(FASHION_MNIST_ENV, str(tmp_path))
    data = load_fashion_mnist("test")
    assert data.x.shape == (2, 1, 28, 28) and data.x.dtype == np.float32
    assert data.x[0].min() == 1.0 and data.x[1].max() == 0.0
    assert data.y.tolist() == [7, 3] and data.y.dtype == np.int64
    assert load_fashion_mnist("test") is data  # decoded once per process
    assert not data.x.flags.writeable  # the shared cache cannot be edited by a caller
    # The train split is missing in this folder: the error says how to get it.
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist("train")
    with pytest.raises(ConfigError, match="split"):
        load_fashion_mnist("validation")


def test_real_fashion_mnist_shapes() -> None:
    # Installed by `make setup` (scripts/setup.sh) from Debian's dataset-fashion-mnist.
    train, test = load_fashion_mnist("train"), load_fashion_mnist("test")
    assert train.x.shape == (60000, 1, 28, 28) and train.y.shape == (60000,)
    assert test.x.shape == (10000, 1, 28, 28) and test.y.shape == (10000,)
    assert float(train.x.min()) == 0.0 and float(train.x.max()) == 1.0
    assert np.bincount(train.y).tolist() == [6000] * 10
    assert np.bincount(test.y).tolist() == [1000] * 10


def test_digits_native_and_resized() -> None:
    small = load_digits()
    assert small.x.shape == (1797, 1, 8, 8) and small.input_shape == (1, 8, 8)
    assert 0.0 <= small.x.min() and small.x.max() <= 1.0
    big = load_digits(28)
    assert big.x.shape == (1797, 1, 28, 28) and big.x.dtype == np.float32
    assert 0.0 <= big.x.min() and big.x.max() <= 1.0
    np.testing.assert_array_equal(small.y, big.y)


def test_split_dataset_is_seeded_and_disjoint() -> None:
    data = load_digits()
    train, test = split_dataset(data, 0.25, seed=3)
    again, _ = split_dataset(data, 0.25, seed=3)
    assert len(train) + len(test) == len(data) and len(test) == round(len(data) * 0.25)
    np.testing.assert_array_equal(train.x, again.x)


def test_dataset_rejects_bad_shapes() -> None:
    with pytest.raises(DataError, match=r"\[N, C, H, W\]"):
        Dataset(np.zeros((3, 8, 8), np.float32), np.zeros(3, np.int64))
    with pytest.raises(DataError, match="y must be"):
        Dataset(np.zeros((3, 1, 8, 8), np.float32), np.zeros(2, np.int64))
    with pytest.raises(DataError, match="dtypes"):
        Dataset(np.zeros((3, 1, 8, 8), np.float64), np.zeros(3, np.int64))


def test_user_npz_uint8_and_float(tmp_path: Path) -> None:
    x = np.random.default_rng(0).integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    y = np.array([0, 1, 2, 1, 0])
    np.savez(tmp_path / "mine.npz", x=x, y=y)
    data = load_user_data(tmp_path / "mine.npz")
    assert data.x.shape == (5, 1, 28, 28) and data.x.dtype == np.float32
    np.testing.assert_allclose(data.x[:, 0] * 255.0, x, atol=1e-4)
    assert data.y.tolist() == y.tolist() and data.y.dtype == np.int64
    np.savez(tmp_path / "f.npz", x=np.full((2, 1, 8, 8), 0.5), y=np.array([1, 0]))
    assert load_user_data(tmp_path / "f.npz").input_shape == (1, 8, 8)


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"x": np.zeros((2, 28, 28))}, "needs arrays 'x' and 'y'"),
        ({"x": np.zeros((2, 28)), "y": np.zeros(2, int)}, "x must be"),
        ({"x": np.zeros((2, 28, 28)), "y": np.zeros(3, int)}, "y must be"),
        ({"x": np.zeros((2, 28, 28)), "y": np.array([0.5, 1.0])}, "integer class"),
        ({"x": np.zeros((2, 28, 28)), "y": np.array([0, -1])}, "integer class"),
        ({"x": np.full((2, 28, 28), 7.0), "y": np.array([0, 1])}, r"\[0, 1\]"),
        ({"x": np.zeros((0, 28, 28)), "y": np.zeros(0, int)}, "empty"),
    ],
)
def test_user_npz_bad_layouts(tmp_path: Path, arrays: dict[str, np.ndarray], message: str) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=message):
        load_user_data(path)


def test_user_image_tree(tmp_path: Path) -> None:
    for name, shade, count in (("cat", 255, 2), ("ant", 0, 3)):
        (tmp_path / name).mkdir()
        for i in range(count):
            # RGB and odd sizes on purpose: the adapter converts to 28x28 grayscale.
            Image.new("RGB", (40, 30), (shade, shade, shade)).save(tmp_path / name / f"{i}.png")
    (tmp_path / "cat" / "notes.txt").write_text("ignored: not an image suffix")
    data = load_user_data(tmp_path)
    assert data.classes == ("ant", "cat")  # sorted folder names -> labels 0, 1
    assert data.x.shape == (5, 1, 28, 28) and data.x.dtype == np.float32
    assert data.y.tolist() == [0, 0, 0, 1, 1]
    assert data.x[:3].max() == 0.0 and data.x[3:].min() == 1.0


def test_user_image_tree_bad_layouts(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        load_user_data(tmp_path / "missing")
    (tmp_path / "x.csv").write_text("1,2")
    with pytest.raises(DataError, match=".npz"):
        load_user_data(tmp_path / "x.csv")
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.new("L", (28, 28)).save(flat / "a.png")
    with pytest.raises(DataError, match="one sub-folder per class"):
        load_user_data(flat)
    tree = tmp_path / "tree"
    (tree / "empty").mkdir(parents=True)
    with pytest.raises(DataError, match="holds no images"):
        load_user_data(tree)
    (tree / "empty" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="not a readable image"):
        load_user_data(tree)
