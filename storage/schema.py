"""The result rows' schema, and what a result file that "reads back whole" is.

One row per (image, attack, defender): :data:`SCHEMA` fixes its columns and their types,
for the per-task files of :mod:`storage.results` and, less the partition columns, for the
partition files of :mod:`storage.compact`.

A run folder may be written by others (a shared file system), so a file is trusted only as
far as it is checked. "Reads back whole" (:func:`whole_table`) means: it reads (footer,
data), its columns have :data:`SCHEMA`'s types, the columns that may not be null hold no
null, no float column holds NaN or an infinity, the fractions (``recheck_correct``,
``final_correct``, ``attacker_correct``) lie in [0, 1], counts, image indices, labels and
predictions are >= 0 and ``status`` is ``ok`` or ``failed`` (:func:`value_problem`). Read for
a report, a file that fails a check is a one-line :class:`UnreadableFile` naming it.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from storage.files import StorageError

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
