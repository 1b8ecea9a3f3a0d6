"""Cheap randomised defenders for the attack tests: seeded Gaussian draws per image."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor

from ride.seeding import generator_for


class NoisyDefender:
    """Seeded Gaussian noise per image, clamped; no gradient reaches ``x``. ``calls`` lists
    the seeds of every call."""

    name: ClassVar[str] = "noisy"
    randomised: ClassVar[bool] = True

    def __init__(self) -> None:
        self.calls: list[list[int]] = []

    def __call__(self, x: Tensor, seeds: Sequence[int] | None = None) -> Tensor:
        assert seeds is not None
        self.calls.append(list(seeds))
        noise = torch.stack(
            [torch.randn(x.shape[1:], generator=generator_for(int(s))) for s in seeds]
        )
        return (x.detach() + 0.2 * noise).clamp(0.0, 1.0)


class NoisyAffine:
    """A differentiable randomised defender: a seeded per-pixel gain and offset, clamped."""

    name: ClassVar[str] = "noisy-affine"
    differentiable: ClassVar[bool] = True
    randomised: ClassVar[bool] = True

    def __call__(self, x: Tensor, seeds: Sequence[int] | None = None) -> Tensor:
        assert seeds is not None
        noise = torch.stack(
            [torch.randn((2, *x.shape[1:]), generator=generator_for(int(s))) for s in seeds]
        )
        return (x * (1.0 + 0.5 * noise[:, 0]) + 0.2 * noise[:, 1]).clamp(0.0, 1.0)
