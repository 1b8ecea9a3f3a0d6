"""``sources.json``: which files a run evaluates, so that a resumed run uses the same ones.

A sampled dataset (ImageNet: two validation images per class) is sampled once, by the first
run; the list ``(relative path, label)`` in row order is recorded, and every later run on the
directory reads it back instead of sampling again. Paths are relative to ``--data-dir``, so
the data may be mounted elsewhere on resume.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from ride.datasets import DatasetError
from ride.datasets.imagenet import check_relative
from storage.files import atomic_write_json
from storage.images import StorageError

SOURCES_FORMAT = 1


def write_sources(path: Path, dataset: str, files: Sequence[tuple[str, int]]) -> None:
    """Record ``files`` (row i of the run = ``files[i]``) atomically."""
    document = {
        "format": SOURCES_FORMAT,
        "dataset": dataset,
        "files": [[str(name), int(label)] for name, label in files],
    }
    atomic_write_json(path, document)


def read_sources(path: Path) -> list[tuple[str, int]]:
    """The recorded ``(relative path, label)`` list; StorageError (one line) when malformed."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise StorageError(f"{path} is unreadable: {type(error).__name__}: {error}") from None
    files = document.get("files") if isinstance(document, dict) else None
    if not isinstance(files, list):
        raise StorageError(f"{path} has no 'files' list")
    out: list[tuple[str, int]] = []
    for i, item in enumerate(files):
        if (
            not isinstance(item, list)
            or len(item) != 2
            or not isinstance(item[0], str)
            or isinstance(item[1], bool)
            or not isinstance(item[1], int)
        ):
            raise StorageError(f"{path}: entry {i} is not [relative path, label]: {item!r}")
        try:
            out.append((check_relative(item[0], f"{path}: entry {i}"), item[1]))
        except DatasetError as error:
            raise StorageError(str(error)) from None
    return out
