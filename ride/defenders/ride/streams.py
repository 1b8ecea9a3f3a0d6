"""Per-image random streams of the RIDE fits.

Each image draws everything random from one generator seeded with its own seed, in this order
(both engines draw exactly the same numbers, so an image's result does not depend on the other
images of its batch):

1. network init, conv by conv: weight (Kaiming uniform) then bias;
2. ``z0 ~ U(0, DIP_INPUT_SCALE)`` of shape (1, C, H, W) (drawn for every variant);
3. per checkpoint t = 1..T:
   a. per block of L steps (:func:`blocks`: L = :func:`block_len`, the last block shorter),
      see :func:`draw_block`: input noise (L, n, C, H, W), target noise (L, n, C, H, W) if
      ``noisy_target``, dropout masks (L, n, C_l, H, W) per dropout layer; DIP draws no
      noise; step j of the block uses index j;
   b. estimate noise (m, C, H, W), m = ``estimate_samples`` (not for DIP).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ride.defenders.ride.archs import ARCHS

if TYPE_CHECKING:
    from ride.defenders.ride.config import Ride

#: Range of the fixed DIP input ``z0 ~ U(0, DIP_INPUT_SCALE)``.
DIP_INPUT_SCALE = 0.1

#: Most random numbers drawn per image and block (2**23 elements: 32 MiB in float32).
BLOCK_ELEMENTS = 2**23


def keep_masks(uniform: Tensor, p: float) -> Tensor:
    """Scaled dropout keep mask ``1[u >= p] / (1 - p)`` from uniforms ``u`` (any shape)."""
    return (uniform >= p).to(uniform.dtype) / (1.0 - p)


def packed_dropout_bits(gen: torch.Generator, shape: Sequence[int], device: torch.device) -> Tensor:
    """Random bytes of ``shape`` (..., C/8): the packed keep bits of rate-0.5 dropout masks.

    One random 64-bit word per 8 bytes: for the paper's rate (0.5) a keep mask is one fair
    bit per element, and drawing 64 of them at once is about ten times cheaper on a CPU than
    one ``torch.rand`` value per element (single-threaded; it was a third of a batched step).
    """
    numel = math.prod(shape)
    words = torch.randint(
        -(2**63), 2**63 - 1, (-(-numel // 8),), generator=gen, device=device, dtype=torch.int64
    )
    return words.view(torch.uint8)[:numel].view(*shape)


def unpack_keep_masks(packed: Tensor, dtype: torch.dtype) -> Tensor:
    """Packed bits (..., k) uint8 -> scaled rate-0.5 keep masks (..., 8k) in {0, 2}.

    Bit b of byte j is element 8j + b; one table lookup per byte.
    """
    bits = torch.arange(8, device=packed.device)
    table = (((torch.arange(256, device=packed.device).unsqueeze(1) >> bits) & 1) * 2).to(dtype)
    masks = torch.index_select(table, 0, packed.reshape(-1).int())  # (numel, 8)
    return masks.view(*packed.shape[:-1], packed.shape[-1] * 8)


def dropout_channels(arch: str) -> list[int]:
    """Channels of the activations that dropout acts on, in layer order."""
    channels, dropout_layers = ARCHS[arch]
    return [channels[i + 1] for i in sorted(dropout_layers)]


def block_len(cfg: Ride, image_shape: Sequence[int]) -> int:
    """Steps per random block: as many of the K steps as fit in ``BLOCK_ELEMENTS`` per image."""
    assert cfg.arch is not None
    c, h, w = image_shape
    per_step = 0
    if cfg.variant in ("ride", "dae"):
        per_step += c * h * w * (2 if cfg.noisy_target else 1)
    if cfg.dropout > 0.0:
        per_step += sum(dropout_channels(cfg.arch)) * h * w
    per_step *= cfg.batch
    if per_step == 0:
        return cfg.iters
    return max(1, min(cfg.iters, BLOCK_ELEMENTS // per_step))


def blocks(cfg: Ride, image_shape: Sequence[int]) -> list[int]:
    """Lengths of the consecutive random blocks that cover one checkpoint's K steps."""
    size = block_len(cfg, image_shape)
    return [min(size, cfg.iters - start) for start in range(0, cfg.iters, size)]


@dataclass
class Block:
    """One image's random numbers for ``steps`` consecutive training steps.

    ``masks`` holds, per dropout layer, either scaled keep masks (L, n, C_l, H, W) or, when
    ``packed``, their keep bits (L, n, H, W, C_l/8) uint8 (see :func:`unpack_keep_masks`):
    the batched engine interleaves the images' bytes, 32 times less memory than their masks.
    """

    inp: Tensor | None  # (L, n, C, H, W) noisy inputs target + sigma * eps (None for DIP)
    s: Tensor | None  # (L, n, C, H, W) noisy targets (None for DIP or noise-free target)
    masks: list[Tensor]
    packed: bool = False

    def keep_masks(self, dtype: torch.dtype) -> list[Tensor]:
        """Per dropout layer the scaled keep masks (L, n, C_l, H, W) of this one image."""
        if not self.packed:
            return self.masks
        return [unpack_keep_masks(m, dtype).movedim(-1, -3) for m in self.masks]


def draw_block(gen: torch.Generator, cfg: Ride, target: Tensor, steps: int) -> Block:
    """Draw the next block of ``steps`` training steps from ``gen``; target is (1, C, H, W).

    Order: input noise, target noise (if ``noisy_target``), then the dropout masks of each
    dropout layer (random bits for rate 0.5, else uniforms); DIP/I-DIP draw no noise.
    """
    assert cfg.arch is not None
    device, dtype = target.device, target.dtype
    c, h, w = target.shape[1:]
    shape = (steps, cfg.batch, c, h, w)
    inp = s = None
    if cfg.variant in ("ride", "dae"):
        inp = target + cfg.sigma * torch.randn(shape, generator=gen, device=device, dtype=dtype)
        if cfg.noisy_target:
            s = target + cfg.sigma * torch.randn(shape, generator=gen, device=device, dtype=dtype)
    masks: list[Tensor] = []
    channels = dropout_channels(cfg.arch)
    packed = cfg.dropout == 0.5 and all(ch % 8 == 0 for ch in channels)
    if cfg.dropout > 0.0:
        for ch in channels:
            if packed:
                masks.append(packed_dropout_bits(gen, (steps, cfg.batch, h, w, ch // 8), device))
            else:
                u = torch.rand(
                    (steps, cfg.batch, ch, h, w), generator=gen, device=device, dtype=dtype
                )
                masks.append(keep_masks(u, cfg.dropout))
    return Block(inp, s, masks, packed)


def dip_input(gen: torch.Generator, target: Tensor) -> Tensor:
    """The fixed DIP input ``z0 ~ U(0, DIP_INPUT_SCALE)`` shaped like target (1, C, H, W)."""
    u = torch.rand(target.shape, generator=gen, device=target.device, dtype=target.dtype)
    return DIP_INPUT_SCALE * u


def estimate_noise(gen: torch.Generator, cfg: Ride, target: Tensor) -> Tensor:
    """The noise (m, C, H, W) of ``x_est = E_z[h(z)]``, m = ``estimate_samples``; target is
    (1, C, H, W)."""
    shape = (cfg.estimate_samples, *target.shape[1:])
    return torch.randn(shape, generator=gen, device=target.device, dtype=target.dtype)


# -- the grouped layout of the batched engine ----------------------------------------------


def grouped(per_image: Sequence[Tensor]) -> Tensor:
    """Stack per-image tensors (..., n, C, H, W) into the grouped layout (..., n, B*C, H, W).

    The result is stored channels-last (memory order ..., n, H, W, B*C), the layout the
    batched engine's convolutions run fastest in on CPU.
    """
    stacked = torch.stack([t.movedim(-3, -1) for t in per_image], dim=-2)  # (..., n, H, W, B, C)
    return stacked.flatten(-2, -1).movedim(-1, -3)


def grouped_or_none(per_image: Sequence[Tensor | None]) -> Tensor | None:
    tensors = [t for t in per_image if t is not None]
    return grouped(tensors) if tensors else None


def grouped_masks(per_image: Sequence[Block]) -> list[Tensor]:
    """Per dropout layer the B images' keep masks in the grouped layout.

    Unpacked masks: (L, n, B*C_l, H, W) as :func:`grouped`. Packed bits: the images' bytes
    interleaved, (L, n, H, W, B*C_l/8), unpacked one step at a time by :func:`step_masks` (the
    step's masks then stay in cache instead of a whole block's going through memory).
    """
    layers = range(len(per_image[0].masks))
    if not per_image[0].packed:
        return [grouped([blk.masks[k] for blk in per_image]) for k in layers]
    return [
        torch.stack([blk.masks[k] for blk in per_image], dim=-2).flatten(-2, -1) for k in layers
    ]  # each (L, n, H, W, B*C_l/8)


def step_masks(masks: Sequence[Tensor], j: int, packed: bool, dtype: torch.dtype) -> list[Tensor]:
    """Step j's grouped keep masks (n, B*C_l, H, W), channels-last, from :func:`grouped_masks`."""
    if not packed:
        return [m[j] for m in masks]
    return [unpack_keep_masks(m[j], dtype).movedim(-1, -3) for m in masks]
