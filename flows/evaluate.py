"""The evaluation flow: sample -> classifier -> attack -> defend -> classify -> store -> report.

The flow only composes the tasks of :mod:`tasks.evaluate`: it claims the run directory,
prepares the images and the classifier, then submits every chunk task at once: one attack
task per (gray-box attack, chunk) and one defence task per (attack, defender, chunk), each
defence waiting for its attack chunk (``wait_for``), so it starts as soon as that chunk is
stored. Costly tasks run first (Dask priorities), progress is logged as tasks finish
(``as_completed``), failed chunks get ``failed`` rows, then the report is written. The task
runner (a local Dask cluster or an existing scheduler) is chosen by :func:`make_task_runner`.

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
from dataclasses import dataclass
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
from pipeline.config import RunConfig
from pipeline.execution import Logger
from pipeline.sampling import chunk_ranges
from pipeline.whitebox import attack_draws, attack_iters
from ride.attacks import Attack
from ride.defenders import Defender
from storage.lock import run_lock
from tasks.evaluate import (
    ChunkOutcome,
    Unwritable,
    attack_chunk,
    claim_run,
    defend_chunk,
    prepare_classifier,
    prepare_images,
    record_failure,
    report,
)

WORKER_MALLOC_TRIM_THRESHOLD = 256 * 2**20

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
    nearly every small free). Both are turned off for the workers this cluster spawns.

    The nanny prefers a variable already in this process's environment over its
    ``pre-spawn-environ`` setting (and an in-process Dask worker leaves the default there),
    so the threshold is also put in the environment while the nannies start.

    Worker processes ignore a terminal's Ctrl-C and a SIGTERM to the process group
    (:mod:`flows.worker_setup`): ``ride`` stops them as it unwinds; signalled, they printed
    tracebacks under its one line.
    """
    threshold = str(WORKER_MALLOC_TRIM_THRESHOLD)
    tuned: dict[str, Any] = {
        "distributed.worker.profile.enabled": False,
        "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": threshold,
    }
    if cluster_kwargs.get("processes", True):
        preloads = list(dask.config.get("distributed.worker.preload", []))
        tuned["distributed.worker.preload"] = [*preloads, worker_setup.PRELOAD]
    before = os.environ.get("MALLOC_TRIM_THRESHOLD_")
    os.environ["MALLOC_TRIM_THRESHOLD_"] = threshold
    try:
        with dask.config.set(tuned):
            return LocalCluster(**cluster_kwargs)
    finally:
        if before is None:
            os.environ.pop("MALLOC_TRIM_THRESHOLD_", None)
        else:
            os.environ["MALLOC_TRIM_THRESHOLD_"] = before


@contextmanager
def _placement(cfg: RunConfig) -> Iterator[None]:
    """Pin tasks to GPU workers when the run uses CUDA (the one place GPUs are declared)."""
    resources = required_resources(cfg)
    if resources:
        with dask.annotate(resources=resources):
            yield
    else:
        yield


@dataclass(frozen=True)
class _Job:
    """One chunk task: an attack chunk (``defender is None``) or a defence chunk."""

    attack: Attack
    defender: Defender | None
    start: int
    stop: int

    @property
    def label(self) -> str:
        what = self.attack.id if self.defender is None else f"{self.attack.id} x {self.defender.id}"
        return f"{what} rows {self.start}-{self.stop}"

    @property
    def where(self) -> tuple[Attack, Defender, int, int]:
        assert self.defender is not None
        return self.attack, self.defender, self.start, self.stop

    @property
    def upstream(self) -> _Job | None:
        """The attack chunk a defence chunk waits for: a gray-box attack's. None for ``none``
        (the clean images are defended) and for the adaptive attacks, which run inside each
        defence task because they attack that defender."""
        gray_box = self.attack.name != "none" and not self.attack.adaptive
        if self.defender is None or not gray_box:
            return None
        return _Job(self.attack, None, self.start, self.stop)


class _Progress:
    """Logs one line per finished defence task, with the elapsed time and an ETA.

    The ETA weighs each task by its cost in defender steps (:func:`_cost`), not by count:
    the cheap filter tasks finish first and would make a count-based estimate far too low.
    It is shown once a twentieth of the work is done (before, the cluster's start and
    per-task overheads dominate). Tasks found already stored leave it alone.
    """

    def __init__(self, jobs: list[_Job]) -> None:
        self.total = len(jobs)
        self.total_cost = sum(_cost(job) for job in jobs)
        self.done = 0
        self.done_cost = 0
        self.skipped_cost = 0
        self.began = time.monotonic()

    def line(self, job: _Job, outcome: ChunkOutcome | None) -> str:
        self.done += 1
        if outcome is not None and outcome.action == "skipped":
            self.skipped_cost += _cost(job)
        else:
            self.done_cost += _cost(job)
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
        return (
            f"[{self.done}/{self.total}] {job.label}: {what} (elapsed {elapsed:.0f} s, eta {eta})"
        )


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
    claim_run(out, cfg, command)
    n_images = _written(prepare_images(out, cfg))
    test_accuracy = prepare_classifier(out, cfg)
    logger.info("classifier %s: clean test accuracy %.4f", cfg.classifier, test_accuracy)

    jobs = _plan(cfg, n_images)
    progress = _Progress([job for job in jobs if job.defender is not None])
    futures = _submit_all(out, cfg, jobs)
    job_of = {future: job for job, future in futures.items()}
    failed = 0
    try:
        for future in as_completed(list(futures.values())):
            raise_if_requested()  # a Ctrl-C that task submission swallowed still stops the run
            failed += _settle(out, cfg, job_of[future], futures, progress, logger)
    except _Stopped:
        _cancel(futures.values())
        raise

    markdown = _written(report(out))
    if failed:
        logger.warning(
            "%d of %d chunk tasks failed; their rows have status 'failed'", failed, progress.total
        )
    return {
        "images": n_images,
        "tasks": progress.total,
        "failed": failed,
        "classifier_test_accuracy": test_accuracy,
        "report": markdown,
        "unwritable": None,
    }


def _plan(cfg: RunConfig, n_images: int) -> list[_Job]:
    """Every chunk task of the run: per attack and chunk, the gray-box attack chunk (if the
    attack has one), then one defence chunk per defender."""
    defenders = cfg.defender_configs()
    jobs: list[_Job] = []
    for attack in cfg.attack_configs():
        for start, stop in chunk_ranges(n_images, cfg.chunk_size):
            defences = [_Job(attack, defender, start, stop) for defender in defenders]
            upstream = defences[0].upstream
            jobs.extend([upstream, *defences] if upstream is not None else defences)
    return jobs


def _submit_all(
    out: str, cfg: RunConfig, jobs: list[_Job]
) -> dict[_Job, PrefectFuture[ChunkOutcome | Unwritable]]:
    """Submit every job at once, each defence chunk waiting for its attack chunk; costly
    tasks first (Dask priority), so the last minutes are not one long task on one worker."""
    futures: dict[_Job, PrefectFuture[ChunkOutcome | Unwritable]] = {}
    for job in jobs:
        with _placement(cfg), dask.annotate(priority=_priority(job)):
            if job.defender is None:
                futures[job] = attack_chunk.submit(out, cfg, job.attack, job.start, job.stop)
                continue
            upstream = None if job.upstream is None else futures[job.upstream]
            futures[job] = defend_chunk.submit(
                out,
                cfg,
                job.attack,
                job.defender,
                job.start,
                job.stop,
                return_state=False,
                wait_for=None if upstream is None else [upstream],
            )
    return futures


def _settle(
    out: str,
    cfg: RunConfig,
    job: _Job,
    futures: dict[_Job, PrefectFuture[ChunkOutcome | Unwritable]],
    progress: _Progress,
    logger: Logger,
) -> int:
    """Log a finished task; for a failed defence chunk write its ``failed`` rows. Returns
    the failed defence chunks recorded (0 or 1); raises :class:`_Stopped` when the task (or
    its attack chunk, or writing its ``failed`` rows) could not write.

    A defence chunk whose attack chunk failed never ran (Prefect leaves it ``NotReady``):
    its rows say ``attack failed: <the attack's error>``.
    """
    future = futures[job]
    if job.defender is None:  # an attack chunk: its defence chunks report for it
        error = _failure(future)
        if error is not None:
            logger.error("%s failed: %s", job.label, error)
        else:
            _written(future.result())
        return 0
    attack_error = None if job.upstream is None else _failure(futures[job.upstream])
    if attack_error is None and job.upstream is not None:
        _written(futures[job.upstream].result())
    error = _failure(future) if attack_error is None else f"attack failed: {attack_error}"
    if error is None:
        logger.info(progress.line(job, _written(future.result())))
        return 0
    if attack_error is None:
        logger.error("%s failed: %s", job.label, error)
    _written(record_failure(out, cfg, *job.where, error))
    logger.info(progress.line(job, None))
    return 1


def _cost(job: _Job) -> int:
    """Relative cost of a defence task: defender fits x steps per fit x images.

    A white-box attack runs the defender ``iters * draws`` times plus the re-check (its
    draws against this defender: :func:`~pipeline.whitebox.attack_draws`); a RIDE fit costs
    ``iters * checkpoints`` Adam steps, a filter about one.
    """
    white_box = job.attack.adaptive and job.defender is not None
    fits = attack_iters(job.attack) * attack_draws(job.attack, job.defender) + 1 if white_box else 1
    return max(1, round(fits * _defence_cost(job.defender) * (job.stop - job.start)))


def _defence_cost(defender: Defender | None) -> float:
    """Relative cost of defending one image once: the defender's ``cost_hint`` (1 = a median
    filter; RIDE: ``iters * checkpoints``), else guessed from its params (``iters *
    checkpoints`` when it has them, else 1)."""
    hint = getattr(defender, "cost_hint", None)
    if hint is not None:
        return float(hint)
    settings = defender.params() if defender is not None else {}
    return float(int(settings.get("iters", 1)) * int(settings.get("checkpoints", 1)))


def _priority(job: _Job) -> int:
    """Dask priority of a chunk task (higher runs first): gray-box attack chunks first (the
    defence tasks wait on them, and they are cheap), then the costliest defence tasks."""
    return 10**12 if job.defender is None else _cost(job)


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
