"""The processes of the scale simulation (:mod:`benchmarks.scale_simulation`): a real ``dask
scheduler`` and ``dask worker --nworkers N --nthreads 1``, each started as a subprocess under
:mod:`flows.tether` in its own session (they end with this process however it ends), how to
read their CPU seconds, and how to stop a session and every process in it.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from distributed import Client

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 120.0
STOP_GRACE_S = 15.0


def cpu_seconds(pid: int, descendants: bool = False) -> float:
    """User + system CPU seconds of process ``pid`` (and of its live descendants)."""
    try:
        process = psutil.Process(pid)
        processes = [process, *(process.children(recursive=True) if descendants else [])]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for p in processes:
        try:
            times = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


@dataclass
class Cluster:
    """A ``dask scheduler`` and its ``dask worker`` processes, started as subprocesses."""

    folder: Path
    workers: int
    preload: str
    """The module every worker imports before any timing (the tiny tasks' own)."""
    scheduler: subprocess.Popen[bytes] | None = None
    worker_cli: subprocess.Popen[bytes] | None = None
    address: str = ""
    logs: list[Any] = field(default_factory=list)

    def _spawn(self, name: str, args: Sequence[str]) -> subprocess.Popen[bytes]:
        """``python -m flows.tether <this pid> dask ARGS`` in its own session, logging to a
        file: it ignores a terminal's Ctrl-C and ends when this process ends."""
        log = (self.folder / f"{name}.log").open("wb")
        self.logs.append(log)
        paths = [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
        return subprocess.Popen(
            [sys.executable, "-m", "flows.tether", str(os.getpid()), "dask", *args],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def start(self) -> str:
        """Start the scheduler, then the workers; wait until all N workers have joined."""
        scheduler_file = self.folder / "scheduler.json"
        self.scheduler = self._spawn(
            "scheduler",
            ["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
             "--scheduler-file", str(scheduler_file)],
        )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT_S
        while not scheduler_file.exists():
            self._check_alive(self.scheduler, "dask scheduler", deadline)
            time.sleep(0.2)
        time.sleep(0.2)  # the file is written once; let it be complete
        self.address = json.loads(scheduler_file.read_text())["address"]
        local = self.folder / "dask-worker-space"
        self.worker_cli = self._spawn(
            "workers",
            ["worker", self.address, "--nworkers", str(self.workers), "--nthreads", "1",
             "--no-dashboard", "--local-directory", str(local)],
        )  # fmt: skip
        with Client(self.address, set_as_default=False, timeout=START_TIMEOUT_S) as client:
            while len(client.scheduler_info(n_workers=-1)["workers"]) < self.workers:
                self._check_alive(self.worker_cli, "dask worker", deadline)
                time.sleep(0.5)
            # Every worker imports the tasks' module (and with it Prefect) before any timing:
            # a one-off cost of a worker's start, not of its tasks.
            client.run(importlib.import_module, self.preload)
        return self.address

    def _check_alive(self, process: subprocess.Popen[bytes], name: str, deadline: float) -> None:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with code {process.returncode} while starting")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not start within {START_TIMEOUT_S:g} s")

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far of the scheduler and of all worker processes."""
        return {
            "scheduler": cpu_seconds(self.scheduler.pid) if self.scheduler else 0.0,
            "workers": cpu_seconds(self.worker_cli.pid, descendants=True)
            if self.worker_cli
            else 0.0,
        }

    def stop(self) -> None:
        """Workers first, then the scheduler: SIGTERM to the command, SIGKILL to its whole
        session after :data:`STOP_GRACE_S` seconds."""
        for process in (self.worker_cli, self.scheduler):
            if process is not None:
                stop_session(process)
        for log in self.logs:
            log.close()


def stop_session(process: subprocess.Popen[bytes]) -> None:
    """End ``process`` (the leader of its own session) and every process of that session."""
    try:
        members = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        members = []
    if process.poll() is None:
        process.terminate()
        with suppress(subprocess.TimeoutExpired):
            process.wait(STOP_GRACE_S)
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)  # the session's process group, leftovers too
    if process.poll() is None:
        process.kill()
        process.wait()
    for member in members:
        with suppress(psutil.NoSuchProcess):
            member.kill()
    psutil.wait_procs(members, timeout=5)
