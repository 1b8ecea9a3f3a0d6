"""Seeded, deterministic training of the classifiers under attack."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ride.datasets import ImageSet
from ride.seeding import generator_for


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


def train_classifier(
    model: nn.Module,
    data: ImageSet,
    cfg: TrainConfig,
    progress: Callable[[int, float], None] | None = None,
) -> nn.Module:
    """Train ``model`` on ``data`` with Adam; returns the same model in eval mode.

    Mini-batch order comes from a generator seeded with ``cfg.seed``, so two runs from the
    same initial weights on the same device give the same weights. ``progress(epoch, loss)``
    is called after each epoch with the mean training loss.
    """
    if len(data) == 0:
        raise ValueError("cannot train on an empty dataset")
    device = next(model.parameters()).device
    images = data.images.to(device)
    labels = data.labels.to(device)
    gen = generator_for(cfg.seed)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    model.train()
    n = len(data)
    for epoch in range(1, cfg.epochs + 1):
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
    opt.zero_grad(set_to_none=True)  # hand back a model without stale gradients
    model.eval()
    return model
