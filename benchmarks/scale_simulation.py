"""Scale simulation: how many tiny task runs per second the Prefect + Dask path sustains.

One invocation starts, as subprocesses, everything a run on a real cluster talks to:

1. a temporary Prefect API server on SQLite (:func:`flows.server.prefect_api`, with a
   temporary ``PREFECT_HOME``), whose URL is exported *before* the cluster starts, so that
   every worker process inherits it;
2. a real ``dask scheduler`` and ``dask worker --nworkers N --nthreads 1`` (each under
   :mod:`flows.tether`, in its own session: they end with this process however it ends);

then runs the same ``--tasks`` T tiny functions several ways (``--variants``):

- ``dask``: ``distributed.Client.map`` on that scheduler (Dask alone, the floor);
- ``dask+file``: the same, each task also writing a tiny file atomically, as a result file
  is written (what storage adds);
- ``prefect``: a Prefect flow with ``DaskTaskRunner(address=...)`` submitting T Prefect tasks
  with Prefect's default task options (the full path a ``ride run`` task takes);
- ``prefect+file``: the same tasks writing the tiny file;
- ``prefect-lean``: tasks with ``cache_policy=NO_CACHE`` and ``persist_result=False`` (no
  cache key, no result record): what Prefect's per-task bookkeeping costs.

Where the time goes: for each variant the CPU seconds of each process (this flow process, the
Prefect server, the Dask scheduler, the Dask workers) are read before and after, as
milliseconds per task. A process with one busy thread (the server's event loop, the
scheduler, this process) tops out at one core, so ``1000 / (its ms per task)`` is the most
tasks per second it can carry; the workers top out at min(N, cores); the whole machine at
``cores / (total ms per task)``. The smallest of these bounds names the limit; ``ample cores``
names the one that caps the rate on a machine with a core for every process. For the Prefect
variants ``recorded_s`` is how long after the start the server had recorded all T task runs
as completed (task runs reach it as events, written by its task-run recorder service):
``end-to-end`` rates count until then. The SQLite file's growth is shown too.

Prints a table, then one JSON line. Everything it started is stopped and its temporary folder
removed at the end, also on Ctrl-C, SIGTERM or an error.
The cluster's processes are in :mod:`benchmarks.scale_cluster`, the figures and their table
in :mod:`benchmarks.scale_report`.

    python -m benchmarks.scale_simulation --tasks 10000 --workers 8
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import dask
import psutil
from distributed import Client, as_completed
from prefect import Task, flow, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed as prefect_as_completed
from prefect.runtime import flow_run
from prefect.settings import PREFECT_HOME, temporary_settings
from prefect.task_runners import TaskRunner
from prefect_dask import DaskTaskRunner

from benchmarks.scale_cluster import Cluster, cpu_seconds
from benchmarks.scale_report import COMPONENTS, Measurement, report
from flows.server import prefect_api

VARIANTS = ("dask", "dask+file", "prefect", "prefect+file", "prefect-lean")
WORK = 200
"""Iterations of the trivial arithmetic each tiny task does (microseconds)."""


# ---------------------------------------------------------------------------------------------
# The tiny work (module level: Dask and Prefect import it by name in the worker processes).


def tiny_work(i: int) -> int:
    """A trivial amount of arithmetic: ``i`` plus the sum of the first :data:`WORK` squares."""
    return i + sum(j * j for j in range(WORK))


def tiny_work_with_file(i: int, folder: str) -> int:
    """:func:`tiny_work`, then a tiny file written atomically (temporary name, then rename),
    the way a result file is written."""
    value = tiny_work(i)
    path = Path(folder) / f"{i:07d}.txt"
    partial = path.with_suffix(".partial")
    partial.write_text(f"{value}\n")
    os.replace(partial, path)
    return value


def expected_total(tasks: int) -> int:
    """The sum of every tiny task's value: each variant's results must add up to it."""
    return sum(range(tasks)) + tasks * sum(j * j for j in range(WORK))


# ---------------------------------------------------------------------------------------------
# The variants.


def _progress(label: str, items: Iterable[Any], total: int) -> Iterator[Any]:
    """Yield ``items``, printing to stderr about every 10% (and at the end)."""
    step = max(1, total // 10)
    began = time.perf_counter()
    for done, item in enumerate(items, start=1):
        if done % step == 0 or done == total:
            rate = done / max(time.perf_counter() - began, 1e-9)
            print(f"  {label}: {done}/{total} ({rate:.0f}/s)", file=sys.stderr, flush=True)
        yield item


def run_dask(address: str, tasks: int, folder: Path | None) -> tuple[float, float, int]:
    """(submit seconds, seconds until all done, sum of results) through ``Client.map``."""
    with Client(address, set_as_default=False) as client:
        began = time.perf_counter()
        if folder is None:
            futures = client.map(tiny_work, range(tasks), pure=False)
        else:
            futures = client.map(tiny_work_with_file, range(tasks), folder=str(folder), pure=False)
        submitted = time.perf_counter() - began
        total = sum(
            f.result() for f in _progress("dask", as_completed(futures, loop=client.loop), tasks)
        )
        done = time.perf_counter() - began
        del futures
    return submitted, done, total


tiny_task = task(name="tiny-work")(tiny_work)
"""Prefect's default task options: a cache key from the inputs and the source, result kept
in memory (``ride``'s tasks use the defaults too)."""
tiny_task_with_file = task(name="tiny-work-with-file")(tiny_work_with_file)
tiny_task_lean = task(name="tiny-work-lean", cache_policy=NO_CACHE, persist_result=False)(tiny_work)
"""No cache key, no result record."""
PREFECT_TASKS: dict[str, Task[..., int]] = {
    "prefect": tiny_task,
    "prefect+file": tiny_task_with_file,
    "prefect-lean": tiny_task_lean,
}
"""The task of each Prefect variant."""


@flow(name="scale", log_prints=False)
def scale(variant: str, tasks: int, folder: str | None) -> dict[str, Any]:
    """Submit ``tasks`` tiny Prefect tasks of ``variant`` and add up their results (run it
    with a ``DaskTaskRunner``: :func:`flow_on`)."""
    work = PREFECT_TASKS[variant]
    extra = {} if folder is None else {"folder": folder}
    began = time.perf_counter()
    futures = [
        work.submit(i, **extra) for i in _progress(f"{variant} submitted", range(tasks), tasks)
    ]
    submitted = time.perf_counter() - began
    finished = _progress(f"{variant} done", prefect_as_completed(futures), tasks)
    total = sum(f.result() for f in finished)
    return {"flow_run_id": str(flow_run.id), "submit_s": submitted, "total": total}


def flow_on(address: str, variant: str) -> Any:
    """:func:`scale` with its tasks on the Dask scheduler at ``address``, as
    ``ride run --scheduler ADDRESS`` runs its tasks (``DaskTaskRunner(address=...)``)."""
    runner: TaskRunner[Any] = DaskTaskRunner(address=address)
    return scale.with_options(name=f"scale-{variant}", task_runner=runner)


def count_completed(api_url: str, flow_run_id: str) -> int:
    """How many task runs of the flow run the Prefect server has recorded as COMPLETED."""
    body = {
        "task_runs": {
            "flow_run_id": {"any_": [flow_run_id]},
            "state": {"type": {"any_": ["COMPLETED"]}},
        }
    }
    request = urllib.request.Request(
        f"{api_url}/task_runs/count",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return int(json.load(response))


def wait_recorded(api_url: str, flow_run_id: str, tasks: int, timeout: float) -> bool:
    """Poll until the server has recorded all ``tasks`` runs as completed (False: timeout)."""
    deadline = time.monotonic() + timeout
    last = -1
    while True:
        count = count_completed(api_url, flow_run_id)
        if count >= tasks:
            return True
        if count != last:
            print(f"  server recorded {count}/{tasks}", file=sys.stderr, flush=True)
            last = count
        if time.monotonic() > deadline:
            return False
        time.sleep(1.0)


@dataclass
class Simulation:
    """The running server and cluster, and a way to read every component's CPU time."""

    api_url: str
    server_pid: int
    cluster: Cluster
    folder: Path

    def cpu(self) -> dict[str, float]:
        own = psutil.Process().cpu_times()
        return {
            "flow": own.user + own.system,
            "server": cpu_seconds(self.server_pid, descendants=True),
            **self.cluster.cpu(),
        }

    def measure(self, variant: str, tasks: int) -> Measurement:
        """Run ``variant`` once and read its figures."""
        folder: Path | None = None
        if variant.endswith("+file"):
            folder = self.folder / f"files-{variant.replace('+', '-')}"
            folder.mkdir()
        print(f"{variant}: {tasks} tasks", file=sys.stderr, flush=True)
        before = self.cpu()
        began = time.perf_counter()
        if variant.startswith("dask"):
            submit_s, done_s, total = run_dask(self.cluster.address, tasks, folder)
            recorded_s = done_s
        else:
            run = flow_on(self.cluster.address, variant)
            out = run(variant, tasks, None if folder is None else str(folder))
            done_s = time.perf_counter() - began
            submit_s, total = out["submit_s"], out["total"]
            timeout = max(120.0, tasks / 5)
            if not wait_recorded(self.api_url, out["flow_run_id"], tasks, timeout):
                raise RuntimeError(
                    f"{variant}: the Prefect server had not recorded all {tasks} task runs "
                    f"{timeout:g} s after they finished"
                )
            recorded_s = time.perf_counter() - began
        after = self.cpu()
        correct = total == expected_total(tasks)
        if folder is not None:
            correct = correct and sum(1 for _ in folder.glob("*.txt")) == tasks
            shutil.rmtree(folder)
        measured = Measurement(
            variant=variant,
            tasks=tasks,
            submit_s=submit_s,
            done_s=done_s,
            recorded_s=recorded_s,
            cpu={name: after[name] - before[name] for name in COMPONENTS},
            correct=correct,
        )
        print(
            f"{variant}: {measured.tasks_per_s:.1f} tasks/s end to end, CPU ms per task "
            + ", ".join(f"{k} {v:.2f}" for k, v in measured.ms_per_task().items()),
            file=sys.stderr,
            flush=True,
        )
        return measured


# ---------------------------------------------------------------------------------------------
# Start, run, stop.


class Stopped(Exception):
    """SIGTERM (or SIGHUP) arrived: unwind and stop everything, like Ctrl-C."""


def _raise_stopped(signum: int, frame: FrameType | None) -> None:
    raise Stopped(signal.Signals(signum).name)


@contextmanager
def simulation(workers: int) -> Iterator[Simulation]:
    """A temporary ``PREFECT_HOME`` and API server (exported first), then the cluster; all
    stopped and removed on the way out, whatever the way out is."""
    folder = Path(tempfile.mkdtemp(prefix="ride-scale-"))
    saved = {
        k: os.environ.get(k)
        for k in ("PREFECT_HOME", "PREFECT_API_URL", "DASK_TEMPORARY_DIRECTORY")
    }
    os.environ["PREFECT_HOME"] = str(folder / "prefect-home")
    os.environ["DASK_TEMPORARY_DIRECTORY"] = str(folder)  # Dask's scratch space, all processes
    os.environ.pop("PREFECT_API_URL", None)  # always a fresh SQLite server of its own
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    cluster = Cluster(folder, workers, __name__)
    try:
        with (
            temporary_settings(updates={PREFECT_HOME: folder / "prefect-home"}),
            dask.config.set({"temporary-directory": str(folder)}),
            prefect_api() as api_url,
        ):
            server_pid = _server_pid()
            print(f"Prefect API {api_url} (SQLite in {folder})", file=sys.stderr, flush=True)
            try:
                address = cluster.start()
                print(f"dask scheduler {address}, {workers} workers", file=sys.stderr)
                yield Simulation(api_url, server_pid, cluster, folder)
            finally:
                cluster.stop()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(folder, ignore_errors=True)


def _server_pid() -> int:
    """The pid of the temporary Prefect server this process started (its one child with
    ``uvicorn`` in its command line)."""
    for child in psutil.Process().children():
        try:
            if "uvicorn" in child.cmdline():
                return child.pid
        except psutil.NoSuchProcess:
            continue
    raise RuntimeError("the temporary Prefect server's process was not found")


def _sqlite_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in (folder / "prefect-home").glob("prefect.db*"))


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000, help="tiny tasks per variant")
    parser.add_argument("--workers", type=int, default=8, help="dask worker processes")
    parser.add_argument(
        "--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS), metavar="VARIANT",
        help=f"which to run, in order (default: all of {', '.join(VARIANTS)})",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.tasks < 1:
        parser.error(f"--tasks must be at least 1, got {args.tasks}")
    if args.workers < 1:
        parser.error(f"--workers must be at least 1, got {args.workers}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    cores = psutil.cpu_count() or 1
    previous = {s: signal.signal(s, _raise_stopped) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        with simulation(args.workers) as sim:
            rows = [sim.measure(variant, args.tasks) for variant in args.variants]
            db_bytes = _sqlite_bytes(sim.folder)
    except (KeyboardInterrupt, Stopped) as stop:
        print(f"stopped ({type(stop).__name__} {stop}); everything started was stopped",
              file=sys.stderr)  # fmt: skip
        return 130
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    summary = report(rows, args.workers, cores, db_bytes)
    print(json.dumps(summary))
    return 0 if all(r.correct for r in rows) else 1


if __name__ == "__main__":
    # Run as the importable module, so that Dask and Prefect pickle the tiny functions by
    # name (``benchmarks.scale_simulation.tiny_work``), not by value from ``__main__``.
    from benchmarks import scale_simulation

    sys.exit(scale_simulation.main())
