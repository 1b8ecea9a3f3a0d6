"""Classifier checkpoints: ``classifier.pt`` files written atomically, torchvision's
ImageNet weight files (bare state_dicts) and published CIFAR ResNet checkpoints
(:data:`PRETRAINED_CIFAR`), loaded with ``weights_only=True`` and checked
against the network they are for: the same tensor names and shapes, and finite values (a
NaN or infinite weight would make every prediction meaningless); else a one-line
:class:`CheckpointError`, raised before a run writes anything (its preflight loads them).

The pretrained ImageNet networks of :data:`PRETRAINED_IMAGENET` load their own files, told
apart by their first bytes: a TFLite flatbuffer (``imagenet-mobilenet-v2``, read with the
package ``tflite``) and a Keras HDF5 file (``imagenet-squeezenet1_1``, read with ``h5py``);
both packages come with the ``imagenet`` extra (``pip install -e '.[imagenet]'``).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TypeGuard

import torch
from torch import Tensor, nn

from ride.classifiers.cifar_resnets import blocks_of
from ride.classifiers.errors import CheckpointError, first_line
from ride.classifiers.keras_squeezenet import CaffeSqueezeNet, is_hdf5, read_keras_squeezenet
from ride.classifiers.networks import NormalizedNet
from ride.classifiers.tflite_net import is_tflite, mobilenet_v2_state
from ride.classifiers.zoo import (
    CLASSIFIERS,
    PRETRAINED_IMAGENET,
    TORCHVISION_CLASSIFIERS,
    _torchvision_net,
    _wrap_torchvision,
    build_classifier,
    find_torchvision_weights,
    torchvision_weight_files,
    torchvision_weights_dir,
)

# Output layer of each torchvision network, in torchvision's own key names.
_TORCHVISION_HEADS: dict[str, str] = {
    "resnet50": "fc",
    "vgg19": "classifier.6",
    "inception_v3": "fc",
}


_INCEPTION_AUX_PREFIX = "AuxLogits."

PRETRAINED_CIFAR: dict[str, int] = {"cifar-resnet20": 3, "cifar-resnet56": 9}
"""He et al.'s CIFAR ResNets that load published checkpoints (``{'state_dict': ...}`` saved
from ``nn.DataParallel``, keys prefixed ``module.``): name -> blocks per stage."""

_DATA_PARALLEL_PREFIX = "module."

_FILE_KINDS: dict[str, tuple[str, str]] = {
    "tflite": ("a TFLite model", "imagenet-mobilenet-v2"),
    "hdf5": ("an HDF5 (Keras) file", "imagenet-squeezenet1_1"),
}
"""Kind of weight file -> (what it is, the classifier that loads it)."""


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
        raise CheckpointError(f"cannot read checkpoint {path}: {first_line(err)}") from err


def _file_kind(path: Path) -> str | None:
    """``tflite`` or ``hdf5`` by the first bytes of the file ``path``, else None (a torch
    checkpoint, or no classifier file at all); CheckpointError when it is missing."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with path.open("rb") as fh:
            head = fh.read(8)
    except OSError as err:
        raise CheckpointError(f"cannot read checkpoint {path}: {first_line(err)}") from err
    if is_tflite(head):
        return "tflite"
    if is_hdf5(head):
        return "hdf5"
    return None


def _is_bare_state_dict(payload: object) -> TypeGuard[Mapping[str, Tensor]]:
    return (
        isinstance(payload, Mapping)
        and len(payload) > 0
        and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in payload.items())
    )


def _check_state(
    expected: Mapping[str, Tensor], state: Mapping[str, object], where: Path | str, name: str
) -> None:
    """CheckpointError unless ``state`` has exactly the keys and shapes of ``expected`` and
    only finite values."""
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
        if got.is_floating_point() and not bool(torch.isfinite(got).all()):
            raise CheckpointError(f"checkpoint {where} holds NaN or infinite values in {key}")


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


def classifier_from_cifar_state(
    name: str,
    state: Mapping[str, object],
    where: Path | str = "<state_dict>",
    device: torch.device | str = "cpu",
) -> nn.Module:
    """He et al.'s CIFAR ResNet ``name`` (:data:`PRETRAINED_CIFAR`) from a published
    checkpoint's state dict: the ``module.`` prefix of ``nn.DataParallel`` dropped, and what
    such a file does not carry (the normalisation in front, BatchNorm's step counters) taken
    from the fresh network. A checkpoint of another depth is a one-line CheckpointError.
    Returns eval mode on ``device``."""
    state = {str(k).removeprefix(_DATA_PARALLEL_PREFIX): v for k, v in state.items()}
    blocks, want = blocks_of(list(state)), PRETRAINED_CIFAR[name]
    if blocks != want:
        depth = "no CIFAR ResNet" if blocks is None else f"a ResNet-{6 * blocks + 2}"
        raise CheckpointError(
            f"checkpoint {where} holds {depth}, not {name!r} (ResNet-{6 * want + 2}); "
            f"choose the classifier that matches the file"
        )
    head = state.get("linear.weight")
    num_classes = int(head.shape[0]) if isinstance(head, Tensor) and head.ndim == 2 else 10
    model = build_classifier(name, num_classes=num_classes)
    own = model.state_dict()
    carried = {k: v for k, v in own.items() if k.startswith("normalize.")}
    carried |= {k: v for k, v in own.items() if k.endswith("num_batches_tracked")}
    _load_into(model, {**carried, **state}, where, name)  # type: ignore[dict-item]
    return model.to(device).eval()


def classifier_from_weight_file(
    name: str, path: Path, device: torch.device | str = "cpu"
) -> nn.Module:
    """Pretrained ImageNet classifier ``name`` (:data:`PRETRAINED_IMAGENET`) from its own
    file: the TFLite MobileNetV2 or the Keras SqueezeNet 1.1, checked like every checkpoint.
    A file of the other kind is a one-line CheckpointError. Returns eval mode on ``device``."""
    path = Path(path)
    kind = _file_kind(path)
    if kind is None:
        raise CheckpointError(f"checkpoint {path} is neither a TFLite model nor an HDF5 file")
    if _FILE_KINDS[kind][1] != name:
        raise CheckpointError(_not_pretrained_file(path, name, kind))
    if kind == "tflite":
        state = mobilenet_v2_state(path, name)
        model = build_classifier(name)  # 1,000 classes: the file's 1,001 less "background"
        _load_into(model, state, path, name)
        return model.to(device).eval()
    state = read_keras_squeezenet(path)
    head = state["classifier.1.bias"]
    if head.ndim != 1 or head.shape[0] < 2:
        raise CheckpointError(f"HDF5 file {path}: conv10 has {tuple(head.shape)} outputs")
    model = build_classifier(name, num_classes=int(head.shape[0]))
    assert isinstance(model, CaffeSqueezeNet)
    _load_into(model.net, state, path, name)  # torchvision's keys, strict
    return model.to(device).eval()


def _not_pretrained_file(path: Path, name: str, kind: str | None, payload: object = None) -> str:
    """One line: ``path`` (a file of ``kind``, or the torch ``payload``) is not a file that
    classifier ``name`` loads."""
    wanted = PRETRAINED_IMAGENET.get(name)
    expect = f" ({wanted} or a run's classifier.pt of it)" if wanted else ""
    if kind is not None:
        what, loader = _FILE_KINDS[kind]
        return (
            f"checkpoint {path} is {what}, not a weight file of {name!r}{expect}; {loader} loads it"
        )
    hint = ""
    if isinstance(payload, Mapping) and "state_dict" in payload:
        saved = payload.get("name")
        held = f"classifier {saved!r}" if saved is not None else "no classifier name"
        hint = _published_cifar_depth(payload["state_dict"]) if saved is None else ""
    elif _is_bare_state_dict(payload):
        held, hint = "a bare state_dict", _published_cifar_depth(payload)
    else:
        held = f"a {type(payload).__name__}, no classifier"
    return f"checkpoint {path} is not a weight file of {name!r}{expect}: it holds {held}{hint}"


def _published_cifar_depth(state: object) -> str:
    """`` (a CIFAR ResNet-20 checkpoint: use cifar-resnet20)``, for a published CIFAR
    checkpoint given to another classifier; else ``""``."""
    if not isinstance(state, Mapping):
        return ""
    blocks = blocks_of([str(k).removeprefix(_DATA_PARALLEL_PREFIX) for k in state])
    names = [n for n, b in PRETRAINED_CIFAR.items() if b == blocks]
    if not names or "linear.weight" not in {str(k).split(".", 1)[-1] for k in state}:
        return ""
    return f" (a CIFAR ResNet-{6 * PRETRAINED_CIFAR[names[0]] + 2} checkpoint: use {names[0]})"


def load_classifier(path: Path, name: str, device: torch.device | str = "cpu") -> nn.Module:
    """Load a checkpoint written by ``save_classifier``; eval mode, on ``device``.

    For the torchvision networks a bare torchvision state_dict (their weight files, e.g.
    ``resnet50-0676ba61.pth``) is accepted as well, for the CIFAR ResNets of
    :data:`PRETRAINED_CIFAR` a published checkpoint, and for the ImageNet networks of
    :data:`PRETRAINED_IMAGENET` their TFLite or Keras HDF5 file
    (:func:`classifier_from_weight_file`). Raises CheckpointError (one line) when
    the file is missing, unreadable, or holds another network (other name, missing/unexpected
    keys or other shapes).
    """
    path = Path(path)
    kind = _file_kind(path)
    if kind is not None:
        if _FILE_KINDS[kind][1] == name:
            return classifier_from_weight_file(name, path, device)
        raise CheckpointError(_not_pretrained_file(path, name, kind))
    payload = _read_checkpoint(path)
    if name in PRETRAINED_IMAGENET and not (
        isinstance(payload, dict) and "state_dict" in payload and payload.get("name") == name
    ):
        raise CheckpointError(_not_pretrained_file(path, name, None, payload))
    if isinstance(payload, dict) and "state_dict" in payload:
        if not isinstance(payload["state_dict"], dict):
            raise CheckpointError(f"not a classifier checkpoint: {path}")
        saved_name = payload.get("name")
        if saved_name is None and name in PRETRAINED_CIFAR:  # a published CIFAR checkpoint
            return classifier_from_cifar_state(name, payload["state_dict"], path, device)
        if saved_name != name:
            hint = _published_cifar_depth(payload["state_dict"]) if saved_name is None else ""
            raise CheckpointError(
                f"checkpoint {path} holds classifier {saved_name!r}, not {name!r}{hint}"
            )
        state: dict[str, Tensor] = payload["state_dict"]
        num_classes = payload.get("num_classes", _num_classes(state))
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
            raise CheckpointError(
                f"checkpoint {path}: num_classes must be an integer >= 2, got {num_classes!r}"
            )
        model: nn.Module
        if name in TORCHVISION_CLASSIFIERS:
            model = _empty_torchvision(name, num_classes)
        else:
            model = build_classifier(name, num_classes=num_classes)
        _load_into(model, state, path, name)
        return model.to(device).eval()
    if _is_bare_state_dict(payload):
        if name in PRETRAINED_CIFAR:
            return classifier_from_cifar_state(name, payload, path, device)
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
