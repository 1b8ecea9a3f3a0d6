"""Seeded, deterministic training of the classifiers under attack, resumable per epoch."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ride.classifiers import CheckpointError, atomic_torch_save
from ride.datasets import ImageSet
from ride.seeding import generator_for

TRAIN_STATE_FORMAT = 1


@dataclass(frozen=True)
class TrainConfig:
    """Settings of ``train_classifier`` (Adam, cross-entropy, shuffled mini-batches)."""

    epochs: int = 10
    batch_size: int = 64
    lr: float = 2e-3
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")


@dataclass(frozen=True)
class TrainState:
    """Where a training stands after ``epoch`` epochs: enough to continue it exactly.

    ``optimizer`` is Adam's ``state_dict()``, ``generator`` the state of the generator that
    draws the mini-batch order, ``loss`` the mean training loss of epoch ``epoch``. Handed to
    ``on_epoch`` it refers to live tensors: save or copy it during the call.
    """

    epoch: int
    optimizer: dict[str, Any]
    generator: Tensor  # uint8 state of a CPU torch.Generator
    loss: float = float("nan")


def train_classifier(
    model: nn.Module,
    data: ImageSet,
    cfg: TrainConfig,
    progress: Callable[[int, float], None] | None = None,
    *,
    resume: TrainState | None = None,
    on_epoch: Callable[[TrainState], None] | None = None,
) -> nn.Module:
    """Train ``model`` on ``data`` with Adam; returns the same model in eval mode.

    Mini-batch order comes from a generator seeded with ``cfg.seed``, so two runs from the
    same initial weights on the same device give the same weights. ``progress(epoch, loss)``
    is called after each epoch with the mean training loss, then ``on_epoch(state)`` with
    the state to checkpoint. ``resume`` (the state after epoch e, with ``model`` holding the
    weights of that moment) continues with epoch e + 1: the result equals an uninterrupted
    training. Nothing is trained when ``resume.epoch >= cfg.epochs``.
    """
    if len(data) == 0:
        raise ValueError("cannot train on an empty dataset")
    device = next(model.parameters()).device
    images = data.images.to(device)
    labels = data.labels.to(device)
    gen = generator_for(cfg.seed)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    first = 1
    if resume is not None:
        if resume.epoch < 0:
            raise ValueError(f"resume.epoch must be >= 0, got {resume.epoch}")
        opt.load_state_dict(resume.optimizer)
        gen.set_state(resume.generator)
        first = resume.epoch + 1
    model.train()
    n = len(data)
    for epoch in range(first, cfg.epochs + 1):
        order = torch.randperm(n, generator=gen).to(device)
        total = 0.0
        for start in range(0, n, cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(images[idx]), labels[idx])
            loss.backward()
            opt.step()
            total += float(loss.detach()) * idx.numel()
        if progress is not None:
            progress(epoch, total / n)
        if on_epoch is not None:
            on_epoch(TrainState(epoch, opt.state_dict(), gen.get_state(), total / n))
    opt.zero_grad(set_to_none=True)  # hand back a model without stale gradients
    model.eval()
    return model


@dataclass(frozen=True)
class TrainCheckpoint:
    """The file ``save_train_checkpoint`` writes: the weights and the state to continue.

    ``history`` holds one small record per finished epoch (``epoch``, ``loss``, ...).
    """

    classifier: str
    model: dict[str, Tensor]
    state: TrainState
    history: list[dict[str, Any]] = field(default_factory=list)


def save_train_checkpoint(path: Path, checkpoint: TrainCheckpoint) -> None:
    """Write ``checkpoint`` to ``path`` atomically (temp file + rename): whole or not at all."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": TRAIN_STATE_FORMAT,
        "classifier": checkpoint.classifier,
        "model": {k: v.detach().cpu() for k, v in checkpoint.model.items()},
        "epoch": checkpoint.state.epoch,
        "loss": checkpoint.state.loss,
        "optimizer": _to_cpu(checkpoint.state.optimizer),
        "generator": checkpoint.state.generator.cpu(),
        "history": list(checkpoint.history),
    }
    atomic_torch_save(payload, path)


def load_train_checkpoint(path: Path, classifier: str) -> TrainCheckpoint:
    """Read a file of ``save_train_checkpoint``; CheckpointError (one line) when it is
    missing, unreadable, or holds another classifier's training."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"training state not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        first = (str(err).strip().splitlines() or [""])[0]
        raise CheckpointError(
            f"cannot read training state {path}: {type(err).__name__}: {first[:200]}"
        ) from err
    keys = ("format", "classifier", "model", "epoch", "optimizer", "generator", "history")
    if not isinstance(payload, dict) or any(k not in payload for k in keys):
        raise CheckpointError(f"not a training state file: {path}")
    if payload["format"] != TRAIN_STATE_FORMAT:
        raise CheckpointError(f"{path} has format {payload['format']}, expected 1")
    if payload["classifier"] != classifier:
        raise CheckpointError(
            f"training state {path} is of classifier {payload['classifier']!r}, not {classifier!r}"
        )
    epoch = payload["epoch"]
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 1:
        raise CheckpointError(f"training state {path} has epoch {epoch!r}")
    state = TrainState(
        epoch=epoch,
        optimizer=payload["optimizer"],
        generator=payload["generator"],
        loss=float(payload.get("loss", float("nan"))),
    )
    return TrainCheckpoint(classifier, payload["model"], state, list(payload["history"]))


def _to_cpu(value: Any) -> Any:
    """A copy of a nested optimizer state with every tensor on the CPU."""
    if isinstance(value, Tensor):
        return value.detach().cpu().clone()
    if isinstance(value, Mapping):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_cpu(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_to_cpu(v) for v in value)
    return value
