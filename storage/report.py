"""Accuracy tables computed from the Parquet results only.

``pandas.read_parquet(run_dir + "/results")`` and DuckDB see the same rows, so every number
here can be recomputed by a reader of the results alone.
"""

from __future__ import annotations

import pandas as pd


def accuracy_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Top-1 accuracy and n per (attack, defender) over ``ok`` rows.

    Rows: attack ids, columns: defender ids; each ``none`` first, the others sorted. Each
    cell is a ``(accuracy, n)`` pair.
    """
    ok = frame[frame["status"] == "ok"]
    attacks = _none_first(ok["attack_id"])
    defenders = _none_first(ok["defender_id"])
    grouped = ok.groupby(["attack_id", "defender_id"])["correct_defended"].agg(["mean", "count"])
    table = pd.DataFrame(index=pd.Index(attacks, name="attack"), columns=defenders, dtype=object)
    for (attack, defender), values in grouped.iterrows():
        table.loc[attack, defender] = (float(values["mean"]), int(values["count"]))
    return table


def _none_first(ids: pd.Series) -> list[str]:
    return sorted(set(ids), key=lambda name: (name != "none", name))


def clean_accuracy(frame: pd.DataFrame) -> tuple[float, int]:
    """Accuracy of the undefended classifier on the clean images, and how many images."""
    ok = frame[frame["status"] == "ok"].drop_duplicates("index")
    return (float(ok["correct_clean"].mean()) if len(ok) else float("nan"), len(ok))


def accuracy_report(frame: pd.DataFrame) -> str:
    """The markdown report: clean accuracy, the accuracy table and any failures."""
    if frame.empty:
        return "# RIDE evaluation\n\nNo results yet.\n"
    table = accuracy_table(frame)
    clean, n_clean = clean_accuracy(frame)
    dataset = ", ".join(sorted(frame["dataset"].unique()))
    lines = [
        "# RIDE evaluation",
        "",
        f"Dataset: {dataset}. Clean accuracy (no attack, no defence): {clean:.3f} (n={n_clean}).",
        "",
        "Top-1 accuracy of the defended images; rows: attack, columns: defender.",
        "",
        "| attack | " + " | ".join(str(c) for c in table.columns) + " |",
        "|---" * (len(table.columns) + 1) + "|",
    ]
    for attack, row in table.iterrows():
        cells = [
            "" if not isinstance(cell, tuple) else f"{cell[0]:.3f} (n={cell[1]})" for cell in row
        ]
        lines.append(f"| {attack} | " + " | ".join(cells) + " |")
    failed = frame[frame["status"] == "failed"]
    if len(failed):
        lines += [
            "",
            f"{len(failed)} rows failed (status = 'failed'); first error: "
            f"{failed['error'].iloc[0]}",
        ]
    return "\n".join(lines) + "\n"
