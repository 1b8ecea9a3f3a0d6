"""The journal of a compaction, and how a compaction killed midway is finished or undone.

A compaction (:mod:`storage.compact`) writes its new partition files under hidden pending
names, then commits by writing the journal ``results/_compaction.json`` (:class:`Journal`:
which pending file is revealed under which name, which files it replaces), then rolls
forward (:func:`roll_forward`: removals, renames, the journal removed). Every step of the
roll-forward can be redone, so :func:`recover` finishes a committed compaction, and deletes
the pending files of one killed before its journal (nothing visible had changed).

Others may write the run folder, so a journal is trusted only for what compaction itself
writes there (:func:`read_journal`, :func:`journal_problem`); anything else is refused
before any file is touched. A journal whose pending file is gone (deleted by hand) is rolled
forward as far as it can be: the files of that partition are kept (:func:`kept`).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from storage.files import TEMPORARY_SUFFIX, StorageError, fsync_directory, writing
from storage.partitions import (
    Partition,
    check_folders,
    linked_folder,
    partition_dirs,
    partition_of,
    split_partition_path,
    visible_name,
)

JOURNAL = "_compaction.json"
"""The journal of a committed compaction under ``results/`` (see the module docstring)."""

PENDING = ".pending"
"""The suffix of a written, not yet visible, partition file (``_part-<digest>.parquet.pending``)."""


@dataclass(frozen=True)
class Journal:
    """A committed compaction: ``reveal`` maps each pending file to its final name,
    ``remove`` the files the new ones replace (paths relative to ``results/``)."""

    reveal: Mapping[str, str]
    remove: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        """The journal file's content."""
        return {"version": 1, "reveal": dict(self.reveal), "remove": list(self.remove)}


PART_NAME = re.compile(r"part-[0-9a-f]{16}\.parquet")
"""The name of a partition file compaction writes: ``part-<digest>.parquet``."""


def read_journal(results_dir: Path) -> Journal | None:
    """The journal of a committed, unfinished compaction, or None. One that does not parse
    (it is written atomically, so only a hand edit can do that), or that names a file
    compaction does not write (:func:`journal_problem`), is a :class:`StorageError`:
    guessing could drop the only copy of rows, or touch files outside the run."""
    path = results_dir / JOURNAL
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as error:
        raise StorageError(f"{path} cannot be read ({type(error).__name__})") from None
    try:
        value = json.loads(text)
        journal = Journal(
            reveal={str(k): str(v) for k, v in value["reveal"].items()},
            remove=tuple(str(p) for p in value["remove"]),
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        raise StorageError(
            f"{path} is not a compaction journal; move it away only once you have checked "
            f"that no _part-*{PENDING} file under {results_dir} holds rows missing elsewhere"
        ) from None
    problem = journal_problem(results_dir, journal)
    if problem is not None:
        raise StorageError(
            f"{path} is not a journal ride wrote ({problem}); nothing was changed: move it "
            "away once you have checked it"
        )
    return journal


def journal_problem(results_dir: Path, journal: Journal) -> str | None:
    """Why ``journal`` is not one :func:`storage.compact.compact_results` wrote, or None:
    each pending file ``<partition>/_part-<digest>.parquet.pending`` revealed as
    ``<partition>/part-<digest>.parquet`` in the same folder; each removed file a visible
    per-task ``ok`` file at the top of ``results/`` or a visible Parquet file of a partition;
    every partition folder named as :func:`storage.partitions.partition_dir` names it and
    reached through no symbolic link."""
    folders = {results_dir}
    for pending, final in journal.reveal.items():
        folder, name = split_partition_path(pending)
        stem = name[1 : -len(PENDING)]  # _<stem>.pending
        if not (
            folder is not None
            and name.startswith("_")
            and name.endswith(PENDING)
            and PART_NAME.fullmatch(stem)
            and split_partition_path(final) == (folder, stem)
        ):
            return f"it reveals {pending!r} as {final!r}"
        folders.add(results_dir / folder)
    for relative in journal.remove:
        folder, name = split_partition_path(relative)
        flat = folder is None and name == relative
        if not (folder is not None or flat) or not visible_name(name):
            return f"it removes {relative!r}"
        if flat and name.endswith(".failed.parquet"):
            return f"it removes {relative!r}"
        if folder is not None:
            folders.add(results_dir / folder)
    for path in sorted(folders):
        linked = linked_folder(results_dir, path)
        if linked is not None:
            return f"{linked} is a symbolic link"
    return None


def recover(results_dir: Path) -> str | None:
    """Finish or undo a compaction killed midway; what was done, or None when nothing was
    left. Committed (a journal): rolled forward. Not committed: its hidden pending files
    deleted (nothing visible had changed). A journal or folder that compaction did not make
    is a :class:`StorageError`, raised before anything changes."""
    check_folders(results_dir)
    journal = read_journal(results_dir)
    if journal is not None:
        lost = roll_forward(results_dir, journal)
        done = f"finished a compaction that was stopped midway ({len(journal.reveal)} partitions)"
        if not lost:
            return done
        return (
            f"{done}, but {len(lost)} of its partition files were gone ({', '.join(lost)}): "
            "their partitions keep their files, and tasks whose rows are missing are redone "
            "by the next `ride run` with the same --out and settings"
        )
    stray = [
        p
        for folder in partition_dirs(results_dir)
        for p in folder.iterdir()
        if p.name.startswith(("_part-", "._part-")) and p.name.endswith((PENDING, TEMPORARY_SUFFIX))
    ]
    stray += results_dir.glob(f".{JOURNAL}.*{TEMPORARY_SUFFIX}")  # a journal killed mid-write
    for path in stray:
        with writing(path):
            path.unlink(missing_ok=True)
    for folder in partition_dirs(results_dir):
        with suppress(OSError):  # not empty: kept
            folder.rmdir()
            folder.parent.rmdir()
    if not stray:
        return None
    return f"removed {len(stray)} unfinished files of a compaction that was stopped midway"


def lost_partitions(results_dir: Path, journal: Journal) -> dict[str, Partition]:
    """The pending files of ``journal`` that are gone before they were revealed (deleted by
    hand: a roll-forward renames each only once), by the folder they were to be shown in."""
    lost = {}
    for pending, final in journal.reveal.items():
        source, target = results_dir / pending, results_dir / final
        partition = partition_of(target)
        if not source.exists() and not target.exists() and partition is not None:
            lost[str(Path(pending).parent)] = partition
    return lost


def kept(relative: str, lost: Mapping[str, Partition]) -> bool:
    """Does a file the journal removes belong to a partition whose new file is gone: an
    older file of that partition, or a per-task file of its attack and defender (then kept:
    they may hold the only copy of its rows; a per-task file supersedes compacted rows)."""
    folder = str(Path(relative).parent)
    if folder != ".":
        return folder in lost
    return any(relative.startswith("__".join(p) + "__") for p in lost.values())


def roll_forward(results_dir: Path, journal: Journal) -> list[str]:
    """Step 3 of a compaction (:mod:`storage.compact`); every step can be redone, so a kill
    inside it is safe. A pending file that is gone keeps the files of its partition
    (:func:`kept`); returns those pending files."""
    lost = lost_partitions(results_dir, journal)
    folders = {results_dir}
    for relative in journal.remove:
        if kept(relative, lost):
            continue
        path = results_dir / relative
        folders.add(path.parent)
        with writing(path):
            path.unlink(missing_ok=True)
    with writing(results_dir):
        for folder in folders:
            if folder.exists():
                fsync_directory(folder)
    for pending, final in journal.reveal.items():
        source, target = results_dir / pending, results_dir / final
        if source.exists():
            with writing(target):
                os.replace(source, target)
                fsync_directory(target.parent)
    path = results_dir / JOURNAL
    with writing(path):
        path.unlink(missing_ok=True)
        fsync_directory(results_dir)
    return sorted(str(results_dir / p) for p in journal.reveal if str(Path(p).parent) in lost)
