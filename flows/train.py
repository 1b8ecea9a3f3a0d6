"""The training flow: claim the directory, train the remaining epochs, test the classifier.

``ride train`` runs it after its checks, the ``train`` deployment through
``flows.deployments.train_deployment``; the flow only composes the tasks of
:mod:`tasks.train`, one task run per epoch, so the Prefect UI shows each epoch and its log line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from pipeline.train import TrainSettings
from storage.lock import run_lock
from tasks.train import claim_train_dir, evaluate_classifier, train_epoch


@flow(name="ride-train")
def train(out: str, settings: dict[str, Any]) -> dict[str, Any]:
    """Train ``settings``' classifier into ``out``, continuing after its last finished epoch.

    Returns the ``classifier.json`` record plus ``trained``: the epochs this call ran.
    """
    cfg = TrainSettings.from_mapping(settings)
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    with run_lock(root):  # one training per directory; released when this process ends
        logger = get_run_logger()
        done = claim_train_dir(out, cfg)
        if done:
            logger.info("resuming after epoch %d of %d", done, cfg.epochs)
        trained = list(range(done + 1, cfg.epochs + 1))
        for epoch in trained:
            train_epoch(out, cfg, epoch)
        info = evaluate_classifier(out, cfg)
    return {**info, "trained": trained}
