"""Classifiers that carry their own input normalisation, and their checkpoints.

Every classifier takes images in [0, 1] and starts with a ``Normalize`` layer, so attacks and
defenders work in pixel units and eps means what the paper means (DESIGN.md).

The zoo follows the paper: a two-conv CNN for MNIST, a ResNet-18 for CIFAR-10 and the
pretrained torchvision ResNet50 for ImageNet ("Classifiers"), plus VGG19 and Inception V3
(footnote 2). The ImageNet networks load torchvision's own weight files (bare state_dicts).
"""

from __future__ import annotations

import math
import os
import tempfile
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import TypeGuard
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ride._checks import check_images
from ride.seeding import generator_for

CLASSIFIERS: tuple[str, ...] = ("mnist-cnn", "cifar-resnet18", "resnet50", "vgg19", "inception_v3")
TORCHVISION_CLASSIFIERS: tuple[str, ...] = ("resnet50", "vgg19", "inception_v3")

MNIST_MEAN = 0.1307
MNIST_STD = 0.3081
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Google's Inception V3 weights expect inputs in [-1, 1]; torchvision reaches them from
# ImageNet-normalised inputs with ``transform_input=True``. Normalising with 0.5 / 0.5 and
# ``transform_input=False`` gives the network exactly the same input.
INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)

# Input (C, H, W) the pipeline feeds each classifier. The paper centre-crops ImageNet to
# 224 x 224 for every network; torchvision's Inception V3 was trained on 299 x 299 crops but
# pools adaptively and accepts any input of at least 75 x 75.
_INPUTS: dict[str, tuple[int, int, int]] = {
    "mnist-cnn": (1, 28, 28),
    "cifar-resnet18": (3, 32, 32),
    "resnet50": (3, 224, 224),
    "vgg19": (3, 224, 224),
    "inception_v3": (3, 224, 224),
}
_DEFAULT_CLASSES: dict[str, int] = {
    "mnist-cnn": 10,
    "cifar-resnet18": 10,
    "resnet50": 1000,
    "vgg19": 1000,
    "inception_v3": 1000,
}
# Output layer of each torchvision network, in torchvision's own key names.
_TORCHVISION_HEADS: dict[str, str] = {
    "resnet50": "fc",
    "vgg19": "classifier.6",
    "inception_v3": "fc",
}
_INCEPTION_AUX_PREFIX = "AuxLogits."


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


class _BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 conv + BN, identity or 1x1-conv shortcut (He et al., 2016)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch)
            )

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(self.bn1(self.conv1(x)))  # (B, out, H / stride, W / stride)
        h = self.bn2(self.conv2(h))
        skip = x if self.downsample is None else self.downsample(x)
        return F.relu(h + skip)


class CifarResNet18(nn.Module):
    """The CIFAR-10 ResNet-18: 3x3 stem (stride 1, no max-pool), blocks [2, 2, 2, 2].

    "For CIFAR-10, we train a ResNet18 model" (paper, "Classifiers"). Widths 64-128-256-512,
    global average pooling and one linear layer. Input (B, 3, 32, 32) in [0, 1], output logits
    (B, num_classes). Key names follow torchvision's ResNet; init is seeded (He normal for
    conv, BN weight 1 / bias 0, PyTorch's default for the linear layer).
    """

    def __init__(self, num_classes: int = 10, seed: int = 0) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.normalize = Normalize(CIFAR_MEAN, CIFAR_STD)
        self.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = nn.Sequential(_BasicBlock(64, 64, 1), _BasicBlock(64, 64, 1))
        self.layer2 = nn.Sequential(_BasicBlock(64, 128, 2), _BasicBlock(128, 128, 1))
        self.layer3 = nn.Sequential(_BasicBlock(128, 256, 2), _BasicBlock(256, 256, 1))
        self.layer4 = nn.Sequential(_BasicBlock(256, 512, 2), _BasicBlock(512, 512, 1))
        self.fc = nn.Linear(512, num_classes)
        gen = generator_for(seed)
        with torch.no_grad():
            for module in self.modules():
                if isinstance(module, nn.Conv2d):
                    nn.init.kaiming_normal_(
                        module.weight, mode="fan_out", nonlinearity="relu", generator=gen
                    )
                elif isinstance(module, nn.BatchNorm2d):
                    nn.init.ones_(module.weight)
                    nn.init.zeros_(module.bias)
        _init_like_torch(self.fc.weight, self.fc.bias, gen)

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(self.bn1(self.conv1(self.normalize(x))))  # (B, 64, 32, 32)
        h = self.layer4(self.layer3(self.layer2(self.layer1(h))))  # (B, 512, 4, 4)
        h = F.adaptive_avg_pool2d(h, 1).flatten(1)  # (B, 512)
        return self.fc(h)  # (B, num_classes)


class NormalizedNet(nn.Sequential):
    """``net(normalize(x))`` for a torchvision network ``net``.

    A ``Sequential`` with children ``normalize`` and ``net``, so the network's parameters keep
    torchvision's key names under the ``net.`` prefix.
    """

    normalize: Normalize
    net: nn.Module

    def __init__(self, normalize: Normalize, net: nn.Module) -> None:
        super().__init__(OrderedDict([("normalize", normalize), ("net", net)]))


def _torchvision_net(name: str, num_classes: int) -> nn.Module:
    """The bare torchvision network ``name`` without weights, initialised from the global RNG.

    Inception V3 is built without its auxiliary classifier (used only in training) and with
    ``transform_input=False``; see ``INCEPTION_MEAN``.
    """
    from torchvision import models

    if name == "resnet50":
        return models.resnet50(weights=None, num_classes=num_classes)
    if name == "vgg19":
        return models.vgg19(weights=None, num_classes=num_classes)
    if name == "inception_v3":
        return models.inception_v3(
            weights=None,
            num_classes=num_classes,
            aux_logits=False,
            transform_input=False,
            init_weights=True,
        )
    raise ValueError(f"unknown torchvision classifier {name!r}")


def _wrap_torchvision(name: str, net: nn.Module) -> NormalizedNet:
    if name == "inception_v3":
        return NormalizedNet(Normalize(INCEPTION_MEAN, INCEPTION_STD), net)
    return NormalizedNet(Normalize(IMAGENET_MEAN, IMAGENET_STD), net)


def _check_name(name: str) -> None:
    if name not in CLASSIFIERS:
        raise ValueError(f"unknown classifier {name!r}; choose from: {', '.join(CLASSIFIERS)}")


def classifier_input(name: str) -> tuple[int, int, int]:
    """Input shape ``(C, H, W)`` the pipeline feeds classifier ``name``."""
    _check_name(name)
    return _INPUTS[name]


def classifier_num_classes(name: str) -> int:
    """Default number of classes of classifier ``name`` (10, or 1000 for ImageNet networks)."""
    _check_name(name)
    return _DEFAULT_CLASSES[name]


def model_num_classes(model: nn.Module) -> int:
    """Number of outputs of ``model``: the ``out_features`` of its last linear layer."""
    last: nn.Linear | None = None
    for module in model.modules():
        if isinstance(module, nn.Linear):
            last = module
    if last is None:
        raise ValueError(f"{type(model).__name__} has no linear output layer")
    return int(last.out_features)


def build_classifier(name: str, num_classes: int | None = None, seed: int = 0) -> nn.Module:
    """A fresh classifier ``name`` (one of ``CLASSIFIERS``), weights seeded by ``seed``.

    ``num_classes`` defaults to ``classifier_num_classes(name)``. The torchvision networks are
    initialised with torchvision's own scheme inside a forked, seeded global RNG.
    """
    _check_name(name)
    classes = _DEFAULT_CLASSES[name] if num_classes is None else num_classes
    if name == "mnist-cnn":
        return MnistCNN(num_classes=classes, seed=seed)
    if name == "cifar-resnet18":
        return CifarResNet18(num_classes=classes, seed=seed)
    if classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {classes}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = _torchvision_net(name, classes)
    return _wrap_torchvision(name, net)


def torchvision_weight_files(name: str) -> tuple[str, ...]:
    """File names of torchvision's ImageNet weights for ``name``, preferred first.

    Taken from the URLs of torchvision's weight enums (ResNet50: V1 ``resnet50-0676ba61.pth``,
    the paper's 76.15% model, then V2).
    """
    if name not in TORCHVISION_CLASSIFIERS:
        choices = ", ".join(TORCHVISION_CLASSIFIERS)
        raise ValueError(f"{name!r} has no torchvision weights; choose from: {choices}")
    from torchvision import models

    enums = {
        "resnet50": (models.ResNet50_Weights.IMAGENET1K_V1, models.ResNet50_Weights.IMAGENET1K_V2),
        "vgg19": (models.VGG19_Weights.IMAGENET1K_V1,),
        "inception_v3": (models.Inception_V3_Weights.IMAGENET1K_V1,),
    }[name]
    return tuple(Path(urlparse(w.url).path).name for w in enums)


def torchvision_weights_dir() -> Path:
    """Where torch.hub stores downloaded weights: ``$TORCH_HOME/hub/checkpoints``."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def find_torchvision_weights(name: str) -> Path | None:
    """The first of ``torchvision_weight_files(name)`` present in ``torchvision_weights_dir()``."""
    folder = torchvision_weights_dir()
    for file_name in torchvision_weight_files(name):
        if (folder / file_name).is_file():
            return folder / file_name
    return None


def save_classifier(model: nn.Module, path: Path, name: str) -> None:
    """Write ``model``'s state_dict and ``name`` to ``path`` atomically (temp file + rename)."""
    if name not in CLASSIFIERS:
        raise ValueError(f"unknown classifier {name!r}; choose from: {', '.join(CLASSIFIERS)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    num_classes = _num_classes(state)
    payload = {"format": 1, "name": name, "num_classes": num_classes, "state_dict": state}
    atomic_torch_save(payload, path)


def atomic_torch_save(payload: object, path: Path) -> None:
    """``torch.save`` to a hidden temporary file beside ``path``, then rename it over ``path``:
    a reader (or a crash) never sees half a checkpoint."""
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


def _read_checkpoint(path: Path) -> object:
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise CheckpointError(
            f"cannot read checkpoint {path}: {type(err).__name__}: {first[:200]}"
        ) from err


def _is_bare_state_dict(payload: object) -> TypeGuard[Mapping[str, Tensor]]:
    return (
        isinstance(payload, Mapping)
        and len(payload) > 0
        and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in payload.items())
    )


def _check_state(
    expected: Mapping[str, Tensor], state: Mapping[str, object], where: Path | str, name: str
) -> None:
    """CheckpointError unless ``state`` has exactly the keys and shapes of ``expected``."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {where} does not fit {name!r}: missing keys {missing[:3]}, "
            f"unexpected keys {unexpected[:3]}"
        )
    for key, value in expected.items():
        got = state[key]
        if not isinstance(got, Tensor) or got.shape != value.shape:
            shape = tuple(got.shape) if isinstance(got, Tensor) else type(got).__name__
            raise CheckpointError(
                f"checkpoint {where} does not fit {name!r}: {key} has shape {shape}, "
                f"expected {tuple(value.shape)}"
            )


def _load_into(model: nn.Module, state: Mapping[str, Tensor], where: Path | str, name: str) -> None:
    """Check ``state`` against ``model`` and load it; meta tensors are replaced (assign)."""
    _check_state(model.state_dict(), state, where, name)
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    model.load_state_dict(state, assign=True)
    if any(t.is_meta for t in (*model.parameters(), *model.buffers())):
        raise CheckpointError(f"checkpoint {where} leaves tensors of {name!r} unset")


def _empty_torchvision(name: str, num_classes: int) -> NormalizedNet:
    """Network ``name`` with parameters on the meta device (no init cost), real Normalize."""
    if num_classes < 2:
        raise CheckpointError(f"{name!r} needs >= 2 classes, the weights have {num_classes}")
    with torch.device("meta"):
        net = _torchvision_net(name, num_classes)
    return _wrap_torchvision(name, net)


def classifier_from_torchvision_state(
    name: str,
    state: Mapping[str, Tensor],
    where: Path | str = "<state_dict>",
    device: torch.device | str = "cpu",
) -> nn.Module:
    """Classifier ``name`` from a bare torchvision state_dict (e.g. ``resnet50-0676ba61.pth``).

    The number of classes comes from the output layer. Inception V3's auxiliary classifier
    (``AuxLogits.*``, used only in training) is dropped. Returns eval mode on ``device``.
    """
    if name not in TORCHVISION_CLASSIFIERS:
        raise CheckpointError(
            f"checkpoint {where} is a bare state_dict; only {', '.join(TORCHVISION_CLASSIFIERS)} "
            f"load torchvision weight files, not {name!r}"
        )
    if name == "inception_v3":
        state = {k: v for k, v in state.items() if not k.startswith(_INCEPTION_AUX_PREFIX)}
    head = state.get(f"{_TORCHVISION_HEADS[name]}.weight")
    num_classes = int(head.shape[0]) if isinstance(head, Tensor) and head.ndim == 2 else 1000
    model = _empty_torchvision(name, num_classes)
    _load_into(model.net, state, where, name)
    return model.to(device).eval()


def load_classifier(path: Path, name: str, device: torch.device | str = "cpu") -> nn.Module:
    """Load a checkpoint written by ``save_classifier``; eval mode, on ``device``.

    For the torchvision networks a bare torchvision state_dict (their weight files, e.g.
    ``resnet50-0676ba61.pth``) is accepted as well. Raises CheckpointError (one line) when
    the file is missing, unreadable, or holds another network (other name, missing/unexpected
    keys or other shapes).
    """
    path = Path(path)
    payload = _read_checkpoint(path)
    if isinstance(payload, dict) and "state_dict" in payload:
        if not isinstance(payload["state_dict"], dict):
            raise CheckpointError(f"not a classifier checkpoint: {path}")
        saved_name = payload.get("name")
        if saved_name != name:
            raise CheckpointError(
                f"checkpoint {path} holds classifier {saved_name!r}, not {name!r}"
            )
        state: dict[str, Tensor] = payload["state_dict"]
        num_classes = int(payload.get("num_classes", _num_classes(state)))
        model: nn.Module
        if name in TORCHVISION_CLASSIFIERS:
            model = _empty_torchvision(name, num_classes)
        else:
            model = build_classifier(name, num_classes=num_classes)
        _load_into(model, state, path, name)
        return model.to(device).eval()
    if _is_bare_state_dict(payload):
        return classifier_from_torchvision_state(name, payload, path, device)
    raise CheckpointError(f"not a classifier checkpoint: {path}")


def load_torchvision_weights(
    name: str, path: Path | None = None, device: torch.device | str = "cpu"
) -> nn.Module:
    """Classifier ``name`` with torchvision's ImageNet weights from ``path``.

    ``path`` None looks the file up with ``find_torchvision_weights`` (never downloads).
    """
    if path is None:
        path = find_torchvision_weights(name)
        if path is None:
            files = " or ".join(torchvision_weight_files(name))
            raise CheckpointError(
                f"no torchvision weights for {name!r} in {torchvision_weights_dir()} "
                f"(expected {files})"
            )
    return load_classifier(path, name, device)


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
