"""Reading the pages that quote the demo's output (README.md, docs/getting-started.md): the
fenced block after a ``<!-- demo-output`` marker, and the text between ``<!-- demo-prose``
and ``<!-- /demo-prose -->``. Shared by tests/test_docs.py and tests/test_readme_demo.py."""

from __future__ import annotations

import re
from itertools import takewhile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEMO_PAGES = ("README.md", "docs/getting-started.md")
"""The pages that quote what ``ride run --out runs/demo`` prints."""

INTERVAL = re.compile(r"\d\.\d{3} \[\d\.\d{3}, \d\.\d{3}\]")
"""An accuracy and its 95% interval as the report prints it: ``0.083 [0.036, 0.181]``."""


def page_text(page: str) -> str:
    return (REPO / page).read_text()


def quoted_output(page: str) -> str:
    """The fenced block that follows the page's ``<!-- demo-output`` marker."""
    text = page_text(page)
    after = text[text.index("<!-- demo-output") :]
    start = after.index("```\n") + len("```\n")
    return after[start : after.index("\n```", start)]


def quoted_prose(page: str) -> str:
    """The page's text between ``<!-- demo-prose`` and ``<!-- /demo-prose -->``."""
    text = page_text(page)
    return text[text.index("<!-- demo-prose") : text.index("<!-- /demo-prose -->")]


def accuracy_lines(output: str) -> list[str]:
    """What the demo's numbers are in an output of ``ride run``: the classifier's test
    accuracy, the clean accuracy and the rows of the accuracy table (not the timings)."""
    lines = output.splitlines()
    kept = [
        line for line in lines if line.startswith(("classifier clean test accuracy:", "Dataset: "))
    ]
    head = next(i for i, line in enumerate(lines) if line.startswith("| attack |"))
    return kept + list(takewhile(lambda line: line.startswith("|"), lines[head:]))
