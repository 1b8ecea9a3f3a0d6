"""The published CIFAR-10 ResNet checkpoints of ``../shared/data/cifar10/weights`` load into
our own networks (``--weights``) and reach the accuracy its README measured on the 1,017 real
test images; a checkpoint of another depth is refused in one line."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from ride.classifiers import accuracy
from ride.classifiers.checkpoints import CheckpointError, load_classifier
from ride.datasets import DatasetError, check_dataset, load_dataset

CIFAR_DIR = Path(os.environ.get("RIDE_CIFAR_DIR", "/work/shared/data/cifar10"))
"""The real CIFAR-10 images and checkpoints (read only); these tests are skipped without."""

CHECKPOINTS = {
    "cifar-resnet20": ("resnet20-12fca82f.th", 0.9164),
    "cifar-resnet56": ("resnet56-4bfd9763.th", 0.9272),
}
"""Classifier -> (checkpoint file, top-1 on the 1,017 images as the data README gives it)."""

needs_data = pytest.mark.skipif(
    not (CIFAR_DIR / "weights").is_dir(), reason=f"no shared CIFAR-10 data in {CIFAR_DIR}"
)


def weights(name: str) -> Path:
    return CIFAR_DIR / "weights" / CHECKPOINTS[name][0]


@pytest.mark.slow
@needs_data
@pytest.mark.parametrize("name", sorted(CHECKPOINTS))
def test_a_published_checkpoint_reaches_the_readme_s_accuracy_on_the_real_images(
    name: str,
) -> None:
    test = load_dataset("cifar10", "test", data_dir=CIFAR_DIR)
    assert len(test) == 1017
    model = load_classifier(weights(name), name)
    assert not model.training
    with torch.inference_mode():
        top1 = accuracy(model, test.images, test.labels)
    assert top1 == pytest.approx(CHECKPOINTS[name][1], abs=0.0015)  # 1.5 images of 1,017


@needs_data
@pytest.mark.parametrize(
    ("name", "file_of", "message"),
    [
        ("cifar-resnet56", "cifar-resnet20", "holds a ResNet-20, not 'cifar-resnet56'"),
        ("cifar-resnet20", "cifar-resnet56", "holds a ResNet-56, not 'cifar-resnet20'"),
        ("cifar-resnet18", "cifar-resnet20", "use cifar-resnet20"),
        ("mnist-cnn", "cifar-resnet56", "use cifar-resnet56"),
    ],
)
def test_a_checkpoint_of_another_network_is_refused_in_one_line(
    name: str, file_of: str, message: str
) -> None:
    with pytest.raises(CheckpointError, match=message) as error:
        load_classifier(weights(file_of), name)
    assert "\n" not in str(error.value)


def test_a_bare_state_dict_with_the_data_parallel_prefix_loads(tmp_path: Path) -> None:
    """The format without the shared files: ``{'state_dict': {'module.<key>': ...}}``."""
    from ride.classifiers import build_classifier

    source = build_classifier("cifar-resnet20", seed=3).eval()
    state = {f"module.{k}": v for k, v in source.state_dict().items() if "normalize" not in k}
    path = tmp_path / "published.th"
    torch.save({"state_dict": state, "best_prec1": 91.0}, path)
    loaded = load_classifier(path, "cifar-resnet20")
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(loaded(x), source(x))
    torch.save(state, path)  # bare, no wrapper
    torch.testing.assert_close(load_classifier(path, "cifar-resnet20")(x), source(x))


def test_a_published_checkpoint_with_nan_weights_is_refused(tmp_path: Path) -> None:
    from ride.classifiers import build_classifier

    state = {f"module.{k}": v for k, v in build_classifier("cifar-resnet20").state_dict().items()}
    state["module.linear.weight"] = torch.full_like(state["module.linear.weight"], float("nan"))
    path = tmp_path / "nan.th"
    torch.save({"state_dict": state}, path)
    with pytest.raises(CheckpointError, match=r"NaN or infinite values in linear\.weight"):
        load_classifier(path, "cifar-resnet20")


def test_a_limit_beyond_the_test_batch_is_one_line_and_the_batch_is_taken_as_it_is(
    tmp_path: Path,
) -> None:
    """The shared test batch holds 1,017 images, not 10,000: it is read as it is, and a
    ``limit`` it cannot meet is refused by the preflight's check, not cut silently."""
    from datafiles import write_cifar

    write_cifar(tmp_path, test=7, train_per_batch=1)
    assert len(load_dataset("cifar10", "test", data_dir=tmp_path)) == 7
    check_dataset("cifar10", tmp_path, "test", limit=7)
    with pytest.raises(DatasetError, match="limit 8 is more than the 7 images") as error:
        check_dataset("cifar10", tmp_path, "test", limit=8)
    assert "\n" not in str(error.value)
