"""The GPU readiness script is valid bash, refuses unknown arguments, and its CPU smoke mode
runs every part that a CPU can run, end to end, and ends with one summary JSON line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHECK = REPO / "benchmarks" / "gpu_check.sh"
WHEELS = REPO / "benchmarks" / "gpu_wheels.sh"


@pytest.mark.parametrize("script", [CHECK, WHEELS], ids=["gpu_check", "gpu_wheels"])
def test_the_scripts_are_valid_bash(script: Path) -> None:
    done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_an_unknown_argument_is_refused() -> None:
    done = subprocess.run(["bash", str(CHECK), "--fast"], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip() == "usage: bash benchmarks/gpu_check.sh [--cpu-smoke]"


@pytest.mark.slow
def test_the_cpu_smoke_run_ends_with_one_summary_line(tmp_path: Path) -> None:
    out, tmp = tmp_path / "out", tmp_path / "tmp"
    tmp.mkdir()
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable, "TMPDIR": str(tmp)}
    done = subprocess.run(
        ["bash", str(CHECK), "--cpu-smoke"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["gpu_check"] == "cpu-smoke" and summary["all_ok"] is True
    status = {name: part["status"] for name, part in summary["parts"].items()}
    assert status == {
        "env": "ok", "wheels": "skipped", "throughput-mnist": "ok", "throughput-cifar": "ok",
        "compile": "skipped", "cuda-tests": "skipped", "ride-run": "ok",
    }  # fmt: skip
    assert set(summary["throughput"]) == {"mnist", "cifar"}
    mnist = summary["throughput"]["mnist"]["fp32"]
    assert mnist["batch"] in (1, 2) and mnist["images_per_s"] > 0
    assert summary["goals"]["mnist_images_per_s"] == mnist["images_per_s"]
    assert summary["goals"]["imagenet_at_most_2_s"] is None  # not measured in the smoke run
    # What comes back from a device run: the log, the benchmark's JSON lines, the summary.
    assert sorted(p.name for p in out.iterdir()) == [
        "gpu_check.log", "summary.json", "throughput.jsonl",
    ]  # fmt: skip
    assert json.loads((out / "summary.json").read_text()) == summary
    assert len((out / "throughput.jsonl").read_text().splitlines()) == 2
    assert list(tmp.iterdir()) == []  # its work folder (and the ride run in it) removed
