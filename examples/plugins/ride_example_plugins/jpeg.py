"""JPEG compression as a defence (Dziugaite, Ghahramani and Roy, 2016; Guo et al., 2018)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ride.defenders.base import DefenderBase
from ride.registry import setting


@dataclass(frozen=True)
class JpegCompression(DefenderBase):
    """Encode each image as JPEG at ``quality`` and decode it: deterministic, and not
    differentiable (white-box attacks go through it with BPDA)."""

    quality: int = setting(75, key="jpeg_quality", sweep=True, help="JPEG quality, 1-95")

    name: ClassVar[str] = "jpeg"
    randomised: ClassVar[bool] = False
    differentiable: ClassVar[bool] = False

    def __post_init__(self) -> None:
        if isinstance(self.quality, bool) or not 1 <= self.quality <= 95:
            raise ValueError(f"quality must be an int in 1..95, got {self.quality}")

    def __call__(self, x: Tensor, seeds: Sequence[int] | None = None) -> Tensor:
        out = torch.empty_like(x)
        for i, image in enumerate(x.detach().cpu()):  # (C, H, W)
            pixels = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
            mode = "L" if pixels.shape[2] == 1 else "RGB"
            buffer = io.BytesIO()
            Image.fromarray(pixels.squeeze(2) if mode == "L" else pixels, mode).save(
                buffer, format="JPEG", quality=self.quality
            )
            decoded = np.asarray(Image.open(buffer).convert(mode), dtype=np.float32) / 255.0
            decoded = decoded.reshape(*decoded.shape[:2], -1)  # (H, W, C)
            out[i] = torch.from_numpy(decoded).permute(2, 0, 1).to(x.device, x.dtype)
        return out
