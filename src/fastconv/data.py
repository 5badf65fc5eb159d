"""Data for training: scikit-learn's shipped digits, an IDX (MNIST-format) reader, a seeded
batching iterator and batch augmentation transforms. Nothing is downloaded."""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence, Tuple

import numpy as np

from ._random import generator
from .autograd import Tensor

Split = Tuple[np.ndarray, np.ndarray]


def _resize_bilinear(x: np.ndarray, size: int) -> np.ndarray:
    """(N, C, H, W) -> (N, C, size, size), bilinear with half-pixel centres (align_corners=False)."""
    n, c, h, w = x.shape

    def coords(src, dst):
        pos = np.clip((np.arange(dst) + 0.5) * src / dst - 0.5, 0, src - 1)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, src - 1)
        return lo, hi, (pos - lo).astype(x.dtype)

    y0, y1, fy = coords(h, size)
    x0, x1, fx = coords(w, size)
    top = x[:, :, y0][:, :, :, x0] * (1 - fx) + x[:, :, y0][:, :, :, x1] * fx
    bottom = x[:, :, y1][:, :, :, x0] * (1 - fx) + x[:, :, y1][:, :, :, x1] * fx
    return top * (1 - fy)[:, None] + bottom * fy[:, None]


def load_digits(image_size: int = 8, resize: str = "upsample", test_fraction: float = 0.2,
                seed: int = 0) -> Tuple[Split, Split]:
    """scikit-learn's 1,797 handwritten 8x8 digits (shipped inside scikit-learn; no download).

    Returns ``(x_train, y_train), (x_test, y_test)``: float32 images of shape (N, 1, S, S)
    with values in [0, 1] and int64 labels 0-9, split after a seeded shuffle.
    ``image_size`` 8 keeps the originals; a larger size (e.g. 28, MNIST's) either
    ``resize='upsample'`` (bilinear) or ``'pad'`` (centred with zeros).
    """
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError:
        raise ImportError("load_digits reads the data set shipped with scikit-learn: pip install 'fastconv[data]'") \
            from None
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if int(image_size) < 8:
        raise ValueError(f"image_size must be >= 8, got {image_size}")
    if resize not in ("upsample", "pad"):
        raise ValueError(f"resize must be 'upsample' or 'pad', got {resize!r}")
    d = sk_load_digits()
    x = (d.images.astype(np.float32) / 16.0)[:, None]
    y = d.target.astype(np.int64)
    size = int(image_size)
    if size != 8:
        if resize == "upsample":
            x = _resize_bilinear(x, size).astype(np.float32)
        else:
            before = (size - 8) // 2
            x = np.pad(x, [(0, 0), (0, 0), (before, size - 8 - before), (before, size - 8 - before)])
    order = np.random.default_rng(seed).permutation(len(y))
    n_test = int(round(len(y) * test_fraction))
    test, train = order[:n_test], order[n_test:]
    return (x[train], y[train]), (x[test], y[test])


_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"),
               0x0E: np.dtype(">f8")}


def read_idx(path) -> np.ndarray:
    """An IDX file (the MNIST format; ``.gz`` compressed or not) as a numpy array.

    Raises ``ValueError`` for a bad magic number, an unknown type code, or a size that does
    not match the header.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise ValueError(f"{path}: cannot read ({e})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path}: not an IDX file (bad magic number)")
    code, ndim = raw[2], raw[3]
    if code not in _IDX_DTYPES:
        raise ValueError(f"{path}: unknown IDX type code 0x{code:02x}")
    if len(raw) < 4 + 4 * ndim:
        raise ValueError(f"{path}: truncated IDX header")
    shape = tuple(int(v) for v in np.frombuffer(raw, ">u4", ndim, 4))
    dtype = np.dtype(_IDX_DTYPES[code])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    body = raw[4 + 4 * ndim:]
    if len(body) != expected:
        raise ValueError(f"{path}: header says {shape} ({expected} bytes of data), file has {len(body)}")
    return np.frombuffer(body, dtype).reshape(shape).astype(dtype.newbyteorder("="))


def load_mnist(directory) -> Tuple[Split, Split]:
    """MNIST from the four standard IDX files in ``directory`` (``train-images-idx3-ubyte``
    etc., optionally ``.gz``), as ``load_digits`` returns it: (N, 1, 28, 28) float32 in [0, 1]."""
    directory = Path(directory)

    def find(stem):
        for name in (stem, stem + ".gz"):
            if (directory / name).exists():
                return directory / name
        raise FileNotFoundError(f"{directory}: no {stem} (or {stem}.gz)")

    def images(stem):
        return (read_idx(find(stem)).astype(np.float32) / 255.0)[:, None]

    def labels(stem):
        return read_idx(find(stem)).astype(np.int64)

    return ((images("train-images-idx3-ubyte"), labels("train-labels-idx1-ubyte")),
            (images("t10k-images-idx3-ubyte"), labels("t10k-labels-idx1-ubyte")))


class DataLoader:
    """Batches of ``(Tensor images, int64 labels)`` from arrays; ``shuffle`` reorders every
    epoch with a generator seeded by ``seed`` (or fastconv's, :func:`fastconv.manual_seed`);
    ``transform`` maps each image batch (a numpy array) before it becomes a Tensor."""

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int = 32, shuffle: bool = False,
                 seed: Optional[int] = None, drop_last: bool = False,
                 transform: Optional[Callable[[np.ndarray], np.ndarray]] = None):
        if len(x) != len(y):
            raise ValueError(f"x and y differ in length: {len(x)} and {len(y)}")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.x, self.y = x, y
        self.batch_size, self.shuffle, self.drop_last, self.transform = int(batch_size), shuffle, drop_last, transform
        self._rng = np.random.default_rng(seed) if seed is not None else None

    def __len__(self) -> int:
        n = len(self.x)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[Tuple[Tensor, np.ndarray]]:
        n = len(self.x)
        order = (self._rng or generator()).permutation(n) if self.shuffle else np.arange(n)
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            xb = self.x[idx]
            if self.transform is not None:
                xb = self.transform(xb)
            yield Tensor(np.ascontiguousarray(xb, np.float32)), self.y[idx]


class Compose:
    """Applies transforms in order."""

    def __init__(self, transforms: Sequence[Callable]):
        self.transforms = list(transforms)

    def __call__(self, x):
        for t in self.transforms:
            x = t(x)
        return x


class RandomCrop:
    """Zero-pads each (N, C, H, W) batch by ``padding`` and crops a random ``size`` window per image."""

    def __init__(self, size: int, padding: int = 0):
        self.size, self.padding = int(size), int(padding)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        p, s = self.padding, self.size
        xp = np.pad(x, [(0, 0), (0, 0), (p, p), (p, p)]) if p else x
        h, w = xp.shape[2:]
        if s > h or s > w:
            raise ValueError(f"crop size {s} is larger than the padded image {h}x{w}")
        rng = generator()
        tops, lefts = rng.integers(0, h - s + 1, len(x)), rng.integers(0, w - s + 1, len(x))
        return np.stack([img[:, t:t + s, l:l + s] for img, t, l in zip(xp, tops, lefts)])


class RandomHorizontalFlip:
    """Mirrors each image left-right with probability ``p``."""

    def __init__(self, p: float = 0.5):
        self.p = float(p)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        flip = generator().random(len(x)) < self.p
        out = x.copy()
        out[flip] = out[flip][..., ::-1]
        return out


class Normalize:
    """(x - mean) / std per channel."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        self.mean = np.asarray(mean, np.float32).reshape(1, -1, 1, 1)
        self.std = np.asarray(std, np.float32).reshape(1, -1, 1, 1)
        if (self.std <= 0).any():
            raise ValueError("std must be positive")

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean) / self.std


def progress(iterable, desc: str = "", total: Optional[int] = None, enabled: bool = True):
    """A tqdm progress bar over ``iterable`` when tqdm is installed and stderr is a terminal;
    the iterable itself otherwise."""
    if enabled and os.isatty(2):
        try:
            from tqdm import tqdm
        except ImportError:
            return iterable
        return tqdm(iterable, desc=desc, total=total, leave=False, unit="batch")
    return iterable
