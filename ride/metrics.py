"""Per-image distances between image batches (paper Fig. 2, 6 and 7: dist2gt, dist2adv)."""

from __future__ import annotations

from torch import Tensor

from ride._checks import check_images


def distances(a: Tensor, b: Tensor) -> dict[str, Tensor]:
    """Per-image distances (B,) between a and b (B, C, H, W), in [0, 1] pixel units.

    ``l1``: mean absolute difference per pixel (the paper's averaged Manhattan distance),
    ``l2``: Euclidean norm of the difference, ``linf``: largest absolute difference.
    """
    check_images(a, "a")
    check_images(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    diff = (a.detach() - b.detach().to(a.device, a.dtype)).flatten(1)  # (B, C*H*W)
    return {
        "l1": diff.abs().mean(dim=1),
        "l2": diff.pow(2).sum(dim=1).sqrt(),
        "linf": diff.abs().amax(dim=1),
    }
