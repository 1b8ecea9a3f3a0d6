"""A classifier factory: a two-layer MLP for 28x28 grayscale images."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ride.classifiers import ClassifierSpec, Normalize


@dataclass(frozen=True)
class TinyMLP(ClassifierSpec):
    """784-128-classes MLP with MNIST normalisation in front; trained by the pipeline on the
    dataset's train split when no weights are given."""

    name: ClassVar[str] = "tiny-mlp"
    input_shape: ClassVar[tuple[int, int, int]] = (1, 28, 28)

    def network(self, num_classes: int, seed: int) -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return nn.Sequential(
                Normalize((0.1307,), (0.3081,)),
                nn.Flatten(),
                nn.Linear(28 * 28, 128),
                nn.ReLU(),
                nn.Linear(128, num_classes),
            )
