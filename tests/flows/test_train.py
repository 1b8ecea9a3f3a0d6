"""`ride train`: the ride-train flow trains the digits classifier to >= 95%, resumes after
the last finished epoch with the weights of an uninterrupted training, and its weights
serve `ride run --weights`; bad input stops before any work with one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from datafiles import write_cifar, write_mnist

from flows.cli import main, preflight
from pipeline.train import TrainSettings
from ride.classifiers import build_classifier, load_classifier
from ride.datasets import load_digits
from ride.training import (
    TrainCheckpoint,
    TrainConfig,
    TrainState,
    load_train_checkpoint,
    save_train_checkpoint,
    train_classifier,
)
from storage.runconfig import claim_run_dir


def train(out: Path, *args: str) -> int:
    return main(["train", "--dataset", "digits", "--out", str(out), *args])


@pytest.mark.slow
def test_train_resume_and_use_as_weights(
    prefect_server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cnn"
    assert train(out, "--epochs", "2") == 0
    assert "trained epochs 1-2" in capsys.readouterr().out
    first = load_train_checkpoint(out / "train_state.pt", "mnist-cnn").history
    assert [h["epoch"] for h in first] == [1, 2]

    # Rerun with more epochs: only epochs 3-4 run, and the weights are those of a training
    # that was never interrupted.
    assert train(out, "--epochs", "4") == 0
    assert "trained epochs 3-4; mnist-cnn after 4 epochs" in capsys.readouterr().out
    info = json.loads((out / "classifier.json").read_text())
    assert info["epochs"] == 4 and info["history"][:2] == first
    assert [h["epoch"] for h in info["history"]] == [1, 2, 3, 4]
    straight = train_classifier(
        build_classifier("mnist-cnn", seed=0), load_digits("train"), TrainConfig(epochs=4)
    )
    resumed = load_classifier(out / "classifier.pt", "mnist-cnn")
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)

    # To the default 10 epochs: the paper's MNIST network on real handwriting, >= 95%.
    assert train(out, "--epochs", "10") == 0
    assert "trained epochs 5-10" in capsys.readouterr().out
    info = json.loads((out / "classifier.json").read_text())
    assert info["test_accuracy"] >= 0.95 and info["test_images"] == 450
    assert (info["classifier"], info["dataset"], info["epochs"]) == ("mnist-cnn", "digits", 10)
    assert train(out, "--epochs", "10") == 0  # nothing left: a rerun is a no-op
    assert "nothing left to train" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "classifier.json",
        "classifier.pt",
        "train.toml",
        "train_state.pt",
    ]
    # The weights are what `ride run --weights` takes.
    preflight(tmp_path / "run", {"weights": str(out / "classifier.pt"), "limit": 2})


def tiny_state(path: Path, epoch: int) -> None:
    """A training state file claiming ``epoch`` finished epochs (of the digits network)."""
    digits = load_digits("train")
    model = build_classifier("mnist-cnn")
    states: list[TrainState] = []
    small = type(digits)("digits", digits.images[:8], digits.labels[:8], 10)
    train_classifier(model, small, TrainConfig(epochs=1), on_epoch=states.append)
    state = TrainState(epoch, states[0].optimizer, states[0].generator, 0.1)
    save_train_checkpoint(path, TrainCheckpoint("mnist-cnn", model.state_dict(), state))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dataset", "imagenet"],
         "--dataset: a classifier is trained on digits, mnist, cifar10, not 'imagenet'"),
        (["--dataset", "digits", "--classifier", "resnet50"],
         "--classifier: the classifier trained on digits is mnist-cnn, not 'resnet50'"),
        (["--dataset", "digits", "--epochs", "0"], "--epochs must be a positive integer, got 0"),
        (["--dataset", "digits", "--lr", "0"], "--lr must be positive"),
        (["--dataset", "mnist"], "--data-dir is required for dataset mnist"),
        (["--dataset", "mnist", "--data-dir", "NOPE"], "MNIST directory not found"),
        (["--dataset", "mnist", "--data-dir", "CIFAR"], "MNIST file train-images-idx3-ubyte"),
        (["--dataset", "cifar10", "--data-dir", "MNIST"], "CIFAR-10 batches not found"),
        (["--dataset", "cifar10", "--data-dir", "CIFAR", "--classifier", "mnist-cnn"],
         "the classifier trained on cifar10 is cifar-resnet18, not 'mnist-cnn'"),
    ],
)  # fmt: skip
def test_bad_train_input_fails_fast_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    write_mnist(tmp_path / "mnist", "train", 4, seed=1, gz=True)
    write_mnist(tmp_path / "mnist", "t10k", 2, seed=2, gz=True)
    write_cifar(tmp_path / "cifar", test=2, train_per_batch=1)
    places = {"NOPE": tmp_path / "nope", "MNIST": tmp_path / "mnist", "CIFAR": tmp_path / "cifar"}
    args = [str(places.get(a, a)) for a in args]
    out = tmp_path / "out"
    assert main(["train", "--out", str(out), *args]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("ride: error: ") and message in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_train_directory_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def run(out: Path, *args: str) -> str:
        assert train(out, *args) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1
        return err

    other = tmp_path / "other"  # another training's directory
    other.mkdir()
    settings = TrainSettings.from_mapping({"dataset": "digits", "seed": 3})
    claim_run_dir(other / "train.toml", settings.to_dict(), settings.identity(), "0.1.0")
    assert "differs in: seed)" in run(other)
    ahead = tmp_path / "ahead"  # holds more epochs than asked for
    ahead.mkdir()
    tiny_state(ahead / "train_state.pt", 5)
    assert f"--out {ahead} already holds 5 trained epochs, more than the 3 epochs asked for" in run(
        ahead, "--epochs", "3"
    )
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "train_state.pt").write_bytes(b"garbage")
    assert "cannot read training state" in run(broken)
    evaluation = tmp_path / "evaluation"  # a `ride run` directory
    evaluation.mkdir()
    claim_run_dir(evaluation / "run.toml", {"seed": 0}, frozenset({"seed"}), "0.1.0")
    assert "holds a run (run.toml), not a training" in run(evaluation)
    for folder in (other, ahead, broken, evaluation):
        assert not (folder / "classifier.pt").exists()
    # and the other way round: `ride run` into a training directory
    assert main(["run", "--out", str(other), "--limit", "2"]) == 1
    assert "holds a training (train.toml), not a run; give its classifier as weights" in (
        capsys.readouterr().err
    )
