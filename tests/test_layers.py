"""The layers import downward only (docs/architecture.md), and orchestration stays on top."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
LAYERS = ("ride", "storage", "analysis", "pipeline", "tasks", "flows")
#: Libraries a layer may not import: ride/ is a plain library over tensors; nothing below
#: tasks/ knows Prefect or Dask.
FORBIDDEN = {
    "ride": {"prefect", "dask", "distributed", "zarr", "pyarrow", "pandas"},
    "storage": {"prefect", "dask", "distributed"},
    "analysis": {"prefect", "dask", "distributed"},
    "pipeline": {"prefect", "dask", "distributed"},
}


def imported(path: Path) -> set[str]:
    """Top-level names of the modules ``path`` imports (absolute imports only)."""
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("layer", LAYERS)
def test_a_layer_imports_only_the_layers_below_it(layer: str) -> None:
    above = set(LAYERS[LAYERS.index(layer) + 1 :])
    for path in sorted((ROOT / layer).rglob("*.py")):
        wrong = imported(path) & (above | FORBIDDEN.get(layer, set()))
        assert not wrong, f"{path.relative_to(ROOT)} imports {sorted(wrong)}"


def test_the_checker_sees_an_upward_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("import os\nfrom flows.cli import main\nfrom . import sibling\n")
    assert imported(module) == {"os", "flows"}
