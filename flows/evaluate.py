"""The evaluation flow: sample -> classifier -> attack -> defend -> classify -> store -> report.

The flow only composes: it claims the run directory, prepares the images and the
classifier, submits one attack task per (attack, chunk) and, as each finishes, one defence
task per (attack, defender, chunk), then writes the report. The task runner (a local Dask
cluster or an existing scheduler) is chosen by :func:`make_task_runner`.
"""

from __future__ import annotations

import os
import queue
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import dask
from distributed import LocalCluster
from prefect import flow, get_run_logger, task
from prefect.futures import PrefectFuture
from prefect.task_runners import TaskRunner
from prefect_dask import DaskTaskRunner

from flows.cluster import required_resources
from ride.attacks import AttackConfig
from ride.defenders import DefenderConfig
from storage.layout import RunLayout
from storage.lock import run_lock
from storage.runconfig import claim_run_dir
from tasks.config import RunConfig
from tasks.evaluate import (
    ChunkOutcome,
    attack_chunk,
    chunk_ranges,
    defend_chunk,
    prepare_classifier,
    prepare_images,
    record_failure,
    report,
)

CODE_VERSION = version("ride-pipeline")
WORKER_MALLOC_TRIM_THRESHOLD = 256 * 2**20


def make_task_runner(cfg: RunConfig) -> TaskRunner[Any]:
    """A Dask task runner: the scheduler at ``cfg.scheduler``, or a local process cluster.

    Local workers are single-threaded processes (two single-thread processes beat one
    two-thread process for these small convolutions); with ``--device cuda`` each declares
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
    """
    threshold = str(WORKER_MALLOC_TRIM_THRESHOLD)
    tuned = {
        "distributed.worker.profile.enabled": False,
        "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": threshold,
    }
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


@task(name="claim-run-dir")
def claim_run(out: str, cfg: RunConfig) -> None:
    """Write ``run.toml``, or check that ``out`` holds this same run."""
    layout = RunLayout(Path(out))
    claim_run_dir(layout.run_toml, cfg.run_record(), cfg.identity(), CODE_VERSION)


@dataclass(frozen=True)
class _Job:
    """One chunk task: an attack chunk (``defender is None``) or a defence chunk."""

    attack: AttackConfig
    defender: DefenderConfig | None
    start: int
    stop: int

    @property
    def label(self) -> str:
        what = self.attack.id if self.defender is None else f"{self.attack.id} x {self.defender.id}"
        return f"{what} rows {self.start}-{self.stop}"

    @property
    def where(self) -> tuple[AttackConfig, DefenderConfig, int, int]:
        assert self.defender is not None
        return self.attack, self.defender, self.start, self.stop


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
def evaluate(out: str, settings: dict[str, Any]) -> dict[str, Any]:
    """Evaluate every (attack, defender) pair of ``settings`` on the run directory ``out``.

    Returns a summary: images, chunk tasks, failed chunk tasks, the classifier's clean test
    accuracy and the markdown report.
    """
    cfg = RunConfig.from_mapping(settings)
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    with run_lock(root):  # one run per directory; released when this process ends
        return _evaluate_locked(out, cfg)


def _evaluate_locked(out: str, cfg: RunConfig) -> dict[str, Any]:
    logger = get_run_logger()
    claim_run(out, cfg)
    n_images = prepare_images(out, cfg)
    test_accuracy = prepare_classifier(out, cfg)
    logger.info("classifier %s: clean test accuracy %.4f", cfg.classifier, test_accuracy)

    chunks = chunk_ranges(n_images, cfg.chunk_size)
    attacks = cfg.attack_configs()
    defenders = cfg.defender_configs()
    progress = _Progress(
        [_Job(a, d, start, stop) for a in attacks for d in defenders for start, stop in chunks]
    )
    # Every submitted future reports to one queue when it ends, so defence tasks are
    # submitted as soon as their attack chunk is stored and progress is logged as it happens.
    finished: queue.SimpleQueue[PrefectFuture[ChunkOutcome]] = queue.SimpleQueue()
    jobs: dict[PrefectFuture[ChunkOutcome], _Job] = {}
    failed = 0

    def submit(job: _Job) -> None:
        # Costly tasks first, so the last minutes are not one long task on one worker.
        with _placement(cfg), dask.annotate(priority=_priority(job)):
            if job.defender is None:
                future = attack_chunk.submit(out, cfg, job.attack, job.start, job.stop)
            else:
                future = defend_chunk.submit(
                    out, cfg, job.attack, job.defender, job.start, job.stop
                )
        jobs[future] = job
        future.add_done_callback(finished.put)

    for attack in attacks:
        for start, stop in chunks:
            # Nothing to attack (defend the clean images), or an adaptive attack, which
            # runs inside each defence task because it attacks that defender.
            if attack.name == "none" or attack.adaptive:
                for defender in defenders:
                    submit(_Job(attack, defender, start, stop))
            else:
                submit(_Job(attack, None, start, stop))

    while jobs:
        future = finished.get()
        job = jobs.pop(future)
        error = _failure(future)
        if job.defender is None:  # an attack chunk
            if error is None:
                for defender in defenders:
                    submit(_Job(job.attack, defender, job.start, job.stop))
                continue
            logger.error("%s failed: %s", job.label, error)
            for defender in defenders:
                dependent = _Job(job.attack, defender, job.start, job.stop)
                record_failure(out, cfg, *dependent.where, f"attack failed: {error}")
                failed += 1
                logger.info(progress.line(dependent, None))
        elif error is None:
            logger.info(progress.line(job, future.result()))
        else:
            logger.error("%s failed: %s", job.label, error)
            record_failure(out, cfg, *job.where, error)
            failed += 1
            logger.info(progress.line(job, None))

    markdown = report(out)
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
    }


def _cost(job: _Job) -> int:
    """Relative cost of a defence task: defender fits x steps per fit x images.

    An adaptive attack runs the defender ``iters * eot`` times plus the re-check; a RIDE
    fit costs ``iters * checkpoints`` Adam steps, a filter about one.
    """
    fits = job.attack.iters * job.attack.eot + 1 if job.attack.adaptive else 1
    settings = job.defender.params() if job.defender is not None else {}
    steps = int(settings.get("iters", 1)) * int(settings.get("checkpoints", 1))
    return fits * steps * (job.stop - job.start)


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
    except Exception as error:  # the Dask future itself failed (KilledWorker): no Prefect state
        result = error
    if isinstance(result, BaseException):
        return (f"{type(result).__name__}: {result}".splitlines() or ["unknown error"])[0]
    return None
