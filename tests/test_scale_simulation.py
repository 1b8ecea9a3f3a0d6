"""The scale simulation runs tiny tasks through Dask alone and through Prefect on a real
``dask scheduler`` and workers and a temporary Prefect server, names the component that caps
the rate, and leaves no process and no temporary folder behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import psutil
import pytest

from benchmarks.scale_report import Measurement
from benchmarks.scale_simulation import expected_total, tiny_work

REPO = Path(__file__).resolve().parents[1]


def _processes_with(mark: str) -> list[psutil.Process]:
    """Live processes whose environment holds ``RIDE_SCALE_TEST_MARK=mark`` (every process
    the simulation started inherits it)."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get("RIDE_SCALE_TEST_MARK") == mark:
                found.append(process)
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return found


def test_the_results_of_the_tiny_tasks_add_up_to_the_expected_total() -> None:
    assert sum(tiny_work(i) for i in range(25)) == expected_total(25)


def test_the_limit_is_the_component_whose_cpu_cost_per_task_caps_the_rate_first() -> None:
    # 1000 tasks: per task 40 ms in the flow process, 30 ms in the server, 5 ms in the
    # scheduler and 150 ms in the workers.
    cpu = {"flow": 40.0, "server": 30.0, "scheduler": 5.0, "workers": 150.0}
    m = Measurement("prefect", 1000, submit_s=1.0, done_s=10.0, recorded_s=20.0, cpu=cpu,
                    correct=True)  # fmt: skip
    assert m.tasks_per_s == 50  # until the server had recorded them all
    bounds = m.bounds(workers=8, cores=16)
    assert bounds["flow"] == pytest.approx(25)  # one core
    assert bounds["server"] == pytest.approx(1000 / 30)
    assert bounds["scheduler"] == pytest.approx(200)
    assert bounds["workers"] == pytest.approx(8 * 1000 / 150)  # min(8 workers, 16 cores)
    assert bounds["machine"] == pytest.approx(16 * 1000 / 225)
    assert m.limit(workers=8, cores=16) == "flow"
    assert m.limit(workers=8, cores=2) == "machine"  # 2000 / 225 = 8.9 per second


@pytest.mark.slow
def test_bad_numbers_are_refused_in_one_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.scale_simulation", "--tasks", "0"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].endswith("--tasks must be at least 1, got 0")


@pytest.mark.slow
def test_a_small_simulation_reports_rates_and_leaves_nothing_behind(tmp_path: Path) -> None:
    mark = uuid.uuid4().hex
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp), "RIDE_SCALE_TEST_MARK": mark}
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.scale_simulation", "--tasks", "40", "--workers", "2",
         "--variants", "dask", "prefect+file"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    summary = json.loads(lines[-1])
    assert summary["benchmark"] == "scale_simulation" and summary["workers"] == 2
    dask, prefect = summary["rows"]
    assert (dask["variant"], prefect["variant"]) == ("dask", "prefect+file")
    for row in (dask, prefect):
        assert row["tasks"] == 40 and row["tasks_per_s"] > 0
        assert row["correct"] is True  # the results add up and the 40 files were written
        assert row["limit"] in {"flow", "server", "scheduler", "workers", "machine"}
        assert row["limit_with_ample_cores"] in {"flow", "server", "scheduler", "workers"}
        assert row["recorded_s"] >= row["done_s"] > 0
    assert dask["slower_than_dask"] == 1.0
    assert prefect["cpu_ms_per_task"]["server"] > 0  # task runs reached the Prefect server
    assert summary["sqlite_mib"] > 0
    assert any(line.lstrip().startswith("prefect+file") for line in lines[:-1])  # the table
    assert _processes_with(mark) == []  # server, scheduler and workers all stopped
    assert list(tmp.iterdir()) == []  # the temporary folder removed
