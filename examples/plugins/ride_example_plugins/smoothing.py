"""Gaussian-noise smoothing with a per-pixel majority vote: a randomised defender."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from ride.defenders.base import DefenderBase
from ride.registry import setting


@dataclass(frozen=True)
class NoiseVote(DefenderBase):
    """Draw ``votes`` copies of the image with Gaussian noise of std ``sigma``, binarise each
    at 0.5 and keep, per pixel, the majority (the vote share, in [0, 1]). Randomised: image
    i's draws are seeded by ``seeds[i]``, so white-box attacks average it with EOT; the
    threshold makes it non-differentiable (BPDA)."""

    sigma: float = setting(0.25, key="vote_sigma", sweep=True, help="noise std in [0, 1] units")
    votes: int = setting(15, key="vote_count", help="noisy copies per image (odd)")

    name: ClassVar[str] = "noise-vote"
    randomised: ClassVar[bool] = True
    differentiable: ClassVar[bool] = False

    def __post_init__(self) -> None:
        if not self.sigma > 0:
            raise ValueError(f"sigma must be > 0, got {self.sigma}")
        if isinstance(self.votes, bool) or self.votes < 1 or self.votes % 2 == 0:
            raise ValueError(f"votes must be an odd int >= 1, got {self.votes}")

    def __call__(self, x: Tensor, seeds: Sequence[int] | None = None) -> Tensor:
        seeds = list(seeds) if seeds is not None else list(range(len(x)))
        out = torch.empty_like(x)
        for i, image in enumerate(x.detach()):
            gen = torch.Generator(device=x.device).manual_seed(int(seeds[i]))
            noise = torch.randn((self.votes, *image.shape), generator=gen, device=x.device)
            ones = ((image + self.sigma * noise) > 0.5).to(x.dtype)  # (votes, C, H, W)
            out[i] = (ones.mean(dim=0) > 0.5).to(x.dtype)
        return out
