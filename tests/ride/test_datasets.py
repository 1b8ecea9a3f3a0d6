"""The digits reader: MNIST geometry, [0, 1] values, deterministic disjoint split."""

from __future__ import annotations

import pytest
import torch

from ride.datasets import DATASETS, ImageSet, load_dataset, load_digits


def test_shapes_and_range(digits_train: ImageSet, digits_test: ImageSet) -> None:
    for data in (digits_train, digits_test):
        assert data.images.dtype == torch.float32
        assert data.images.shape[1:] == (1, 28, 28)
        assert data.labels.dtype == torch.int64
        assert data.labels.shape == (len(data),)
        assert float(data.images.min()) >= 0.0 and float(data.images.max()) <= 1.0
        assert float(data.images.max()) > 0.9  # strokes reach full intensity
        assert data.num_classes == 10
        assert set(data.labels.tolist()) == set(range(10))
    assert len(digits_train) + len(digits_test) == 1797
    assert len(digits_test) == pytest.approx(0.25 * 1797, abs=10)


def test_split_is_deterministic_and_disjoint(digits_train: ImageSet, digits_test: ImageSet) -> None:
    again = load_digits("test")
    assert torch.equal(again.images, digits_test.images)
    assert torch.equal(again.labels, digits_test.labels)
    train = digits_train.images.flatten(1)
    test = digits_test.images.flatten(1)
    # no test image occurs in train (the raw digits contain no exact duplicates across splits)
    same = (torch.cdist(test, train) == 0).any(dim=1)
    assert int(same.sum()) == 0


def test_split_depends_on_seed() -> None:
    a = load_digits("test", seed=0)
    b = load_digits("test", seed=1)
    assert not torch.equal(a.labels, b.labels) or not torch.equal(a.images, b.images)


def test_size_option() -> None:
    assert load_digits("test", size=8).images.shape[1:] == (1, 8, 8)


def test_load_dataset_names() -> None:
    assert DATASETS.names()[0] == "digits"
    assert len(load_dataset("digits", "test")) == len(load_digits("test"))
    with pytest.raises(ValueError, match="unknown dataset 'x'; choose from: digits"):
        load_dataset("x", "test")
    with pytest.raises(ValueError, match="split"):
        load_digits("val")  # type: ignore[arg-type]
