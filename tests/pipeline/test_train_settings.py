"""`ride train`'s recipe settings (lr_decay, lr_decay_steps, weight_decay, max_shift): their
defaults are
TrainConfig's, bad values stop with one line naming the option, they identify a training
while epochs does not (the schedule ignores the total), and an extended training equals an
uninterrupted one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from flows.cli import build_parser, main
from pipeline.config import ConfigError
from pipeline.preflight import PreflightError, preflight_train
from pipeline.train import TrainSettings, claim_train_dir, evaluate_classifier, train_epoch
from ride.classifiers import build_classifier, load_classifier
from ride.datasets import load_digits
from ride.training import TrainConfig, load_train_checkpoint, train_classifier
from storage.layout import TrainLayout
from storage.runconfig import claim_run_dir


def test_the_recipe_defaults_are_train_configs_and_reach_it() -> None:
    settings = TrainSettings.from_mapping({"dataset": "mnist"})
    recipe = (settings.lr_decay, settings.lr_decay_steps, settings.weight_decay, settings.max_shift)
    assert recipe == (0.7, 938, 1e-2, 2)
    assert settings.train_config(10) == TrainConfig()
    custom = TrainSettings.from_mapping(
        {"dataset": "digits", "lr_decay": 0.5, "lr_decay_steps": 10, "weight_decay": 0}
        | {"max_shift": 0, "seed": 4}
    )
    assert custom.train_config(3) == TrainConfig(
        epochs=3, lr_decay=0.5, lr_decay_steps=10, weight_decay=0, max_shift=0, seed=4
    )


def test_the_recipe_identifies_a_training_but_epochs_may_change() -> None:
    identity = TrainSettings.from_mapping({"dataset": "digits"}).identity()
    recipe = {"lr", "lr_decay", "lr_decay_steps", "weight_decay", "max_shift", "batch_size"}
    assert recipe | {"seed", "dataset", "classifier"} == identity
    assert not {"epochs", "data_dir", "device"} & identity


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("lr_decay", 0, "must be in (0, 1] (1: a constant learning rate), got 0"),
        ("lr_decay", 1.01, "must be in (0, 1] (1: a constant learning rate), got 1.01"),
        ("lr_decay", float("nan"), "must be in (0, 1] (1: a constant learning rate), got nan"),
        ("lr_decay_steps", 0, "must be a positive integer, got 0"),
        ("lr_decay_steps", 1.5, "must be a positive integer, got 1.5"),
        ("weight_decay", -0.1, "must be >= 0, got -0.1"),
        ("weight_decay", float("inf"), "must be >= 0, got inf"),
        ("weight_decay", "0.1", "must be >= 0, got 0.1"),
        ("max_shift", -1, "must be a whole number of pixels from 0 to 7, got -1"),
        ("max_shift", 8, "must be a whole number of pixels from 0 to 7, got 8"),
        ("max_shift", 1.5, "must be a whole number of pixels from 0 to 7, got 1.5"),
        ("max_shift", True, "must be a whole number of pixels from 0 to 7, got True"),
        ("lr", float("inf"), "must be a finite number, got inf"),
    ],
)
def test_bad_recipe_settings_name_their_key(key: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        TrainSettings.from_mapping({"dataset": "digits", key: value})
    assert (caught.value.key, caught.value.message) == (key, message)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--lr-decay", "0"], "--lr-decay must be in (0, 1] (1: a constant learning rate)"),
        (["--lr-decay-steps", "0"], "--lr-decay-steps must be a positive integer, got 0"),
        (["--weight-decay", "-1"], "--weight-decay must be >= 0, got -1.0"),
        (["--max-shift", "9"], "--max-shift must be a whole number of pixels from 0 to 7, got 9"),
    ],
)
def test_bad_recipe_options_stop_ride_train_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    out = tmp_path / "out"
    assert main(["train", "--dataset", "digits", "--out", str(out), *args]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("ride: error: ") and message in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_ride_train_help_names_the_recipe_options_and_defaults(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        build_parser(["train"]).parse_args(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for option, default in [
        ("--lr-decay", 0.7),
        ("--lr-decay-steps", 938),
        ("--weight-decay", 0.01),
        ("--max-shift", 2),
    ]:
        assert f"{option} {option[2:].upper().replace('-', '_')}" in text
        assert f"(default {default}" in text
    assert "AdamW" in text and "does not depend on --epochs" in text


def test_a_directory_trained_with_another_recipe_is_refused(tmp_path: Path) -> None:
    other = TrainSettings.from_mapping({"dataset": "digits", "weight_decay": 0})
    claim_run_dir(tmp_path / "train.toml", other.to_dict(), other.identity(), "0.1.0")
    with pytest.raises(PreflightError, match=r"differs in: weight_decay\)"):
        preflight_train(tmp_path, {"dataset": "digits"})
    # a training of a version before the recipe settings (Adam, constant rate, no shifts)
    old = tmp_path / "old"
    old.mkdir()
    settings = {
        k: v for k, v in TrainSettings.from_mapping({"dataset": "digits"}).to_dict().items()
    }
    for key in ("lr_decay", "lr_decay_steps", "weight_decay", "max_shift"):
        del settings[key]
    claim_run_dir(old / "train.toml", settings, frozenset(settings) - {"epochs"}, "0.1.0")
    with pytest.raises(
        PreflightError, match=r"differs in: lr_decay, lr_decay_steps, max_shift, weight_decay\)"
    ):
        preflight_train(old, {"dataset": "digits"})


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_an_extended_training_equals_one_asked_for_all_its_epochs(tmp_path: Path) -> None:
    """1 epoch, then --epochs 2 on the same directory: the weights of a 2-epoch training
    (the schedule's rate at a step does not depend on the total)."""
    layout = TrainLayout(tmp_path)
    one = TrainSettings.from_mapping({"dataset": "digits", "epochs": 1})
    assert claim_train_dir(layout, one) == 0
    train_epoch(layout, one, 1)
    two = TrainSettings.from_mapping({"dataset": "digits", "epochs": 2})
    assert claim_train_dir(layout, two) == 1
    train_epoch(layout, two, 2)
    straight = train_classifier(
        build_classifier("mnist-cnn", seed=0), load_digits("train"), TrainConfig(epochs=2)
    )
    resumed = load_classifier(layout.classifier, "mnist-cnn")
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    history = load_train_checkpoint(layout.state, "mnist-cnn").history
    assert [h["epoch"] for h in history] == [1, 2]
    info = evaluate_classifier(layout, two)
    recorded = json.loads(layout.classifier_info.read_text())
    assert recorded["epochs"] == 2 and info["test_accuracy"] == recorded["test_accuracy"]
    recipe = [recorded[k] for k in ("lr_decay", "lr_decay_steps", "weight_decay", "max_shift")]
    assert recipe == [0.7, 938, 0.01, 2]
