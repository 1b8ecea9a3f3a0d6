"""No import cycles between the project's modules, not even through an import inside a
function: each module can be read knowing only the modules it imports, and none of them
needs it back (docs/architecture.md; ``tests/test_layers.py`` checks the layers)."""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

ROOT = Path(__file__).parents[1]
PACKAGES = ("ride", "storage", "analysis", "pipeline", "tasks", "flows")


def modules(root: Path, packages: Iterable[str]) -> dict[str, Path]:
    """Every module of ``packages`` under ``root``, by dotted name (a package by its
    ``__init__.py``)."""
    found: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _base(node: ast.ImportFrom, name: str, is_package: bool) -> str:
    """The absolute module a ``from ... import`` names (relative ones resolved from
    ``name``)."""
    if not node.level:
        return node.module or ""
    package = name.split(".") if is_package else name.split(".")[:-1]
    parts = package[: len(package) - (node.level - 1)]
    return ".".join([*parts, *([node.module] if node.module else [])])


def imported_modules(name: str, path: Path, known: Mapping[str, Path]) -> set[str]:
    """The modules of ``known`` that module ``name`` imports when it runs, anywhere in it (at
    the top, in a function, under a condition other than ``if TYPE_CHECKING:``, whose imports
    only the type checker makes): ``import x.y`` is ``x.y``; ``from x import y`` is ``x.y``
    when that is a module, else ``x``. Itself left out."""
    tree = ast.parse(path.read_text())
    typing_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING")
        for statement in node.body
        for inner in ast.walk(statement)
    }
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _base(node, name, path.name == "__init__.py")
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                for alias in node.names
            ]
        else:
            continue
        found.update(target for target in targets if target in known)
    return found - {name}


def import_graph(root: Path, packages: Iterable[str]) -> dict[str, set[str]]:
    """Each module of ``packages`` and the modules of ``packages`` it imports."""
    known = modules(root, packages)
    return {name: imported_modules(name, path, known) for name, path in known.items()}


def import_cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """The cycles a depth-first search of ``graph`` meets, one per edge back to a module
    still on its path: each as the modules along it, the first one repeated at the end.
    Empty when the graph has no cycle."""
    on_path: list[str] = []
    done: set[str] = set()
    cycles: list[list[str]] = []

    def visit(module: str) -> None:
        on_path.append(module)
        for target in sorted(graph.get(module, ())):
            if target in on_path:
                cycles.append([*on_path[on_path.index(target) :], target])
            elif target not in done:
                visit(target)
        on_path.pop()
        done.add(module)

    for module in sorted(graph):
        if module not in done:
            visit(module)
    return cycles


def test_no_module_imports_one_that_imports_it_back() -> None:
    cycles = import_cycles(import_graph(ROOT, PACKAGES))
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_checker_finds_a_cycle_hidden_in_a_function(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("import os\n\n\ndef f():\n    from pkg import b\n")
    (package / "b.py").write_text("from . import c\nfrom pkg.a import f\n")
    (package / "c.py").write_text("import pkg.b as b\n")  # a second cycle: b -> c -> b
    (package / "d.py").write_text("from pkg.a import f\nfrom .b import c\n")  # none back
    graph = import_graph(tmp_path, ["pkg"])
    assert graph == {
        "pkg": set(),
        "pkg.a": {"pkg.b"},
        "pkg.b": {"pkg.a", "pkg.c"},
        "pkg.c": {"pkg.b"},
        "pkg.d": {"pkg.a", "pkg.b"},
    }
    assert import_cycles(graph) == [["pkg.a", "pkg.b", "pkg.a"], ["pkg.b", "pkg.c", "pkg.b"]]
    del graph["pkg.b"]
    assert import_cycles(graph) == []


def test_an_import_only_the_type_checker_makes_is_no_edge(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg import b\n")
    (package / "b.py").write_text(
        "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    from pkg.a import f\n"
        "else:\n    import pkg.c\n"
    )
    (package / "c.py").write_text("import typing\n\nif typing.TYPE_CHECKING:\n    import pkg.b\n")
    graph = import_graph(tmp_path, ["pkg"])
    assert graph == {"pkg": set(), "pkg.a": {"pkg.b"}, "pkg.b": {"pkg.c"}, "pkg.c": set()}
    assert import_cycles(graph) == []
