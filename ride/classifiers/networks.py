"""The classifiers of the paper's MNIST and CIFAR-10 experiments, each with its input
normalisation in front: images come in [0, 1], so eps is in pixel units.

MNIST: two conv and two fully connected layers; CIFAR-10: a ResNet-18 ("Classifiers").
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ride.seeding import generator_for

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
