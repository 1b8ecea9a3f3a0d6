"""Reading a run's results: thousands of per-task files against the compacted dataset.

Writes a synthetic run of ``--rows`` result rows as a run writes them (one file per 10-image
task, every attack x defender, rows shaped like :data:`storage.results.SCHEMA`'s), times
``pandas.read_parquet(results)`` and :func:`storage.results.read_results` on the flat
folder, compacts it (:func:`storage.compact.compact_results`, timed), and times both reads
again. Prints a table, then one JSON line.

    python -m benchmarks.compacted_read --rows 100000
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from storage.compact import compact_results
from storage.results import DISTANCE_PAIRS, NORMS, SCHEMA, read_results, result_key, write_results

ATTACKS = ("none", "fgsm-eps0.1", "pgd-eps0.1-step0.02-it10", "bpda-eps0.1-it10", "adaptive")
DEFENDERS = ("none", "median-k3", "tvb-w0.03", "ride-it100-k5")
TASK_ROWS = 10


def synthetic_rows(
    attack_id: str, defender_id: str, start: int, stop: int, rng: np.random.Generator
) -> list[dict[str, Any]]:
    """The rows of one task, every column of SCHEMA filled as a real run fills it."""
    rows = []
    for index in range(start, stop):
        label = int(rng.integers(10))
        preds = rng.integers(10, size=3)
        values: dict[str, Any] = {name: None for name in SCHEMA.names}
        values.update(
            run_id="mnist-3f2a9c", dataset="mnist", index=index, label=label,
            attack_id=attack_id, attack=attack_id.split("-")[0],
            attack_params=json.dumps({"name": attack_id.split("-")[0], "eps": 0.1}),
            defender_id=defender_id, defender=defender_id.split("-")[0],
            defender_params=json.dumps({"name": defender_id.split("-")[0]}),
            seed=0, defender_seed=int(rng.integers(2**31)),
            pred_clean=int(preds[0]), pred_adv=int(preds[1]), pred_defended=int(preds[2]),
            correct_clean=bool(preds[0] == label), correct_adv=bool(preds[1] == label),
            correct_defended=bool(preds[2] == label), recheck_draws=5,
            recheck_correct=float(rng.integers(6)) / 5, recheck_majority=bool(rng.random() < 0.5),
            final_correct=float(rng.integers(6)) / 5, correct_every_draw=bool(rng.random() < 0.5),
            seconds=float(rng.random()), worker="node-1:4", device="cpu", status="ok",
        )  # fmt: skip
        for pair in DISTANCE_PAIRS:
            for norm in NORMS:
                values[f"{pair}_{norm}"] = float(rng.random())
        for field in SCHEMA:  # columns added since (timings): a float where one is asked
            if values[field.name] is None and pa.types.is_floating(field.type):
                values[field.name] = float(rng.random())
        rows.append(values)
    return rows


def write_run(results: Path, rows: int) -> int:
    """A run of about ``rows`` rows as per-task files; how many files."""
    images = max(TASK_ROWS, rows // (len(ATTACKS) * len(DEFENDERS)))
    rng = np.random.default_rng(0)
    files = 0
    for attack_id in ATTACKS:
        for defender_id in DEFENDERS:
            for start in range(0, images, TASK_ROWS):
                stop = min(start + TASK_ROWS, images)
                key = result_key(attack_id, defender_id, start, stop)
                write_results(
                    results, key, synthetic_rows(attack_id, defender_id, start, stop, rng)
                )
                files += 1
    return files


def timed(read: Callable[[], pd.DataFrame], repeat: int) -> tuple[float, int]:
    """The best wall time of ``repeat`` reads, and the rows read."""
    best, n = float("inf"), 0
    for _ in range(repeat):
        began = time.perf_counter()
        n = len(read())
        best = min(best, time.perf_counter() - began)
    return best, n


def main(argv: Sequence[str] | None = None) -> dict[str, float | int]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000, help="result rows (default 100000)")
    parser.add_argument("--repeat", type=int, default=3, help="reads timed, the best kept (3)")
    parser.add_argument("--work", type=Path, default=None, help="folder for the run (temporary)")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="ride-compacted-", dir=args.work))
    results = work / "results"
    try:
        began = time.perf_counter()
        files = write_run(results, args.rows)
        write_s = time.perf_counter() - began
        flat_s, rows = timed(lambda: pd.read_parquet(results), args.repeat)
        flat_ours_s, _ = timed(lambda: read_results(results), args.repeat)
        done = compact_results(results)
        compacted_s, compacted_rows = timed(lambda: pd.read_parquet(results), args.repeat)
        compacted_ours_s, _ = timed(lambda: read_results(results), args.repeat)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if compacted_rows != rows:
        sys.exit(f"the compacted run reads {compacted_rows} rows, the flat one {rows}")
    print(f"{rows} rows, {files} per-task files written in {write_s:.1f} s; compacted into "
          f"{done.partitions} partitions in {done.seconds:.2f} s")  # fmt: skip
    print(f"{'layout':<10} {'files':>6} {'pandas.read_parquet s':>22} {'read_results s':>15}")
    print(f"{'flat':<10} {files:>6} {flat_s:>22.3f} {flat_ours_s:>15.3f}")
    print(f"{'compacted':<10} {done.partitions:>6} {compacted_s:>22.3f} {compacted_ours_s:>15.3f}")
    summary: dict[str, float | int] = {
        "rows": rows,
        "flat_files": files,
        "flat_read_s": round(flat_s, 4),
        "compacted_read_s": round(compacted_s, 4),
        "ratio": round(flat_s / compacted_s, 1),
        "flat_read_results_s": round(flat_ours_s, 4),
        "compacted_read_results_s": round(compacted_ours_s, 4),
        "compact_s": round(done.seconds, 3),
    }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
