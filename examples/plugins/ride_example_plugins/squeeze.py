"""Feature squeezing (Xu, Evans and Qi, 2018): a defender that is a plain function.

A defender without settings needs no class: ride-pipeline wraps a function
``(x, seeds) -> x'``, names it after the function (its id is ``squeeze``) and takes it to be
randomised and not differentiable unless it says otherwise, as this one does.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def squeeze(x: Tensor, seeds: Sequence[int] | None = None) -> Tensor:
    """Round every pixel to 3 bits (8 grey levels).

    Deterministic, and not differentiable: its gradient is zero almost everywhere, so
    white-box attacks go through it with BPDA.
    """
    return torch.round(x * 7) / 7


squeeze.randomised = False  # type: ignore[attr-defined]  # the same output whatever the seeds
