"""Training a small classifier one epoch at a time, resumably (what ``ride train`` runs).

Every epoch ends with a checkpoint (``train_state.pt``: weights, AdamW's state and the
generator of the batch order and shifts, written atomically) and the weights alone in
``classifier.pt`` (``save_classifier``, what a run's ``weights`` reads). A rerun on the same
directory continues after the last finished epoch and ends with the same weights as a
training that was never interrupted.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any, ClassVar

import torch

from pipeline.config import ConfigError, option
from pipeline.execution import Logger, default_logger
from ride.classifiers import accuracy as classifier_accuracy
from ride.classifiers import build_classifier, load_classifier, save_classifier
from ride.datasets import ImageSet, load_dataset
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

TRAIN_DATASETS: tuple[str, ...] = ("digits", "mnist", "cifar10")
TRAINABLE: dict[str, str] = {
    "digits": "mnist-cnn",
    "mnist": "mnist-cnn",
    "cifar10": "cifar-resnet18",
}
"""The network trained for each dataset (the paper's, "Classifiers")."""

CODE_VERSION = version("ride-pipeline")


@dataclass(frozen=True)
class TrainSettings:
    """What a training trains; keys are the ``ride train`` option names with underscores.

    The recipe (``batch_size``, ``lr``, ``lr_decay``, ``lr_decay_steps``, ``weight_decay``,
    ``max_shift``, ``seed``) is :class:`ride.training.TrainConfig`'s, defaults included. Its
    learning-rate schedule depends on the step only, not on the number of epochs, so
    ``epochs`` is an execution setting: a finished training may be extended (``--epochs 20``
    after 10 trains epochs 11-20 and equals a 20-epoch training); the other recipe settings
    identify the training.
    """

    # Each field is a ``ride train`` option: its help and type in the metadata, as RunConfig's
    # fields for ``ride run`` (flows/train_options.py builds the parser from them). A help
    # that does not state its default gets "(default X)" from the field's default.
    dataset: str = field(
        metadata={"help": "digits, mnist or cifar10", "kind": str, "required": True}
    )
    classifier: str = field(
        metadata={
            "help": "mnist-cnn (digits, mnist) or cifar-resnet18 (cifar10) (default: the "
            "dataset's)",
            "kind": str,
        }
    )
    epochs: int = option(TrainConfig.epochs, "epochs in total", kind=int, execution=True)
    seed: int = option(0, "seed of the initial weights, batch order and shifts", kind=int)
    batch_size: int = option(TrainConfig.batch_size, "mini-batch size", kind=int)
    lr: float = option(TrainConfig.lr, "learning rate of the first step", kind=float)
    lr_decay: float = option(
        TrainConfig.lr_decay,
        "factor in (0, 1] applied to the learning rate every --lr-decay-steps steps, a little "
        "at each: step t runs at lr * lr_decay^(t / lr_decay_steps); 1 keeps it constant",
        kind=float,
    )
    lr_decay_steps: int = option(
        TrainConfig.lr_decay_steps,
        "steps over which the learning rate falls by --lr-decay (default "
        f"{TrainConfig.lr_decay_steps}: an epoch of MNIST at batch 64)",
        kind=int,
    )
    weight_decay: float = option(
        TrainConfig.weight_decay,
        "AdamW's decoupled weight decay, >= 0: each step scales the weights by "
        "1 - lr * weight_decay",
        kind=float,
    )
    max_shift: int = option(
        TrainConfig.max_shift,
        "augmentation: shift each training image by a random whole number of pixels, up to "
        "this many along each axis, zero-filled; 0 turns it off",
        kind=int,
    )
    device: str = option("cpu", "cpu or cuda", kind=str, execution=True)
    # execution settings: may change between a training and its resume (more epochs, the
    # data mounted elsewhere, another device)
    data_dir: str | None = option(
        None,
        "folder of the dataset's files: mnist: MNIST/raw/{train,t10k}-*-ubyte[.gz]; cifar10: "
        "cifar-10-batches-py/; imagenet: the validation images in class folders (or a flat "
        "folder with labels.txt)",
        kind=str,
        execution=True,
    )

    EXECUTION_KEYS: ClassVar[frozenset[str]] = frozenset({"epochs", "data_dir", "device"})

    def __post_init__(self) -> None:
        _check(
            self.dataset in TRAIN_DATASETS,
            "dataset",
            f"a classifier is trained on {', '.join(TRAIN_DATASETS)}, not '{self.dataset}' "
            "(the ImageNet networks take torchvision's weights, given to a run as weights)",
        )
        wanted = TRAINABLE[self.dataset]
        _check(
            self.classifier == wanted,
            "classifier",
            f"the classifier trained on {self.dataset} is {wanted}, not '{self.classifier}'",
        )
        for key in ("epochs", "batch_size", "lr_decay_steps"):
            value = getattr(self, key)
            _check(_is_int(value) and value > 0, key, f"must be a positive integer, got {value}")
        _check(
            isinstance(self.seed, int) and self.seed >= 0, "seed", f"must be >= 0, got {self.seed}"
        )
        _check(_is_real(self.lr), "lr", f"must be a finite number, got {self.lr}")
        _check(self.lr > 0, "lr", f"must be positive, got {self.lr}")
        _check(
            _is_real(self.lr_decay) and 0 < self.lr_decay <= 1,
            "lr_decay",
            f"must be in (0, 1] (1: a constant learning rate), got {self.lr_decay}",
        )
        _check(
            _is_real(self.weight_decay) and self.weight_decay >= 0,
            "weight_decay",
            f"must be >= 0, got {self.weight_decay}",
        )
        _check(
            _is_int(self.max_shift) and 0 <= self.max_shift < MAX_SHIFT_LIMIT,
            "max_shift",
            f"must be a whole number of pixels from 0 to {MAX_SHIFT_LIMIT - 1}, "
            f"got {self.max_shift}",
        )
        _check(self.device in ("cpu", "cuda"), "device", f"must be cpu or cuda, got {self.device}")
        _check(self.data_dir is None or bool(str(self.data_dir)), "data_dir", "is empty")

    @classmethod
    def from_mapping(cls, settings: Mapping[str, Any]) -> TrainSettings:
        """Validate ``settings``; the classifier defaults to the dataset's network."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(settings) - known)
        _check(not unknown, None, f"unknown setting(s): {', '.join(unknown)}")
        values = {k: v for k, v in settings.items() if v is not None}
        _check("dataset" in values, "dataset", "must be given")
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

    def recipe(self) -> dict[str, Any]:
        """The :class:`ride.training.TrainConfig` settings but ``epochs``, as this training
        sets them."""
        return {f.name: getattr(self, f.name) for f in fields(TrainConfig) if f.name != "epochs"}

    def train_config(self, epochs: int) -> TrainConfig:
        return TrainConfig(epochs=epochs, **self.recipe())

    @property
    def data_path(self) -> Path | None:
        return None if self.data_dir is None else Path(self.data_dir)


MAX_SHIFT_LIMIT = 8
"""``max_shift`` stays below this: under the side of every trained dataset's images (28, 32)."""


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    """A finite int or float (not a bool, not nan or inf)."""
    return _is_int(value) or (isinstance(value, float) and math.isfinite(value))


def _check(condition: bool, key: str | None, message: str) -> None:
    if not condition:
        raise ConfigError(message, key)


def trained_epochs_in(layout: TrainLayout, classifier: str) -> int:
    """Epochs finished in a training directory (0 when it has no checkpoint yet)."""
    if not layout.state.exists():
        return 0
    return load_train_checkpoint(layout.state, classifier).state.epoch


def claim_train_dir(layout: TrainLayout, cfg: TrainSettings) -> int:
    """Write ``train.toml`` (or check that the directory holds this training); returns the
    epochs already finished there."""
    claim_run_dir(layout.train_toml, cfg.to_dict(), cfg.identity(), CODE_VERSION)
    return trained_epochs_in(layout, cfg.classifier)


def _resume_point(
    layout: TrainLayout, cfg: TrainSettings, epoch: int, model: torch.nn.Module
) -> TrainCheckpoint | None:
    """The checkpoint to continue from before training ``epoch`` (its weights loaded into
    ``model``); None for epoch 1 of a new training. RuntimeError when it is not epoch - 1."""
    if not layout.state.exists():
        if epoch != 1:
            raise RuntimeError(f"{layout.state} is missing, cannot train epoch {epoch}")
        return None
    checkpoint = load_train_checkpoint(layout.state, cfg.classifier)
    if checkpoint.state.epoch < epoch - 1:
        raise RuntimeError(
            f"{layout.state} holds epoch {checkpoint.state.epoch}, cannot train epoch {epoch}"
        )
    if checkpoint.state.epoch == epoch - 1:
        model.load_state_dict(checkpoint.model)
    return checkpoint


def train_epoch(
    layout: TrainLayout, cfg: TrainSettings, epoch: int, logger: Logger | None = None
) -> float:
    """Train epoch ``epoch`` (the checkpoint holds epoch - 1); checkpoint; return its loss.

    Idempotent: an epoch already in the checkpoint is not trained again.
    """
    began = time.perf_counter()
    # Many short torch calls, each releasing the GIL: at the default 5 ms switch interval
    # Prefect's service threads in this process make each wait (see execution.worker_device).
    sys.setswitchinterval(1e-4)
    data = load_dataset(cfg.dataset, "train", seed=cfg.seed, data_dir=cfg.data_path)
    model = build_classifier(cfg.classifier, num_classes=data.num_classes, seed=cfg.seed)
    checkpoint = _resume_point(layout, cfg, epoch, model)
    if checkpoint is not None and checkpoint.state.epoch >= epoch:
        return float(checkpoint.state.loss)
    model = model.to(torch.device(cfg.device))
    loss = _fit_epoch(layout, cfg, epoch, model, data, checkpoint, began)
    default_logger(logger).info(
        "epoch %d/%d: mean training loss %.4f on %d images (%.1f s)",
        epoch,
        cfg.epochs,
        loss,
        len(data),
        time.perf_counter() - began,
    )
    return loss


def _fit_epoch(
    layout: TrainLayout,
    cfg: TrainSettings,
    epoch: int,
    model: torch.nn.Module,
    data: ImageSet,
    checkpoint: TrainCheckpoint | None,
    began: float,
) -> float:
    """Train ``model`` through ``epoch`` from ``checkpoint`` and save both files after it."""
    history = [] if checkpoint is None else checkpoint.history

    def save(state: TrainState) -> None:
        record = {
            "epoch": state.epoch,
            "loss": state.loss,
            "seconds": round(time.perf_counter() - began, 3),
            "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        saved = TrainCheckpoint(cfg.classifier, model.state_dict(), state, [*history, record])
        save_train_checkpoint(layout.state, saved)  # the resume point first, then
        save_classifier(model, layout.classifier, cfg.classifier)  # the weights for a run

    losses: list[float] = []
    train_classifier(
        model,
        data,
        cfg.train_config(epoch),
        lambda _e, loss: losses.append(loss),
        resume=None if checkpoint is None else checkpoint.state,
        on_epoch=save,
    )
    return losses[-1]


def evaluate_classifier(
    layout: TrainLayout, cfg: TrainSettings, logger: Logger | None = None
) -> dict[str, Any]:
    """Top-1 accuracy of ``classifier.pt`` on the test split, written to ``classifier.json``."""
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
        **cfg.recipe(),
        "weights": layout.classifier.name,
        "history": checkpoint.history,
    }
    atomic_write_json(layout.classifier_info, info)
    default_logger(logger).info(
        "%s on %s: test accuracy %.4f (%d images)", cfg.classifier, cfg.dataset, accuracy, len(test)
    )
    return info
