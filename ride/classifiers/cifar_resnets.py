"""He et al.'s CIFAR-10 ResNets (ResNet-20, ResNet-56): the networks of the shared pretrained
CIFAR-10 checkpoints, the closest available here to the paper's ResNet-18 (94.78%).

He, Zhang, Ren and Sun, "Deep Residual Learning for Image Recognition" (CVPR 2016), Sec. 4.2:
a 3x3 convolution with 16 filters, then three stages of ``n`` basic blocks on feature maps of
32, 16 and 8 pixels with 16, 32 and 64 filters, global average pooling and one linear layer
(6n + 2 layers: n = 3 gives ResNet-20, n = 9 ResNet-56). Where a stage halves the map and
doubles the filters the shortcut is "option A": the input subsampled by 2 and zero-padded with
the new channels, so the network has no projection weights.

Parameter names follow the shared checkpoints (``conv1``, ``bn1``,
``layer{1,2,3}.{i}.conv1/bn1/conv2/bn2``, ``linear``); the input normalisation (ImageNet's
mean and std, as those checkpoints were trained with) sits in front as ``normalize``, so the
network takes images in [0, 1] like every classifier here.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ride.classifiers.networks import IMAGENET_MEAN, IMAGENET_STD, Normalize, _init_like_torch
from ride.seeding import generator_for

STAGE_WIDTHS = (16, 32, 64)
"""Filters of the three stages (He et al., Sec. 4.2)."""


class OptionABlock(nn.Module):
    """A basic block whose shortcut is the identity, or, where the block halves the map and
    widens it, the input subsampled ``x[:, :, ::2, ::2]`` and zero-padded on the channels
    (``(out - in) // 2`` on each side): He et al.'s option A, without parameters."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.stride = stride
        self.pad = (out_ch - in_ch) // 2

    def shortcut(self, x: Tensor) -> Tensor:
        if self.stride == 1 and self.pad == 0:
            return x
        x = x[:, :, :: self.stride, :: self.stride]  # (B, in, H / 2, W / 2)
        return F.pad(x, (0, 0, 0, 0, self.pad, self.pad))  # (B, out, H / 2, W / 2)

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(self.bn1(self.conv1(x)))  # (B, out, H / stride, W / stride)
        h = self.bn2(self.conv2(h))
        return F.relu(h + self.shortcut(x))


class CifarResNet(nn.Module):
    """He et al.'s CIFAR ResNet of depth ``6 * blocks + 2``; input (B, 3, 32, 32) in [0, 1],
    output logits (B, num_classes). Untrained weights are seeded (He normal for the
    convolutions, BN weight 1 and bias 0, PyTorch's default for the linear layer).

    Example:
        >>> import torch
        >>> net = CifarResNet(blocks=3)  # ResNet-20
        >>> net(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 10])
        >>> sum(p.numel() for p in net.parameters())
        269722
    """

    def __init__(self, blocks: int, num_classes: int = 10, seed: int = 0) -> None:
        super().__init__()
        if blocks < 1:
            raise ValueError(f"blocks must be >= 1, got {blocks}")
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.blocks = blocks
        self.normalize = Normalize(IMAGENET_MEAN, IMAGENET_STD)
        self.conv1 = nn.Conv2d(3, STAGE_WIDTHS[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(STAGE_WIDTHS[0])
        widths = (STAGE_WIDTHS[0], *STAGE_WIDTHS)
        self.layer1, self.layer2, self.layer3 = (
            nn.Sequential(
                *(
                    OptionABlock(widths[s] if i == 0 else widths[s + 1], widths[s + 1], stride)
                    for i, stride in enumerate([1 if s == 0 else 2] + [1] * (blocks - 1))
                )
            )
            for s in range(3)
        )
        self.linear = nn.Linear(STAGE_WIDTHS[-1], num_classes)
        gen = generator_for(seed)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", generator=gen)
        _init_like_torch(self.linear.weight, self.linear.bias, gen)

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(self.bn1(self.conv1(self.normalize(x))))  # (B, 16, 32, 32)
        h = self.layer3(self.layer2(self.layer1(h)))  # (B, 64, 8, 8)
        h = F.adaptive_avg_pool2d(h, 1).flatten(1)  # (B, 64)
        return self.linear(h)  # (B, num_classes)


def blocks_of(state_keys: list[str] | tuple[str, ...]) -> int | None:
    """The blocks per stage of a CIFAR ResNet state dict (its ``layer1.<i>.`` keys), or None
    when it holds none: how a checkpoint of one depth is told from another."""
    found = {key.split(".")[1] for key in state_keys if key.startswith("layer1.")}
    return len(found) or None
