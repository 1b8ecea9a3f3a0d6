"""The registered dataset classes: what each says of itself, and dispatch by name."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

import ride.registry
from ride.classifiers import CLASSIFIERS
from ride.datasets import (
    DATASETS,
    Cifar10,
    Dataset,
    DatasetError,
    Digits,
    ImageNet,
    Mnist,
    check_dataset,
    dataset_num_classes,
    dataset_shape,
    get_dataset,
    load_dataset,
    load_digits,
)

_EXPECTED = {
    # name: (class, shape, num_classes, default classifier, splits, needs a data directory)
    "digits": (Digits, (1, 28, 28), 10, "mnist-cnn", ("train", "test"), False),
    "mnist": (Mnist, (1, 28, 28), 10, "mnist-cnn", ("train", "test"), True),
    "cifar10": (Cifar10, (3, 32, 32), 10, "cifar-resnet18", ("train", "test"), True),
    "imagenet": (ImageNet, (3, 224, 224), 1000, "resnet50", ("test",), True),
}


def test_registry_names() -> None:
    assert DATASETS is ride.registry.DATASETS
    assert DATASETS.names() == ("digits", "mnist", "cifar10", "imagenet")
    assert list(DATASETS) == list(_EXPECTED)
    assert ", ".join(DATASETS) == "digits, mnist, cifar10, imagenet"
    assert "mnist" in DATASETS and "svhn" not in DATASETS
    assert all(entry.summary for entry in DATASETS.entries())


@pytest.mark.parametrize("name", list(_EXPECTED))
def test_each_dataset_says_what_it_is(name: str) -> None:
    cls, shape, num_classes, classifier, splits, needs_dir = _EXPECTED[name]
    dataset = get_dataset(name)
    assert type(dataset) is cls and isinstance(dataset, Dataset)
    assert dataset.name == name
    assert dataset.shape == shape == dataset_shape(name)
    assert dataset.num_classes == num_classes == dataset_num_classes(name)
    assert dataset.default_classifier == classifier and classifier in CLASSIFIERS
    assert dataset.splits == splits
    assert dataset.needs_data_dir is needs_dir
    assert dataclasses.is_dataclass(cls) and dataclasses.fields(cls) == ()
    assert cls.__dataclass_params__.frozen  # type: ignore[attr-defined]
    assert get_dataset(name) == dataset
    assert cls.__doc__ and name.lower()[:5] in cls.__doc__.lower()


@pytest.mark.parametrize(
    "call",
    [
        lambda: get_dataset("x"),
        lambda: dataset_shape("x"),
        lambda: dataset_num_classes("x"),
        lambda: load_dataset("x", "test"),
        lambda: check_dataset("x", None),
    ],
)
def test_unknown_name(call: object) -> None:
    with pytest.raises(
        ValueError, match=r"^unknown dataset 'x'; choose from: digits, mnist, cifar10, imagenet$"
    ):
        call()  # type: ignore[operator]


def test_methods_match_entry_points() -> None:
    digits = Digits()
    direct = digits.load(None, "test", seed=1, limit=4)
    by_name = load_dataset("digits", "test", seed=1, limit=4)
    assert torch.equal(direct.images, by_name.images)
    assert torch.equal(direct.labels, by_name.labels)
    assert torch.equal(direct.images, load_digits("test", seed=1).images[:4])
    digits.check(None, "train")
    with pytest.raises(ValueError, match="unknown split 'val'; choose from: train, test"):
        digits.check(None, "val")


def test_argument_checks_come_in_order(tmp_path: Path) -> None:
    # split names first, then the limit, then the data directory, then the dataset's splits
    with pytest.raises(ValueError, match="unknown split 'val'"):
        load_dataset("imagenet", "val", limit=-1)
    with pytest.raises(ValueError, match="limit must be >= 0"):
        load_dataset("mnist", "test", limit=-1)
    with pytest.raises(ValueError, match="limit must be >= 0"):
        load_dataset("digits", "test", limit=True)
    with pytest.raises(DatasetError, match=r"^data_dir is required for dataset imagenet$"):
        load_dataset("imagenet", "train")
    with pytest.raises(DatasetError, match=r"^data_dir is required for dataset imagenet$"):
        check_dataset("imagenet", None, "train")
    for call in (
        lambda: load_dataset("imagenet", "train", data_dir=tmp_path),
        lambda: check_dataset("imagenet", tmp_path, "train"),
    ):
        with pytest.raises(DatasetError, match="has only the validation images; use split 'test'"):
            call()
