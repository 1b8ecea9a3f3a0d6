"""Dataset readers returning images ``(N, C, H, W)`` float32 in [0, 1].

The embedded demo uses scikit-learn's bundled handwritten digits (1,797 real 8x8 scans,
values 0..16), upsampled to the 28x28 geometry of MNIST so that the paper's MNIST networks
(the two-conv classifier and the 1-16-16-16-1 RIDE FCN of Table 3) apply unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from sklearn import datasets as sk_datasets
from torch import Tensor

DATASETS: tuple[str, ...] = ("digits",)


@dataclass(frozen=True, eq=False)
class ImageSet:
    """A labelled image set: ``images`` (N, C, H, W) float32 in [0, 1], ``labels`` (N,) int64.

    Compared by identity (``eq=False``): comparing tensors elementwise has no single truth value.
    """

    name: str
    images: Tensor  # (N, C, H, W) float32 in [0, 1]
    labels: Tensor  # (N,) int64
    num_classes: int

    def __post_init__(self) -> None:
        if self.images.ndim != 4:
            raise ValueError(f"images must be (N, C, H, W), got {tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(
                f"labels must be ({self.images.shape[0]},), got {tuple(self.labels.shape)}"
            )

    def __len__(self) -> int:
        return int(self.images.shape[0])


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


def load_dataset(name: str, split: str, seed: int = 0) -> ImageSet:
    """Load dataset ``name`` (one of ``DATASETS``) and ``split`` ('train' or 'test')."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose from: {', '.join(DATASETS)}")
    if split not in ("train", "test"):
        raise ValueError(f"unknown split {split!r}; choose from: train, test")
    return load_digits("train" if split == "train" else "test", seed=seed)
