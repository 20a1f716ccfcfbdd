"""Datasets: Fashion-MNIST from Debian's package, sklearn digits, and a user's own data.

Nothing is downloaded at run time. Every loader returns a `Dataset` of
x float32 [N, C, H, W] in [0, 1] and y int64 class indices.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from p2pfl.errors import ConfigError

# Where Debian's `dataset-fashion-mnist` package puts the gzipped IDX files.
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
# Environment override for a non-Debian machine (a folder holding the same four files).
FASHION_MNIST_ENV = "P2PFL_FASHION_MNIST_DIR"
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip

# IDX magic: two zero bytes, a type code, the number of dimensions (LeCun's MNIST page).
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
IDX_IMAGES_MAGIC = 0x00000803  # 2051: unsigned bytes, 3 dims
IDX_LABELS_MAGIC = 0x00000801  # 2049: unsigned bytes, 1 dim
GZIP_MAGIC = b"\x1f\x8b"

# A user's images are brought to the built-in models' geometry.
USER_IMAGE_SIZE = 28
USER_IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif"})


class DataError(ConfigError):
    """Data files that are missing or do not have the expected layout."""


@dataclass(frozen=True)
class Dataset:
    """Images and labels held in memory: x float32 [N, C, H, W], y int64 [N]."""

    x: np.ndarray
    y: np.ndarray
    classes: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.x.ndim != 4:
            raise DataError(f"dataset x must be [N, C, H, W], got shape {list(self.x.shape)}")
        if self.y.ndim != 1 or len(self.y) != len(self.x):
            raise DataError(
                f"dataset y must be [N] with N = {len(self.x)}, got shape {list(self.y.shape)}"
            )
        if self.x.dtype != np.float32 or self.y.dtype != np.int64:
            raise DataError(
                f"dataset dtypes must be float32/int64, got {self.x.dtype}/{self.y.dtype}"
            )

    def __len__(self) -> int:
        return len(self.y)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W), the `input_shape` a model for this data takes."""
        _, c, h, w = self.x.shape
        return (c, h, w)

    def subset(self, indices: np.ndarray) -> Dataset:
        """The rows `indices` (a copy), e.g. one client's partition."""
        idx = np.asarray(indices, dtype=np.int64)
        return Dataset(self.x[idx], self.y[idx], self.classes)


def parse_idx(
    raw: bytes, expected_magic: int | None = None, source: str = "IDX data"
) -> np.ndarray:
    """Decode IDX bytes (optionally gzipped) into a numpy array in native byte order.

    Checks the magic (and `expected_magic` when given) and that the payload length matches
    the header's dimensions exactly.
    """
    if raw[:2] == GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise DataError(f"{source}: corrupt gzip stream: {exc}") from exc
    if len(raw) < 4:
        raise DataError(f"{source}: too short for an IDX header ({len(raw)} bytes)")
    magic = int.from_bytes(raw[:4], "big")
    if raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES or raw[3] == 0:
        raise DataError(f"{source}: bad IDX magic 0x{magic:08x}")
    if expected_magic is not None and magic != expected_magic:
        raise DataError(f"{source}: IDX magic 0x{magic:08x}, expected 0x{expected_magic:08x}")
    dtype = IDX_DTYPES[raw[2]]
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{source}: truncated IDX header")
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(
            f"{source}: IDX dims {dims} need {expected} payload bytes, file has {len(raw) - header}"
        )
    arr = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="))


def read_idx(path: Path, expected_magic: int | None = None) -> np.ndarray:
    """Read and decode one IDX file (gzipped or not)."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    return parse_idx(raw, expected_magic, source=str(path))


def fashion_mnist_dir() -> Path:
    """The folder holding Fashion-MNIST: $P2PFL_FASHION_MNIST_DIR or Debian's location."""
    return Path(os.environ.get(FASHION_MNIST_ENV) or FASHION_MNIST_DIR)


@lru_cache(maxsize=4)
def _load_fashion_mnist_cached(split: str, folder: str) -> Dataset:
    images_name, labels_name = FASHION_MNIST_FILES[split]
    root = Path(folder)
    missing = [n for n in (images_name, labels_name) if not (root / n).is_file()]
    if missing:
        raise DataError(
            f"Fashion-MNIST files {missing} not found in {root}. Install them with "
            "`make setup` or `sudo apt-get install dataset-fashion-mnist`, or point "
            f"${FASHION_MNIST_ENV} at a folder holding the four IDX .gz files. "
            "(p2pfl never downloads data at run time.)"
        )
    images = read_idx(root / images_name, IDX_IMAGES_MAGIC)
    labels = read_idx(root / labels_name, IDX_LABELS_MAGIC)
    if len(images) != len(labels):
        raise DataError(f"Fashion-MNIST {split}: {len(images)} images but {len(labels)} labels")
    x = images.astype(np.float32)[:, None, :, :]
    x /= np.float32(255.0)  # in place: one float copy of the 60,000 images at a time, not two
    y = labels.astype(np.int64)
    # Shared by every caller in the process: make them read-only so nobody edits the cache.
    x.setflags(write=False)
    y.setflags(write=False)
    return Dataset(x, y, FASHION_MNIST_CLASSES)


def load_fashion_mnist(split: str = "train") -> Dataset:
    """Fashion-MNIST `split` ("train": 60000, "test": 10000) as x [N,1,28,28] in [0,1], y int64.

    Decoded once per process and cached; the arrays are read-only (use `subset` for a copy).
    """
    if split not in FASHION_MNIST_FILES:
        raise ConfigError(f"Fashion-MNIST split must be 'train' or 'test', got {split!r}")
    return _load_fashion_mnist_cached(split, str(fashion_mnist_dir()))


@lru_cache(maxsize=4)
def _load_digits_cached(image_size: int) -> Dataset:
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    # sklearn's digits are 8x8 with integer intensities 0..16.
    x = (bunch.images.astype(np.float32) / np.float32(16.0))[:, None, :, :]
    if image_size != 8:
        import torch
        import torch.nn.functional as F

        x = F.interpolate(
            torch.from_numpy(x), size=(image_size, image_size), mode="bilinear", align_corners=False
        ).numpy()
        x = np.clip(x, 0.0, 1.0).astype(np.float32)
    y = bunch.target.astype(np.int64)
    x.setflags(write=False)
    y.setflags(write=False)
    return Dataset(x, y, tuple(str(i) for i in range(10)))


def load_digits(image_size: int = 8) -> Dataset:
    """sklearn's bundled 1797 handwritten digits (8x8), for tiny tests.

    `image_size` != 8 resizes bilinearly (e.g. 28 to feed the default CNN).
    """
    if image_size < 4:
        raise ConfigError(f"digits image_size must be >= 4, got {image_size}")
    return _load_digits_cached(int(image_size))


def forget_cached_datasets() -> None:
    """Drop the decoded Fashion-MNIST and digits this process cached (arrays still in use
    elsewhere stay alive): e.g. once a simulation has cut and written its partitions."""
    _load_fashion_mnist_cached.cache_clear()
    _load_digits_cached.cache_clear()


def split_dataset(data: Dataset, test_fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """Seeded shuffle split into (train, test); test gets round(N * test_fraction) rows."""
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"test_fraction must be in (0, 1), got {test_fraction}")
    perm = np.random.default_rng(seed).permutation(len(data))
    n_test = int(round(len(data) * test_fraction))
    return data.subset(np.sort(perm[n_test:])), data.subset(np.sort(perm[:n_test]))


def _user_npz(path: Path) -> Dataset:
    try:
        with np.load(path, allow_pickle=False) as npz:
            names = set(npz.files)
            if not {"x", "y"} <= names:
                raise DataError(f"{path}: a .npz needs arrays 'x' and 'y', found {sorted(names)}")
            x = np.asarray(npz["x"])
            y = np.asarray(npz["y"])
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc})") from exc
    if x.ndim == 3:  # [N, H, W] grayscale
        x = x[:, None, :, :]
    if x.ndim != 4:
        raise DataError(f"{path}: x must be [N, H, W] or [N, C, H, W], got shape {list(x.shape)}")
    if y.ndim != 1 or len(y) != len(x):
        raise DataError(f"{path}: y must be [N] with N = {len(x)}, got shape {list(y.shape)}")
    if len(x) == 0:
        raise DataError(f"{path}: the dataset is empty")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
        raise DataError(f"{path}: y must hold non-negative integer class indices")
    if x.dtype == np.uint8:
        xf = x.astype(np.float32) / np.float32(255.0)
    elif np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer):
        xf = x.astype(np.float32)
        if xf.min() < 0.0 or xf.max() > 1.0:
            raise DataError(f"{path}: float x must be scaled to [0, 1] (or store uint8 0..255)")
    else:
        raise DataError(f"{path}: x has unsupported dtype {x.dtype}")
    return Dataset(np.ascontiguousarray(xf), y.astype(np.int64))


def _user_image_tree(root: Path) -> Dataset:
    from PIL import Image, UnidentifiedImageError

    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DataError(
            f"{root}: expected one sub-folder per class (root/<class_name>/*.png), found none"
        )
    xs: list[np.ndarray] = []
    ys: list[int] = []
    for label, class_dir in enumerate(class_dirs):
        files = sorted(
            p
            for p in class_dir.iterdir()
            if p.is_file() and p.suffix.lower() in USER_IMAGE_SUFFIXES
        )
        if not files:
            raise DataError(
                f"{class_dir}: class folder holds no images "
                f"({', '.join(sorted(USER_IMAGE_SUFFIXES))})"
            )
        for file in files:
            try:
                with Image.open(file) as img:
                    gray = img.convert("L").resize(
                        (USER_IMAGE_SIZE, USER_IMAGE_SIZE), Image.Resampling.BILINEAR
                    )
                    xs.append(np.asarray(gray, dtype=np.uint8))
            except (OSError, UnidentifiedImageError) as exc:
                raise DataError(f"{file}: not a readable image ({exc})") from exc
            ys.append(label)
    x = (np.stack(xs).astype(np.float32) / np.float32(255.0))[:, None, :, :]
    return Dataset(x, np.asarray(ys, dtype=np.int64), tuple(d.name for d in class_dirs))


def load_user_data(path: str | os.PathLike[str]) -> Dataset:
    """A laptop user's own labelled data, which never leaves the local trainer.

    Two layouts:
      * `data.npz` with arrays `x` ([N,H,W] or [N,C,H,W]; uint8 0..255 or float in [0,1])
        and `y` ([N] integer class indices);
      * an image tree `root/<class_name>/*.png|jpg|...`: classes are the sorted folder
        names (label i = i-th name); images become grayscale 28x28 float32 in [0,1].
    """
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such file or folder")
    if p.is_file():
        if p.suffix.lower() != ".npz":
            raise DataError(f"{p}: a data file must be a .npz with arrays x and y")
        return _user_npz(p)
    return _user_image_tree(p)


__all__ = [
    "DataError",
    "Dataset",
    "FASHION_MNIST_CLASSES",
    "forget_cached_datasets",
    "load_digits",
    "load_fashion_mnist",
    "load_user_data",
    "parse_idx",
    "read_idx",
    "split_dataset",
]
