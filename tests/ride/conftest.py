"""Shared fixtures for the ride/ unit tests: the digits splits and one trained classifier."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ride.classifiers import build_classifier
from ride.datasets import ImageSet, load_digits
from ride.training import TrainConfig, train_classifier


@pytest.fixture(scope="session")
def digits_train() -> ImageSet:
    return load_digits("train")


@pytest.fixture(scope="session")
def digits_test() -> ImageSet:
    return load_digits("test")


@pytest.fixture(scope="session")
def trained_cnn(digits_train: ImageSet) -> nn.Module:
    """The mnist-cnn trained on the digits train split with the default TrainConfig."""
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    return train_classifier(build_classifier("mnist-cnn"), digits_train, TrainConfig())
