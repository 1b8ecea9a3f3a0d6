"""Dataset readers returning images ``(N, C, H, W)`` float32 in [0, 1].

The embedded demo uses scikit-learn's bundled handwritten digits (1,797 real 8x8 scans,
values 0..16), upsampled to the 28x28 geometry of MNIST so that the paper's MNIST networks
(the two-conv classifier and the 1-16-16-16-1 RIDE FCN of Table 3) apply unchanged.

The real datasets of the paper are read from local files, never downloaded:

- ``mnist``: torchvision's on-disk layout ``MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte``
  (optionally ``.gz``), 28x28 grayscale, 10 classes.
- ``cifar10``: the "python version" ``cifar-10-batches-py/{data_batch_1..5,test_batch}``,
  32x32 RGB, 10 classes.
- ``imagenet``: the ILSVRC2012 validation images (class subfolders, or a flat folder with a
  ``labels.txt``); "we utilize a subset of the validation data by randomly sampling two
  images from each class ... center-cropped into 224 x 224 pixels" (paper, "Dataset").
"""

from __future__ import annotations

import gzip
import os
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from sklearn import datasets as sk_datasets
from torch import Tensor

DATASETS: tuple[str, ...] = ("digits", "mnist", "cifar10", "imagenet")

_SHAPES: dict[str, tuple[int, int, int]] = {
    "digits": (1, 28, 28),
    "mnist": (1, 28, 28),
    "cifar10": (3, 32, 32),
    "imagenet": (3, 224, 224),
}
_NUM_CLASSES: dict[str, int] = {"digits": 10, "mnist": 10, "cifar10": 10, "imagenet": 1000}

IMAGENET_PER_CLASS = 2  # "randomly sampling two images from each class" (paper, "Dataset")
IMAGENET_RESIZE = 256  # shorter side before the center crop (torchvision's ImageNet eval)
IMAGENET_CROP = 224  # "center-cropped into 224 x 224 pixels" (paper, "Dataset")
IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".jpg",
    ".jpeg",
    ".png",
    ".ppm",
    ".bmp",
    ".pgm",
    ".tif",
    ".tiff",
    ".webp",
)
LABELS_FILE = "labels.txt"


class DatasetError(ValueError):
    """A dataset file or folder is missing, has the wrong format or the wrong size."""


@dataclass(frozen=True, eq=False)
class ImageSet:
    """A labelled image set: ``images`` (N, C, H, W) float32 in [0, 1], ``labels`` (N,) int64.

    ``sources`` names the file of each image relative to the data directory (ImageNet only).
    Compared by identity (``eq=False``): comparing tensors elementwise has no single truth value.
    """

    name: str
    images: Tensor  # (N, C, H, W) float32 in [0, 1]
    labels: Tensor  # (N,) int64
    num_classes: int
    sources: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.images.ndim != 4:
            raise ValueError(f"images must be (N, C, H, W), got {tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(
                f"labels must be ({self.images.shape[0]},), got {tuple(self.labels.shape)}"
            )
        if self.sources is not None and len(self.sources) != self.images.shape[0]:
            raise ValueError(
                f"sources must name {self.images.shape[0]} files, got {len(self.sources)}"
            )

    def __len__(self) -> int:
        return int(self.images.shape[0])


def dataset_shape(name: str) -> tuple[int, int, int]:
    """Image shape ``(C, H, W)`` that ``load_dataset(name, ...)`` returns."""
    _check_name(name)
    return _SHAPES[name]


def dataset_num_classes(name: str) -> int:
    """Number of classes of the full dataset ``name`` (1000 for ImageNet)."""
    _check_name(name)
    return _NUM_CLASSES[name]


def _check_name(name: str) -> None:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose from: {', '.join(DATASETS)}")


def _check_split(split: str) -> None:
    if split not in ("train", "test"):
        raise ValueError(f"unknown split {split!r}; choose from: train, test")


# --------------------------------------------------------------------------------------- digits


def _stratified_test_mask(labels: np.ndarray, seed: int, test_fraction: float) -> np.ndarray:
    """Boolean mask of test items: per class, a seeded permutation's first share goes to test."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(labels.shape[0], dtype=bool)
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        n_test = round(len(idx) * test_fraction)
        mask[rng.permutation(idx)[:n_test]] = True
    return mask


def load_digits(
    split: Literal["train", "test"],
    seed: int = 0,
    size: int = 28,
    test_fraction: float = 0.25,
) -> ImageSet:
    """scikit-learn's 8x8 digits scaled to [0, 1] and resized to ``size`` x ``size``.

    The split is stratified by class and depends only on ``seed`` and ``test_fraction``;
    items keep the dataset's original order within a split.
    """
    if split not in ("train", "test"):
        raise ValueError(f"unknown split {split!r}; choose from: train, test")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    bunch = sk_datasets.load_digits()
    raw = np.asarray(bunch.images, dtype=np.float32) / 16.0  # (N, 8, 8) in [0, 1]
    labels = np.asarray(bunch.target, dtype=np.int64)
    test = _stratified_test_mask(labels, seed, test_fraction)
    keep = test if split == "test" else ~test
    images = torch.from_numpy(raw[keep]).unsqueeze(1)  # (N, 1, 8, 8)
    if size != images.shape[-1]:
        images = F.interpolate(
            images, size=(size, size), mode="bilinear", align_corners=False, antialias=True
        )
    images = images.clamp(0.0, 1.0).contiguous()  # (N, 1, size, size)
    return ImageSet(
        name="digits",
        images=images,
        labels=torch.from_numpy(labels[keep]),
        num_classes=10,
    )


# ---------------------------------------------------------------------------------------- MNIST

_IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
_IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension
_MNIST_SIDE = 28


def _require_dir(path: Path, what: str) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise DatasetError(f"{what} directory not found: {path}")
    return path


def _mnist_file(data_dir: Path, prefix: str, kind: str) -> Path:
    """``<prefix>-<kind>-ubyte[.gz]`` in ``MNIST/raw``, ``raw`` or ``data_dir`` itself."""
    data_dir = _require_dir(data_dir, "MNIST")
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


def _read_idx(path: Path, magic: int, limit: int | None = None) -> np.ndarray:
    """Parse an IDX file of unsigned bytes (gzipped when the name ends in ``.gz``)."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                raw = fh.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError) as err:
        raise DatasetError(f"cannot read {path}: {type(err).__name__}: {err}") from err
    dims = _idx_header(path, raw, magic)
    offset = 4 + 4 * len(dims)
    expected = offset + int(np.prod(dims))
    if len(raw) != expected:
        raise DatasetError(
            f"{path} has {len(raw)} bytes, expected {expected} for dimensions {dims}"
        )
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
    _check_split(split)
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


def load_mnist(data_dir: Path, split: str, limit: int | None = None) -> ImageSet:
    """MNIST ``split`` from torchvision's raw IDX files: images (N, 1, 28, 28) float32 / 255.

    ``data_dir`` may be the folder holding ``MNIST/``, the ``MNIST`` folder or its ``raw``
    folder. ``limit`` keeps only the first ``limit`` items.
    """
    img_path, lab_path = _mnist_paths(data_dir, split)
    images = _read_idx(img_path, _IDX_IMAGES_MAGIC)  # (N, 28, 28) uint8
    labels = _read_idx(lab_path, _IDX_LABELS_MAGIC)  # (N,) uint8
    _check_mnist_dims(img_path, images.shape, labels.shape)
    if labels.size and int(labels.max()) > 9:
        raise DatasetError(f"{lab_path} holds label {int(labels.max())}, expected 0..9")
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)  # (N, 1, 28, 28)
    y = torch.from_numpy(labels.astype(np.int64))  # (N,)
    return ImageSet(name="mnist", images=x, labels=y, num_classes=10)


# -------------------------------------------------------------------------------------- CIFAR-10

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
    data_dir = _require_dir(data_dir, "CIFAR-10")
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


def load_cifar10(data_dir: Path, split: str, limit: int | None = None) -> ImageSet:
    """CIFAR-10 ``split`` from the python batches: images (N, 3, 32, 32) float32 / 255.

    ``data_dir`` may hold ``cifar-10-batches-py/`` or be that folder. The batches are read
    with a restricted unpickler that only allows numpy arrays, so no code in them can run.
    """
    _check_split(split)
    folder = _cifar_dir(data_dir)
    datas: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    have = 0
    for name in _CIFAR_TRAIN if split == "train" else _CIFAR_TEST:
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


# -------------------------------------------------------------------------------------- ImageNet


@dataclass(frozen=True)
class _ImageNetListing:
    files: list[tuple[str, int]]  # (relative path, label) sorted by path
    num_classes: int


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


def _read_labels_file(data_dir: Path, labels_file: Path) -> list[tuple[str, int]]:
    """Lines ``<filename> <class_index>`` (blank lines and ``#`` comments skipped)."""
    if not labels_file.is_file():
        raise DatasetError(f"labels file not found: {labels_file}")
    out: dict[str, int] = {}
    lines = labels_file.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        parts = text.rsplit(None, 1)
        if len(parts) != 2 or not parts[1].isdigit():
            raise DatasetError(
                f"{labels_file}:{number}: expected '<filename> <class_index>', got {text[:60]!r}"
            )
        name, label = parts[0], int(parts[1])
        if name in out:
            raise DatasetError(f"{labels_file}:{number}: {name} is listed twice")
        if not (data_dir / name).is_file():
            raise DatasetError(f"{labels_file}:{number}: image {data_dir / name} not found")
        out[name] = label
    if not out:
        raise DatasetError(f"labels file {labels_file} lists no images")
    return sorted(out.items())


def _imagenet_listing(data_dir: Path, labels_file: Path | None = None) -> _ImageNetListing:
    data_dir = _require_dir(data_dir, "ImageNet")
    if labels_file is None and (data_dir / LABELS_FILE).is_file():
        labels_file = data_dir / LABELS_FILE
    if labels_file is not None:
        files = _read_labels_file(data_dir, Path(labels_file))
        return _ImageNetListing(files, max(label for _, label in files) + 1)
    classes = sorted(e.name for e in os.scandir(data_dir) if e.is_dir() and e.name[0] != ".")
    if not classes:
        raise DatasetError(
            f"no class folders and no {LABELS_FILE} in ImageNet directory {data_dir}"
        )
    files = []
    for label, cls in enumerate(classes):
        for entry in os.scandir(data_dir / cls):
            if entry.is_file() and _is_image(entry.name):
                files.append((f"{cls}/{entry.name}", label))
    if not files:
        raise DatasetError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {data_dir}")
    files.sort()
    return _ImageNetListing(files, len(classes))


def imagenet_files(data_dir: Path, labels_file: Path | None = None) -> list[tuple[str, int]]:
    """All ``(relative path, label)`` of an ImageNet validation folder, sorted by path.

    Two layouts: (a) class subfolders (torchvision's ImageFolder layout); the label is the
    index of the folder in sorted order, which for the 1,000 wnid folders ``n01440764`` ...
    is torchvision's class index; (b) a flat folder with ``labels.txt`` (or ``labels_file``)
    whose lines read ``<filename> <class_index>``, filenames relative to ``data_dir``.
    """
    return _imagenet_listing(data_dir, labels_file).files


def sample_per_class(
    files: Sequence[tuple[str, int]], per_class: int, seed: int
) -> list[tuple[str, int]]:
    """``per_class`` files of every class, picked by a seeded permutation (paper: 2 per class).

    Classes in ascending order; within a class, files are sorted by path and permuted by a
    generator seeded with ``(seed, label)``, so one class's pick does not depend on the others.
    A class with fewer files contributes all of them. The result is ordered by class, then pick.
    """
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    by_class: dict[int, list[str]] = {}
    for path, label in files:
        by_class.setdefault(int(label), []).append(path)
    out: list[tuple[str, int]] = []
    for label in sorted(by_class):
        paths = sorted(by_class[label])
        rng = np.random.default_rng([seed, label])
        picks = rng.permutation(len(paths))[:per_class]
        out.extend((paths[i], label) for i in picks)
    return out


def _resize_crop(img: Image.Image, size: int, resize: int) -> Image.Image:
    """Shorter side to ``resize`` (bilinear, antialiased), then a centre ``size`` crop.

    The arithmetic follows torchvision's ``Resize(resize)`` + ``CenterCrop(size)`` on PIL images.
    """
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(resize * long / short)
    new_w, new_h = (resize, new_long) if w <= h else (new_long, resize)
    if (new_w, new_h) != (w, h):
        img = img.resize((new_w, new_h), Image.Resampling.BILINEAR)
    top = round((new_h - size) / 2.0)
    left = round((new_w - size) / 2.0)
    return img.crop((left, top, left + size, top + size))


def load_imagenet_images(
    data_dir: Path,
    files: Sequence[tuple[str, int]],
    size: int = IMAGENET_CROP,
    resize: int = IMAGENET_RESIZE,
) -> Tensor:
    """Decode ``files`` (relative to ``data_dir``) as (N, 3, size, size) float32 in [0, 1]."""
    if size < 1 or resize < size:
        raise ValueError(f"need 1 <= size <= resize, got size={size}, resize={resize}")
    out = torch.empty((len(files), 3, size, size), dtype=torch.float32)  # (N, 3, size, size)
    for i, (name, _) in enumerate(files):
        path = Path(data_dir) / name
        try:
            with Image.open(path) as im:
                im.load()
                rgb = _resize_crop(im.convert("RGB"), size, resize)
        except FileNotFoundError as err:
            raise DatasetError(f"image not found: {path}") from err
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
            raise DatasetError(f"cannot decode image {path}: {err}") from err
        pixels = np.asarray(rgb, dtype=np.uint8)  # (size, size, 3)
        out[i] = torch.from_numpy(pixels.astype(np.float32) / 255.0).permute(2, 0, 1)
    return out


def _imagenet_selection(
    listing: _ImageNetListing,
    data_dir: Path,
    seed: int,
    files: Sequence[tuple[str, int]] | None,
) -> list[tuple[str, int]]:
    """The sampled subset, or ``files`` checked against the folder's listing."""
    if files is None:
        return sample_per_class(listing.files, IMAGENET_PER_CLASS, seed)
    known = dict(listing.files)
    chosen = [(str(name), int(label)) for name, label in files]
    for name, label in chosen:
        if name not in known:
            raise DatasetError(f"recorded image {name} is not in ImageNet directory {data_dir}")
        if known[name] != label:
            raise DatasetError(
                f"recorded image {name} has label {label}, but {data_dir} says {known[name]}"
            )
    return chosen


def load_imagenet(
    data_dir: Path,
    seed: int = 0,
    limit: int | None = None,
    files: Sequence[tuple[str, int]] | None = None,
    labels_file: Path | None = None,
) -> ImageSet:
    """The paper's ImageNet subset: 2 validation images per class, 224 x 224 centre crops.

    ``files`` (a recorded list) replaces the seeded sample; ``limit`` decodes only the first
    ``limit`` items. ``num_classes`` is the number of class folders (layout a) or the largest
    label + 1 (layout b), i.e. 1000 for the full validation set.
    """
    listing = _imagenet_listing(data_dir, labels_file)
    chosen = _imagenet_selection(listing, Path(data_dir), seed, files)[:limit]
    images = load_imagenet_images(data_dir, chosen)  # (N, 3, 224, 224)
    labels = torch.tensor([label for _, label in chosen], dtype=torch.int64).reshape(-1)
    return ImageSet(
        name="imagenet",
        images=images,
        labels=labels,
        num_classes=listing.num_classes,
        sources=tuple(name for name, _ in chosen),
    )


# ---------------------------------------------------------------------------------- entry points


def _check_limit(limit: int | None) -> None:
    if limit is not None and (isinstance(limit, bool) or limit < 0):
        raise ValueError(f"limit must be >= 0, got {limit}")


def _require_data_dir(name: str, data_dir: Path | None) -> Path:
    if data_dir is None:
        raise DatasetError(f"--data-dir is required for dataset {name}")
    return Path(data_dir)


def load_dataset(
    name: str,
    split: str,
    seed: int = 0,
    data_dir: Path | None = None,
    limit: int | None = None,
    files: Sequence[tuple[str, int]] | None = None,
) -> ImageSet:
    """Load dataset ``name`` (one of ``DATASETS``) and ``split`` ('train' or 'test').

    ``digits`` is bundled and ignores ``data_dir``; the others read it (DatasetError when
    None). ``limit`` keeps the first ``limit`` items. ImageNet has only 'test' (the validation
    set); ``files`` gives its exact image list (a resumed run passes the recorded one), else
    two images per class are sampled with ``seed``.
    """
    _check_name(name)
    _check_split(split)
    _check_limit(limit)
    if name == "digits":
        data = load_digits("train" if split == "train" else "test", seed=seed)
        if limit is None:
            return data
        return ImageSet(data.name, data.images[:limit], data.labels[:limit], data.num_classes)
    root = _require_data_dir(name, data_dir)
    if name == "mnist":
        return load_mnist(root, split, limit=limit)
    if name == "cifar10":
        return load_cifar10(root, split, limit=limit)
    if split != "test":
        raise DatasetError("dataset imagenet has only the validation images; use split 'test'")
    return load_imagenet(root, seed=seed, limit=limit, files=files)


def check_dataset(
    name: str,
    data_dir: Path | None,
    split: str = "test",
    seed: int = 0,
    files: Sequence[tuple[str, int]] | None = None,
) -> None:
    """Cheap preflight: paths exist and headers are right, without decoding every image.

    MNIST: IDX magic numbers, dimensions, counts and lengths (gz: from the gzip trailer).
    CIFAR-10: every batch of the split unpickles (restricted) with the right keys and shapes.
    ImageNet: the folder lists, ``files`` match it, and the header of every selected image
    opens (corrupt pixel data is only found when decoding). Raises DatasetError.
    """
    _check_name(name)
    _check_split(split)
    if name == "digits":
        return
    root = _require_data_dir(name, data_dir)
    if name == "mnist":
        img_path, lab_path = _mnist_paths(root, split)
        img_dims = _check_idx_file(img_path, _IDX_IMAGES_MAGIC)
        lab_dims = _check_idx_file(lab_path, _IDX_LABELS_MAGIC)
        _check_mnist_dims(img_path, img_dims, lab_dims)
    elif name == "cifar10":
        folder = _cifar_dir(root)
        for batch in _CIFAR_TRAIN if split == "train" else _CIFAR_TEST:
            _read_cifar_batch(folder / batch)
    else:
        if split != "test":
            raise DatasetError("dataset imagenet has only the validation images; use split 'test'")
        listing = _imagenet_listing(root)
        for rel, _ in _imagenet_selection(listing, root, seed, files):
            path = root / rel
            try:
                with Image.open(path) as im:
                    _ = im.size  # the header is parsed on open
            except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
                raise DatasetError(f"cannot open image {path}: {err}") from err
