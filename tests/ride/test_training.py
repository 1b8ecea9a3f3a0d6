"""Resumable training: a training continued from a checkpoint equals an uninterrupted one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ride.classifiers import CheckpointError, build_classifier
from ride.datasets import ImageSet
from ride.training import (
    TrainCheckpoint,
    TrainConfig,
    TrainState,
    load_train_checkpoint,
    save_train_checkpoint,
    train_classifier,
)


@pytest.fixture
def small(digits_train: ImageSet) -> ImageSet:
    return ImageSet("digits", digits_train.images[:96], digits_train.labels[:96], 10)


def test_resume_from_a_saved_epoch_equals_an_uninterrupted_training(
    small: ImageSet, tmp_path: Path
) -> None:
    cfg = TrainConfig(epochs=3, batch_size=32, seed=5)
    straight = train_classifier(build_classifier("mnist-cnn", seed=1), small, cfg)

    path = tmp_path / "state.pt"
    seen: list[int] = []

    def save(state: TrainState) -> None:
        seen.append(state.epoch)
        if state.epoch == 1:  # a run that stops after its first epoch
            checkpoint = TrainCheckpoint("mnist-cnn", model.state_dict(), state, [{"epoch": 1}])
            save_train_checkpoint(path, checkpoint)

    model = build_classifier("mnist-cnn", seed=1)
    train_classifier(model, small, TrainConfig(epochs=1, batch_size=32, seed=5), on_epoch=save)
    assert seen == [1] and not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())

    loaded = load_train_checkpoint(path, "mnist-cnn")
    assert loaded.state.epoch == 1 and loaded.history == [{"epoch": 1}]
    assert loaded.state.loss == loaded.state.loss  # a number, not nan
    resumed = build_classifier("mnist-cnn", seed=99)  # other init: the checkpoint replaces it
    resumed.load_state_dict(loaded.model)
    losses: list[int] = []
    train_classifier(resumed, small, cfg, lambda e, _l: losses.append(e), resume=loaded.state)
    assert losses == [2, 3]
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    # nothing left to train: the model comes back unchanged, in eval mode
    done = TrainState(3, loaded.state.optimizer, loaded.state.generator)
    before = {k: v.clone() for k, v in resumed.state_dict().items()}
    again = train_classifier(resumed, small, cfg, resume=done)
    assert not again.training
    assert all(torch.equal(before[k], v) for k, v in again.state_dict().items())


def test_train_checkpoint_errors(tmp_path: Path, small: ImageSet) -> None:
    with pytest.raises(CheckpointError, match="training state not found"):
        load_train_checkpoint(tmp_path / "nope.pt", "mnist-cnn")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="cannot read training state") as info:
        load_train_checkpoint(bad, "mnist-cnn")
    assert "\n" not in str(info.value)
    torch.save({"epoch": 1}, bad)
    with pytest.raises(CheckpointError, match="not a training state file"):
        load_train_checkpoint(bad, "mnist-cnn")
    model = build_classifier("mnist-cnn")
    states: list[TrainState] = []
    train_classifier(model, small, TrainConfig(epochs=1), on_epoch=states.append)
    save_train_checkpoint(bad, TrainCheckpoint("mnist-cnn", model.state_dict(), states[0]))
    with pytest.raises(CheckpointError, match="is of classifier 'mnist-cnn', not 'cifar-resnet18'"):
        load_train_checkpoint(bad, "cifar-resnet18")
