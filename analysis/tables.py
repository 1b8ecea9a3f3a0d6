"""Accuracy tables computed from the Parquet results only.

``pandas.read_parquet(run_dir + "/results")`` and DuckDB see the same rows, so every number
here can be recomputed by a reader of the results alone.

Every accuracy is the robust accuracy unless named otherwise: the mean over images of
``recheck_correct``, the fraction of R fresh defender draws (seeded apart from every attacker
draw) that classify the evaluated image correctly; for a white-box attack that image is the
iterate the attacker chose, for the others the attack's output. For a deterministic defender
it is the plain top-1 accuracy. Each comes with its n and a 95% Wilson interval
(:mod:`analysis.intervals`).

The sections built on these tables have their own modules: the sweeps
(:mod:`analysis.sweeps`), the white-box attacks (:mod:`analysis.whitebox`), where the time
went (:mod:`analysis.timing`), and the run's ``report.md`` that gathers them
(:mod:`analysis.report`).
"""

from __future__ import annotations

import pandas as pd

from analysis.intervals import Estimate, estimate
from storage.files import StorageError

#: White-box attacks: made per defender, rows with the attacker's choice of iterate
#: (``chosen_iteration``, ``attacker_correct``) and per-step tracking (ride.attacks).
ADAPTIVE = (
    "bpda",
    "bpda-eot",
    "bpda-surrogate",
    "adaptive",
    "adaptive-apgd-ce",
    "adaptive-apgd-dlr",
    "square-eot",
)


ROBUST = "recheck_correct"
"""The robust accuracy's column (see the module's note)."""

DRAWS = {"recheck_correct": "recheck_draws", "final_correct": "recheck_draws",
         "attacker_correct": "attacker_draws"}  # fmt: skip
"""The draw count each per-image fraction is a fraction of (the other columns are 0/1)."""

CURRENT = ("recheck_majority", "final_correct", "correct_every_draw", "recheck_correct")
"""Columns every ``ok`` row has since ride-pipeline 0.4.0 (``recheck_correct`` before too);
white-box rows also have ``attacker_correct``."""


class OutdatedResults(StorageError):
    """Result rows written before ride-pipeline 0.4.0, without the columns the report reads
    (printed as one line by the command line, as every :class:`StorageError`)."""


def _outdated(column: str, where: str = "") -> OutdatedResults:
    return OutdatedResults(
        f"results written by ride-pipeline < 0.4.0 lack {column}{where}: rerun the run with "
        "ride-pipeline >= 0.4.0 (its robust accuracy is counted differently)"
    )


def check_current(frame: pd.DataFrame) -> None:
    """Raise :class:`OutdatedResults` (one line) when ``frame`` lacks a column of
    :data:`CURRENT`, or an ``ok`` row has none (a file written before 0.4.0 reads back with
    the new columns empty), or a white-box ``ok`` row has no ``attacker_correct``."""
    for column in CURRENT:
        if column not in frame.columns:
            raise _outdated(column)
    ok = frame[frame["status"] == "ok"]
    white = ok[ok["attack"].isin(ADAPTIVE)] if "attack" in ok.columns else ok.iloc[:0]
    checks = [(ok, column) for column in CURRENT]
    if len(white):
        if "attacker_correct" not in white.columns:
            raise _outdated("attacker_correct")
        checks.append((white, "attacker_correct"))
    for rows, column in checks:
        empty = rows[rows[column].isna()]
        if len(empty):
            first = empty.iloc[0]
            raise _outdated(
                column,
                f" ({len(empty)} of {len(rows)} rows, {first['attack_id']} x "
                f"{first['defender_id']} among them)",
            )


def column_estimate(rows: pd.DataFrame, column: str = ROBUST) -> Estimate:
    """The accuracy of ``column`` over ``rows`` (all counted: filter ``ok`` first): the mean
    of its per-image values, exact for fractions of their draws (:data:`DRAWS`), n and the
    95% Wilson interval."""
    draws = DRAWS.get(column)
    counts = rows[draws] if draws is not None and draws in rows.columns else None
    if counts is not None and counts.isna().any():
        counts = None  # the values count as they are
    return estimate(rows[column].astype(float), counts)


def accuracy_table(frame: pd.DataFrame, column: str = ROBUST) -> pd.DataFrame:
    """Accuracy per (attack, defender) over ``ok`` rows.

    Rows: attack ids, columns: defender ids; each ``none`` first, the others sorted. Each
    cell is an :class:`~analysis.intervals.Estimate` (mean, n, 95% Wilson interval), or NaN
    when the pair has no ok row. ``column`` picks the per-image value: ``recheck_correct``
    (the robust accuracy), ``recheck_majority``, ``final_correct``, ``correct_every_draw``,
    ``correct_defended`` (one draw).
    """
    check_current(frame)
    ok = frame[frame["status"] == "ok"]
    attacks = none_first(ok["attack_id"])
    defenders = none_first(ok["defender_id"])
    table = pd.DataFrame(index=pd.Index(attacks, name="attack"), columns=defenders, dtype=object)
    for (attack, defender), rows in ok.groupby(["attack_id", "defender_id"]):
        table.loc[attack, defender] = column_estimate(rows, column)
    return table


def none_first(ids: pd.Series) -> list[str]:
    """The distinct ``ids``, ``none`` (no attack, no defence) first, the others sorted: the
    order of every table's rows and columns."""
    return sorted(set(ids), key=lambda name: (name != "none", name))


def clean_accuracy(frame: pd.DataFrame) -> Estimate | None:
    """Accuracy of the undefended classifier on the clean images (each image once), n and
    its interval; None without ok rows."""
    ok = frame[frame["status"] == "ok"].drop_duplicates("index")
    return column_estimate(ok, "correct_clean") if len(ok) else None
