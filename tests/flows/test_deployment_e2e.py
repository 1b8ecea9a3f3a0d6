"""prefect.yaml for real: a Prefect server, a process work pool and worker, `prefect deploy
--all`, `prefect deployment run`, then the Parquet rows the deployed flow wrote."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PREFECT = str(Path(sys.executable).parent / "prefect")


def prefect(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [PREFECT, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"prefect {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture()
def worker(prefect_server: str, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A process worker of the pool ``ride-process``, stopped (whole group) afterwards."""
    pools = prefect("work-pool", "ls").stdout
    if "ride-process" not in pools:
        prefect("work-pool", "create", "ride-process", "--type", "process")
    log = (tmp_path / "worker.log").open("wb")
    process = subprocess.Popen(
        [PREFECT, "worker", "start", "--pool", "ride-process"],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield process
    finally:
        for sig in (signal.SIGINT, signal.SIGINT):  # a Prefect worker stops on the second
            if process.poll() is None:
                os.killpg(process.pid, sig)
                time.sleep(1)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


def test_deploy_all_and_trigger_a_run_with_parameters(
    worker: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    began = time.monotonic()
    deployed = prefect("deploy", "--all")
    for name in ("digits-demo-nightly", "evaluate", "whitebox", "train"):
        assert name in deployed.stdout
    out = tmp_path / "triggered"
    settings = (
        '{"limit": 4, "chunk_size": 2, "workers": 1, "attacks": ["none", "fgsm"], '
        '"defenders": ["none", "median"]}'
    )
    run = prefect(
        "deployment", "run", "ride-evaluate-deployment/evaluate",
        "-p", f"out={out}", "-p", f"settings={settings}", "--watch",
        "--watch-timeout", "400",
        timeout=420,
    )  # fmt: skip
    assert "Completed" in run.stdout + run.stderr
    rows = pd.read_parquet(out / "results")
    assert len(rows) == 4 * 2 * 2 and set(rows["status"]) == {"ok"}
    assert set(rows["defender_id"]) == {"none", "median-k3"}
    command = tomllib.loads((out / "run.toml").read_text())["command"]
    assert command == "deployment ride-evaluate-deployment/evaluate"
    assert worker.poll() is None  # the worker ran it and is still serving
    print(f"deployment run: {time.monotonic() - began:.1f} s")
