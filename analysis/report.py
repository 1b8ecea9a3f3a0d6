"""A run's ``report.md``: clean accuracy, the robust accuracy table, the sweeps, the
white-box section, where the time went and any failures, from the result rows alone.
"""

from __future__ import annotations

import pandas as pd

from analysis.intervals import Estimate
from analysis.sanity import sanity_section
from analysis.sweeps import sweep_section
from analysis.tables import accuracy_table, clean_accuracy
from analysis.timing import time_section
from analysis.whitebox import whitebox_section


def accuracy_report(frame: pd.DataFrame, steps: pd.DataFrame | None = None) -> str:
    """The markdown report: clean accuracy, the robust accuracy table, the sanity checks of
    the white-box attacks (from ``steps``, the step rows, when given) and any failures.

    :class:`~analysis.tables.OutdatedResults` for rows written before ride-pipeline 0.4.0."""
    if frame.empty:
        return "# RIDE evaluation\n\nNo results yet.\n"
    table = accuracy_table(frame)
    clean = clean_accuracy(frame)
    dataset = ", ".join(sorted(frame["dataset"].unique()))
    lines = [
        "# RIDE evaluation",
        "",
        f"Dataset: {dataset}. Clean accuracy (no attack, no defence): "
        f"{'n/a' if clean is None else clean.text()}.",
        "",
        "Robust accuracy of the defended images: per image, the fraction of the re-check "
        "draws (fresh defender draws) classified correctly, averaged over the images; the "
        "plain top-1 accuracy for a deterministic defender. Each with its 95% Wilson "
        "interval and n; rows: attack, columns: defender.",
        "",
        "| attack | " + " | ".join(str(c) for c in table.columns) + " |",
        "|---" * (len(table.columns) + 1) + "|",
    ]
    for attack, row in table.iterrows():
        cells = [cell.text() if isinstance(cell, Estimate) else "" for cell in row]
        lines.append(f"| {attack} | " + " | ".join(cells) + " |")
    lines += sweep_section(frame)
    lines += whitebox_section(frame)
    lines += sanity_section(frame, steps)
    lines += time_section(frame)
    failed = frame[frame["status"] == "failed"]
    if len(failed):
        lines += [
            "",
            f"{len(failed)} rows failed (status = 'failed'); first error: "
            f"{failed['error'].iloc[0]}",
        ]
    return "\n".join(lines) + "\n"
