"""examples/plugins, installed as a package, evaluated end to end: its defenders (one of them
a plain function) and its classifier appear by name through their entry points, take their
own settings, run gray-box and white-box through the real flow, and the report says which
attack each defender got."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example package installed (built as a wheel, entry points and all) into a folder
    of its own, which the runs below put on their path: the test environment stays as it
    was for every other test."""
    site = tmp_path_factory.mktemp("site")
    source = tmp_path_factory.mktemp("source") / "plugins"  # the build writes beside it
    shutil.copytree(ROOT / "examples" / "plugins", source)
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
         "--no-index", "--target", str(site), str(source)],
        check=True,
    )  # fmt: skip
    assert (site / "ride_example_plugins" / "jpeg.py").exists()
    return site


def ride(site: Path, server: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(site), "PREFECT_API_URL": server}
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def test_the_plugins_are_listed_with_their_settings(plugin_site: Path, prefect_server: str) -> None:
    done = ride(plugin_site, prefect_server, "run", "--help")
    assert done.returncode == 0, done.stderr
    for text in ("jpeg (", "noise-vote (", "squeeze (Round every pixel to 3 bits", "tiny-mlp"):
        assert text in " ".join(done.stdout.split())  # help lines are wrapped
    for text in ("--jpeg-quality", "--vote-sigma"):
        assert text in done.stdout


def test_the_example_plugins_run_gray_box_and_white_box(
    plugin_site: Path, prefect_server: str, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    done = ride(
        plugin_site, prefect_server,
        "run", "--out", str(out), "--limit", "4", "--chunk-size", "2", "--workers", "2",
        "--classifier", "tiny-mlp",
        "--attack", "none", "--attack", "pgd", "--attack", "adaptive",
        "--eot", "2", "--attack-iters", "2",
        "--defender", "none", "--defender", "jpeg", "--defender", "noise-vote",
        "--defender", "squeeze",
        "--jpeg-quality", "50", "--vote-count", "5",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    results = pd.read_parquet(out / "results")
    assert set(results["status"]) == {"ok"}
    ids = {"none", "jpeg-quality50", "noise-vote-sigma0.25-votes5", "squeeze"}
    assert set(results["defender_id"]) == ids
    assert len(results) == 4 * 3 * 4
    params = {
        row.defender: json.loads(row.attack_params)
        for row in results[results["attack"] == "adaptive"].itertuples()
    }
    assert params["none"]["gradient"] == "exact" and params["none"]["draws"] == 1
    assert params["jpeg"]["gradient"] == "bpda" and params["jpeg"]["draws"] == 1
    assert params["noise-vote"]["gradient"] == "bpda" and params["noise-vote"]["draws"] == 2
    assert params["squeeze"]["gradient"] == "bpda" and params["squeeze"]["draws"] == 1
    toml = (out / "run.toml").read_text()
    assert 'classifier = "tiny-mlp"' in toml and "jpeg_quality = 50" in toml
    assert tomllib.loads(toml)["command"].endswith("--jpeg-quality 50 --vote-count 5")
