"""Keep a run's compacted results where the repository keeps them (``docs/results/data/``).

A session's machine does not keep its run folders, and a results page must not depend on
them: what a page reads of a run (``run.toml``, ``machine.txt``, ``classifier.json``, the
compacted Parquet results and the figures ``ride report`` drew) is copied into a folder of
the same layout, small enough to commit, without the images (``images.zarr``) or the
classifier's weights. ``python -m analysis.results_page --runs docs/results/data`` then
writes the page from the kept folders alone; ``--keep docs/results/data`` keeps every run
of the page before writing it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from storage.files import StorageError
from storage.layout import RunLayout

KEPT_FILES = ("run.toml", "train.toml", "machine.txt", "classifier.json")
"""The files of a run (or a training) folder a page reads; each is kept when present."""


def keep_run(run: Path, dest: Path) -> int:
    """Copy what a page reads of ``run`` into ``dest`` (replacing an older copy); the
    bytes kept. :class:`~storage.files.StorageError` (one line) for a folder that is no run
    or training, or whose results are not compacted (``ride compact RUN`` first): per-task
    files would make the kept copy as large as the run's task count."""
    layout = RunLayout(run)
    if not any((run / name).is_file() for name in ("run.toml", "train.toml")):
        raise StorageError(f"{run} holds no run.toml or train.toml: nothing to keep")
    loose = sorted(layout.results.glob("*.parquet")) if layout.results.is_dir() else []
    if loose:
        raise StorageError(
            f"{run} has {len(loose)} result files not compacted (e.g. {loose[0].name}); "
            f"run `ride compact {run}` first"
        )
    staging = dest.with_name(f".{dest.name}.keeping-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name in KEPT_FILES:
        if (run / name).is_file():
            shutil.copyfile(run / name, staging / name)
    for part in sorted(layout.results.rglob("*.parquet")) if layout.results.is_dir() else []:
        target = staging / "results" / part.relative_to(layout.results)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(part, target)
    for figure in sorted(layout.figures.glob("*.png")) if layout.figures.is_dir() else []:
        (staging / "figures").mkdir(exist_ok=True)
        shutil.copyfile(figure, staging / "figures" / figure.name)
    shutil.rmtree(dest, ignore_errors=True)
    staging.rename(dest)
    return sum(path.stat().st_size for path in dest.rglob("*") if path.is_file())
