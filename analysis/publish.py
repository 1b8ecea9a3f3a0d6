"""The report of a run, made from its tables and images alone: ``report.md``, figures and
the defence card ``card.json``."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis.cards import write_card
from analysis.figures import draw_figures
from analysis.report import accuracy_report
from storage.files import atomic_write_bytes
from storage.layout import RunLayout, check_own_folders
from storage.results import read_results
from storage.runconfig import read_run_document
from storage.steps import read_steps


def this_run(layout: RunLayout, results: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The rows of the run ``run.toml`` names (its ``run_id``; a ``run.toml`` written before
    run ids were recorded keeps every row), and a markdown line counting the rows of other
    runs left out ("" when there are none).

    Rows of another run are only there when a directory was adopted with ``--force-claim``
    under other settings; they stay on disk but never mix into this run's tables.
    """
    if not layout.run_toml.exists():
        return results, ""
    run_id = read_run_document(layout.run_toml).get("run_id")
    if run_id is None:
        return results, ""
    mine = results["run_id"] == run_id
    others = sorted(set(results.loc[~mine, "run_id"]))
    if not others:
        return results, ""
    note = (
        f"\nLeft out: {int((~mine).sum())} rows of other runs ({', '.join(others)}) "
        f"stored in {layout.results}; this run is {run_id}.\n"
    )
    return results.loc[mine].reset_index(drop=True), note


def run_steps(layout: RunLayout, results: pd.DataFrame) -> pd.DataFrame | None:
    """The step rows of the run's results (its run ids), or None when it stored none."""
    if not layout.steps.is_dir():
        return None
    steps = read_steps(layout.steps)
    if steps.empty:
        return None
    return steps[steps["run_id"].isin(set(results["run_id"]))].reset_index(drop=True)


def write_report(layout: RunLayout) -> tuple[str, list[Path], list[str]]:
    """Write ``report.md`` and ``card.json`` (:mod:`analysis.cards`) and draw ``figures/``;
    returns the markdown, the figures written and one line per figure that could not be
    drawn (see ``draw_figures``). A folder of the run that is a symbolic link is a
    :class:`~storage.files.StorageError`: nothing is written through it."""
    check_own_folders(layout.root)
    results, note = this_run(layout, read_results(layout.results))
    markdown = accuracy_report(results, run_steps(layout, results)) + note
    atomic_write_bytes(layout.report, markdown.encode())
    write_card(layout, results)
    figures, problems = draw_figures(layout, results)
    return markdown, figures, problems
