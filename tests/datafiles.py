"""Writers of tiny dataset files in the exact on-disk formats the readers of ride.datasets
expect: torchvision's MNIST IDX files, the CIFAR-10 python batches and ImageNet validation
folders. Shared by the reader unit tests and the end-to-end runs.
"""

from __future__ import annotations

import gzip
import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file of unsigned bytes: magic 0x0000 08 <ndim>, big-endian int32 dims, data."""
    head = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">i4").tobytes()
    return head + array.astype(np.uint8).tobytes()


def write_mnist(root: Path, prefix: str, n: int, seed: int, gz: bool) -> tuple[np.ndarray, ...]:
    """``root/MNIST/raw/<prefix>-{images-idx3,labels-idx1}-ubyte[.gz]`` with ``n`` random items;
    returns (images (n, 28, 28) uint8, labels (n,) uint8)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
        path = raw / f"{prefix}-{kind}-ubyte"
        data = idx_bytes(array)
        if gz:
            path.with_name(path.name + ".gz").write_bytes(gzip.compress(data))
        else:
            path.write_bytes(data)
    return images, labels


def cifar_batch(n: int, seed: int) -> dict[bytes, object]:
    """One CIFAR-10 batch dict as in the python version (bytes keys, channel-major rows)."""
    rng = np.random.default_rng(seed)
    return {
        b"batch_label": f"batch {seed}".encode(),
        b"labels": [int(v) for v in rng.integers(0, 10, size=n)],
        b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
        b"filenames": [f"img_{seed}_{i}.png".encode() for i in range(n)],
    }


def write_cifar(root: Path, test: int, train_per_batch: int) -> Path:
    """``root/cifar-10-batches-py`` with a ``test``-image test batch and five train batches
    of ``train_per_batch`` images (pickle protocols 2 to 5); returns ``root``."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    # protocol 2 is what the original files use (Python 2's cPickle); the others too
    (folder / "test_batch").write_bytes(pickle.dumps(cifar_batch(test, 0), protocol=2))
    for i in range(1, 6):
        batch = pickle.dumps(cifar_batch(train_per_batch, i), protocol=2 + i % 4)
        (folder / f"data_batch_{i}").write_bytes(batch)
    return root


def noise_image(
    rng: np.random.Generator, width: int, height: int, mode: str = "RGB"
) -> Image.Image:
    channels = {"RGB": 3, "L": 1}[mode]
    pixels = rng.integers(0, 256, size=(height, width, channels), dtype=np.uint8)
    return Image.fromarray(pixels[..., 0] if channels == 1 else pixels, mode=mode)


def write_imagenet(
    root: Path, classes: Mapping[str, Sequence[tuple[int, int]]], suffix: str = ".JPEG"
) -> Path:
    """Class folders ``root/<wnid>/ILSVRC2012_val_<...><suffix>`` of noise images of the
    given (width, height) sizes; returns ``root``."""
    rng = np.random.default_rng(0)
    for cls, sizes in classes.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i, (w, h) in enumerate(sizes):
            noise_image(rng, w, h).save(root / cls / f"ILSVRC2012_val_{cls[-3:]}{i}{suffix}")
    return root
