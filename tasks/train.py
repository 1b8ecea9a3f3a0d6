"""The tasks of ``ride train``: train a small classifier one epoch per task, resumably.

Every epoch ends with a checkpoint (``train_state.pt``: weights, Adam's state and the
batch-order generator, written atomically) and the weights alone in ``classifier.pt``
(``save_classifier``, what ``ride run --weights`` reads). A rerun on the same directory
continues after the last finished epoch and ends with the same weights as a training that
was never interrupted.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch
from prefect import get_run_logger, task
from prefect.exceptions import MissingContextError

from ride.classifiers import accuracy as classifier_accuracy
from ride.classifiers import build_classifier, load_classifier, save_classifier
from ride.datasets import load_dataset
from ride.training import (
    TrainCheckpoint,
    TrainConfig,
    TrainState,
    load_train_checkpoint,
    save_train_checkpoint,
    train_classifier,
)
from storage.files import atomic_write_json
from storage.layout import TrainLayout
from storage.runconfig import claim_run_dir
from tasks.config import ConfigError

TRAIN_DATASETS: tuple[str, ...] = ("digits", "mnist", "cifar10")
TRAINABLE: dict[str, str] = {
    "digits": "mnist-cnn",
    "mnist": "mnist-cnn",
    "cifar10": "cifar-resnet18",
}
"""The network ``ride train`` trains for each dataset (the paper's, "Classifiers")."""

CODE_VERSION = version("ride-pipeline")


@dataclass(frozen=True)
class TrainSettings:
    """What ``ride train`` trains; keys are its option names with underscores."""

    dataset: str
    classifier: str
    epochs: int = TrainConfig.epochs
    seed: int = 0
    batch_size: int = TrainConfig.batch_size
    lr: float = TrainConfig.lr
    device: str = "cpu"
    # execution settings: may change between a training and its resume (more epochs, the
    # data mounted elsewhere, another device)
    data_dir: str | None = None

    EXECUTION_KEYS = frozenset({"epochs", "data_dir", "device"})

    def __post_init__(self) -> None:
        _check(
            self.dataset in TRAIN_DATASETS,
            f"ride train trains on {', '.join(TRAIN_DATASETS)}, not '{self.dataset}' "
            "(ImageNet networks use torchvision's weights: ride run --weights FILE)",
        )
        wanted = TRAINABLE[self.dataset]
        _check(
            self.classifier == wanted,
            f"ride train trains {wanted} on {self.dataset}, not '{self.classifier}'",
        )
        for key in ("epochs", "batch_size"):
            value = getattr(self, key)
            _check(
                isinstance(value, int) and not isinstance(value, bool) and value > 0,
                f"--{key.replace('_', '-')} must be a positive integer, got {value}",
            )
        _check(
            isinstance(self.seed, int) and self.seed >= 0, f"--seed must be >= 0, got {self.seed}"
        )
        _check(self.lr > 0, f"--lr must be positive, got {self.lr}")
        _check(self.device in ("cpu", "cuda"), f"--device must be cpu or cuda, got {self.device}")
        _check(self.data_dir is None or bool(str(self.data_dir)), "--data-dir is empty")

    @classmethod
    def from_mapping(cls, settings: Mapping[str, Any]) -> TrainSettings:
        """Validate ``settings``; the classifier defaults to the dataset's network."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(settings) - known)
        _check(not unknown, f"unknown setting(s): {', '.join(unknown)}")
        values = {k: v for k, v in settings.items() if v is not None}
        _check("dataset" in values, "give --dataset")
        if "classifier" not in values:
            values["classifier"] = TRAINABLE.get(str(values["dataset"]), "mnist-cnn")
        try:
            return cls(**values)
        except TypeError as error:
            raise ConfigError(str(error)) from None

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def identity(self) -> frozenset[str]:
        """The keys that must match for a training directory to be resumed."""
        return frozenset(self.to_dict()) - self.EXECUTION_KEYS

    def train_config(self, epochs: int) -> TrainConfig:
        return TrainConfig(epochs=epochs, batch_size=self.batch_size, lr=self.lr, seed=self.seed)

    @property
    def data_path(self) -> Path | None:
        return None if self.data_dir is None else Path(self.data_dir)


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(__name__)


def trained_epochs_in(layout: TrainLayout, classifier: str) -> int:
    """Epochs finished in a training directory (0 when it has no checkpoint yet)."""
    if not layout.state.exists():
        return 0
    return load_train_checkpoint(layout.state, classifier).state.epoch


@task(name="claim-train-dir")
def claim_train_dir(out: str, cfg: TrainSettings) -> int:
    """Write ``train.toml`` (or check that ``out`` holds this training); returns the epochs
    already finished there."""
    layout = TrainLayout(Path(out))
    claim_run_dir(layout.train_toml, cfg.to_dict(), cfg.identity(), CODE_VERSION)
    return trained_epochs_in(layout, cfg.classifier)


@task(name="train-epoch", retries=1)
def train_epoch(out: str, cfg: TrainSettings, epoch: int) -> float:
    """Train epoch ``epoch`` (the checkpoint holds epoch - 1); checkpoint; return its loss.

    Idempotent: an epoch already in the checkpoint is not trained again.
    """
    began = time.perf_counter()
    layout = TrainLayout(Path(out))
    device = torch.device(cfg.device)
    # Many short torch calls, each releasing the GIL: at the default 5 ms switch interval
    # Prefect's service threads in this process make each wait (see tasks.evaluate._device).
    sys.setswitchinterval(1e-4)
    data = load_dataset(cfg.dataset, "train", seed=cfg.seed, data_dir=cfg.data_path)
    model = build_classifier(cfg.classifier, num_classes=data.num_classes, seed=cfg.seed)
    resume: TrainState | None = None
    history: list[dict[str, Any]] = []
    if layout.state.exists():
        checkpoint = load_train_checkpoint(layout.state, cfg.classifier)
        if checkpoint.state.epoch >= epoch:
            return float(checkpoint.state.loss)
        if checkpoint.state.epoch != epoch - 1:
            raise RuntimeError(
                f"{layout.state} holds epoch {checkpoint.state.epoch}, cannot train epoch {epoch}"
            )
        model.load_state_dict(checkpoint.model)
        resume, history = checkpoint.state, checkpoint.history
    elif epoch != 1:
        raise RuntimeError(f"{layout.state} is missing, cannot train epoch {epoch}")
    model = model.to(device)

    def save(state: TrainState) -> None:
        record = {
            "epoch": state.epoch,
            "loss": state.loss,
            "seconds": round(time.perf_counter() - began, 3),
            "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        checkpoint = TrainCheckpoint(cfg.classifier, model.state_dict(), state, [*history, record])
        save_train_checkpoint(layout.state, checkpoint)  # the resume point first, then
        save_classifier(model, layout.classifier, cfg.classifier)  # the weights for ride run

    losses: list[float] = []
    train_classifier(
        model,
        data,
        cfg.train_config(epoch),
        lambda _e, loss: losses.append(loss),
        resume=resume,
        on_epoch=save,
    )
    _logger().info(
        "epoch %d/%d: mean training loss %.4f on %d images (%.1f s)",
        epoch,
        cfg.epochs,
        losses[-1],
        len(data),
        time.perf_counter() - began,
    )
    return losses[-1]


@task(name="evaluate-classifier")
def evaluate_classifier(out: str, cfg: TrainSettings) -> dict[str, Any]:
    """Top-1 accuracy of ``classifier.pt`` on the test split, written to ``classifier.json``."""
    layout = TrainLayout(Path(out))
    device = torch.device(cfg.device)
    model = load_classifier(layout.classifier, cfg.classifier, device=device)
    test = load_dataset(cfg.dataset, "test", seed=cfg.seed, data_dir=cfg.data_path)
    accuracy = classifier_accuracy(model, test.images.to(device), test.labels.to(device))
    checkpoint = load_train_checkpoint(layout.state, cfg.classifier)
    info = {
        "classifier": cfg.classifier,
        "dataset": cfg.dataset,
        "test_accuracy": accuracy,
        "test_images": len(test),
        "epochs": checkpoint.state.epoch,
        "seed": cfg.seed,
        "batch_size": cfg.batch_size,
        "lr": cfg.lr,
        "weights": layout.classifier.name,
        "history": checkpoint.history,
    }
    atomic_write_json(layout.classifier_info, info)
    _logger().info(
        "%s on %s: test accuracy %.4f (%d images)", cfg.classifier, cfg.dataset, accuracy, len(test)
    )
    return info
