"""The ILSVRC2012 validation images, read from disk (never downloaded).

Class subfolders, or a flat folder with a ``labels.txt``; "we utilize a subset of the
validation data by randomly sampling two images from each class ... center-cropped into
224 x 224 pixels" (paper, "Dataset").
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import ClassVar

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ride.datasets.base import (
    Dataset,
    DatasetError,
    ImageSet,
    Request,
    require_dir,
)
from ride.registry import DATASETS

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
MAX_ASPECT = 20.0
"""The most elongated image read (long side over short side): a photograph is within 4:1;
a 4000x1 PNG would be resized to 256 x 1,024,000 pixels (gigabytes) before its crop."""
MAX_PIXELS = 50_000_000
"""The most pixels an image may have (ImageNet's validation images have well under 1
million): a larger one takes gigabytes to decode."""


@dataclass(frozen=True)
class _ImageNetListing:
    files: list[tuple[str, int]]  # (relative path, label) sorted by path
    num_classes: int


def check_relative(name: str, where: str) -> str:
    """``name`` when it is a relative path that stays inside the data folder; else a
    DatasetError naming ``where`` (the file and line that gave it).

    Checked on the text, before any file is touched: an absolute path or a ``..`` component
    is refused, so a list file can never make a run read outside ``--data-dir``. (Symbolic
    links inside the folder are the folder owner's choice and are followed.)
    """
    parts = PurePosixPath(name).parts
    if not name or PurePosixPath(name).is_absolute() or name.startswith("~") or ".." in parts:
        raise DatasetError(
            f"{where}: image path {name!r} leaves the data folder; give paths relative to it"
        )
    return name


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
        name, label = check_relative(parts[0], f"{labels_file}:{number}"), int(parts[1])
        if name in out:
            raise DatasetError(f"{labels_file}:{number}: {name} is listed twice")
        if not (data_dir / name).is_file():
            raise DatasetError(f"{labels_file}:{number}: image {data_dir / name} not found")
        out[name] = label
    if not out:
        raise DatasetError(f"labels file {labels_file} lists no images")
    return sorted(out.items())


def _imagenet_listing(data_dir: Path, labels_file: Path | None = None) -> _ImageNetListing:
    data_dir = require_dir(data_dir, "ImageNet")
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
    A class with fewer files contributes all of them (a change of protocol that
    :func:`per_class_shortfall` states in one line). The result is ordered by class, then pick.
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


def per_class_shortfall(files: Sequence[tuple[str, int]], per_class: int) -> str | None:
    """One line to log when some class of ``files`` has fewer than ``per_class`` images, so
    that :func:`sample_per_class` takes all it has instead of ``per_class`` (the paper samples
    two validation images per class); None when every class has enough.

    Example:
        >>> note = per_class_shortfall([("a.JPEG", 0), ("b.JPEG", 1), ("c.JPEG", 1)], 2)
        >>> for part in note.split("; "):
        ...     print(part)
        ImageNet folder: 1 of 2 classes have fewer than 2 images (the paper samples 2 per class)
        each gives what it has: 3 images instead of 4
        >>> per_class_shortfall([("a.JPEG", 0), ("b.JPEG", 0)], 2) is None
        True
    """
    counts = Counter(int(label) for _, label in files)
    short = sum(1 for count in counts.values() if count < per_class)
    if not short:
        return None
    taken = sum(min(count, per_class) for count in counts.values())
    return (
        f"ImageNet folder: {short} of {len(counts)} classes have fewer than {per_class} images "
        f"(the paper samples {IMAGENET_PER_CLASS} per class); each gives what it has: {taken} "
        f"images instead of {per_class * len(counts)}"
    )


def check_image_size(path: Path, size: tuple[int, int]) -> None:
    """DatasetError naming ``path`` when its ``(width, height)`` (from the header, nothing
    decoded) is empty, more elongated than ``MAX_ASPECT`` or larger than ``MAX_PIXELS``."""
    w, h = size
    if w < 1 or h < 1:
        raise DatasetError(f"image {path} is {w}x{h} pixels: it holds no pixels")
    if max(w, h) / min(w, h) > MAX_ASPECT:
        raise DatasetError(
            f"image {path} is {w}x{h} pixels: more elongated than {MAX_ASPECT:g}:1, not a "
            "photograph to evaluate (its resize would take gigabytes); remove it"
        )
    if w * h > MAX_PIXELS:
        raise DatasetError(
            f"image {path} is {w}x{h} pixels: more than {MAX_PIXELS:,} pixels, too large to "
            "decode; remove it"
        )


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
        path = Path(data_dir) / check_relative(name, "image list")
        try:
            with Image.open(path) as im:
                check_image_size(path, im.size)
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


@dataclass(frozen=True)
class ImageNet(Dataset):
    """The ILSVRC2012 validation images: 224x224 RGB centre crops, 1000 classes, test only.

    ``data_dir`` holds class subfolders (torchvision's ImageFolder layout) or a flat folder
    with a ``labels.txt`` of ``<filename> <class_index>`` lines. Two images per class are
    sampled with ``seed``, or ``files`` gives the exact (path, label) list of a recorded run.
    """

    name: ClassVar[str] = "imagenet"
    shape: ClassVar[tuple[int, int, int]] = (3, IMAGENET_CROP, IMAGENET_CROP)
    num_classes: ClassVar[int] = 1000
    default_classifier: ClassVar[str] = "resnet50"
    splits: ClassVar[tuple[str, ...]] = ("test",)
    lists_data_dir: ClassVar[bool] = True  # a folder in data_dir is a class

    def require_split(self, split: str) -> None:
        if split not in self.splits:
            raise DatasetError("dataset imagenet has only the validation images; use split 'test'")

    def read(self, request: Request) -> ImageSet:
        root = self.root(request.data_dir)
        return load_imagenet(root, seed=request.seed, limit=request.limit, files=request.files)

    def inspect(self, request: Request) -> None:
        """The folder lists, ``files`` match it, and every selected image's header opens
        and gives a size worth decoding (:func:`check_image_size`).

        Corrupt pixel data is only found when decoding.
        """
        root = self.root(request.data_dir)
        listing = _imagenet_listing(root)
        for rel, _ in _imagenet_selection(listing, root, request.seed, request.files):
            path = root / rel
            try:
                with Image.open(path) as im:
                    size = im.size  # the header is parsed on open
            except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
                raise DatasetError(f"cannot open image {path}: {err}") from err
            check_image_size(path, size)


DATASETS.add("imagenet", ImageNet, "ILSVRC2012 validation images, 2 per class")
