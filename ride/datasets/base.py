"""What every dataset shares: the :class:`ImageSet` it returns, :class:`DatasetError`, the
:class:`Dataset` base class that each registered dataset extends, and the argument checks.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from torch import Tensor

SPLITS: tuple[str, ...] = ("train", "test")
"""Every split name a dataset may have."""


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


def check_split(split: str) -> None:
    """ValueError unless ``split`` is 'train' or 'test'."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose from: train, test")


def check_limit(limit: int | None) -> None:
    """ValueError unless ``limit`` is None or an int >= 0."""
    if limit is not None and (isinstance(limit, bool) or limit < 0):
        raise ValueError(f"limit must be >= 0, got {limit}")


def require_dir(path: Path, what: str) -> Path:
    """``path`` as a Path; DatasetError naming ``what`` when it is not a directory."""
    path = Path(path)
    if not path.is_dir():
        raise DatasetError(f"{what} directory not found: {path}")
    return path


@dataclass(frozen=True)
class Request:
    """What ``load`` or ``check`` was asked for."""

    data_dir: Path | None
    split: str
    seed: int
    limit: int | None
    files: Sequence[tuple[str, int]] | None


@dataclass(frozen=True)
class Dataset(ABC):
    """One dataset: what it is (class attributes) and how to read and check it.

    A subclass is registered by name in :data:`ride.registry.DATASETS`. It has no settings
    (no dataclass fields): everything it says of itself is a class attribute.
    """

    name: ClassVar[str]
    shape: ClassVar[tuple[int, int, int]]  # (C, H, W) of the images ``load`` returns
    num_classes: ClassVar[int]  # classes of the full dataset
    default_classifier: ClassVar[str]  # the paper's classifier for it
    splits: ClassVar[tuple[str, ...]] = SPLITS
    needs_data_dir: ClassVar[bool] = True
    lists_data_dir: ClassVar[bool] = False  # every folder in data_dir is read as its data

    def load(
        self,
        data_dir: Path | None,
        split: str,
        seed: int = 0,
        limit: int | None = None,
        files: Sequence[tuple[str, int]] | None = None,
    ) -> ImageSet:
        """Split ``split``; ``limit`` keeps the first items, ``files`` a recorded image list."""
        return self.read(self.request(data_dir, split, seed, limit, files))

    def check(
        self,
        data_dir: Path | None,
        split: str,
        seed: int = 0,
        files: Sequence[tuple[str, int]] | None = None,
        limit: int | None = None,
    ) -> None:
        """Cheap preflight of the files ``load`` would read (and, where the dataset counts
        its images cheaply, that the split holds ``limit``); raises DatasetError."""
        self.inspect(self.request(data_dir, split, seed, limit, files))

    def request(
        self,
        data_dir: Path | None,
        split: str,
        seed: int,
        limit: int | None,
        files: Sequence[tuple[str, int]] | None,
    ) -> Request:
        """The arguments checked in one order for every dataset: split name, limit, data
        directory given (when needed), split offered."""
        check_split(split)
        check_limit(limit)
        if self.needs_data_dir:
            self.root(data_dir)
        self.require_split(split)
        return Request(data_dir, split, seed, limit, files)

    @abstractmethod
    def read(self, request: Request) -> ImageSet:
        """The images and labels ``request`` asks for (its arguments already checked)."""

    def inspect(self, request: Request) -> None:  # noqa: B027  (a bundled dataset has no files)
        """Check the files ``read`` would read without decoding them all (default: none)."""

    def root(self, data_dir: Path | None) -> Path:
        """``data_dir`` as a Path; DatasetError when None."""
        if data_dir is None:
            raise DatasetError(f"data_dir is required for dataset {self.name}")
        return Path(data_dir)

    def require_split(self, split: str) -> None:
        """DatasetError unless this dataset has ``split`` (after :func:`check_split`)."""
        if split not in self.splits:
            raise DatasetError(
                f"dataset {self.name} has no {split!r} split; use split "
                + ", ".join(repr(s) for s in self.splits)
            )
