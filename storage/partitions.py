"""Where the rows of ``results/`` live: the per-task files and the compacted partitions.

A task writes ``<key>.parquet`` (or ``<key>.failed.parquet``) at the top of ``results/``,
``<key>`` naming its attack, defender and image range (:func:`result_key`). Compaction
(:mod:`storage.compact`) merges the ``ok`` ones into one folder per (attack, defender),
hive style, the values percent-encoded (:func:`partition_dir`)::

    results/attack_id=<attack id>/defender_id=<defender id>/part-<digest>.parquet

A name starting with ``.`` or ``_`` (a temporary file, a pending partition file, a file set
aside) is never read (:func:`visible_name`). Compaction removes and renames files only in
folders reached through no symbolic link (:func:`check_folders`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, unquote

import pyarrow as pa

from storage.files import StorageError
from storage.schema import SCHEMA

PARTITIONS = ("attack_id", "defender_id")
"""The columns the compacted dataset is partitioned by, outermost first."""

Partition = tuple[str, str]
"""An (attack id, defender id) pair: one folder of the compacted dataset."""


def result_key(attack_id: str, defender_id: str, start: int, stop: int) -> str:
    """The file stem of one task's rows."""
    return f"{attack_id}__{defender_id}__{start:07d}-{stop:07d}"


def result_path(results_dir: Path, key: str, failed: bool = False) -> Path:
    """The per-task file of task ``key``: ``<key>.parquet``, or ``<key>.failed.parquet``."""
    return results_dir / (f"{key}.failed.parquet" if failed else f"{key}.parquet")


def key_span(key: str) -> tuple[str, int, int] | None:
    """The ``<attack_id>__<defender_id>`` prefix and the image range ``[start, stop)`` of a
    task key (:func:`result_key`); None when it does not parse."""
    prefix, _, span = key.rpartition("__")
    try:
        start, stop = (int(value) for value in span.split("-"))
    except ValueError:
        return None
    return prefix, start, stop


def part_schema() -> pa.Schema:
    """The schema of a partition file: :data:`storage.schema.SCHEMA` less the partition
    columns, which its folder names carry."""
    schema = SCHEMA
    for name in PARTITIONS:
        schema = schema.remove(schema.get_field_index(name))
    return schema


def partition_dir(results_dir: Path, attack_id: str, defender_id: str) -> Path:
    """The folder of one (attack, defender) partition (values percent-encoded, as pyarrow's
    hive partitioning decodes them)."""
    return (
        results_dir
        / f"{PARTITIONS[0]}={quote(attack_id, safe='')}"
        / f"{PARTITIONS[1]}={quote(defender_id, safe='')}"
    )


def partition_of(path: Path) -> Partition | None:
    """The (attack id, defender id) of a file inside a partition folder, else None."""
    outer, inner = path.parent.parent.name, path.parent.name
    prefixes = tuple(f"{name}=" for name in PARTITIONS)
    if not (outer.startswith(prefixes[0]) and inner.startswith(prefixes[1])):
        return None
    return unquote(outer[len(prefixes[0]) :]), unquote(inner[len(prefixes[1]) :])


def visible(path: Path) -> bool:
    """Is ``path`` a file a reader reads (:func:`visible_name`)."""
    return visible_name(path.name)


def visible_name(name: str) -> bool:
    """Is ``name`` a Parquet file a reader reads: not hidden (``.``), not set aside or
    pending (``_``)."""
    return not name.startswith((".", "_")) and name.endswith(".parquet")


def flat_files(results_dir: Path, failed: bool = False) -> list[Path]:
    """The per-task files at the top of ``results/``: the ``ok`` ones, or the
    ``*.failed.parquet`` ones (``failed``)."""
    return sorted(
        path
        for path in results_dir.glob("*.parquet")
        if visible(path) and path.name.endswith(".failed.parquet") == failed
    )


def partition_dirs(results_dir: Path) -> Iterator[Path]:
    """The partition folders under ``results_dir``, sorted."""
    yield from sorted(results_dir.glob(f"{PARTITIONS[0]}=*/{PARTITIONS[1]}=*"))


def linked_folder(results_dir: Path, folder: Path) -> Path | None:
    """The first of ``results_dir``, ``folder`` and the folders between them that is a
    symbolic link (a write through it would land outside the run), else None."""
    relative = folder.relative_to(results_dir)
    for depth in range(len(relative.parts) + 1):
        path = results_dir.joinpath(*relative.parts[:depth])
        if path.is_symlink():
            return path
    return None


def refuse_linked(results_dir: Path, folder: Path) -> None:
    """Raise :class:`StorageError` when ``folder`` is reached through a symbolic link."""
    linked = linked_folder(results_dir, folder)
    if linked is not None:
        raise StorageError(
            f"{linked} is a symbolic link (to {os.readlink(linked)}); compaction writes only "
            f"inside the run folder: replace it with the folder it points to, or remove it"
        )


def check_folders(results_dir: Path) -> None:
    """Raise :class:`StorageError` when ``results_dir`` or one of its partition folders is
    a symbolic link: compaction removes and renames files there."""
    refuse_linked(results_dir, results_dir)
    for outer in sorted(results_dir.glob(f"{PARTITIONS[0]}=*")):
        refuse_linked(results_dir, outer)
        for inner in sorted(outer.glob(f"{PARTITIONS[1]}=*")):
            refuse_linked(results_dir, inner)


def split_partition_path(relative: str) -> tuple[str | None, str]:
    """``(partition folder, file name)`` of a path relative to ``results/``; the folder is
    None unless the path is exactly ``attack_id=<id>/defender_id=<id>/<name>`` with both
    ids percent-encoded as :func:`partition_dir` writes them. Without a folder, the name is
    ``relative`` when it names a file at the top of ``results/``, else ''."""
    if "\x00" in relative:
        return None, ""
    parts = relative.split("/")
    if len(parts) == 1:
        return None, parts[0] if parts[0] not in ("", ".", "..") else ""
    if len(parts) != 3:
        return None, ""
    outer, inner, name = parts
    for part, column in ((outer, PARTITIONS[0]), (inner, PARTITIONS[1])):
        encoded = part.removeprefix(f"{column}=")
        if encoded == part or quote(unquote(encoded), safe="") != encoded:
            return None, ""
    if name in ("", ".", ".."):
        return None, ""
    return f"{outer}/{inner}", name
