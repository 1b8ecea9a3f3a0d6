"""The Parquet result store: one row per (image, attack, defender).

One file per finished task under ``results/``, written to a hidden temporary name, fsynced
and renamed (:func:`storage.files.atomic_file`), so ``pandas.read_parquet(results_dir)`` and
DuckDB's ``read_parquet('results/*.parquet')`` only ever see whole files. A task whose file
``<key>.parquet`` exists and reads back whole (footer, schema, row count) is finished
(storage is the source of truth for resume); an unreadable one (truncated, 0 bytes: what a
power cut can leave) is renamed ``_<key>.parquet.corrupt``, kept for inspection, and its
task redone. A task that failed writes ``<key>.failed.parquet`` instead, which a later successful
run of the same task supersedes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
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


def result_key(attack_id: str, defender_id: str, start: int, stop: int) -> str:
    """The file stem of one task's rows."""
    return f"{attack_id}__{defender_id}__{start:07d}-{stop:07d}"


def result_path(results_dir: Path, key: str, failed: bool = False) -> Path:
    return results_dir / (f"{key}.failed.parquet" if failed else f"{key}.parquet")


class UnreadableFile(StorageError):
    """A stored Parquet file of the run cannot be read (truncated, empty, not Parquet)."""


def whole_table(path: Path, schema: pa.Schema, rows: int | None = None) -> pa.Table | str:
    """``path``'s table when it reads back whole, else why not: it does not read (footer,
    data), lacks a column of ``schema`` or holds other than ``rows`` rows (when given)."""
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
    if rows is not None and table.num_rows != rows:
        return f"{table.num_rows} rows where {rows} were written"
    return table


def table_problem(path: Path, schema: pa.Schema, rows: int | None = None) -> str | None:
    """Why ``path`` is not a whole table (:func:`whole_table`); None when it reads back."""
    found = whole_table(path, schema, rows)
    return found if isinstance(found, str) else None


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
    with ``rows`` rows (when given). An unreadable file is set aside (:func:`finished_table`).

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
    """The rows of ``files`` as one table of ``schema``; an unreadable file is an
    :class:`UnreadableFile` naming it (in one line), not pyarrow's error without a name."""
    try:
        return pq.read_table([str(p) for p in files], schema=schema)
    except Exception:
        for path in files:
            problem = table_problem(path, schema)
            if problem is not None:
                raise UnreadableFile(
                    f"{path} is unreadable ({problem}); rerun the run (`ride run` with the "
                    "same --out and settings) to set it aside and redo its task"
                ) from None
        raise


def read_results(results_dir: Path) -> pd.DataFrame:
    """All rows of a run, flat per-task files and compacted partitions alike
    (:func:`storage.compact.stored_files`), as :data:`SCHEMA`'s columns with plain string
    ids. Failed rows superseded by a later success are dropped, and so are compacted rows of
    an image that a newer per-task file holds (a task redone after a compaction). An
    unreadable file is an :class:`UnreadableFile` naming it."""
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
    return frame.loc[~superseded].reset_index(drop=True)
