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
far as it is checked. "Reads back whole" means: its columns have :data:`SCHEMA`'s types, the
columns that may not be null hold no null, no float column holds NaN or an infinity, the
fractions (``recheck_correct``, ``final_correct``, ``attacker_correct``) lie in [0, 1], counts,
image indices, labels and predictions are >= 0 and ``status`` is ``ok`` or ``failed``
(:func:`value_problem`); a task's own file must hold exactly its images, of its attack and
defender. A file that fails any check is set aside and its task redone, like a truncated one;
read for a report, it is a one-line :class:`UnreadableFile` naming it.

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

from storage.files import Note, StorageError, atomic_file, set_aside, writing

TIMING_COLUMNS = ("compute_seconds", "overhead_seconds", "task_started_at", "task_finished_at")
"""Where a task's time went, per row (its share): compute (attack, defence, classification)
and overhead inside the task (loading, storing, set-up); and when the task ran (Unix
seconds), from which ``ride report`` finds the time spent outside tasks. Added in 0.3.0:
files written before lack them, and read as null."""

VOLATILE_COLUMNS = ("seconds", *TIMING_COLUMNS, "worker")
"""The columns that differ between two computations of the same rows (times, which worker)."""

DISTANCE_PAIRS = ("adv_clean", "defended_clean", "defended_adv")
NORMS = ("l1", "l2", "linf")

SCHEMA = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("dataset", pa.string(), nullable=False),
        pa.field("index", pa.int64(), nullable=False),
        pa.field("label", pa.int64(), nullable=False),
        pa.field("attack_id", pa.string(), nullable=False),
        pa.field("attack", pa.string(), nullable=False),
        pa.field("attack_params", pa.string(), nullable=False),
        pa.field("defender_id", pa.string(), nullable=False),
        pa.field("defender", pa.string(), nullable=False),
        pa.field("defender_params", pa.string(), nullable=False),
        pa.field("seed", pa.int64(), nullable=False),
        pa.field("defender_seed", pa.int64()),
        pa.field("pred_clean", pa.int64()),
        pa.field("pred_adv", pa.int64()),
        pa.field("pred_defended", pa.int64()),
        pa.field("correct_clean", pa.bool_()),
        pa.field("correct_adv", pa.bool_()),
        pa.field("correct_defended", pa.bool_()),
        pa.field("recheck_draws", pa.int64()),
        pa.field("recheck_correct", pa.float64()),
        pa.field("recheck_majority", pa.bool_()),
        pa.field("final_correct", pa.float64()),
        pa.field("attacker_draws", pa.int64()),
        pa.field("attacker_correct", pa.float64()),
        pa.field("chosen_iteration", pa.int64()),
        pa.field("correct_every_draw", pa.bool_()),
        *[pa.field(f"{pair}_{norm}", pa.float64()) for pair in DISTANCE_PAIRS for norm in NORMS],
        pa.field("seconds", pa.float64()),
        *[pa.field(name, pa.float64()) for name in TIMING_COLUMNS],
        pa.field("worker", pa.string()),
        pa.field("device", pa.string()),
        pa.field("status", pa.string(), nullable=False),
        pa.field("error", pa.string()),
    ]
)
"""The fixed schema of every result file; ``status`` is ``ok`` or ``failed``.

The evaluated adversarial image is the attack's output for a gray-box attack (the clean
image for ``none``); for a white-box attack it is the iterate the attacker chose: the one
where its own defender draws were least often classified correctly (``chosen_iteration``,
``attacker_correct`` of its ``attacker_draws`` draws; null for gray-box attacks; see
:mod:`ride.robustness`). That image is defended with ``recheck_draws`` fresh draws, seeded
apart from every attacker draw:

- ``recheck_correct``: the fraction of them classified correctly; its mean over images is
  the robust accuracy;
- ``recheck_majority``: the label is strictly the most frequent of their predictions;
- ``correct_defended``: draw 0 alone (``pred_defended``; ``pred_adv`` classifies the
  evaluated image undefended);
- ``final_correct``: the same fraction on the attack's final output (the last-iterate
  evaluation; equal to ``recheck_correct`` for gray-box attacks);
- ``correct_every_draw``: correct at every re-check draw and at every draw the attacker made
  at every iterate, a count that falls as draws are added even with no attack.
"""

STATUSES = ("ok", "failed")

ROW_KEY = ("run_id", "attack_id", "defender_id", "index")
"""The columns that identify a row: no two rows a reader returns share them."""

FRACTION_COLUMNS = ("recheck_correct", "final_correct", "attacker_correct")
"""Columns that hold a fraction of draws: in [0, 1]."""

COUNT_COLUMNS = (
    "index",
    "label",
    "iteration",
    "recheck_draws",
    "attacker_draws",
    "chosen_iteration",
    "pred_clean",
    "pred_adv",
    "pred_defended",
)
"""Columns that hold a count, an image index, a class or an iteration: >= 0."""

NONNEGATIVE_COLUMNS = (
    *[f"{pair}_{norm}" for pair in DISTANCE_PAIRS for norm in NORMS],
    "seconds",
    "compute_seconds",
)
"""Float columns that hold a distance or a duration: >= 0."""

RANGES: dict[str, tuple[float, float | None]] = {
    **dict.fromkeys(FRACTION_COLUMNS, (0.0, 1.0)),
    **dict.fromkeys((*COUNT_COLUMNS, *NONNEGATIVE_COLUMNS), (0.0, None)),
}
"""The lowest and highest (None: no bound) value of each column that has a range."""


def result_key(attack_id: str, defender_id: str, start: int, stop: int) -> str:
    """The file stem of one task's rows."""
    return f"{attack_id}__{defender_id}__{start:07d}-{stop:07d}"


def result_path(results_dir: Path, key: str, failed: bool = False) -> Path:
    return results_dir / (f"{key}.failed.parquet" if failed else f"{key}.parquet")


class UnreadableFile(StorageError):
    """A stored Parquet file of the run cannot be read (truncated, empty, not Parquet)."""


def whole_table(path: Path, schema: pa.Schema, rows: int | None = None) -> pa.Table | str:
    """``path``'s table when it reads back whole, else why not: it does not read (footer,
    data), lacks a column of ``schema``, has one of another type, holds other than ``rows``
    rows (when given) or a value out of range (:func:`value_problem`)."""
    try:
        table = pq.ParquetFile(path).read()
    except Exception as error:  # pyarrow raises ArrowInvalid, OSError...: all mean unreadable
        text = (str(error).splitlines() or [""])[0]
        return f"{type(error).__name__}: {text}" if text else type(error).__name__
    missing = [
        name
        for name in schema.names
        if name not in table.column_names and name not in TIMING_COLUMNS
    ]
    if missing:
        return f"no column {', '.join(missing)}"
    for field in schema:
        if field.name in table.column_names:
            found = table.schema.field(field.name).type
            if found != field.type:
                return f"column {field.name} is {found}, not {field.type}"
    if rows is not None and table.num_rows != rows:
        return f"{table.num_rows} rows where {rows} were written"
    problem = value_problem(table, schema)
    return table if problem is None else problem


def value_problem(table: pa.Table, schema: pa.Schema) -> str | None:
    """What is wrong with the values of ``table`` (columns of ``schema``'s types), or None:
    a null where ``schema`` allows none, a NaN or an infinity, a fraction outside [0, 1], a
    negative count, index, distance or duration, a status other than :data:`STATUSES`."""
    for field in schema:
        if field.name not in table.column_names:
            continue
        column = table.column(field.name)
        if not field.nullable and column.null_count:
            return f"column {field.name} holds {column.null_count} nulls"
        if pa.types.is_floating(field.type) and column.null_count < len(column):
            if pc.any(pc.is_nan(column)).as_py():
                return f"column {field.name} holds NaN"
            if pc.any(pc.is_inf(column)).as_py():
                return f"column {field.name} holds an infinite value"
        problem = _range_problem(field.name, column)
        if problem is not None:
            return problem
    return None


def _range_problem(name: str, column: pa.ChunkedArray) -> str | None:
    """A value of ``column`` outside the range its name promises, or None."""
    if name == "status":
        if not pc.all(pc.is_in(column, value_set=pa.array(STATUSES))).as_py():
            return f"column status holds other than {' or '.join(STATUSES)}"
        return None
    if name not in RANGES or column.null_count == len(column):
        return None
    low, high = RANGES[name]
    bounds = pc.min_max(column).as_py()
    smallest, largest = bounds["min"], bounds["max"]
    if smallest < low:
        return f"column {name} holds {smallest}, below {low}"
    if high is not None and largest > high:
        return f"column {name} holds {largest}, above {high}"
    return None


def table_problem(path: Path, schema: pa.Schema, rows: int | None = None) -> str | None:
    """Why ``path`` is not a whole table (:func:`whole_table`); None when it reads back."""
    found = whole_table(path, schema, rows)
    return found if isinstance(found, str) else None


_CHECKED: dict[tuple[object, ...], str | None] = {}
"""What :func:`checked_problem` found, by file, schema and version of the file."""


def checked_problem(path: Path, schema: pa.Schema) -> str | None:
    """:func:`table_problem` of ``path``, checked once per version of the file (its inode,
    size, modification and change times) in this process: the done-check of every task of a
    compacted partition reads the partition's file whole once, not once per task."""
    try:
        info = path.stat()
    except OSError as error:
        return f"{type(error).__name__}: {error.strerror or error}"
    stamp = (info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
    version = (str(path), schema.to_string(), *stamp)
    if version not in _CHECKED:
        if len(_CHECKED) > 4096:
            _CHECKED.clear()
        _CHECKED[version] = table_problem(path, schema)
    return _CHECKED[version]


def key_span(key: str) -> tuple[str, int, int] | None:
    """The ``<attack_id>__<defender_id>`` prefix and the image range ``[start, stop)`` of a
    task key (:func:`result_key`); None when it does not parse."""
    prefix, _, span = key.rpartition("__")
    try:
        start, stop = (int(value) for value in span.split("-"))
    except ValueError:
        return None
    return prefix, start, stop


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
    attack and defender (:func:`storage.compact.task_rows`: that partition only, filtered on
    ``index``); there ``rows`` is the number of its images found.
    """
    from storage.compact import task_rows  # storage.compact builds on this module

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
    (:func:`storage.compact.stored_files`), as :data:`SCHEMA`'s columns with plain string
    ids. Failed rows superseded by a later success are dropped, and so are compacted rows of
    an image that a newer per-task file holds (a task redone after a compaction). An
    unreadable file is an :class:`UnreadableFile` naming it.

    Each row (:data:`ROW_KEY`) is returned once: copies of a row equal but for
    :data:`VOLATILE_COLUMNS` are dropped and ``note`` (default: a logged warning) told;
    copies that differ otherwise are a :class:`DuplicateRows` error."""
    from storage.compact import read_part, stored_files  # storage.compact builds on this module

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
