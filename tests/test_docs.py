"""The README is the newcomer's page: short, the two set-up commands exactly as CI runs the
second, links that lead somewhere, and the same demo numbers as the getting-started page
(tests/test_readme_demo.py checks them against a real run)."""

from __future__ import annotations

import re

from docpages import (
    DEMO_PAGES,
    INTERVAL,
    REPO,
    accuracy_lines,
    page_text,
    quoted_output,
    quoted_prose,
)

COMMAND_1 = (
    "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/ride run --out runs/demo"
)
COMMAND_2 = (
    "python3 -m venv .venv && .venv/bin/pip install -e '.[test]' && .venv/bin/python -m pytest"
)


def test_the_readme_is_short() -> None:
    assert len(page_text("README.md").splitlines()) < 200


def test_the_set_up_commands_are_verbatim_and_ci_runs_command_2() -> None:
    readme = page_text("README.md").splitlines()
    assert COMMAND_1 in readme and COMMAND_2 in readme
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert COMMAND_2 in ci
    assert any("mkdocs build --strict" in line for line in ci)


def test_the_readme_and_changelog_links_lead_to_files() -> None:
    for page in ("README.md", "CHANGELOG.md"):
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page_text(page)):
            if "://" not in target:
                assert (REPO / target).exists(), (page, target)


def test_the_pages_quote_the_same_demo_numbers() -> None:
    quoted = [accuracy_lines(quoted_output(page)) for page in DEMO_PAGES]
    assert quoted[0] == quoted[1]
    assert len(quoted[0]) == 2 + 2 + 3  # two lines, the table's head and rule, three attacks
    for page in DEMO_PAGES:
        cited = INTERVAL.findall(quoted_prose(page))
        assert cited and set(cited) <= set(INTERVAL.findall(quoted_output(page))), page
