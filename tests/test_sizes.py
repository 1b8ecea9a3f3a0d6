"""Every module of the packages reads in one sitting: no module over 400 lines, no function
(or method) over 60, from its ``def`` line to its last line."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
PACKAGES = ("ride", "storage", "analysis", "pipeline", "tasks", "flows", "benchmarks")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def long_functions(source: str, limit: int = MAX_FUNCTION_LINES) -> list[tuple[str, int]]:
    """(name, lines) of each function or method of ``source`` longer than ``limit`` lines."""
    return [
        (node.name, node.end_lineno - node.lineno + 1)
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > limit
    ]


@pytest.mark.parametrize("package", PACKAGES)
def test_no_module_is_over_400_lines(package: str) -> None:
    long = {
        str(path.relative_to(ROOT)): n
        for path in sorted((ROOT / package).rglob("*.py"))
        if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


@pytest.mark.parametrize("package", PACKAGES)
def test_no_function_is_over_60_lines(package: str) -> None:
    long = {
        f"{path.relative_to(ROOT)}:{name}": n
        for path in sorted((ROOT / package).rglob("*.py"))
        for name, n in long_functions(path.read_text())
    }
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def test_the_checker_counts_a_function_from_def_to_its_last_line() -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(59))
    assert long_functions(f"def short():\n{body}\n") == []  # 60 lines
    source = f"class A:\n    async def long(self):\n    {body}\n        return 1\n"
    source = source.replace("\n    x", "\n        x")
    assert long_functions(source) == [("long", 61)]
