"""The Prefect tasks of an evaluation run: thin, typed wrappers of :mod:`pipeline`.

Each task takes the run directory, the run's config and the chunk's row range (paths, ids
and small configs, never tensors), calls the plain function of ``pipeline/`` that does the
work on the worker, and adds what Prefect gives: retries (a lost worker or a full disk
moment is transient; a bug is not, and ends in ``failed`` rows after the retries), the
cache of the reusable results (:mod:`tasks.cache`) and the task run's logger.
"""

from __future__ import annotations

import logging
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.exceptions import MissingContextError

from analysis.publish import write_report
from pipeline import chunks, classifier, sampling
from pipeline.chunks import ChunkOutcome
from pipeline.config import RunConfig
from pipeline.execution import Logger
from ride.attacks import Attack
from ride.defenders import Defender
from storage.layout import RunLayout
from tasks.cache import adversarial_images, for_run, trained_classifier_state

__all__ = [
    "ChunkOutcome",
    "attack_chunk",
    "claim_run",
    "defend_chunk",
    "prepare_classifier",
    "prepare_images",
    "record_failure",
    "report",
]


def _logger() -> Logger:
    """The task run's Prefect logger; a plain logger when called outside a run (``.fn``)."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(__name__)


@task(name="claim-run-dir")
def claim_run(out: str, cfg: RunConfig, command: str | None = None) -> None:
    """Write ``run.toml`` (recording ``command``, what started the run), or check that
    ``out`` holds this same run."""
    sampling.claim_run(RunLayout(Path(out)), cfg, command)


@task(name="prepare-images", retries=2, retry_delay_seconds=2)
def prepare_images(out: str, cfg: RunConfig) -> int:
    """Sample the evaluated images into ``clean`` / ``labels``, create every array; the
    number of images (:func:`pipeline.sampling.prepare_images`)."""
    return sampling.prepare_images(RunLayout(Path(out)), cfg)


@task(name="prepare-classifier", retries=1)
def prepare_classifier(out: str, cfg: RunConfig) -> float:
    """The run's classifier in ``classifier.pt`` (trained through the cache when it must be
    trained) and its clean accuracy (:func:`pipeline.classifier.prepare_classifier`)."""
    train = for_run(trained_classifier_state, cfg)
    return classifier.prepare_classifier(RunLayout(Path(out)), cfg, train)


@task(name="attack-chunk", retries=2, retry_delay_seconds=2)
def attack_chunk(out: str, cfg: RunConfig, attack: Attack, start: int, stop: int) -> ChunkOutcome:
    """Gray-box adversarial images of rows ``[start, stop)``; they do not depend on a defender,
    so they come from the cache when an earlier run made them (``adversarial-images``)."""
    images = for_run(adversarial_images, cfg)
    return chunks.attack_chunk(out, cfg, attack, start, stop, images)


@task(name="defend-chunk", retries=2, retry_delay_seconds=2)
def defend_chunk(
    out: str, cfg: RunConfig, attack: Attack, defender: Defender, start: int, stop: int
) -> ChunkOutcome:
    """Defend rows ``[start, stop)`` against one attack (running it first when it is
    white-box), classify, store images and rows (:func:`pipeline.chunks.defend_chunk`)."""
    return chunks.defend_chunk(out, cfg, attack, defender, start, stop, _logger())


@task(name="record-failure")
def record_failure(
    out: str,
    cfg: RunConfig,
    attack: Attack,
    defender: Defender,
    start: int,
    stop: int,
    error: str,
) -> None:
    """Write ``failed`` rows for a chunk whose task failed after its retries."""
    chunks.record_failure(out, cfg, attack, defender, start, stop, error)


@task(name="report")
def report(out: str) -> str:
    """The accuracy tables of the run as markdown, also a Prefect artifact and ``report.md``;
    the figures under ``figures/``."""
    markdown, _, problems = write_report(RunLayout(Path(out)))
    for problem in problems:
        _logger().warning("figure not drawn: %s", problem)
    create_markdown_artifact(markdown=markdown, key="ride-accuracy", description=f"ride run {out}")
    return markdown
