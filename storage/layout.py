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
    def done(self) -> Path:
        """Completion markers of image chunks (written after the chunk itself)."""
        return self.root / ".done"
