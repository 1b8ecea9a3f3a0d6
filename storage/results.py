"""The Parquet result store: one row per (image, attack, defender).

One file per finished task under ``results/``, written to a hidden temporary name, fsynced
and renamed (:func:`storage.files.atomic_file`), so ``pandas.read_parquet(results_dir)`` and
DuckDB's ``read_parquet('results/*.parquet')`` only ever see whole files. A task whose file
``<key>.parquet`` exists and reads back whole (footer, schema, row count) is finished
(storage is the source of truth for resume); an unreadable one (truncated, 0 bytes: what a
power cut can leave) is renamed ``_<key>.parquet.corrupt``, kept for inspection, and its
task redone. A task that failed writes ``<key>.failed.parquet`` instead, which a later successful
run of the same task supersedes.

A run folder may be written by others (a shared file system), so a file is trusted only as
far as it is checked: it must read back whole (:mod:`storage.schema`: the columns, types and
ranges of :data:`~storage.schema.SCHEMA`), and a task's own file must hold exactly its
images, of its attack and defender (:func:`task_problem`). A file that fails any check is
set aside and its task redone, like a truncated one; read for a report, it is a one-line
:class:`~storage.schema.UnreadableFile` naming it. The file names are
:mod:`storage.partitions`'; the compacted partitions are read by :mod:`storage.compacted`.

No row is counted twice. A row is identified by (``run_id``, ``attack_id``, ``defender_id``,
``index``); when the files of a folder hold one row more than once (a copied part file, a
per-task file copied under another name), the copies that are equal except for
:data:`VOLATILE_COLUMNS` are read once, with a warning naming the row count dropped; copies
that differ in anything else are a :class:`DuplicateRows` error, one line naming the row,
since which copy is right cannot be told (:func:`read_results`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from storage.compacted import read_part, stored_files, task_rows
from storage.files import Note, StorageError, atomic_file, set_aside, writing
from storage.partitions import key_span, result_key, result_path
from storage.schema import (
    DISTANCE_PAIRS,
    NORMS,
    ROW_KEY,
    SCHEMA,
    STATUSES,
    TIMING_COLUMNS,
    VOLATILE_COLUMNS,
    UnreadableFile,
    table_problem,
    value_problem,
    whole_table,
)

__all__ = [  # the schema's names and the file names too, as every caller imports them here
    "DISTANCE_PAIRS",
    "NORMS",
    "SCHEMA",
    "TIMING_COLUMNS",
    "VOLATILE_COLUMNS",
    "DuplicateRows",
    "UnreadableFile",
    "finished_file",
    "finished_table",
    "is_finished",
    "once_each",
    "read_results",
    "read_tables",
    "result_key",
    "result_path",
    "task_problem",
    "write_results",
    "write_table",
]


def task_problem(table: pa.Table, key: str) -> str | None:
    """Why ``table`` is not the rows of task ``key``, or None: its rows must be of the key's
    attack and defender and hold each image of its range once."""
    span = key_span(key)
    if span is None:
        return None
    prefix, start, stop = span
    ids = pc.binary_join_element_wise(table.column("attack_id"), table.column("defender_id"), "__")
    if table.num_rows and not pc.all(pc.equal(ids, prefix)).as_py():
        return f"rows of another attack or defender than {prefix}"
    index = table.column("index").to_numpy()
    if not len(index):
        return None
    if len(np.unique(index)) != len(index) or index.min() < start or index.max() >= stop:
        return f"image indices other than {start}..{stop - 1}, each once"
    return None


def finished_table(
    path: Path, schema: pa.Schema, rows: int | None = None, note: Note | None = None
) -> pa.Table | None:
    """``path``'s table when it exists and reads back whole (:func:`whole_table`). An
    unreadable one is renamed ``*.corrupt`` (:func:`storage.files.set_aside`), ``note`` is
    told, and None returned: its task is redone."""
    if not path.exists():
        return None
    found = whole_table(path, schema, rows)
    if not isinstance(found, str):
        return found
    aside = set_aside(path)
    if note is not None:
        note(f"{path} is unreadable ({found}); kept as {aside.name}, its task is redone")
    return None


def finished_file(
    path: Path, schema: pa.Schema, rows: int | None = None, note: Note | None = None
) -> bool:
    """True when ``path`` exists and reads back whole (:func:`finished_table`)."""
    return finished_table(path, schema, rows, note) is not None


def is_finished(
    results_dir: Path,
    key: str,
    rows: int | None = None,
    note: Note | None = None,
    run_id: str | None = None,
) -> bool:
    """True when the task ``key`` already wrote its rows successfully: its file reads back
    with ``rows`` rows (when given), all of the key's attack, defender and images
    (:func:`task_problem`). An unreadable or invalid file is set aside
    (:func:`finished_table`).

    With ``run_id``, rows written by another run (a directory adopted with
    ``--force-claim`` under other settings) do not count: the task is redone for this run.
    The file is read once for both checks.

    Without a file of its own, the task is looked up in the compacted partition of its
    attack and defender (:func:`storage.compacted.task_rows`: that partition only, filtered on
    ``index``); there ``rows`` is the number of its images found.
    """
    path = result_path(results_dir, key)
    if path.exists():
        table = finished_table(path, SCHEMA, rows, note)
        where = str(path)
        problem = None if table is None else task_problem(table, key)
        if problem is not None:
            aside = set_aside(path)
            if note is not None:
                note(f"{path} is unreadable ({problem}); kept as {aside.name}, its task is redone")
            return False
    else:
        found = task_rows(results_dir, key, note)
        if found is None:
            return False
        folder, table = found
        where = f"{folder} (compacted)"
        if rows is not None and table.num_rows != rows:
            if note is not None:
                note(f"{where} holds {table.num_rows} rows of {key} where {rows} were written")
            return False
    if table is None:
        return False
    if run_id is None:
        return True
    written_by = set(table.column("run_id").to_pylist())
    if written_by == {run_id}:
        return True
    if note is not None:
        note(f"{where} holds rows of run {', '.join(sorted(written_by))}; redone for {run_id}")
    return False


def write_table(path: Path, rows: Sequence[Mapping[str, Any]], schema: pa.Schema) -> Path:
    """Write ``rows`` (exactly ``schema``'s columns) to ``path`` durably and atomically
    (temp, fsync, rename: :func:`storage.files.atomic_file`); a failed write is a
    :class:`~storage.files.WriteError` naming ``path``, and leaves ``path`` as it was."""
    if not rows:
        raise ValueError(f"no rows to write to {path.name}")
    for row in rows:
        if set(row) != set(schema.names):
            missing = set(schema.names) - set(row)
            extra = set(row) - set(schema.names)
            raise ValueError(
                f"rows of {path.name} do not match the schema: missing {missing}, extra {extra}"
            )
    table = pa.Table.from_pylist([dict(row) for row in rows], schema=schema)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as file:
        pq.write_table(table, file)
    return path


def write_results(results_dir: Path, key: str, rows: Sequence[Mapping[str, Any]]) -> Path:
    """Write one task's rows atomically; ``failed`` rows go to ``<key>.failed.parquet``.

    The rows must match :data:`SCHEMA` exactly (no missing or extra columns) and share one
    status. A successful write removes an earlier failed file of the same key.
    """
    if not rows:
        raise ValueError(f"no rows to write for {key}")
    statuses = {row["status"] for row in rows}
    if len(statuses) != 1 or not statuses <= set(STATUSES):
        raise ValueError(f"rows of {key} must share one status out of {STATUSES}: {statuses}")
    failed = statuses == {"failed"}
    path = write_table(result_path(results_dir, key, failed=failed), rows, SCHEMA)
    if not failed:
        superseded = result_path(results_dir, key, failed=True)
        with writing(superseded):
            superseded.unlink(missing_ok=True)
    return path


def read_tables(files: Sequence[Path], schema: pa.Schema) -> pa.Table:
    """The rows of ``files`` as one table of ``schema``; a file that is unreadable or holds a
    value out of range (:func:`whole_table`) is an :class:`UnreadableFile` naming it (in one
    line), not pyarrow's error without a name."""
    try:
        table = pq.read_table([str(p) for p in files], schema=schema)
    except Exception:
        _raise_unreadable(files, schema)
        raise
    if value_problem(table, schema) is not None:
        _raise_unreadable(files, schema)
    return table


def _raise_unreadable(files: Sequence[Path], schema: pa.Schema) -> None:
    """Raise :class:`UnreadableFile` for the first of ``files`` that is not whole."""
    for path in files:
        problem = table_problem(path, schema)
        if problem is not None:
            raise UnreadableFile(
                f"{path} is unreadable ({problem}); rerun the run (`ride run` with the "
                "same --out and settings) to set it aside and redo its task"
            ) from None


class DuplicateRows(StorageError):
    """The files of a results folder hold one row twice, with different values."""


_log = logging.getLogger(__name__)


def read_results(results_dir: Path, note: Note | None = None) -> pd.DataFrame:
    """All rows of a run, flat per-task files and compacted partitions alike
    (:func:`storage.compacted.stored_files`), as :data:`SCHEMA`'s columns with plain string
    ids. Failed rows superseded by a later success are dropped, and so are compacted rows of
    an image that a newer per-task file holds (a task redone after a compaction). An
    unreadable file is an :class:`UnreadableFile` naming it.

    Each row (:data:`ROW_KEY`) is returned once: copies of a row equal but for
    :data:`VOLATILE_COLUMNS` are dropped and ``note`` (default: a logged warning) told;
    copies that differ otherwise are a :class:`DuplicateRows` error."""
    for attempt in range(3):
        flat, parts = stored_files(results_dir)
        try:
            tables = [read_tables(flat, SCHEMA)] if flat else []
            tables += [read_part(p, partition) for partition, files in parts.items() for p in files]
            break
        except (FileNotFoundError, UnreadableFile):
            # a compaction moved a file after it was listed: list again
            listed = [*flat, *(p for files in parts.values() for p in files)]
            if attempt == 2 or all(p.exists() for p in listed):
                raise
    if not tables:
        return SCHEMA.empty_table().to_pandas()
    frame = pa.concat_tables(tables).to_pandas()
    keys = pd.MultiIndex.from_frame(frame[["attack_id", "defender_id", "index"]])
    ok = (frame["status"] == "ok").to_numpy()
    flat_rows = np.zeros(len(frame), dtype=bool)
    flat_rows[: tables[0].num_rows if flat else 0] = True
    superseded = ~ok & keys.isin(keys[ok])  # failed rows of an image that succeeded later
    superseded |= ~flat_rows & keys.isin(keys[flat_rows & ok])  # compacted, then redone
    kept = frame.loc[~superseded].reset_index(drop=True)
    return once_each(kept, results_dir, _log.warning if note is None else note)


def once_each(frame: pd.DataFrame, results_dir: Path, note: Note) -> pd.DataFrame:
    """``frame`` with each row (:data:`ROW_KEY`) once: copies equal but for
    :data:`VOLATILE_COLUMNS` are dropped (``note`` is told how many); copies that differ
    otherwise are a :class:`DuplicateRows` error naming the first such row."""
    copies = frame.duplicated(list(ROW_KEY), keep=False)
    if not copies.any():
        return frame
    stable = [name for name in frame.columns if name not in VOLATILE_COLUMNS]
    distinct = frame.loc[copies, stable].astype(str).drop_duplicates()
    conflicting = distinct.duplicated(list(ROW_KEY), keep=False)
    if conflicting.any():
        row = distinct.loc[conflicting].iloc[0]
        raise DuplicateRows(
            f"{results_dir} holds the row of image {row['index']} (attack {row['attack_id']}, "
            f"defender {row['defender_id']}, run {row['run_id']}) more than once, with "
            "different values; move away the result files that ride did not write (a copy "
            "under another name), then rerun the run to redo what is missing"
        )
    dropped = frame.duplicated(list(ROW_KEY), keep="first")
    note(
        f"{results_dir} holds {int(dropped.sum())} extra copies of rows (a result file "
        "copied under another name?); each row is counted once"
    )
    return frame.loc[~dropped].reset_index(drop=True)
