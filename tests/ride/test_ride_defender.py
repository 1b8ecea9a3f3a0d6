"""RIDE and its variants (paper Alg. 1, Alg. 2, Eq. 7-9) on small seeded examples."""

from __future__ import annotations

import pytest
import torch

from ride.defenders import ReconstructionFCN, Ride, RideConfig, defender_config, ride
from ride.metrics import distances
from ride.seeding import generator_for

#: a tiny configuration so that each call takes milliseconds
TINY = RideConfig(iters=4, checkpoints=2)


def _images(n: int = 3, channels: int = 1, size: int = 10, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, channels, size, size, generator=generator_for(seed))


def _clean_and_noisy() -> tuple[torch.Tensor, torch.Tensor]:
    """A smooth 16x16 disc and a copy with strong Gaussian noise, both in [0, 1]."""
    yy, xx = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    disc = ((yy - 7.5) ** 2 + (xx - 7.5) ** 2 < 25).float() * 0.8 + 0.1
    clean = disc.view(1, 1, 16, 16)
    noise = 0.25 * torch.randn(clean.shape, generator=generator_for(3))
    return clean, (clean + noise).clamp(0, 1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ride_moves_noisy_image_towards_clean(seed: int) -> None:
    """A short, fast-learning run already removes much of the noise (paper Fig. 2(e), 6)."""
    clean, noisy = _clean_and_noisy()
    cfg = RideConfig(iters=100, checkpoints=3, lr=1e-2, sigma=0.3, estimate_samples=8)
    out = ride(noisy, cfg, seeds=[seed])
    before = float(distances(noisy, clean)["l2"][0])
    after = float(distances(out, clean)["l2"][0])
    assert after < 0.85 * before


def test_dae_equals_ride_with_alpha_one() -> None:
    x = _images()
    dae = ride(x, defender_config("dae", iters=4, checkpoints=2), seeds=[1, 2, 3])
    ride_a1 = ride(x, RideConfig(iters=4, checkpoints=2, alpha=1.0), seeds=[1, 2, 3])
    assert torch.equal(dae, ride_a1)
    assert not torch.equal(dae, ride(x, TINY, seeds=[1, 2, 3]))


@pytest.mark.parametrize("variant", ["ride", "dae", "dip", "idip"])
def test_same_seed_same_output_and_batch_independence(variant: str) -> None:
    x = _images()
    cfg = defender_config(variant, iters=4, checkpoints=2)
    assert isinstance(cfg, RideConfig)
    batched = ride(x, cfg, seeds=[5, 6, 7])
    assert torch.equal(batched, ride(x, cfg, seeds=[5, 6, 7]))
    singles = [ride(x[i : i + 1], cfg, seeds=[s]) for i, s in enumerate([5, 6, 7])]
    # the batched engine's grouped conv may round differently for another batch size
    torch.testing.assert_close(batched, torch.cat(singles), rtol=0.0, atol=1e-5)
    reference = ride(x, cfg, seeds=[5, 6, 7], engine="reference")
    ref_singles = [
        ride(x[i : i + 1], cfg, [s], engine="reference") for i, s in enumerate([5, 6, 7])
    ]
    assert torch.equal(reference, torch.cat(ref_singles))
    torch.testing.assert_close(batched, reference, rtol=0.0, atol=1e-5)
    assert not torch.equal(batched[:1], ride(x[:1], cfg, seeds=[8]))


def test_shape_range_and_input_untouched() -> None:
    x = _images(2, channels=3, size=8)
    keep = x.clone()
    out = Ride(RideConfig(arch="cifar", iters=3, checkpoints=2))(x, seeds=[0, 1])
    assert out.shape == x.shape and out.dtype == x.dtype
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert torch.equal(x, keep)


def test_works_under_no_grad_and_with_requires_grad_input() -> None:
    x = _images(1)
    with torch.no_grad():
        a = ride(x, TINY, seeds=[4])
    xg = x.clone().requires_grad_(True)
    b = ride(xg * 1.0, TINY, seeds=[4])
    assert torch.equal(a, b)
    assert not b.requires_grad
    with torch.inference_mode():
        c = ride(x, TINY, seeds=[4])
    assert torch.equal(a, c)


def test_seeds_none_uses_default_generator() -> None:
    x = _images(2)
    torch.manual_seed(0)
    a = ride(x, TINY)
    torch.manual_seed(0)
    assert torch.equal(a, ride(x, TINY))


def test_progress_reports_steps() -> None:
    calls: list[tuple[int, int]] = []
    Ride(TINY, progress=lambda done, total: calls.append((done, total)))(_images(2), [0, 1])
    assert calls == [(4, 16), (8, 16), (12, 16), (16, 16)]


def test_fcn_matches_table_3() -> None:
    gen = generator_for(0)
    convs = {
        arch: [(c.in_channels, c.out_channels) for c in ReconstructionFCN(arch, 0.5, gen).convs]
        for arch in ("mnist", "cifar", "imagenet")
    }
    assert convs["mnist"] == [(1, 16), (16, 16), (16, 16), (16, 1)]
    assert convs["cifar"] == [(3, 32), (32, 32), (32, 32), (32, 32), (32, 3)]
    assert convs["imagenet"] == [(3, 32)] + [(32, 32)] * 6 + [(32, 3)]
    net = ReconstructionFCN("mnist", 0.5, gen)
    assert net.dropout_layers == frozenset({1, 2})
    net.eval()
    with torch.no_grad():
        out = net(torch.randn(2, 1, 6, 6))
    assert out.shape == (2, 1, 6, 6) and float(out.min()) > 0 and float(out.max()) < 1


def test_fcn_dropout_masks_come_from_the_generator() -> None:
    net = ReconstructionFCN("mnist", 0.5, generator_for(0))
    z = torch.rand(1, 1, 6, 6)
    a = net(z, generator_for(1))
    assert torch.equal(a, net(z, generator_for(1)))
    assert not torch.equal(a, net(z, generator_for(2)))
    with pytest.raises(ValueError, match="generator"):
        net(z)


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match=r"shape \(B, C, H, W\)"):
        ride(torch.rand(1, 8, 8), TINY)
    nan = _images(1)
    nan[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        ride(nan, TINY)
    with pytest.raises(ValueError, match="expects 1 channel"):
        ride(_images(1, channels=3), TINY)
    with pytest.raises(ValueError, match="one seed per image"):
        ride(_images(2), TINY, seeds=[1])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ride(_images(1) + 2.0, TINY)
