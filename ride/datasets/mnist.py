"""MNIST from torchvision's raw IDX files, read from disk (never downloaded).

Layout ``MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte`` (optionally ``.gz``),
28x28 grayscale, 10 classes.
"""

from __future__ import annotations

import gzip
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from ride.datasets.base import (
    Dataset,
    DatasetError,
    ImageSet,
    Request,
    check_split,
    require_dir,
)
from ride.registry import DATASETS

_IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
_IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension
_MNIST_SIDE = 28


def _mnist_file(data_dir: Path, prefix: str, kind: str) -> Path:
    """``<prefix>-<kind>-ubyte[.gz]`` in ``MNIST/raw``, ``raw`` or ``data_dir`` itself."""
    data_dir = require_dir(data_dir, "MNIST")
    stem = f"{prefix}-{kind}-ubyte"
    for folder in (data_dir / "MNIST" / "raw", data_dir / "raw", data_dir):
        for name in (stem, stem + ".gz"):
            if (folder / name).is_file():
                return folder / name
    raise DatasetError(
        f"MNIST file {stem}[.gz] not found in {data_dir} (looked in MNIST/raw, raw and the folder)"
    )


def _idx_expected(magic: int) -> tuple[int, int]:
    return (3, _IDX_IMAGES_MAGIC) if magic == _IDX_IMAGES_MAGIC else (1, _IDX_LABELS_MAGIC)


def _idx_header(path: Path, head: bytes, magic: int) -> tuple[int, ...]:
    """Dimensions from an IDX header (big-endian int32 magic, then one int32 per dimension)."""
    ndim, _ = _idx_expected(magic)
    if len(head) < 4 + 4 * ndim:
        raise DatasetError(f"{path} is too short for an IDX header ({len(head)} bytes)")
    got = int.from_bytes(head[:4], "big")
    if got != magic:
        raise DatasetError(f"{path} is not an IDX file: magic number {got}, expected {magic}")
    dims = np.frombuffer(head[4 : 4 + 4 * ndim], dtype=">i4")
    return tuple(int(d) for d in dims)


_READ_PIECE = 2**20  # bytes decompressed at a time


def _read_bounded(path: Path, most: int) -> bytes:
    """At most ``most`` bytes of ``path`` (decompressed when the name ends in ``.gz``), read
    a piece at a time: a gzip body that does not decompress (a corrupt deflate stream, a
    wrong checksum, a truncated file) is a DatasetError naming the file, and one that
    decompresses to far more than its header says never fills memory."""
    out = bytearray()
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb") as fh:
            while len(out) < most:
                piece = fh.read(min(_READ_PIECE, most - len(out)))
                if not piece:
                    break
                out += piece
    except (OSError, EOFError, zlib.error) as err:
        raise DatasetError(f"cannot read {path}: {type(err).__name__}: {err}") from err
    return bytes(out)


def _read_idx(path: Path, magic: int, limit: int | None = None) -> np.ndarray:
    """Parse an IDX file of unsigned bytes (gzipped when the name ends in ``.gz``): its
    header, then exactly the bytes its dimensions promise (DatasetError otherwise)."""
    ndim, _ = _idx_expected(magic)
    head = _read_bounded(path, 4 + 4 * ndim)
    dims = _idx_header(path, head, magic)
    offset = 4 + 4 * len(dims)
    expected = offset + int(np.prod(dims))
    raw = _read_bounded(path, expected + 1)  # one more: a longer file is refused
    if len(raw) != expected:
        has = f"more than {expected}" if len(raw) > expected else str(len(raw))
        raise DatasetError(f"{path} has {has} bytes, expected {expected} for dimensions {dims}")
    count = dims[0] if limit is None else min(limit, dims[0])
    item = int(np.prod(dims[1:]))
    data = np.frombuffer(raw, dtype=np.uint8, count=count * item, offset=offset)
    return data.reshape((count, *dims[1:]))


def _check_idx_file(path: Path, magic: int) -> tuple[int, ...]:
    """Check header and length of an IDX file without decoding it; return its dimensions.

    For ``.gz`` files the uncompressed length comes from the gzip trailer (ISIZE, mod 2**32).
    """
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                head = fh.read(16)
            with path.open("rb") as fh:
                fh.seek(-4, os.SEEK_END)
                length = int.from_bytes(fh.read(4), "little")
        else:
            with path.open("rb") as fh:
                head = fh.read(16)
            length = path.stat().st_size
    except (OSError, EOFError) as err:
        raise DatasetError(f"cannot read {path}: {type(err).__name__}: {err}") from err
    dims = _idx_header(path, head, magic)
    expected = 4 + 4 * len(dims) + int(np.prod(dims))
    if length != expected % (1 << 32):
        raise DatasetError(f"{path} has {length} bytes, expected {expected} for dimensions {dims}")
    return dims


def _mnist_paths(data_dir: Path, split: str) -> tuple[Path, Path]:
    check_split(split)
    prefix = "train" if split == "train" else "t10k"
    return _mnist_file(data_dir, prefix, "images-idx3"), _mnist_file(
        data_dir, prefix, "labels-idx1"
    )


def _check_mnist_dims(img_path: Path, img_dims: tuple[int, ...], lab_dims: tuple[int, ...]) -> None:
    if img_dims[1:] != (_MNIST_SIDE, _MNIST_SIDE):
        raise DatasetError(
            f"{img_path} holds {img_dims[1]}x{img_dims[2]} images, expected 28x28 for MNIST"
        )
    if lab_dims[0] != img_dims[0]:
        raise DatasetError(
            f"{img_path} holds {img_dims[0]} images but its labels file holds {lab_dims[0]} labels"
        )


def _check_labels(path: Path, labels: np.ndarray) -> None:
    """DatasetError naming ``path`` unless every label is a class, 0..9."""
    if labels.size and int(labels.max()) > 9:
        where = int(np.argmax(labels > 9))
        raise DatasetError(f"{path} holds label {int(labels[where])}, expected 0..9 (item {where})")


def load_mnist(data_dir: Path, split: str, limit: int | None = None) -> ImageSet:
    """MNIST ``split`` from torchvision's raw IDX files: images (N, 1, 28, 28) float32 / 255.

    ``data_dir`` may be the folder holding ``MNIST/``, the ``MNIST`` folder or its ``raw``
    folder. ``limit`` keeps only the first ``limit`` items.
    """
    img_path, lab_path = _mnist_paths(data_dir, split)
    images = _read_idx(img_path, _IDX_IMAGES_MAGIC)  # (N, 28, 28) uint8
    labels = _read_idx(lab_path, _IDX_LABELS_MAGIC)  # (N,) uint8
    _check_mnist_dims(img_path, images.shape, labels.shape)
    _check_labels(lab_path, labels)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)  # (N, 1, 28, 28)
    y = torch.from_numpy(labels.astype(np.int64))  # (N,)
    return ImageSet(name="mnist", images=x, labels=y, num_classes=10)


@dataclass(frozen=True)
class Mnist(Dataset):
    """MNIST in torchvision's raw IDX format: 28x28 grayscale, 10 classes, train and test.

    ``data_dir`` holds ``MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``, or is
    the ``MNIST`` or ``raw`` folder itself. ``seed`` and ``files`` are ignored.
    """

    name: ClassVar[str] = "mnist"
    shape: ClassVar[tuple[int, int, int]] = (1, _MNIST_SIDE, _MNIST_SIDE)
    num_classes: ClassVar[int] = 10
    default_classifier: ClassVar[str] = "mnist-cnn"

    def read(self, request: Request) -> ImageSet:
        return load_mnist(self.root(request.data_dir), request.split, limit=request.limit)

    def inspect(self, request: Request) -> None:
        """IDX magic numbers, dimensions, counts and lengths (gz: from the gzip trailer),
        then every byte: the bodies decompress to exactly the length their headers promise
        and every label is 0..9 (a full read; the test split is 8 MB)."""
        img_path, lab_path = _mnist_paths(self.root(request.data_dir), request.split)
        img_dims = _check_idx_file(img_path, _IDX_IMAGES_MAGIC)
        lab_dims = _check_idx_file(lab_path, _IDX_LABELS_MAGIC)
        _check_mnist_dims(img_path, img_dims, lab_dims)
        _read_idx(img_path, _IDX_IMAGES_MAGIC)
        _check_labels(lab_path, _read_idx(lab_path, _IDX_LABELS_MAGIC))


DATASETS.add("mnist", Mnist, "MNIST, torchvision's raw IDX files")
