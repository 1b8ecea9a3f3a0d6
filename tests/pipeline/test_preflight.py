"""The checks before a run or a training: one PreflightError, one line naming the parameter
(never a command-line flag), nothing written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from pipeline.config import ConfigError, RunConfig
from pipeline.preflight import PreflightError, preflight, preflight_train
from pipeline.train import TrainSettings
from ride.classifiers import build_classifier, save_classifier
from ride.datasets import DatasetError
from storage.runconfig import claim_run_dir

FAST = {"limit": 2, "ride_iters": 2, "ride_checkpoints": 1}


def refused(out: Path, settings: dict[str, Any], train: bool = False) -> PreflightError:
    with pytest.raises(PreflightError) as caught:
        (preflight_train if train else preflight)(out, settings)
    message = str(caught.value)
    assert len(message.splitlines()) == 1
    if caught.value.__cause__ is None:  # said here (storage/'s own texts are its own)
        assert "--" not in message
    if caught.value.key is not None:
        assert message.startswith(caught.value.key)
    return caught.value


def test_a_good_run_passes_and_writes_nothing(tmp_path: Path) -> None:
    cfg = preflight(tmp_path / "run", FAST)
    assert isinstance(cfg, RunConfig) and cfg.limit == 2
    assert not (tmp_path / "run").exists()


def test_out_must_be_a_writable_directory(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    error = refused(blocker, FAST)
    assert (error.key, str(error)) == ("out", f"out {blocker} exists and is not a directory")
    error = refused(blocker / "run", FAST)
    assert str(error) == f"out {blocker / 'run'}: {blocker} is not a directory"


def test_a_training_directory_is_not_a_run_directory_and_back(tmp_path: Path) -> None:
    training = tmp_path / "training"
    training.mkdir()
    settings = TrainSettings.from_mapping({"dataset": "digits"})
    claim_run_dir(training / "train.toml", settings.to_dict(), settings.identity(), "0.2.0")
    error = refused(training, FAST)
    assert error.key == "out" and "holds a training" in str(error)
    assert str(training / "classifier.pt") in str(error)
    run = tmp_path / "run"
    run.mkdir()
    claim_run_dir(run / "run.toml", {"seed": 0}, frozenset({"seed"}), "0.2.0")
    assert "holds a run (run.toml), not a training" in str(
        refused(run, {"dataset": "digits"}, train=True)
    )


def test_errors_of_the_layers_below_become_preflight_errors(tmp_path: Path) -> None:
    error = refused(tmp_path / "out", {"dataset": "mnist", **FAST})
    assert str(error) == "data_dir is required for dataset mnist"
    assert isinstance(error.__cause__, DatasetError)
    nope = tmp_path / "nope"
    assert "MNIST directory not found" in str(
        refused(tmp_path / "out", {"dataset": "mnist", "data_dir": str(nope), **FAST})
    )
    other = tmp_path / "other"
    other.mkdir()
    cfg = RunConfig.from_mapping(FAST)
    claim_run_dir(other / "run.toml", cfg.run_record(), cfg.identity(), "0.2.0")
    changed = {**FAST, "eps": 0.3}
    assert "holds a different run (differs in: eps)" in str(refused(other, changed))
    assert not (tmp_path / "out").exists()


def test_the_classifier_must_fit_the_dataset(tmp_path: Path) -> None:
    five = tmp_path / "five.pt"
    save_classifier(build_classifier("mnist-cnn", num_classes=5), five, "mnist-cnn")
    error = refused(tmp_path / "out", {"weights": str(five), **FAST})
    assert (error.key, str(error)) == (
        "classifier",
        "classifier mnist-cnn has 5 classes but dataset digits has 10",
    )
    error = refused(tmp_path / "out", {"classifier": "cifar-resnet18", **FAST})
    assert "expects (3,32,32) inputs but dataset digits has (1,28,28)" in str(error)
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"\x00not a checkpoint")
    assert "broken.pt" in str(refused(tmp_path / "out", {"weights": str(broken), **FAST}))


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_needs_a_device_here_unless_a_cluster_runs_the_tasks(tmp_path: Path) -> None:
    error = refused(tmp_path / "out", {"device": "cuda", **FAST})
    assert (error.key, str(error)) == (
        "device",
        "device cuda: no CUDA device is visible on this machine",
    )
    # With a scheduler the cluster's workers must offer GPUs (flows.checks.check_run).
    preflight(tmp_path / "out", {"device": "cuda", "scheduler": "tcp://127.0.0.1:1", **FAST})


def test_bf16_fits_are_offered_on_cuda_only(tmp_path: Path) -> None:
    error = refused(tmp_path / "out", {"precision": "bf16", **FAST})
    assert error.key == "precision" and "offered with device cuda only" in str(error)
    preflight(tmp_path / "out", {"precision": "fp32", **FAST})


def test_training_settings_name_their_key(tmp_path: Path) -> None:
    for settings, key, message in [
        ({"dataset": "digits", "epochs": 0}, "epochs", "must be a positive integer, got 0"),
        ({"dataset": "digits", "lr": 0}, "lr", "must be positive, got 0"),
        ({"dataset": "cifar10", "classifier": "mnist-cnn"}, "classifier",
         "the classifier trained on cifar10 is cifar-resnet18, not 'mnist-cnn'"),
        ({}, "dataset", "must be given"),
    ]:  # fmt: skip
        with pytest.raises(ConfigError) as caught:
            preflight_train(tmp_path / "out", settings)
        assert (caught.value.key, caught.value.message) == (key, message)
    with pytest.raises(ConfigError, match="imagenet") as caught:
        TrainSettings.from_mapping({"dataset": "imagenet"})
    assert caught.value.key == "dataset" and "--" not in str(caught.value)


def test_a_training_that_holds_more_epochs_than_asked_is_refused(tmp_path: Path) -> None:
    from ride.datasets import load_digits
    from ride.training import (
        TrainCheckpoint,
        TrainConfig,
        TrainState,
        save_train_checkpoint,
        train_classifier,
    )

    digits = load_digits("train")
    small = type(digits)("digits", digits.images[:8], digits.labels[:8], 10)
    states: list[TrainState] = []
    model = build_classifier("mnist-cnn")
    train_classifier(model, small, TrainConfig(epochs=1), on_epoch=states.append)
    ahead = tmp_path / "ahead"
    ahead.mkdir()
    state = TrainState(5, states[0].optimizer, states[0].generator, 0.1)
    save_train_checkpoint(
        ahead / "train_state.pt", TrainCheckpoint("mnist-cnn", model.state_dict(), state)
    )
    error = refused(ahead, {"dataset": "digits", "epochs": 3}, train=True)
    assert error.key == "out" and "already holds 5 trained epochs, more than the 3" in str(error)
    assert isinstance(preflight_train(ahead, {"dataset": "digits", "epochs": 6}), TrainSettings)


@pytest.mark.slow
def test_the_core_imports_neither_prefect_nor_dask() -> None:
    code = (
        "import sys\n"
        "import pipeline.chunks, pipeline.classifier, pipeline.keys, pipeline.preflight\n"
        "import pipeline.rows, pipeline.sampling, pipeline.train, pipeline.whitebox\n"
        "import pipeline.cache, pipeline.costs, pipeline.plan, pipeline.run, pipeline.spec\n"
        "import pipeline.store, pipeline.timing, storage.stored\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('prefect', 'dask', "
        "'distributed', 'prefect_dask', 'tasks', 'flows'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_an_attack_that_can_attack_no_defender_of_the_run_is_refused(tmp_path: Path) -> None:
    settings = {**FAST, "attacks": ["bpda-surrogate"], "defenders": ["none", "median"]}
    error = refused(tmp_path / "run", settings)
    assert error.key == "attacks"
    assert str(error) == (
        "attacks: bpda-surrogate cannot attack any defender of this run (none, median-k3)"
    )
    assert not (tmp_path / "run").exists()
    # with one RIDE-family defender beside them the run may start (the rest is left out)
    preflight(tmp_path / "run", {**settings, "defenders": ["none", "ride"]})
