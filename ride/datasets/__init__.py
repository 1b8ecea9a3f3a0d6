"""Dataset readers returning images ``(N, C, H, W)`` float32 in [0, 1].

Each dataset is one class, registered by name in :data:`ride.registry.DATASETS` (importable
here as ``DATASETS``), that says what it is (``shape``, ``num_classes``, ``splits``,
``default_classifier``) and how to read and check it:

- ``digits`` (:mod:`ride.datasets.digits`): the embedded demo, scikit-learn's bundled 8x8
  handwritten digits upsampled to MNIST's 28x28.
- ``mnist`` (:mod:`ride.datasets.mnist`): torchvision's raw IDX files, 28x28 grayscale.
- ``cifar10`` (:mod:`ride.datasets.cifar10`): the "python version" batches, 32x32 RGB.
- ``imagenet`` (:mod:`ride.datasets.imagenet`): the ILSVRC2012 validation images, two per
  class, 224x224 centre crops (paper, "Dataset"); test split only.

The real datasets are read from local files (``data_dir``), never downloaded. The functions
below dispatch by name through the registry.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ride.datasets.base import SPLITS, Dataset, DatasetError, ImageSet, check_limit, check_split

# isort: off
# Importing a module registers its dataset: this order is the order of ``DATASETS``.
from ride.datasets.digits import Digits, load_digits
from ride.datasets.mnist import Mnist, load_mnist
from ride.datasets.cifar10 import Cifar10, load_cifar10
from ride.datasets.imagenet import (
    IMAGE_EXTENSIONS,
    IMAGENET_CROP,
    IMAGENET_PER_CLASS,
    IMAGENET_RESIZE,
    LABELS_FILE,
    ImageNet,
    imagenet_files,
    load_imagenet,
    load_imagenet_images,
    per_class_shortfall,
    sample_per_class,
)

# isort: on
from ride.registry import DATASETS, import_modules

import_modules(__name__, __path__)  # a dataset module added to this package registers itself

__all__ = [
    "DATASETS",
    "IMAGENET_CROP",
    "IMAGENET_PER_CLASS",
    "IMAGENET_RESIZE",
    "IMAGE_EXTENSIONS",
    "LABELS_FILE",
    "SPLITS",
    "Cifar10",
    "Dataset",
    "DatasetError",
    "Digits",
    "ImageNet",
    "ImageSet",
    "Mnist",
    "check_dataset",
    "check_limit",
    "check_split",
    "dataset_num_classes",
    "dataset_shape",
    "get_dataset",
    "imagenet_files",
    "load_cifar10",
    "load_dataset",
    "load_digits",
    "load_imagenet",
    "load_imagenet_images",
    "load_mnist",
    "per_class_shortfall",
    "sample_per_class",
]


def get_dataset(name: str) -> Dataset:
    """The registered dataset ``name``; ValueError naming the choices when there is none."""
    dataset: Dataset = DATASETS[name].build()
    return dataset


def dataset_shape(name: str) -> tuple[int, int, int]:
    """Image shape ``(C, H, W)`` that ``load_dataset(name, ...)`` returns."""
    return get_dataset(name).shape


def dataset_num_classes(name: str) -> int:
    """Number of classes of the full dataset ``name`` (1000 for ImageNet)."""
    return get_dataset(name).num_classes


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
    return get_dataset(name).load(data_dir, split, seed=seed, limit=limit, files=files)


def check_dataset(
    name: str,
    data_dir: Path | None,
    split: str = "test",
    seed: int = 0,
    files: Sequence[tuple[str, int]] | None = None,
    limit: int | None = None,
) -> None:
    """Cheap preflight: paths exist and headers are right, without decoding every image.

    MNIST: IDX magic numbers, dimensions, counts and lengths, then a full read: the gzip
    bodies decompress to what the headers promise and every label is 0..9.
    CIFAR-10: every batch of the split unpickles (restricted) with the right keys and shapes,
    and they hold at least ``limit`` images (the shared real test batch holds 1,017).
    ImageNet: the folder lists, ``files`` match it, and the header of every selected image
    opens with a size worth decoding, neither absurdly elongated nor huge (corrupt pixel
    data is only found when decoding). Raises DatasetError.
    """
    get_dataset(name).check(data_dir, split, seed=seed, files=files, limit=limit)
