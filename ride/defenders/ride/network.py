"""The reconstruction network ``h`` of Table 3, and its forward pass over grouped networks.

3x3 convs with padding 1, ReLU after every conv but the last, sigmoid output (images in
[0, 1]), dropout at the ticked layers. :func:`fcn_forward` is the one forward pass: the module
:class:`ReconstructionFCN` runs it with ``groups=1``, the batched engine with ``groups=B`` over
the B images' stacked weights.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ride.defenders.ride.archs import ARCHS
from ride.defenders.ride.streams import keep_masks

#: Per dropout layer, in order, the scaled keep mask to multiply its activations by: ready-made
#: masks, or a function drawing the mask for an activation (n, C_l, H, W).
Masks = Sequence[Tensor] | Callable[[Tensor], Tensor]


def fcn_forward(
    z: Tensor,
    layers: Sequence[tuple[Tensor, Tensor]],
    dropout_layers: frozenset[int],
    masks: Masks | None = None,
    groups: int = 1,
) -> Tensor:
    """``h(z)`` for z (n, G*C, H, W) -> (n, G*C_out, H, W) in (0, 1), G = ``groups``.

    ``layers`` holds each conv's (weight (G*C_out, C_in, 3, 3), bias (G*C_out,)); each of the
    G groups of channels goes through its own network. ``masks=None``: no dropout.
    """
    h = z
    last = len(layers) - 1
    drop_index = 0
    for i, (weight, bias) in enumerate(layers):
        h = F.conv2d(h, weight, bias, padding=1, groups=groups)
        if i == last:
            return torch.sigmoid(h)
        h = F.relu(h)
        if masks is not None and i in dropout_layers:
            h = h * (masks(h) if callable(masks) else masks[drop_index])
            drop_index += 1
    raise AssertionError("unreachable")


class ReconstructionFCN(nn.Module):
    """The reconstruction network ``h`` of Table 3.

    3x3 convs with padding 1, ReLU after every conv but the last, sigmoid output (images in
    [0, 1]), dropout with rate ``dropout`` after the ticked layers. Weights start from PyTorch's
    uniform default ("random uniform distribution", paper "Implementation of RIDE") drawn from
    ``generator``; dropout masks are drawn from the generator passed to ``forward``.

    Example:
        >>> import torch
        >>> net = ReconstructionFCN("mnist", 0.5, torch.Generator().manual_seed(0)).eval()
        >>> net(torch.rand(2, 1, 8, 8)).shape
        torch.Size([2, 1, 8, 8])
    """

    def __init__(
        self,
        arch: str,
        dropout: float,
        generator: torch.Generator,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"unknown RIDE arch {arch!r}; choose from: {', '.join(ARCHS)}")
        channels, dropout_layers = ARCHS[arch]
        self.dropout = dropout
        self.dropout_layers = dropout_layers
        self.convs = nn.ModuleList(
            nn.utils.skip_init(nn.Conv2d, c_in, c_out, 3, padding=1, device=device, dtype=dtype)
            for c_in, c_out in itertools.pairwise(channels)
        )
        with torch.no_grad():
            for weight, bias in self.layers():
                nn.init.kaiming_uniform_(weight, a=math.sqrt(5), generator=generator)
                bound = 1.0 / math.sqrt(weight[0].numel())
                nn.init.uniform_(bias, -bound, bound, generator=generator)

    def layers(self) -> list[tuple[Tensor, Tensor]]:
        """Each conv's (weight (C_out, C_in, 3, 3), bias (C_out,)), input to output."""
        out = []
        for conv in self.convs:
            assert isinstance(conv, nn.Conv2d) and conv.bias is not None
            out.append((conv.weight, conv.bias))
        return out

    @property
    def in_channels(self) -> int:
        first = self.convs[0]
        assert isinstance(first, nn.Conv2d)
        return int(first.in_channels)

    def forward(
        self,
        z: Tensor,
        generator: torch.Generator | None = None,
        masks: Sequence[Tensor] | None = None,
    ) -> Tensor:
        """z: (n, C, H, W) -> (n, C, H, W) in (0, 1).

        Training mode with dropout needs either ``generator`` (masks drawn here) or ``masks``,
        one ready-made scaled keep mask per dropout layer (see ``streams.keep_masks``).
        """
        use_dropout = self.training and self.dropout > 0.0
        if use_dropout and generator is None and masks is None:
            raise ValueError("dropout in training mode needs a generator for its masks")
        source: Masks | None = None
        if use_dropout:
            source = masks if masks is not None else self._mask_drawer(generator)
        return fcn_forward(z, self.layers(), self.dropout_layers, source)

    def _mask_drawer(self, generator: torch.Generator | None) -> Callable[[Tensor], Tensor]:
        def draw(h: Tensor) -> Tensor:
            uniform = torch.rand(h.shape, generator=generator, device=h.device, dtype=h.dtype)
            return keep_masks(uniform, self.dropout)

        return draw
