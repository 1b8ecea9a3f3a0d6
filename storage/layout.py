"""Where each artefact of a run lives under its ``--out`` directory (docs/guides/results.md).

A run folder may be writable by others (a shared cluster file system). Its files are written
by renaming a new file over their names, so a file replaced by a symbolic link is replaced
again, never written through; a folder replaced by one would have the run write, rename and
delete files wherever it points. :func:`check_own_folders` refuses such a run folder.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from storage.files import StorageError


@dataclass(frozen=True)
class RunLayout:
    """Paths of one run directory."""

    root: Path

    @property
    def run_toml(self) -> Path:
        return self.root / "run.toml"

    @property
    def images(self) -> Path:
        return self.root / "images.zarr"

    @property
    def results(self) -> Path:
        return self.root / "results"

    @property
    def steps(self) -> Path:
        """Per-iteration rows of the adaptive attacks (``storage.steps``)."""
        return self.root / "steps"

    @property
    def figures(self) -> Path:
        return self.root / "figures"

    @property
    def classifier(self) -> Path:
        return self.root / "classifier.pt"

    @property
    def classifier_info(self) -> Path:
        return self.root / "classifier.json"

    @property
    def report(self) -> Path:
        return self.root / "report.md"

    @property
    def sources(self) -> Path:
        """The evaluated image files ``(relative path, label)``, in row order (ImageNet)."""
        return self.root / "sources.json"

    @property
    def restored(self) -> Path:
        """How many rows a run restored from its kept results holds (``storage.kept``)."""
        return self.root / "restored.json"

    @property
    def done(self) -> Path:
        """Completion markers of image chunks (written after the chunk itself)."""
        return self.root / ".done"

    @property
    def timing(self) -> Path:
        """The timing of attack chunks that ran no defender, one JSON file per chunk, for
        the defence chunks of their rows to share (``pipeline.timing``)."""
        return self.root / "timing"

    @property
    def folders(self) -> tuple[Path, ...]:
        """The folders the run writes into (and removes and renames files in)."""
        return (self.results, self.images, self.steps, self.figures, self.done, self.timing)


def linked_folders(top: Path) -> Iterator[Path]:
    """``top`` and the folders under it that are symbolic links (not descended into)."""
    if top.is_symlink():
        yield top
        return
    for folder, names, _ in os.walk(top):
        for name in names:
            path = Path(folder, name)
            if path.is_symlink():
                yield path


def check_own_folders(root: Path) -> None:
    """Raise :class:`~storage.files.StorageError` when a folder of the run directory
    ``root`` (:attr:`RunLayout.folders`), or one under it, is a symbolic link: the run would
    write and delete files wherever it points. The run directory itself may be one."""
    for top in RunLayout(root).folders:
        for path in linked_folders(top):
            raise StorageError(
                f"{path} is a symbolic link (to {os.readlink(path)}); a run writes only in "
                "its own folders: replace the link with a copy of what it points to, or "
                "remove it"
            )


@dataclass(frozen=True)
class TrainLayout:
    """Paths of one ``ride train --out`` directory."""

    root: Path

    @property
    def train_toml(self) -> Path:
        """The training's settings, code version and start time."""
        return self.root / "train.toml"

    @property
    def classifier(self) -> Path:
        """The weights after the last finished epoch (``ride run --weights``)."""
        return self.root / "classifier.pt"

    @property
    def classifier_info(self) -> Path:
        """Test accuracy and per-epoch history, written when the training ends."""
        return self.root / "classifier.json"

    @property
    def state(self) -> Path:
        """Weights, optimizer and batch-order state after the last finished epoch (resume)."""
        return self.root / "train_state.pt"
