"""Classifier construction, prediction, checkpoints and training."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from ride.classifiers import (
    CLASSIFIERS,
    CheckpointError,
    MnistCNN,
    Normalize,
    accuracy,
    build_classifier,
    load_classifier,
    predict,
    save_classifier,
)
from ride.datasets import ImageSet
from ride.training import TrainConfig, train_classifier


def test_mnist_cnn_shapes_and_seeded_init() -> None:
    model = build_classifier("mnist-cnn")
    assert isinstance(model, MnistCNN)
    assert isinstance(model.normalize, Normalize)
    assert model(torch.rand(3, 1, 28, 28)).shape == (3, 10)
    again = build_classifier("mnist-cnn")
    for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_unknown_classifier() -> None:
    assert CLASSIFIERS.names()[0] == "mnist-cnn"
    with pytest.raises(ValueError, match="unknown classifier 'resnet'; choose from: mnist-cnn"):
        build_classifier("resnet")


def test_normalize_per_channel() -> None:
    norm = Normalize((0.5, 0.0), (0.5, 2.0))
    x = torch.ones(1, 2, 2, 2)
    out = norm(x)
    assert torch.allclose(out[0, 0], torch.ones(2, 2))
    assert torch.allclose(out[0, 1], torch.full((2, 2), 0.5))


def test_training_reaches_95_percent(trained_cnn: nn.Module, digits_test: ImageSet) -> None:
    assert not trained_cnn.training
    assert accuracy(trained_cnn, digits_test.images, digits_test.labels) >= 0.95


def test_training_is_deterministic(digits_train: ImageSet) -> None:
    small = ImageSet("digits", digits_train.images[:128], digits_train.labels[:128], 10)
    cfg = TrainConfig(epochs=1, seed=3)
    epochs: list[int] = []
    a = train_classifier(build_classifier("mnist-cnn"), small, cfg, lambda e, _l: epochs.append(e))
    b = train_classifier(build_classifier("mnist-cnn"), small, cfg)
    assert epochs == [1]
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_train_config_validation() -> None:
    with pytest.raises(ValueError, match="epochs"):
        TrainConfig(epochs=0)
    with pytest.raises(ValueError, match="lr"):
        TrainConfig(lr=0.0)


def test_predict_keeps_mode_and_returns_int64(trained_cnn: nn.Module) -> None:
    trained_cnn.train()
    try:
        pred = predict(trained_cnn, torch.rand(5, 1, 28, 28), batch_size=2)
        assert trained_cnn.training
    finally:
        trained_cnn.eval()
    assert pred.shape == (5,) and pred.dtype == torch.int64


def test_save_load_roundtrip(tmp_path: Path, trained_cnn: nn.Module) -> None:
    path = tmp_path / "sub" / "clf.pt"
    save_classifier(trained_cnn, path, "mnist-cnn")
    assert [p.name for p in path.parent.iterdir()] == ["clf.pt"]  # no temp file left
    loaded = load_classifier(path, "mnist-cnn")
    assert not loaded.training
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(loaded(x), trained_cnn(x))


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_classifier(tmp_path / "nope.pt", "mnist-cnn")


def test_load_corrupt_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.pt"
    path.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read checkpoint") as info:
        load_classifier(path, "mnist-cnn")
    assert "\n" not in str(info.value)


def test_load_other_network(tmp_path: Path) -> None:
    path = tmp_path / "other.pt"
    other = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    torch.save({"format": 1, "name": "mnist-cnn", "state_dict": other.state_dict()}, path)
    with pytest.raises(CheckpointError, match="does not fit") as info:
        load_classifier(path, "mnist-cnn")
    assert "\n" not in str(info.value)


def test_load_other_shapes(tmp_path: Path) -> None:
    path = tmp_path / "five.pt"
    save_classifier(build_classifier("mnist-cnn", num_classes=5), path, "mnist-cnn")
    assert load_classifier(path, "mnist-cnn")(torch.rand(1, 1, 28, 28)).shape == (1, 5)
    state = build_classifier("mnist-cnn").state_dict()
    state["fc1.weight"] = torch.zeros(3, 3)
    torch.save({"format": 1, "name": "mnist-cnn", "state_dict": state}, path)
    with pytest.raises(CheckpointError, match=r"fc1\.weight has shape"):
        load_classifier(path, "mnist-cnn")


def test_load_name_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "clf.pt"
    torch.save({"name": "resnet18", "state_dict": {}}, path)
    with pytest.raises(CheckpointError, match="holds classifier 'resnet18'"):
        load_classifier(path, "mnist-cnn")
