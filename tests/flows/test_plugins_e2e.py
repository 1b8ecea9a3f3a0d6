"""Plugins through the real path: `ride run` with defenders named by import path (a class with
settings, and a plain function), run by the Dask worker processes. A plugin that breaks the
defender protocol fails its chunks (one line naming it in their `failed` rows) while the
others finish; the exit status says so."""

from __future__ import annotations

import os
import sys
import textwrap
import tomllib
from pathlib import Path

import pandas as pd
import pytest

from flows.cli import main
from pipeline.config import RunConfig
from ride.registry import DEFENDERS

pytestmark = pytest.mark.slow

PLUGIN = '''
from dataclasses import dataclass
from typing import ClassVar

import torch

from ride.defenders import DefenderBase
from ride.registry import setting


@dataclass(frozen=True)
class Posterise(DefenderBase):
    """A few grey levels: follows the protocol."""

    levels: int = setting(4, key="e2e_levels", help="grey levels")
    name: ClassVar[str] = "posterise"

    def __call__(self, x, seeds=None):
        return torch.round(x * (self.levels - 1)) / (self.levels - 1)


@dataclass(frozen=True)
class Cropper(DefenderBase):
    """Crops the border off: breaks the protocol (its output is smaller than its input)."""

    border: int = setting(1, key="e2e_border", help="pixels cropped off each side")
    name: ClassVar[str] = "cropper"

    def __call__(self, x, seeds=None):
        b = self.border
        return x[..., b:-b, b:-b].clone()


def halftone(x, seeds):
    """Two grey levels: a plain function (randomised and not differentiable, undeclared)."""
    return (x > 0.5).to(x.dtype)
'''

MODULE = "ride_e2e_plugin"
POSTERISE, CROPPER, HALFTONE = f"{MODULE}:Posterise", f"{MODULE}:Cropper", f"{MODULE}:halftone"


def test_a_broken_plugin_fails_its_chunks_and_the_run_goes_on(
    prefect_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / f"{MODULE}.py").write_text(textwrap.dedent(PLUGIN))
    monkeypatch.syspath_prepend(str(plugins))  # this process, and the spawned Dask workers:
    path = os.pathsep.join(p for p in (str(plugins), os.environ.get("PYTHONPATH")) if p)
    monkeypatch.setenv("PYTHONPATH", path)
    out = tmp_path / "run"
    args = [
        "run", "--out", str(out), "--limit", "4", "--chunk-size", "2", "--workers", "2",
        "--attack", "none", "--attack", "fgsm",
        "--defender", "none", "--defender", POSTERISE, "--defender", CROPPER,
        "--defender", HALFTONE, "--e2e-levels", "3",
    ]  # fmt: skip
    try:
        assert main(args) == 3

        frame = pd.read_parquet(out / "results")
        assert len(frame) == 4 * 2 * 4
        by_defender = frame.groupby("defender_id")["status"].agg(set).to_dict()
        assert by_defender == {
            "none": {"ok"},
            "posterise-levels3": {"ok"},
            "cropper-border1": {"failed"},
            "halftone": {"ok"},
        }
        failed = frame[frame["status"] == "failed"]
        assert set(failed["error"]) == {  # it ran in its attack's chunk: named there
            f"DefenderFailures: defender cropper-border1: ValueError: defender plugin {CROPPER} "
            "broke its protocol: returned shape (2, 1, 26, 26) for input (2, 1, 28, 28)"
        }
        assert sorted(failed["index"]) == [0, 0, 1, 1, 2, 2, 3, 3]

        # A plugin's key off its default is in run.toml and in the run's id, one at its
        # default in neither (as for any key added after 0.2.0); the workers, which
        # registered the plugins themselves, recorded the same id as the flow.
        config = tomllib.loads((out / "run.toml").read_text())["config"]
        assert config["defenders"] == ["none", POSTERISE, CROPPER, HALFTONE]
        assert config["e2e_levels"] == 3 and "e2e_border" not in config
        settings = {
            "limit": 4, "chunk_size": 2, "attacks": ["none", "fgsm"],
            "defenders": ["none", POSTERISE, CROPPER, HALFTONE],
        }  # fmt: skip
        run_id = RunConfig.from_mapping({**settings, "e2e_levels": 3}).run_id
        assert set(frame["run_id"]) == {run_id}
        assert RunConfig.from_mapping(settings).run_id != run_id
    finally:
        for name in (POSTERISE, CROPPER, HALFTONE):
            if name in DEFENDERS:
                DEFENDERS.remove(name)
        sys.modules.pop(MODULE, None)
