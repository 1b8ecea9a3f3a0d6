"""The embedded demo dataset: scikit-learn's bundled handwritten digits.

1,797 real 8x8 scans (values 0..16), upsampled to the 28x28 geometry of MNIST so that the
paper's MNIST networks (the two-conv classifier and the 1-16-16-16-1 RIDE FCN of Table 3)
apply unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from sklearn import datasets as sk_datasets

from ride.datasets.base import Dataset, ImageSet, Request
from ride.registry import DATASETS


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


@dataclass(frozen=True)
class Digits(Dataset):
    """scikit-learn's handwritten digits, bundled: no data directory, 28x28 grayscale, 10 classes.

    The 8x8 scans are upsampled to MNIST's geometry; train and test are a stratified split
    (a quarter of each class to test) seeded by ``seed``. ``data_dir`` and ``files`` are ignored.

    Example:
        >>> from ride.datasets import load_dataset
        >>> load_dataset("digits", "test", limit=2).images.shape
        torch.Size([2, 1, 28, 28])
    """

    name: ClassVar[str] = "digits"
    shape: ClassVar[tuple[int, int, int]] = (1, 28, 28)
    num_classes: ClassVar[int] = 10
    default_classifier: ClassVar[str] = "mnist-cnn"
    needs_data_dir: ClassVar[bool] = False

    def read(self, request: Request) -> ImageSet:
        data = load_digits("train" if request.split == "train" else "test", seed=request.seed)
        if request.limit is None:
            return data
        limit = request.limit
        return ImageSet(data.name, data.images[:limit], data.labels[:limit], data.num_classes)


DATASETS.add("digits", Digits, "scikit-learn's 8x8 digits at 28x28, bundled")
