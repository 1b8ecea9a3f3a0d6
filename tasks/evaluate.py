"""The Prefect tasks of an evaluation run: thin, typed wrappers of :mod:`pipeline`.

The tasks before the run's images exist take the run directory and the run's config; every
later one takes the :class:`~pipeline.run.Run` (its folder, settings, attacks, defenders and
number of images: small, never tensors) and a chunk task its :class:`~pipeline.plan.Task`
(its rows, attack and defenders). Each calls the plain function of ``pipeline/`` that does
the work on the worker and adds what Prefect gives: retries (a lost worker or a full disk
moment is transient; a bug is not, and ends in ``failed`` rows after the retries) and the
task run's logger; the cache of reusable results is :mod:`pipeline.cache`.

A write that fails for good (:class:`storage.files.WriteError`: disk full, read-only) is
returned as :class:`Unwritable`, not raised: retrying it is pointless, the flow ends the run
on it, and Prefect logs no traceback for a task that returns.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.exceptions import MissingContextError

from analysis.publish import write_report
from pipeline import chunks, classifier, sampling, store
from pipeline.cache import cached_images, cached_trainer, run_cache
from pipeline.config import RunConfig
from pipeline.execution import Logger
from pipeline.plan import ChunkOutcome, Task
from pipeline.run import Run
from storage import compact
from storage.files import WriteError
from storage.layout import RunLayout

__all__ = [
    "ChunkOutcome",
    "Unwritable",
    "attack_chunk",
    "claim_run",
    "compact_results",
    "defend_chunk",
    "prepare_classifier",
    "prepare_images",
    "record_failure",
    "report",
]


@dataclass(frozen=True)
class Unwritable:
    """A task's write to the run directory failed: ``line`` says which file and why
    (``cannot write PATH: No space left on device``). What was stored before stays valid."""

    line: str

    @classmethod
    def of(cls, error: WriteError) -> Unwritable:
        return cls(str(error))


def _logger() -> Logger:
    """The task run's Prefect logger; a plain logger when called outside a run (``.fn``)."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(__name__)


@task(name="claim-run-dir")
def claim_run(out: str, cfg: RunConfig, command: str | None = None) -> RunConfig:
    """Write ``run.toml`` (recording ``command``, what started the run), or check that
    ``out`` holds this same run, or grow it (a larger ``limit``); returns the run's config as
    the folder holds it (:func:`pipeline.sampling.claim_run`). A run started by another code
    version and a growth are noted in the log."""
    claimed, notes = sampling.claim_run(RunLayout(Path(out)), cfg, command)
    for note in notes:
        _logger().warning(note)
    return claimed


@task(name="prepare-images", retries=2, retry_delay_seconds=2)
def prepare_images(out: str, cfg: RunConfig) -> int | Unwritable:
    """Sample the evaluated images into ``clean`` / ``labels``, create every array; the
    number of images (:func:`pipeline.sampling.prepare_images`)."""
    try:
        return sampling.prepare_images(RunLayout(Path(out)), cfg, _logger())
    except WriteError as error:
        return Unwritable.of(error)


@task(name="prepare-classifier", retries=1)
def prepare_classifier(run: Run) -> float:
    """The run's classifier in ``classifier.pt`` (trained through the cache when it must be
    trained) and its clean accuracy (:func:`pipeline.classifier.prepare_classifier`)."""
    train = cached_trainer(run_cache(run.cfg), logger=_logger())
    return classifier.prepare_classifier(run.layout, run.cfg, train)


@task(name="attack-chunk", retries=2, retry_delay_seconds=2)
def attack_chunk(run: Run, task: Task) -> ChunkOutcome | Unwritable:
    """The attack chunk ``task``: gray-box adversarial images of its rows, their
    predictions, and its cheap defenders on them (:func:`pipeline.chunks.attack_chunk`). The
    images do not depend on a defender, so they come from the cache when an earlier run
    made them (:mod:`pipeline.cache`)."""
    images = cached_images(run_cache(run.cfg), logger=_logger())
    try:
        return chunks.attack_chunk(run, task, images, _logger())
    except WriteError as error:
        return Unwritable.of(error)


@task(name="defend-chunk", retries=2, retry_delay_seconds=2)
def defend_chunk(run: Run, task: Task) -> ChunkOutcome | Unwritable:
    """The defence chunk ``task``: defend its rows against its attack (running it first when
    it is white-box), classify, store images and rows (:func:`pipeline.chunks.defend_chunk`)."""
    try:
        return chunks.defend_chunk(run, task, _logger())
    except WriteError as error:
        return Unwritable.of(error)


@task(name="record-failure")
def record_failure(run: Run, task: Task, error: str) -> Unwritable | None:
    """Write ``failed`` rows for each result of ``task``, which failed after its retries
    (:func:`pipeline.store.record_failure`)."""
    try:
        store.record_failure(run, task, error)
    except WriteError as unwritable:
        return Unwritable.of(unwritable)
    return None


@task(name="report")
def report(run: Run) -> str | Unwritable:
    """The accuracy tables of the run as markdown, also a Prefect artifact and ``report.md``;
    the figures under ``figures/``."""
    try:
        markdown, _, problems = write_report(run.layout)
    except WriteError as error:
        return Unwritable.of(error)
    for problem in problems:
        _logger().warning("figure not drawn: %s", problem)
    description = f"ride run {run.layout.root}"
    create_markdown_artifact(markdown=markdown, key="ride-accuracy", description=description)
    return markdown


@task(name="compact-results")
def compact_results(run: Run) -> compact.Compaction | Unwritable:
    """Merge the run's per-task result files into one file per (attack, defender)
    (:func:`storage.compact.compact_results`); run it last, when no task writes results."""
    try:
        done = compact.compact_results(run.layout.results, _logger().warning)
    except WriteError as error:
        return Unwritable.of(error)
    _logger().info(done.summary(run.layout.results))
    return done
