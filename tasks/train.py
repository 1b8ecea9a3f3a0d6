"""The Prefect tasks of a training: thin wrappers of :mod:`pipeline.train`, one task run per
epoch, so the Prefect UI shows each epoch and its log line."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.exceptions import MissingContextError

from pipeline import train
from pipeline.execution import Logger
from pipeline.train import TrainSettings
from storage.layout import TrainLayout

__all__ = ["TrainSettings", "claim_train_dir", "evaluate_classifier", "train_epoch"]


def _logger() -> Logger:
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(__name__)


@task(name="claim-train-dir")
def claim_train_dir(out: str, cfg: TrainSettings) -> int:
    """Write ``train.toml`` (or check that ``out`` holds this training); returns the epochs
    already finished there."""
    return train.claim_train_dir(TrainLayout(Path(out)), cfg)


@task(name="train-epoch", retries=1)
def train_epoch(out: str, cfg: TrainSettings, epoch: int) -> float:
    """Train epoch ``epoch`` (the checkpoint holds epoch - 1), checkpoint, return its loss;
    an epoch already in the checkpoint is not trained again."""
    return train.train_epoch(TrainLayout(Path(out)), cfg, epoch, _logger())


@task(name="evaluate-classifier")
def evaluate_classifier(out: str, cfg: TrainSettings) -> dict[str, Any]:
    """Top-1 accuracy of ``classifier.pt`` on the test split, written to ``classifier.json``."""
    return train.evaluate_classifier(TrainLayout(Path(out)), cfg, _logger())
