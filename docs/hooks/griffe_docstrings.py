"""A Griffe extension for the API pages (mkdocs.yml loads it): the docstrings here are
written for ``help()`` and doctest, not for Markdown, so before mkdocstrings renders one,
its doctest blocks (``>>>`` lines and their output) become ``pycon`` code blocks and its
Sphinx roles (``:class:`~ride.Ride```) become code spans."""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|exc|obj):`(~?)([^`]+)`")


def _role(match: re.Match[str]) -> str:
    target = match.group(2)
    return f"`{target.rsplit('.', 1)[-1] if match.group(1) else target}`"


def fence_doctests(text: str) -> str:
    """Wrap each run of doctest lines (from a ``>>>`` line to the next blank line) in a
    fenced ``pycon`` block, indented as the run is."""
    out: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.lstrip().startswith(">>>"):
            out.append(line)
            i += 1
            continue
        indent = line[: len(line) - len(line.lstrip())]
        out.append(f"{indent}```pycon")
        while i < len(lines) and lines[i].strip():
            out.append(lines[i])
            i += 1
        out.append(f"{indent}```")
    return "\n".join(out)


class MarkdownDocstrings(griffe.Extension):
    """Doctests as code blocks, Sphinx roles as code spans."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = fence_doctests(ROLE.sub(_role, obj.docstring.value))
