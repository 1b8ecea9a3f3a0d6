"""How many images the batched engine may fit at once: its working set against free memory."""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from ride.defenders.ride.archs import ARCHS
from ride.defenders.ride.streams import block_len

if TYPE_CHECKING:
    from ride.defenders.ride.config import Ride

#: Share of the free memory that ``max_batch="auto"`` sizes a fit for: a CUDA device's free
#: memory (``torch.cuda.mem_get_info``), or the host's available RAM on the CPU.
CUDA_MEMORY_FRACTION = 0.8
CPU_MEMORY_FRACTION = 0.5


def memory_budget_bytes(device: torch.device) -> int:
    """Memory one fit may use: ``CUDA_MEMORY_FRACTION`` of the device's free memory, or
    ``CPU_MEMORY_FRACTION`` of the host's available (free) RAM."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free * CUDA_MEMORY_FRACTION)
    available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return int(available * CPU_MEMORY_FRACTION)


def estimate_memory_bytes(
    cfg: Ride, image_shape: Sequence[int], batch: int, element_bytes: int = 4
) -> int:
    """Working set of the batched engine fitting ``batch`` images of ``image_shape`` (C, H, W).

    A linear model, per image: parameters with their gradients and two Adam moments
    (4 x params); the activations a training step keeps for backward and their gradients
    (3 tensors per conv layer: output, ReLU/dropout output, their gradient; n samples);
    one random block (``block_len`` steps of noise, with dropout bits packed 8 per byte)
    held twice while it is regrouped; one step's unpacked dropout masks. It is meant to pick
    ``max_batch`` with a margin, not to be exact to the byte. ``cfg.arch`` None: the network
    :func:`infer_arch` picks for ``image_shape``.

    Example:
        >>> from ride.defenders.ride import Ride
        >>> estimate_memory_bytes(Ride(), (1, 28, 28), 2) == 2 * estimate_memory_bytes(
        ...     Ride(), (1, 28, 28), 1)
        True
    """
    cfg = cfg.with_arch_for(image_shape)
    assert cfg.arch is not None
    c, h, w = (int(v) for v in image_shape)
    channels, dropout_layers = ARCHS[cfg.arch]
    params = sum(ci * co * 9 + co for ci, co in itertools.pairwise(channels))
    hw = h * w
    activations = 3 * sum(channels[1:]) * hw * cfg.batch
    dropout_channels = sum(channels[i + 1] for i in dropout_layers) if cfg.dropout > 0 else 0
    noise = (2 if cfg.noisy_target else 1) * c * hw * cfg.batch
    packed = dropout_channels * hw * cfg.batch / 8 / element_bytes  # in elements
    block = block_len(cfg, (c, h, w)) * (noise + packed) * 2
    step_masks = dropout_channels * hw * cfg.batch
    per_image = 4 * params + activations + block + step_masks + 4 * c * hw
    return int(batch * per_image * element_bytes)


def max_batch_for(cfg: Ride, image_shape: Sequence[int], budget_bytes: int) -> int:
    """The most images the batched engine should fit at once within ``budget_bytes`` (>= 1)."""
    per_image = estimate_memory_bytes(cfg, image_shape, 1)
    return max(1, int(budget_bytes // per_image))
