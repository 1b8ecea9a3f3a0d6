"""A checkpoint with NaN or infinite weights is refused in one line: every prediction of
such a network is meaningless, and a run would report 0.000 everywhere."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ride.classifiers import CheckpointError, build_classifier, load_classifier, save_classifier


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_weights_with_nan_or_infinite_values_are_refused(tmp_path: Path, value: float) -> None:
    path = tmp_path / "classifier.pt"
    model = build_classifier("mnist-cnn")
    save_classifier(model, path, "mnist-cnn")
    assert load_classifier(path, "mnist-cnn") is not None
    payload = torch.load(path, weights_only=True)
    name = next(k for k, v in payload["state_dict"].items() if v.is_floating_point())
    payload["state_dict"][name].view(-1)[-1] = value
    torch.save(payload, path)
    with pytest.raises(CheckpointError) as error:
        load_classifier(path, "mnist-cnn")
    assert str(error.value) == f"checkpoint {path} holds NaN or infinite values in {name}"
