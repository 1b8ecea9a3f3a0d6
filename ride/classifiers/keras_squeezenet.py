"""``imagenet-squeezenet1_1``: torchvision's SqueezeNet 1.1 with the weights of a Keras HDF5
file (``squeezenet1_1_keras.h5``) and the Caffe-style input those weights were trained on.

The Keras layers ``conv1``, ``fire2`` ... ``fire9`` (each ``squeeze1x1``, ``expand1x1``,
``expand3x3``) and ``conv10`` are torchvision's ``features.0``, ``features.3/4/6/7/9/10/11/12``
and ``classifier.1``; a Keras kernel (H, W, in, out) is a torch weight (out, in, H, W). The
network takes RGB images in [0, 1] like every classifier here and feeds SqueezeNet what it
was trained on: BGR channels, pixel values 0..255 minus the per-channel means
:data:`CAFFE_MEAN_BGR`. Reading the file needs the package ``h5py`` (the ``imagenet``
extra).
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ride.classifiers.errors import CheckpointError, first_line, optional_import

CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
"""Per-channel means (B, G, R) of Caffe's ImageNet preprocessing, in pixel values 0..255."""

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
"""The first 8 bytes of an HDF5 file (without a user block)."""

SQUEEZENET_FILE = "squeezenet1_1_keras.h5"

KERAS_LAYERS: dict[str, str] = {
    "conv1": "features.0",
    "fire2": "features.3",
    "fire3": "features.4",
    "fire4": "features.6",
    "fire5": "features.7",
    "fire6": "features.9",
    "fire7": "features.10",
    "fire8": "features.11",
    "fire9": "features.12",
    "conv10": "classifier.1",
}
"""Keras layer (or Fire module) -> torchvision module of ``squeezenet1_1``."""

FIRE_PARTS: dict[str, str] = {
    "squeeze1x1": "squeeze",
    "expand1x1": "expand1x1",
    "expand3x3": "expand3x3",
}
"""Convolution of a Keras Fire module -> its name in torchvision's ``Fire``."""


class CaffeInput(nn.Module):
    """RGB in [0, 1] to Caffe's input: BGR, times 255, minus :data:`CAFFE_MEAN_BGR`."""

    mean: Tensor

    def __init__(self) -> None:
        super().__init__()
        mean = torch.tensor(CAFFE_MEAN_BGR, dtype=torch.float32).view(1, 3, 1, 1)
        self.register_buffer("mean", mean)

    def forward(self, x: Tensor) -> Tensor:
        return x.flip(1) * 255.0 - self.mean  # (B, 3, H, W) BGR


class CaffeSqueezeNet(nn.Sequential):
    """``net(caffe(x))``: torchvision's ``squeezenet1_1`` (its keys under ``net.``) behind
    :class:`CaffeInput`. Input (B, 3, H, W) RGB in [0, 1], output (B, num_classes): the
    spatial mean of the ReLU of the last convolution, which SqueezeNet's softmax takes.
    Untrained weights are torchvision's initialisation inside a seeded, forked global RNG.

    Example:
        >>> net = CaffeSqueezeNet(num_classes=1000)
        >>> net(torch.zeros(1, 3, 224, 224)).shape, net.num_classes
        (torch.Size([1, 1000]), 1000)
    """

    caffe: CaffeInput
    net: nn.Module

    def __init__(self, num_classes: int = 1000, seed: int = 0) -> None:
        from torchvision import models

        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = models.squeezenet1_1(weights=None, num_classes=num_classes)
        super().__init__(OrderedDict([("caffe", CaffeInput()), ("net", net)]))
        self.num_classes = num_classes


def is_hdf5(head: bytes) -> bool:
    """Whether the first bytes of a file are those of an HDF5 file."""
    return head[:8] == HDF5_SIGNATURE


def _weight_key(name: str) -> str | None:
    """``weight`` or ``bias`` for a Keras weight name (``conv1_W:0``, ``kernel:0``, ...)."""
    base = name.rsplit("/", 1)[-1].split(":")[0]
    if base.endswith("_W") or base == "kernel":
        return "weight"
    if base.endswith("_b") or base == "bias":
        return "bias"
    return None


def _layer_weights(group: Any, layer: str) -> dict[str, np.ndarray]:
    """``{"weight": ..., "bias": ...}`` of the Keras layer group ``layer``, from the names
    its ``weight_names`` attribute lists."""
    out: dict[str, np.ndarray] = {}
    for raw in group[layer].attrs.get("weight_names", []):
        name = raw.decode() if isinstance(raw, bytes) else str(raw)
        key = _weight_key(name)
        if key is not None:
            out[key] = np.asarray(group[layer][name], dtype=np.float32)
    return out


def _keras_state(h5: Any, path: Path) -> dict[str, Tensor]:
    group = h5.get("model_weights", h5)
    state: dict[str, Tensor] = {}
    layers: list[tuple[str, str]] = []
    for keras, torch_name in KERAS_LAYERS.items():
        if keras.startswith("fire"):
            layers += [(f"{keras}/{k}", f"{torch_name}.{t}") for k, t in FIRE_PARTS.items()]
        else:
            layers.append((keras, torch_name))
    missing = [keras for keras, _ in layers if keras not in group]
    if missing:
        raise CheckpointError(
            f"HDF5 file {path} holds no Keras SqueezeNet 1.1 weights: no layer "
            f"{', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}"
        )
    for keras, torch_name in layers:
        weights = _layer_weights(group, keras)
        if set(weights) != {"weight", "bias"}:
            raise CheckpointError(
                f"HDF5 file {path}: layer {keras} holds {sorted(weights)}, not a kernel and a bias"
            )
        kernel = weights["weight"]
        if kernel.ndim != 4:
            raise CheckpointError(
                f"HDF5 file {path}: layer {keras} has a kernel of shape {kernel.shape}, "
                "not (H, W, in, out)"
            )
        state[f"{torch_name}.weight"] = torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy())
        state[f"{torch_name}.bias"] = torch.from_numpy(weights["bias"].copy())
    return state


def read_keras_squeezenet(path: Path) -> dict[str, Tensor]:
    """torchvision ``squeezenet1_1`` state (its own key names) from the Keras HDF5 file
    ``path``. CheckpointError (one line) when ``h5py`` is missing, the file is no HDF5 file
    or is damaged, or it lacks a layer of SqueezeNet 1.1."""
    path = Path(path)
    h5py = optional_import("h5py", path)
    try:
        with h5py.File(path, "r") as h5:
            return _keras_state(h5, path)
    except CheckpointError:
        raise
    except Exception as err:  # h5py: OSError for a truncated file, KeyError, ...
        raise CheckpointError(
            f"cannot read HDF5 file {path} (damaged or truncated): {first_line(err)}"
        ) from err
