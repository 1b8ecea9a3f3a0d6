"""The Parquet step store: one row per (image, attack, defender, attack iteration).

Written by the adaptive attacks (BPDA, BPDA+EOT), which defend every iterate anyway: row
``iteration = k`` describes the iterate x^(k) after k sign steps (0 = the start) and the
first defender draw on it; the last iteration (k = iters) is the final adversarial image and
draw 0 of its re-check. One file per task under ``steps/``, written atomically before the
task's adversarial images, so a resumed task finds it.

This is what the paper's Fig. 7 is drawn from: accuracy against the iteration (7b) and the
distances adversarial-to-clean, defended-to-clean and defended-to-adversarial (7a).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from storage.results import DISTANCE_PAIRS, NORMS, write_table

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
        *[pa.field(f"{pair}_{norm}", pa.float64()) for pair in DISTANCE_PAIRS for norm in NORMS],
    ]
)
"""The fixed schema of every step file."""


def steps_path(steps_dir: Path, key: str) -> Path:
    return steps_dir / f"{key}.parquet"


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
    return pq.read_table([str(p) for p in files], schema=STEPS_SCHEMA).to_pandas()


def robust_at_every_step(steps: pd.DataFrame) -> pd.Series:
    """Per (attack_id, defender_id, index): was the defended image correct at every iterate?"""
    return steps.groupby(["attack_id", "defender_id", "index"])["correct_defended"].all()
