"""The Parquet step store: one row per (image, attack, defender, attack iteration).

Written by the white-box attacks (BPDA, BPDA+EOT, the adaptive attacks), which defend every
iterate anyway: row ``iteration = k`` describes the iterate x^(k) after k steps (0 = the
start), the attacker's first defender draw on it (``pred_defended``, ``correct_defended``)
and the fraction of its ``attacker_draws`` draws there classified correctly
(``attacker_correct``), from which it chooses the iterate it submits; the last iteration
(k = iters) is the final iterate, queried like the others. One file per task under
``steps/``, written durably and atomically before the task's result file, so a resumed task
finds it; like a result file it counts only when it reads back whole
(:func:`steps_finished`), else it is set aside as ``*.corrupt``.

This is what the paper's Fig. 7 is drawn from: accuracy against the iteration (7b) and the
distances adversarial-to-clean, defended-to-clean and defended-to-adversarial (7a).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from storage.files import Note
from storage.results import finished_file, read_tables, write_table
from storage.schema import DISTANCE_PAIRS, NORMS

STEPS_SCHEMA = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("dataset", pa.string(), nullable=False),
        pa.field("index", pa.int64(), nullable=False),
        pa.field("label", pa.int64(), nullable=False),
        pa.field("attack_id", pa.string(), nullable=False),
        pa.field("defender_id", pa.string(), nullable=False),
        pa.field("iteration", pa.int64(), nullable=False),
        pa.field("pred_adv", pa.int64(), nullable=False),
        pa.field("pred_defended", pa.int64(), nullable=False),
        pa.field("correct_adv", pa.bool_(), nullable=False),
        pa.field("correct_defended", pa.bool_(), nullable=False),
        pa.field("attacker_draws", pa.int64(), nullable=False),
        pa.field("attacker_correct", pa.float64(), nullable=False),
        *[pa.field(f"{pair}_{norm}", pa.float64()) for pair in DISTANCE_PAIRS for norm in NORMS],
    ]
)
"""The fixed schema of every step file."""


def steps_path(steps_dir: Path, key: str) -> Path:
    return steps_dir / f"{key}.parquet"


def steps_finished(
    steps_dir: Path, key: str, rows: int | None = None, note: Note | None = None
) -> bool:
    """True when the task ``key``'s step file exists and reads back whole with ``rows`` rows
    (when given); an unreadable one is renamed ``*.corrupt`` (see
    :func:`storage.results.finished_file`) and the attack is redone."""
    return finished_file(steps_path(steps_dir, key), STEPS_SCHEMA, rows, note)


def write_steps(steps_dir: Path, key: str, rows: Sequence[Mapping[str, Any]]) -> Path:
    """Write one task's step rows atomically (they must match :data:`STEPS_SCHEMA`)."""
    return write_table(steps_path(steps_dir, key), rows, STEPS_SCHEMA)


def read_steps(steps_dir: Path, key: str | None = None) -> pd.DataFrame:
    """The step rows of one task (``key``) or of the whole run."""
    if key is not None:
        path = steps_path(steps_dir, key)
        files = [path] if path.exists() else []
    else:
        files = sorted(p for p in steps_dir.glob("*.parquet") if not p.name.startswith("."))
    if not files:
        return STEPS_SCHEMA.empty_table().to_pandas()
    return read_tables(files, STEPS_SCHEMA).to_pandas()


def correct_at_every_step(steps: pd.DataFrame) -> pd.Series:
    """Per (attack_id, defender_id, index): did the classifier get every draw the attacker
    made at every iterate right?"""
    every_draw = steps["attacker_correct"] >= 1.0
    return every_draw.groupby([steps["attack_id"], steps["defender_id"], steps["index"]]).all()
