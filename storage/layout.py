"""Where each artefact of a run lives under its ``--out`` directory (see DESIGN.md)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


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
    def done(self) -> Path:
        """Completion markers of image chunks (written after the chunk itself)."""
        return self.root / ".done"

    @property
    def timing(self) -> Path:
        """The timing of attack chunks that ran no defender, one JSON file per chunk, for
        the defence chunks of their rows to share (``pipeline.chunks``)."""
        return self.root / "timing"


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
