"""The command-line reference page, ``docs/reference/cli.md``, written from the argparse
parsers of :mod:`flows.cli`: every subcommand, its description and each option's help, as
``ride CMD --help`` gives them.

``python -m flows.cli_reference`` rewrites the page; ``--check`` only says whether it is up to
date (exit status 1 when not). ``tests/flows/test_cli_reference.py`` checks it too, so the page
cannot drift from the parsers. Installed plugins add their settings to ``ride run``; the page
is the parsers with none installed.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path

PAGE = Path(__file__).resolve().parents[1] / "docs" / "reference" / "cli.md"
"""Where the page lives in the repository."""

HEADER = (
    "<!-- Written by `python -m flows.cli_reference` from the parsers of flows/cli.py; "
    "do not edit by hand (tests/flows/test_cli_reference.py checks it). -->"
)

_SPECIAL = re.compile(r"([\\*_\[\]<>|])")


def escape(text: str) -> str:
    """``text`` for a Markdown table cell: characters Markdown would read as markup are
    escaped outside `code spans`, and ``|`` everywhere (it would end the cell)."""
    parts = text.split("`")
    for i, part in enumerate(parts):
        parts[i] = part.replace("|", r"\|") if i % 2 else _SPECIAL.sub(r"\\\1", part)
    return "`".join(parts)


def _metavar(action: argparse.Action) -> str:
    if action.nargs == 0:
        return ""
    name = action.metavar or (action.dest if not action.option_strings else action.dest.upper())
    name = str(name)
    return f"{name} [{name} ...]" if action.nargs == "+" else name


def _spelling(action: argparse.Action) -> str:
    """How the option is written: ``--out OUT``, ``--no-cache``, ``DIR [DIR ...]``."""
    flags = ", ".join(action.option_strings)
    metavar = _metavar(action)
    return " ".join(part for part in (flags, metavar) if part)


def _group_lines(title: str, actions: Sequence[argparse.Action]) -> list[str]:
    shown = [a for a in actions if not isinstance(a, argparse._HelpAction)]
    if not shown:
        return []
    lines = [f"**{escape(title)}**", "", "| option | meaning |", "|---|---|"]
    for action in shown:
        required = " (required)" if action.required and action.option_strings else ""
        cell = escape(action.help or "") + required
        lines.append(f"| `{_spelling(action)}` | {cell} |")
    return [*lines, ""]


def _command_lines(name: str, summary: str, parser: argparse.ArgumentParser) -> list[str]:
    lines = [f"## ride {name}", "", escape(parser.description or summary), ""]
    for group in parser._action_groups:
        lines += _group_lines(group.title or "", group._group_actions)
    return lines


def _subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, str, argparse.ArgumentParser]]:
    """(name, one-line help, parser) of each subcommand, in the order ``ride --help`` lists."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            return [(name, helps[name], sub) for name, sub in action.choices.items()]
    return []


def render() -> str:
    """The page, from the parsers as they are now."""
    from flows.cli import build_parser

    parser = build_parser([])
    commands = _subcommands(parser)
    lines = [
        HEADER,
        "",
        "# Command line",
        "",
        escape(parser.description or ""),
        "",
        "Each subcommand below, as `ride CMD --help` prints it.",
        "",
        "| command | what it does |",
        "|---|---|",
        *(
            f"| [`ride {name}`](#ride-{name}) | {escape(summary)} |"
            for name, summary, _ in commands
        ),
        "",
    ]
    for name, summary, sub in commands:
        lines += _command_lines(name, summary, sub)
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Write the page, or with ``--check`` say whether it is up to date."""
    parser = argparse.ArgumentParser(prog="python -m flows.cli_reference", description=__doc__)
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 if stale")
    parser.add_argument("--out", type=Path, default=PAGE, help=f"the page (default {PAGE})")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.out.read_text() if args.out.exists() else ""
        if current != text:
            print(f"{args.out} is stale: run python -m flows.cli_reference", file=sys.stderr)
            return 1
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
