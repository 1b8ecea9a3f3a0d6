"""CIFAR-10 from the "python version" batches, read from disk (never downloaded).

Layout ``cifar-10-batches-py/{data_batch_1..5,test_batch}``, 32x32 RGB, 10 classes. The
batches are pickles; they are read with a restricted unpickler that only allows numpy arrays.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

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

_CIFAR_FOLDER = "cifar-10-batches-py"
_CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_TEST = ("test_batch",)
_CIFAR_ROW = 3 * 32 * 32

# The only globals a CIFAR batch pickle may name: numpy's array reconstruction and, for
# protocol-2 pickles written by Python 3, ``_codecs.encode`` (how bytes are stored there).
_PICKLE_GLOBALS = frozenset(
    {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),
    }
)
_NUMPY2 = int(np.__version__.split(".")[0]) >= 2


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that refuses every global except numpy arrays (so no code can run)."""

    def find_class(self, module: str, name: str) -> Any:
        canonical = module
        if module == "numpy.core" or module.startswith("numpy.core."):
            canonical = "numpy._core" + module[len("numpy.core") :]
        if (canonical, name) not in _PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")
        target = canonical if _NUMPY2 else canonical.replace("numpy._core", "numpy.core")
        return super().find_class(target, name)


def _cifar_dir(data_dir: Path) -> Path:
    data_dir = require_dir(data_dir, "CIFAR-10")
    for folder in (data_dir / _CIFAR_FOLDER, data_dir):
        if (folder / "test_batch").is_file() or (folder / "data_batch_1").is_file():
            return folder
    raise DatasetError(f"CIFAR-10 batches not found in {data_dir} (expected {_CIFAR_FOLDER}/)")


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 batch pickle: data (N, 3072) uint8 and labels (N,) int64, validated."""
    if not path.is_file():
        raise DatasetError(f"CIFAR-10 batch not found: {path}")
    try:
        with path.open("rb") as fh:
            batch = _RestrictedUnpickler(fh, encoding="bytes").load()
    except Exception as err:  # any unpickling failure means a wrong or damaged file
        raise DatasetError(f"{path} is not a CIFAR-10 batch pickle: {type(err).__name__}") from err
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        keys = sorted(batch)[:4] if isinstance(batch, dict) else type(batch).__name__
        raise DatasetError(f"{path} lacks keys b'data' and b'labels' (found {keys})")
    data, labels = batch[b"data"], batch[b"labels"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        raise DatasetError(f"{path}: b'data' must be a uint8 array (N, {_CIFAR_ROW})")
    if data.shape[1] != _CIFAR_ROW:
        raise DatasetError(f"{path}: b'data' has shape {data.shape}, expected (N, {_CIFAR_ROW})")
    try:
        y = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError) as err:
        raise DatasetError(f"{path}: b'labels' must be a list of integers") from err
    if y.shape != (data.shape[0],):
        raise DatasetError(f"{path} holds {data.shape[0]} images but {y.size} labels")
    if y.size and (int(y.min()) < 0 or int(y.max()) > 9):
        raise DatasetError(f"{path} holds labels outside 0..9")
    return data, y


def _batches(split: str) -> tuple[str, ...]:
    return _CIFAR_TRAIN if split == "train" else _CIFAR_TEST


def load_cifar10(data_dir: Path, split: str, limit: int | None = None) -> ImageSet:
    """CIFAR-10 ``split`` from the python batches: images (N, 3, 32, 32) float32 / 255.

    ``data_dir`` may hold ``cifar-10-batches-py/`` or be that folder. The batches are read
    with a restricted unpickler that only allows numpy arrays, so no code in them can run.
    """
    check_split(split)
    folder = _cifar_dir(data_dir)
    datas: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    have = 0
    for name in _batches(split):
        if datas and limit is not None and have >= limit:
            break
        data, y = _read_cifar_batch(folder / name)
        datas.append(data)
        labels.append(y)
        have += data.shape[0]
    data = np.concatenate(datas)[:limit]  # (N, 3072) uint8, channel-major rows
    x = torch.from_numpy(data.reshape(-1, 3, 32, 32).astype(np.float32) / 255.0)
    y_all = torch.from_numpy(np.concatenate(labels)[:limit])  # (N,)
    return ImageSet(name="cifar10", images=x.contiguous(), labels=y_all, num_classes=10)


@dataclass(frozen=True)
class Cifar10(Dataset):
    """CIFAR-10 in the "python version" batch pickles: 32x32 RGB, 10 classes, train and test.

    ``data_dir`` holds ``cifar-10-batches-py/{data_batch_1..5,test_batch}`` or is that
    folder. ``seed`` and ``files`` are ignored.
    """

    name: ClassVar[str] = "cifar10"
    shape: ClassVar[tuple[int, int, int]] = (3, 32, 32)
    num_classes: ClassVar[int] = 10
    default_classifier: ClassVar[str] = "cifar-resnet18"

    def read(self, request: Request) -> ImageSet:
        return load_cifar10(self.root(request.data_dir), request.split, limit=request.limit)

    def inspect(self, request: Request) -> None:
        """Every batch of the split unpickles (restricted) with the right keys and shapes,
        and together they hold at least ``request.limit`` images."""
        folder = _cifar_dir(self.root(request.data_dir))
        count = sum(len(_read_cifar_batch(folder / batch)[1]) for batch in _batches(request.split))
        if request.limit is not None and request.limit > count:
            raise DatasetError(
                f"limit {request.limit} is more than the {count} images of the cifar10 "
                f"{request.split} split in {folder}; give a limit of at most {count}"
            )


DATASETS.add("cifar10", Cifar10, "CIFAR-10, the python batches")
