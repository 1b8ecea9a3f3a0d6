"""Reading a results folder that holds compacted partitions.

:func:`stored_files` lists what a reader of ``results/`` reads: the flat per-task files and
the files of each partition (:mod:`storage.partitions`), with the pending files of a
committed compaction killed midway standing in for their final names (:mod:`storage.journal`),
so every row is found exactly once at every point. :func:`read_part` reads a partition file
back as rows of :data:`storage.schema.SCHEMA`; :func:`task_rows` finds the compacted rows of
one task, for its done-check (:func:`storage.results.is_finished`).
"""

from __future__ import annotations

from contextlib import suppress
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from storage.files import Note, WriteError, set_aside
from storage.journal import kept, lost_partitions, read_journal
from storage.partitions import (
    PARTITIONS,
    Partition,
    flat_files,
    key_span,
    part_schema,
    partition_dir,
    partition_dirs,
    partition_of,
    visible,
)
from storage.schema import SCHEMA, UnreadableFile, checked_problem, whole_table


def stored_files(results_dir: Path) -> tuple[list[Path], dict[Partition, list[Path]]]:
    """What a reader of ``results/`` reads: the flat per-task files (ok and failed), and the
    files of each compacted partition. After a kill during the renames of a committed
    compaction, the journal's pending files stand in for their final names and the files they
    replace are left out, so every row is found exactly once at every point (but for those
    of a pending file deleted by hand: see :func:`storage.journal.roll_forward`)."""
    journal = read_journal(results_dir)
    removed = set()
    if journal is not None:
        lost = lost_partitions(results_dir, journal)  # their files are kept (roll_forward)
        removed = {results_dir / p for p in journal.remove if not kept(p, lost)}
    flat = [p for p in flat_files(results_dir) + flat_files(results_dir, True) if p not in removed]
    parts: dict[Partition, list[Path]] = {}
    for folder in partition_dirs(results_dir):
        found = [p for p in folder.glob("*.parquet") if visible(p) and p not in removed]
        partition = partition_of(folder / "x")
        if found and partition is not None:
            parts[partition] = sorted(found)
    for pending, final in (journal.reveal if journal else {}).items():
        source, target = results_dir / pending, results_dir / final
        partition = partition_of(target)
        if source.exists() and partition is not None and target not in parts.get(partition, []):
            parts.setdefault(partition, []).append(source)
    return sorted(flat), parts


def conformed(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` as exactly ``schema``: its columns in order and type, a column it lacks (a
    file written before the column was added) as nulls."""
    n = table.num_rows
    arrays = [
        table.column(f.name).cast(f.type) if f.name in table.column_names else pa.nulls(n, f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(arrays, schema=schema)


def with_partition(table: pa.Table, attack_id: str, defender_id: str) -> pa.Table:
    """A partition file's rows as a table of :data:`storage.schema.SCHEMA` (the partition
    columns put back, as plain strings)."""
    values = {PARTITIONS[0]: attack_id, PARTITIONS[1]: defender_id}
    n = table.num_rows
    columns = {name: pa.array([value] * n, pa.string()) for name, value in values.items()}
    for name in table.column_names:
        if name not in values:
            columns[name] = table.column(name)
    return conformed(pa.table(columns), SCHEMA)


def read_part(path: Path, partition: Partition) -> pa.Table:
    """One partition file as a table of :data:`storage.schema.SCHEMA`; an unreadable one is
    an :class:`~storage.schema.UnreadableFile` naming it."""
    found = whole_table(path, part_schema())
    if isinstance(found, str):
        raise UnreadableFile(
            f"{path} is unreadable ({found}); rerun the run (`ride run` with the same --out "
            "and settings) to set it aside and redo its tasks"
        )
    return with_partition(found, *partition)


def key_partition(results_dir: Path, key: str) -> tuple[Partition, int, int] | None:
    """The compacted partition a task key (:func:`storage.partitions.result_key`) falls in, and
    its image range ``[start, stop)``; None when the key does not parse or no partition
    folder matches it. Only the partition folders are listed."""
    span = key_span(key)
    if span is None:
        return None
    prefix, start, stop = span
    attack_id, _, defender_id = prefix.partition("__")
    if partition_dir(results_dir, attack_id, defender_id).is_dir():
        return (attack_id, defender_id), start, stop
    if prefix.count("__") < 2:  # the one way to split it: no need to list the folders
        return None
    for folder in partition_dirs(results_dir):  # an id holding "__": match the whole prefix
        partition = partition_of(folder / "x")
        if partition is not None and "__".join(partition) == prefix:
            return partition, start, stop
    return None


def task_rows(results_dir: Path, key: str, note: Note | None) -> tuple[Path, pa.Table] | None:
    """The folder of the compacted partition of task ``key`` and the rows there of its
    images (columns ``run_id`` and ``index``), read from that partition's files only, with a
    filter on ``index``: cheap enough for the done-check of every task. None when it holds
    none; an unreadable partition file is set aside (``note`` is told) and None returned, so
    the tasks of the partition are redone."""
    found = key_partition(results_dir, key)
    if found is None:
        return None
    (attack_id, defender_id), start, stop = found
    _, parts = stored_files_of(results_dir, (attack_id, defender_id))
    tables = []
    for path in parts:
        problem = checked_problem(path, part_schema())  # types and values: once per file
        if problem is None:
            try:
                tables.append(
                    pq.read_table(
                        path,
                        columns=["run_id", "index"],
                        filters=[("index", ">=", start), ("index", "<", stop)],
                    )
                )
            except Exception as error:  # pyarrow raises ArrowInvalid, OSError...: unreadable
                problem = type(error).__name__
        if problem is not None:
            if not path.exists():  # moved by a compaction since it was listed
                return None
            with suppress(WriteError):  # another worker set it aside first
                aside = set_aside(path)
                if note is not None:
                    note(
                        f"{path} is unreadable ({problem}); kept as "
                        f"{aside.name}, the tasks of its partition are redone"
                    )
            return None
    if not tables or not sum(t.num_rows for t in tables):
        return None
    return partition_dir(results_dir, attack_id, defender_id), pa.concat_tables(tables)


def stored_files_of(results_dir: Path, partition: Partition) -> tuple[Path, list[Path]]:
    """The folder of ``partition`` and its files to read (:func:`stored_files`, for one
    partition: only its folder is listed)."""
    folder = partition_dir(results_dir, *partition)
    journal = read_journal(results_dir)
    if journal is None:
        return folder, sorted(p for p in folder.glob("*.parquet") if visible(p))
    _, parts = stored_files(results_dir)
    return folder, parts.get(partition, [])
