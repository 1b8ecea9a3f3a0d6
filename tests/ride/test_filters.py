"""Median and TV baselines agree with scipy / scikit-image called directly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage.restoration import denoise_tv_bregman, denoise_tv_chambolle

from ride.defenders import (
    Median,
    TVBregman,
    TVChambolle,
    build_defender,
    median,
    tv_bregman,
    tv_chambolle,
)


def _images(channels: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(2, channels, 11, 9, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("kernel", [1, 3, 5, 7])
def test_median_equals_scipy_zero_padding(channels: int, kernel: int) -> None:
    x = _images(channels)
    out = median(x, kernel)
    for b in range(x.shape[0]):
        for c in range(channels):
            ref = ndimage.median_filter(x[b, c].numpy(), size=kernel, mode="constant", cval=0.0)
            np.testing.assert_array_equal(out[b, c].numpy(), ref)


@pytest.mark.parametrize("kernel", [0, 2, 4, -3])
def test_median_rejects_even_or_small_kernels(kernel: int) -> None:
    with pytest.raises(ValueError, match="odd int >= 1"):
        median(_images(1), kernel)
    with pytest.raises(ValueError, match="odd int >= 1"):
        Median(kernel=kernel)


@pytest.mark.parametrize("channels", [1, 3])
def test_tv_equals_skimage(channels: int) -> None:
    x = _images(channels, seed=1)
    breg = tv_bregman(x, 5.0)
    cham = tv_chambolle(x, 0.2)
    for b in range(x.shape[0]):
        img = (
            x[b, 0].double().numpy() if channels == 1 else np.moveaxis(x[b].double().numpy(), 0, -1)
        )
        axis = None if channels == 1 else -1
        ref_b = np.clip(denoise_tv_bregman(img, weight=5.0, channel_axis=axis), 0, 1)
        ref_c = np.clip(denoise_tv_chambolle(img, weight=0.2, channel_axis=axis), 0, 1)
        if channels > 1:
            ref_b, ref_c = np.moveaxis(ref_b, -1, 0), np.moveaxis(ref_c, -1, 0)
        np.testing.assert_allclose(breg[b].numpy().squeeze(), ref_b.squeeze(), atol=1e-6)
        np.testing.assert_allclose(cham[b].numpy().squeeze(), ref_c.squeeze(), atol=1e-6)
    assert breg.dtype == x.dtype and breg.shape == x.shape


def test_tv_weight_directions() -> None:
    """Bregman: smaller weight = smoother; Chambolle: larger weight = smoother."""
    x = _images(1, seed=2)

    def roughness(t: torch.Tensor) -> float:
        return float((t[..., 1:, :] - t[..., :-1, :]).abs().mean())

    assert roughness(tv_bregman(x, 1.0)) < roughness(tv_bregman(x, 20.0)) < roughness(x)
    assert roughness(tv_chambolle(x, 0.5)) < roughness(tv_chambolle(x, 0.05)) < roughness(x)


def test_filter_defenders_do_not_mutate_and_detach() -> None:
    x = _images(1).requires_grad_(True)
    keep = x.detach().clone()
    for cfg in (Median(), TVBregman(), TVChambolle()):
        out = build_defender(cfg)(x)
        assert out.shape == x.shape and not out.requires_grad
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert torch.equal(x.detach(), keep)


def test_tv_rejects_bad_weight() -> None:
    with pytest.raises(ValueError, match="TV weight must be > 0"):
        TVBregman(weight=0.0)
    with pytest.raises(ValueError, match="TV weight must be > 0"):
        tv_chambolle(_images(1), -1.0)
