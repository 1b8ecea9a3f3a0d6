"""The checks every entry point runs before any task: the command line (``ride run``,
``ride train``) and the deployments' entry flows call the same functions, so a bad dataset
folder or a cluster without the GPU resource fails the same way, with the same one-line
:class:`~pipeline.preflight.PreflightError`, wherever the run was started."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flows.cluster import check_cluster, required_resources
from pipeline.config import RunConfig
from pipeline.preflight import PreflightError, preflight, preflight_train
from pipeline.train import TrainSettings

__all__ = ["PreflightError", "check_run", "check_training"]


def check_run(out: Path | str, settings: Mapping[str, Any]) -> RunConfig:
    """:func:`pipeline.preflight.preflight`, then with a ``scheduler`` the cluster: it
    answers, has workers, and one of them offers every resource the run's tasks ask for
    (``ClusterError``, a PreflightError). Returns the run's config."""
    cfg = preflight(Path(out), settings)
    if cfg.scheduler:  # the cluster's workers, not this machine, must offer the GPUs
        check_cluster(cfg.scheduler, required_resources(cfg))
    return cfg


def check_training(out: Path | str, settings: Mapping[str, Any]) -> TrainSettings:
    """:func:`pipeline.preflight.preflight_train`; returns the training's settings."""
    return preflight_train(Path(out), settings)
