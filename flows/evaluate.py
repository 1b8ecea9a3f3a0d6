"""The evaluation flow: sample -> classifier -> attack -> defend -> classify -> store -> report.

The flow only plans, submits and reports: it claims the run directory, prepares the images
and the classifier (the tasks of :mod:`tasks.evaluate`), builds the :class:`~pipeline.run.Run`
once, then submits every chunk task at once, as :func:`pipeline.plan.plan` cuts the run: one
attack chunk per (gray-box attack or ``none``, rows), which makes the adversarial images and
their predictions once and runs the cheap defenders (the filters) on them; one defence chunk
per (attack, costly defender, rows), each waiting for the attack chunk of its rows
(``wait_for``), so it starts as soon as that chunk is stored; and under a white-box attack
one defence chunk per (defender, rows). Costly tasks run first (Dask priorities), progress is
logged per result as tasks finish (``as_completed``), results of failed tasks get ``failed``
rows, then the report is written.
The task runner (a local Dask cluster or an existing scheduler) is chosen by
:func:`make_task_runner`.

A write that fails (disk full, read-only: a task returns :class:`~tasks.evaluate.Unwritable`)
ends the run at once: the tasks not yet finished are cancelled, no ``failed`` rows and no
report are written, and the summary's ``unwritable`` says which file could not be written.
What was stored stays valid, and rerunning after freeing space completes the run.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import dask
from distributed import LocalCluster
from prefect import flow, get_run_logger
from prefect.exceptions import UnfinishedRun
from prefect.futures import PrefectFuture, as_completed
from prefect.task_runners import TaskRunner
from prefect_dask import DaskTaskRunner

from flows import worker_setup
from flows.cluster import required_resources
from flows.interrupts import raise_if_requested
from pipeline.chunks import DefenderFailures
from pipeline.config import RunConfig
from pipeline.execution import Logger
from pipeline.plan import Task, plan
from pipeline.run import Run
from ride.defenders import Defender
from storage.layout import RunLayout
from storage.lock import run_lock
from tasks.evaluate import (
    ChunkOutcome,
    Unwritable,
    attack_chunk,
    claim_run,
    compact_results,
    defend_chunk,
    prepare_classifier,
    prepare_images,
    record_failure,
    report,
)

WORKER_MALLOC_TRIM_THRESHOLD = 256 * 2**20
WORKER_MALLOC_MMAP_THRESHOLD = 32 * 2**20
"""glibc's largest mmap threshold. Setting the trim threshold also freezes the mmap threshold
at its 128 KiB default, so every large tensor (a batch's activations) is mmapped and unmapped
anew: measured here, a PGD attack on 2,048 MNIST images ran twice as slowly (5.6 s -> 10.2 s)
until large blocks stayed in the heap as well."""

T = TypeVar("T")


def make_task_runner(cfg: RunConfig) -> TaskRunner[Any]:
    """A Dask task runner: the scheduler at ``cfg.scheduler``, or a local process cluster.

    Local workers are single-threaded processes (two single-thread processes beat one
    two-thread process for these small convolutions); with ``device = "cuda"`` each declares
    one ``GPU`` resource, which every attack and defence task asks for. See
    :func:`local_cluster` for how the local workers are tuned.
    """
    if cfg.scheduler:
        return DaskTaskRunner(address=cfg.scheduler)
    cluster_kwargs: dict[str, Any] = {
        "n_workers": cfg.workers,
        "threads_per_worker": 1,
        "processes": True,
        "dashboard_address": None,
    }
    if cfg.device == "cuda":
        cluster_kwargs["resources"] = {"GPU": 1}
    return DaskTaskRunner(cluster_class=local_cluster, cluster_kwargs=cluster_kwargs)


def local_cluster(**cluster_kwargs: Any) -> LocalCluster:
    """A ``LocalCluster`` whose workers suit RIDE's many tiny torch calls.

    Measured here on one RIDE fit per worker: Dask's defaults made it about twice as slow
    as a plain process. Two of them matter: the statistical profiler (a thread that wakes
    every 10 ms and takes the GIL, which the fit's thread then waits for on every torch
    call) and ``MALLOC_TRIM_THRESHOLD_=65536`` (glibc returns memory to the OS after
    nearly every small free). Both are turned off for the workers this cluster spawns; the
    mmap threshold is raised with the trim threshold (``WORKER_MALLOC_MMAP_THRESHOLD``).

    The nanny prefers a variable already in this process's environment over its
    ``pre-spawn-environ`` setting (and an in-process Dask worker leaves the default there),
    so the threshold is also put in the environment while the nannies start.

    Worker processes ignore a terminal's Ctrl-C and a SIGTERM to the process group
    (:mod:`flows.worker_setup`): ``ride`` stops them as it unwinds; signalled, they printed
    tracebacks under its one line.
    """
    malloc = {
        "MALLOC_TRIM_THRESHOLD_": str(WORKER_MALLOC_TRIM_THRESHOLD),
        "MALLOC_MMAP_THRESHOLD_": str(WORKER_MALLOC_MMAP_THRESHOLD),
    }
    tuned: dict[str, Any] = {
        "distributed.worker.profile.enabled": False,
        **{f"distributed.nanny.pre-spawn-environ.{k}": v for k, v in malloc.items()},
    }
    if cluster_kwargs.get("processes", True):
        preloads = list(dask.config.get("distributed.worker.preload", []))
        tuned["distributed.worker.preload"] = [*preloads, worker_setup.PRELOAD]
    before = {name: os.environ.get(name) for name in malloc}
    os.environ.update(malloc)
    try:
        with dask.config.set(tuned):
            return LocalCluster(**cluster_kwargs)
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def _placement(cfg: RunConfig) -> Iterator[None]:
    """Pin tasks to GPU workers when the run uses CUDA (the one place GPUs are declared)."""
    resources = required_resources(cfg)
    if resources:
        with dask.annotate(resources=resources):
            yield
    else:
        yield


class _Progress:
    """Logs one line per finished (attack, defender, rows) result, with the elapsed time and
    an ETA.

    The ETA weighs each task by its cost (:attr:`pipeline.plan.Task.cost`), not by count:
    the cheap attack chunks finish first and would make a count-based estimate far too low.
    It is shown once a twentieth of the work is done (before, the cluster's start and
    per-task overheads dominate). Tasks found already stored leave it alone.
    """

    def __init__(self, tasks: list[Task]) -> None:
        self.total = sum(len(task.defenders) for task in tasks)
        self.total_cost = sum(task.cost for task in tasks)
        self.done = 0
        self.done_cost = 0.0
        self.skipped_cost = 0.0
        self.began = time.monotonic()

    def lines(self, task: Task, outcome: ChunkOutcome | None) -> list[str]:
        """The lines of a finished task (``outcome`` None: it failed), one per result."""
        if outcome is not None and outcome.action == "skipped":
            self.skipped_cost += task.cost
        else:
            self.done_cost += task.cost
        per_defender = {o.defender_id: o for o in outcome.defences} if outcome else {}
        lines = []
        for defender in task.defenders:
            self.done += 1
            one = per_defender.get(defender.id) if task.is_attack_chunk else outcome
            lines.append(self._line(task, defender, one))
        return lines

    def _line(self, task: Task, defender: Defender, outcome: ChunkOutcome | None) -> str:
        elapsed = time.monotonic() - self.began
        left = self.total_cost - self.done_cost - self.skipped_cost
        # Until a twentieth of the work is done, startup and per-task overheads dominate.
        known = self.done_cost >= 0.05 * (self.total_cost - self.skipped_cost)
        eta = f"{elapsed / self.done_cost * left:.0f} s" if known and self.done_cost else "?"
        if outcome is None:
            what = "FAILED"
        elif outcome.action == "skipped":
            what = "already stored"
        else:
            what = f"{outcome.correct}/{outcome.count} correct in {outcome.seconds:.1f} s"
        label = f"{task.attack.id} x {defender.id} rows {task.start}-{task.stop}"
        return f"[{self.done}/{self.total}] {label}: {what} (elapsed {elapsed:.0f} s, eta {eta})"


@flow(name="ride-evaluate")
def evaluate(out: str, settings: dict[str, Any], command: str | None = None) -> dict[str, Any]:
    """Evaluate every (attack, defender) pair of ``settings`` on the run directory ``out``;
    ``command`` (what started the run) is recorded in ``run.toml``.

    Returns a summary: images, chunk tasks, failed chunk tasks, the classifier's clean test
    accuracy, the markdown report, and ``unwritable``: None, or the line saying which write
    failed when one did (the run then stopped; the other entries are None).
    """
    cfg = RunConfig.from_mapping(settings)
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    with run_lock(root):  # one run per directory; released when this process ends
        try:
            return _evaluate_locked(out, cfg, command)
        except _Stopped as stopped:
            get_run_logger().error("%s; the run stops, what was stored is kept", stopped.line)
            summary: dict[str, Any] = dict.fromkeys(
                ("images", "tasks", "failed", "classifier_test_accuracy", "report")
            )
            return {**summary, "unwritable": stopped.line}


class _Stopped(Exception):
    """A task could not write to the run directory: the run stops (:func:`_written`)."""

    def __init__(self, unwritable: Unwritable) -> None:
        super().__init__(unwritable.line)
        self.line = unwritable.line


def _written(value: T | Unwritable) -> T:
    """A task's result, or :class:`_Stopped` when the task could not write."""
    if isinstance(value, Unwritable):
        raise _Stopped(value)
    return value


def _cancel(futures: Iterable[PrefectFuture[Any]]) -> None:
    """Cancel the tasks not yet finished (the run stops): Dask drops those still queued."""
    for future in futures:
        wrapped = getattr(future, "wrapped_future", None)
        if wrapped is not None and callable(getattr(wrapped, "cancel", None)):
            wrapped.cancel()


def _evaluate_locked(out: str, cfg: RunConfig, command: str | None) -> dict[str, Any]:
    logger = get_run_logger()
    cfg = claim_run(out, cfg, command)  # a grown run: its first extent's task sizes
    run = Run.of(RunLayout(Path(out)), cfg, _written(prepare_images(out, cfg)))
    test_accuracy = prepare_classifier(run)
    logger.info("classifier %s: clean test accuracy %.4f", run.classifier, test_accuracy)

    for attack, defender in run.left_out_pairs():
        logger.warning("%s cannot attack %s: that pair is left out", attack.id, defender.id)
    tasks = plan(run)
    progress = _Progress(tasks)
    futures = _submit_all(run, tasks)
    task_of = {future: task for task, future in futures.items()}
    failed = 0
    try:
        for future in as_completed(list(futures.values())):
            raise_if_requested()  # a Ctrl-C that task submission swallowed still stops the run
            failed += _settle(run, task_of[future], futures, progress, logger)
    except _Stopped:
        _cancel(futures.values())
        raise

    if cfg.compact:
        _written(compact_results(run))
    markdown = _written(report(run))
    if failed:
        logger.warning(
            "%d of %d results (attack x defender x rows) failed; their rows have status 'failed'",
            failed,
            progress.total,
        )
    return {
        "images": run.n_images,
        "tasks": progress.total,
        "failed": failed,
        "classifier_test_accuracy": test_accuracy,
        "report": markdown,
        "unwritable": None,
    }


Futures = dict[Task, PrefectFuture[ChunkOutcome | Unwritable]]
"""Each submitted chunk task's future."""


def _submit_all(run: Run, tasks: list[Task]) -> Futures:
    """Submit every task at once, each defence chunk waiting for its attack chunk; costly
    tasks first (Dask priority), so the last minutes are not one long task on one worker."""
    futures: Futures = {}
    for task in tasks:
        with _placement(run.cfg), dask.annotate(priority=task.priority):
            if task.is_attack_chunk:
                futures[task] = attack_chunk.submit(run, task)
                continue
            upstream = None if task.upstream is None else futures[task.upstream]
            futures[task] = defend_chunk.submit(
                run, task, return_state=False, wait_for=None if upstream is None else [upstream]
            )
    return futures


def _settle(run: Run, task: Task, futures: Futures, progress: _Progress, logger: Logger) -> int:
    """Log a finished task; for a failed task write the ``failed`` rows of each result it did
    not store. Returns the failed results recorded; raises :class:`_Stopped` when the task
    (or its attack chunk, or writing its ``failed`` rows) could not write.

    A defence chunk whose attack chunk failed never ran (Prefect leaves it ``NotReady``):
    its rows say ``attack failed: <the attack's error>``.
    """
    future = futures[task]
    attack_error = None if task.upstream is None else _failure(futures[task.upstream])
    if attack_error is None and task.upstream is not None:
        _written(futures[task.upstream].result())
    error = _failure(future) if attack_error is None else f"attack failed: {attack_error}"
    if task.is_attack_chunk and error is not None and not error.startswith(DEFENDERS_FAILED):
        error = f"attack failed: {error}"  # its defenders never ran
    if error is None:
        for line in progress.lines(task, _written(future.result())):
            logger.info(line)
        return 0
    if attack_error is None:
        logger.error("%s failed: %s", task.label, error)
    _written(record_failure(run, task, error))
    for line in progress.lines(task, None):
        logger.info(line)
    return len(task.defenders)


DEFENDERS_FAILED = f"{DefenderFailures.__name__}: "
"""How the error line of an attack chunk whose attack succeeded but a defender failed starts."""


def _failure(future: PrefectFuture[Any]) -> str | None:
    """``None`` when the task succeeded, else one line saying why it failed.

    Waits on the task's own result: the state reported by the API can lag behind it.
    """
    try:
        result = future.result(raise_on_failure=False)
    except UnfinishedRun as error:  # NotReady: a task it waited for did not complete
        result = error
    except Exception as error:  # the Dask future itself failed (KilledWorker): no state
        result = error
    if isinstance(result, BaseException):
        return (f"{type(result).__name__}: {result}".splitlines() or ["unknown error"])[0]
    return None
