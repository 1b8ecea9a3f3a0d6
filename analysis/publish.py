"""The report of a run, made from its tables and images alone: ``report.md``, figures and
the defence card ``card.json``."""

from __future__ import annotations

from pathlib import Path

from analysis.cards import write_card
from analysis.figures import draw_figures
from analysis.tables import accuracy_report
from storage.files import atomic_write_bytes
from storage.layout import RunLayout
from storage.results import read_results


def write_report(layout: RunLayout) -> tuple[str, list[Path], list[str]]:
    """Write ``report.md`` and ``card.json`` (:mod:`analysis.cards`) and draw ``figures/``;
    returns the markdown, the figures written and one line per figure that could not be
    drawn (see ``draw_figures``)."""
    results = read_results(layout.results)
    markdown = accuracy_report(results)
    atomic_write_bytes(layout.report, markdown.encode())
    write_card(layout, results)
    figures, problems = draw_figures(layout, results)
    return markdown, figures, problems
