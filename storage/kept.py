"""A run kept in the repository (``docs/results/data/<run>/``), and a run restored from it.

A session's machine does not keep its run folders, and a results page must not depend on
them: what a page reads of a run (``run.toml``, ``machine.txt``, ``classifier.json``, the
compacted Parquet results, the white-box attacks' step files and the figures ``ride report``
drew) is copied into a folder of
the same layout, small enough to commit, without the images (``images.zarr``) or the
classifier's weights (:func:`keep_run`). ``python -m analysis.results_page --runs
docs/results/data`` writes a page from the kept folders alone.

A kept run grows again on another machine: :func:`restore_run` makes a run folder of the
kept copy with ``restored.json`` naming how many rows it restored; there a task of those rows
whose result rows read back whole is finished without its images (``storage.stored``), so
``ride run --limit <more>`` on it computes only the new images (and the cheap gray-box
attack chunks of the old ones again), once the classifier is checked to be the one that
made the kept rows (``pipeline.classifier``). ``python -m storage.kept keep RUN KEPT`` and
``python -m storage.kept restore KEPT RUN`` do the same from the shell.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from storage.files import StorageError, atomic_write_bytes
from storage.layout import RunLayout
from storage.runconfig import read_run_config

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
    staging = _staging(dest)
    _copy_kept(run, staging, figures=True)
    shutil.rmtree(dest, ignore_errors=True)
    staging.rename(dest)
    return sum(path.stat().st_size for path in dest.rglob("*") if path.is_file())


def restore_run(kept: Path, run: Path) -> int:
    """Make the run folder ``run`` (new or empty) of the kept run ``kept``; the number of
    rows restored (the kept run's ``limit``), recorded in ``restored.json``.
    :class:`~storage.files.StorageError` (one line) for a ``run`` that holds anything, or a
    ``kept`` folder that holds no run."""
    if run.exists() and (not run.is_dir() or any(run.iterdir())):
        raise StorageError(f"{run} is not an empty folder: restore into a new run directory")
    if not (kept / "run.toml").is_file():
        raise StorageError(f"{kept} holds no run.toml: no kept run to restore")
    rows = read_run_config(kept / "run.toml").get("limit")
    if not isinstance(rows, int):
        raise StorageError(f"{kept / 'run.toml'} has no limit: cannot tell the rows it holds")
    staging = _staging(run)
    _copy_kept(kept, staging, figures=False)
    record = {"rows": rows, "kept": str(kept)}
    atomic_write_bytes(RunLayout(staging).restored, json.dumps(record, indent=2).encode())
    if run.exists():
        run.rmdir()
    staging.rename(run)
    return rows


def restored_rows(layout: RunLayout) -> int:
    """How many rows the run restored from a kept copy (0 for a run made here)."""
    path = layout.restored
    if not path.exists():
        return 0
    try:
        rows = json.loads(path.read_text()).get("rows")
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        rows = None
    if not isinstance(rows, int) or isinstance(rows, bool) or rows < 0:
        raise StorageError(f"{path} is unreadable or holds no row count (an integer >= 0)")
    return rows


def _staging(dest: Path) -> Path:
    staging = dest.with_name(f".{dest.name}.keeping-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    return staging


def _copy_kept(source: Path, target: Path, figures: bool) -> None:
    """The kept files and the compacted results of ``source`` into ``target``; keeping
    (``figures``), also the figures and the step files of the white-box attacks (small: one
    row per image and iterate; the sanity checks read them). A restored run gets neither:
    its attacks are made again with their images."""
    layout = RunLayout(source)
    for name in KEPT_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, target / name)
    for part in sorted(layout.results.rglob("*.parquet")) if layout.results.is_dir() else []:
        destination = target / "results" / part.relative_to(layout.results)
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(part, destination)
    if not figures:
        return
    for part in sorted(layout.steps.glob("*.parquet")) if layout.steps.is_dir() else []:
        (target / "steps").mkdir(exist_ok=True)  # a white-box attack's per-iterate record
        shutil.copyfile(part, target / "steps" / part.name)
    for figure in sorted(layout.figures.glob("*.png")) if layout.figures.is_dir() else []:
        (target / "figures").mkdir(exist_ok=True)
        shutil.copyfile(figure, target / "figures" / figure.name)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m storage.kept",
        description="Keep a run's compacted results in a small folder, or restore a run "
        "folder from one (to grow it with ride run --limit).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    keep = sub.add_parser("keep", help="copy RUN's run.toml, machine, results into KEPT")
    keep.add_argument("run", type=Path)
    keep.add_argument("kept", type=Path)
    restore = sub.add_parser("restore", help="make the new run folder RUN of KEPT")
    restore.add_argument("kept", type=Path)
    restore.add_argument("run", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "keep":
            size = keep_run(args.run, args.kept)
            print(f"kept {args.run} in {args.kept} ({size / 2**20:.1f} MiB)")
        else:
            rows = restore_run(args.kept, args.run)
            print(f"restored {rows} rows of {args.kept} in {args.run}")
    except StorageError as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
