"""Classifiers that carry their own input normalisation, and their checkpoints.

Every classifier takes images in [0, 1] and starts with a ``Normalize`` layer, so attacks and
defenders work in pixel units and eps means what the paper means (DESIGN.md).
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ride._checks import check_images
from ride.seeding import generator_for

CLASSIFIERS: tuple[str, ...] = ("mnist-cnn",)

MNIST_MEAN = 0.1307
MNIST_STD = 0.3081


class CheckpointError(ValueError):
    """A classifier checkpoint is missing, unreadable or belongs to another network."""


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std`` with mean and std stored as buffers."""

    mean: Tensor
    std: Tensor

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        if len(mean) != len(std) or not mean:
            raise ValueError(f"mean and std need one value per channel, got {mean} and {std}")
        if any(s <= 0 for s in std):
            raise ValueError(f"std must be positive, got {std}")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


class MnistCNN(nn.Module):
    """The paper's MNIST classifier: two conv and two fully connected layers.

    "For MNIST, we train a simple CNN model with two convolutional and two fully connected
    layers" (Lin et al., "Defense Against White-Box Attack"). Input (B, 1, 28, 28) in [0, 1],
    output logits (B, num_classes). Weights are initialised from a seeded generator.
    """

    def __init__(self, num_classes: int = 10, seed: int = 0) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.normalize = Normalize((MNIST_MEAN,), (MNIST_STD,))
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc1 = nn.Linear(32 * 7 * 7, 128)
        self.fc2 = nn.Linear(128, num_classes)
        gen = generator_for(seed)
        for layer in (self.conv1, self.conv2, self.fc1, self.fc2):
            _init_like_torch(layer.weight, layer.bias, gen)

    def forward(self, x: Tensor) -> Tensor:
        h = F.max_pool2d(F.relu(self.conv1(self.normalize(x))), 2)  # (B, 16, 14, 14)
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)  # (B, 32, 7, 7)
        h = F.relu(self.fc1(h.flatten(1)))  # (B, 1568) -> (B, 128)
        return self.fc2(h)  # (B, num_classes)


def _init_like_torch(weight: Tensor, bias: Tensor | None, gen: torch.Generator) -> None:
    """PyTorch's default layer init (uniform), drawn from ``gen`` instead of the global RNG."""
    with torch.no_grad():
        nn.init.kaiming_uniform_(weight, a=math.sqrt(5), generator=gen)
        if bias is not None:
            fan_in = weight[0].numel()
            bound = 1.0 / math.sqrt(fan_in)
            nn.init.uniform_(bias, -bound, bound, generator=gen)


def build_classifier(name: str, num_classes: int = 10, seed: int = 0) -> nn.Module:
    """A fresh classifier ``name`` (one of ``CLASSIFIERS``), weights seeded by ``seed``."""
    if name == "mnist-cnn":
        return MnistCNN(num_classes=num_classes, seed=seed)
    raise ValueError(f"unknown classifier {name!r}; choose from: {', '.join(CLASSIFIERS)}")


def save_classifier(model: nn.Module, path: Path, name: str) -> None:
    """Write ``model``'s state_dict and ``name`` to ``path`` atomically (temp file + rename)."""
    if name not in CLASSIFIERS:
        raise ValueError(f"unknown classifier {name!r}; choose from: {', '.join(CLASSIFIERS)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    num_classes = _num_classes(state)
    payload = {"format": 1, "name": name, "num_classes": num_classes, "state_dict": state}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(payload, fh)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _num_classes(state: dict[str, Tensor]) -> int:
    """Number of outputs of the last layer of a state_dict (its last bias)."""
    biases = [v for k, v in state.items() if k.endswith("bias")]
    return int(biases[-1].shape[0]) if biases else 10


def load_classifier(path: Path, name: str, device: torch.device | str = "cpu") -> nn.Module:
    """Load a checkpoint written by ``save_classifier``; eval mode, on ``device``.

    Raises CheckpointError (one line) when the file is missing, unreadable, or holds another
    network (other name, missing/unexpected keys or other shapes).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise CheckpointError(
            f"cannot read checkpoint {path}: {type(err).__name__}: {first[:200]}"
        ) from err
    if not isinstance(payload, dict) or not isinstance(payload.get("state_dict"), dict):
        raise CheckpointError(f"not a classifier checkpoint: {path}")
    saved_name = payload.get("name")
    if saved_name != name:
        raise CheckpointError(f"checkpoint {path} holds classifier {saved_name!r}, not {name!r}")
    state: dict[str, Tensor] = payload["state_dict"]
    num_classes = int(payload.get("num_classes", _num_classes(state)))
    model = build_classifier(name, num_classes=num_classes)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {path} does not fit {name!r}: missing keys {missing[:3]}, "
            f"unexpected keys {unexpected[:3]}"
        )
    for key, value in expected.items():
        got = state[key]
        if not isinstance(got, Tensor) or got.shape != value.shape:
            shape = tuple(got.shape) if isinstance(got, Tensor) else type(got).__name__
            raise CheckpointError(
                f"checkpoint {path} does not fit {name!r}: {key} has shape {shape}, "
                f"expected {tuple(value.shape)}"
            )
    model.load_state_dict(state)
    return model.to(device).eval()


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


def predict(model: nn.Module, images: Tensor, batch_size: int = 256) -> Tensor:
    """Predicted classes (N,) int64 for ``images`` (N, C, H, W), in eval mode without grad.

    The model's train/eval mode is restored afterwards; the result is on ``images.device``.
    """
    check_images(images, "images")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = _model_device(model)
    was_training = model.training
    model.eval()
    out: list[Tensor] = []
    try:
        with torch.no_grad():
            for start in range(0, images.shape[0], batch_size):
                batch = images[start : start + batch_size].to(device)
                out.append(model(batch).argmax(dim=1).to(images.device))
    finally:
        model.train(was_training)
    if not out:
        return torch.zeros(0, dtype=torch.int64, device=images.device)
    return torch.cat(out).to(torch.int64)


def accuracy(model: nn.Module, images: Tensor, labels: Tensor) -> float:
    """Share of ``images`` whose predicted class equals ``labels`` (0.0 for an empty set)."""
    if labels.shape != (images.shape[0],):
        raise ValueError(f"labels must be ({images.shape[0]},), got {tuple(labels.shape)}")
    if images.shape[0] == 0:
        return 0.0
    pred = predict(model, images)
    return float((pred == labels.to(pred.device)).float().mean())
