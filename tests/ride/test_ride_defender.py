"""RIDE and its variants (paper Alg. 1, Alg. 2, Eq. 7-9) on small seeded examples."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import pytest
import torch

from ride.defenders.ride import ReconstructionFCN, Ride, infer_arch, ride
from ride.metrics import distances
from ride.registry import DEFENDERS, settings_of, with_execution
from ride.seeding import generator_for

#: a tiny configuration so that each call takes milliseconds
TINY = Ride(iters=4, checkpoints=2)


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
    cfg = Ride(iters=100, checkpoints=3, lr=1e-2, sigma=0.3, estimate_samples=8)
    out = ride(noisy, cfg, seeds=[seed])
    before = float(distances(noisy, clean)["l2"][0])
    after = float(distances(out, clean)["l2"][0])
    assert after < 0.85 * before


def test_dae_equals_ride_with_alpha_one() -> None:
    x = _images()
    dae = ride(x, DEFENDERS["dae"].build(iters=4, checkpoints=2), seeds=[1, 2, 3])
    ride_a1 = ride(x, Ride(iters=4, checkpoints=2, alpha=1.0), seeds=[1, 2, 3])
    assert torch.equal(dae, ride_a1)
    assert not torch.equal(dae, ride(x, TINY, seeds=[1, 2, 3]))


@pytest.mark.parametrize("variant", ["ride", "dae", "dip", "idip"])
def test_same_seed_same_output_and_batch_independence(variant: str) -> None:
    x = _images()
    cfg = DEFENDERS[variant].build(iters=4, checkpoints=2)
    assert isinstance(cfg, Ride) and cfg.variant == variant
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
    out = Ride(arch="cifar", iters=3, checkpoints=2)(x, seeds=[0, 1])
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
    progress = lambda done, total: calls.append((done, total))  # noqa: E731
    dataclasses.replace(TINY, progress=progress)(_images(2), [0, 1])
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
        ride(_images(1, channels=3), dataclasses.replace(TINY, arch="mnist"))
    with pytest.raises(ValueError, match=r"shape \(2, 10, 10\)"):  # no network for 2 channels
        ride(_images(1, channels=2), TINY)
    with pytest.raises(ValueError, match="one seed per image"):
        ride(_images(2), TINY, seeds=[1])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ride(_images(1) + 2.0, TINY)


@pytest.mark.parametrize(
    ("shape", "arch"),
    [
        ((1, 28, 28), "mnist"),
        ((1, 100, 7), "mnist"),
        ((3, 32, 32), "cifar"),
        ((3, 64, 64), "cifar"),
        ((3, 65, 32), "imagenet"),
        ((3, 224, 224), "imagenet"),
    ],
)
def test_infer_arch_follows_table_3(shape: tuple[int, int, int], arch: str) -> None:
    assert infer_arch(shape) == arch
    assert Ride.for_images(shape) == {"arch": arch}
    assert Ride().with_arch_for(shape).arch == arch
    assert Ride(arch="mnist").with_arch_for(shape).arch == "mnist"  # a set arch is kept


@pytest.mark.parametrize("shape", [(2, 28, 28), (4, 32, 32), (28, 28), (1, 1, 28, 28)])
def test_infer_arch_refuses_other_shapes(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=re.escape(str(shape))):
        infer_arch(shape)


def test_arch_none_takes_the_network_of_the_images() -> None:
    """Without an arch, 3-channel 8x8 images get the CIFAR network: the same result as
    ``arch="cifar"``; the inferred arch does not change the id."""
    x = _images(2, channels=3, size=8)
    inferred = Ride(iters=3, checkpoints=1)(x, seeds=[0, 1])
    assert torch.equal(inferred, Ride(arch="cifar", iters=3, checkpoints=1)(x, seeds=[0, 1]))
    assert Ride().id == Ride(arch="cifar").id == Ride(arch="imagenet").id
    assert Ride().params()["arch"] is None
    assert Ride(arch="cifar").params()["arch"] == "cifar"


def test_ids_and_params_are_those_stored_in_results() -> None:
    """The ids and params of the former RideConfig: result files keep them."""
    assert Ride().id == "ride-K2000-T5-a0.9-s0.5"
    assert Ride(iters=300).id == "ride-K300-T5-a0.9-s0.5"
    assert Ride(variant="dae", alpha=1.0).id == "dae-K2000-T5-a1-s0.5"
    assert Ride(lr=1e-3).id == "ride-K2000-T5-a0.9-s0.5-83e2934c"
    assert Ride(dropout=0.3).id == "ride-K2000-T5-a0.9-s0.5-9d940af1"
    assert Ride(arch="cifar", batch=2).id == "ride-K2000-T5-a0.9-s0.5-64066608"
    idip = Ride(variant="idip", alpha=0.5, sigma=0.25, loss="l1")
    assert idip.id == "idip-K2000-T5-a0.5-s0.25-fce4df2b"
    assert Ride(arch="mnist").params() == {
        "name": "ride",
        "variant": "ride",
        "arch": "mnist",
        "iters": 2000,
        "checkpoints": 5,
        "alpha": 0.9,
        "sigma": 0.5,
        "lr": 1e-4,
        "weight_decay": 1e-4,
        "batch": 1,
        "dropout": 0.5,
        "estimate_samples": 1,
        "reset_optimizer_each_checkpoint": True,
        "noisy_target": True,
        "return_iterate": False,
        "loss": "mse",
    }
    assert Ride(variant="idip").name == "idip"


def test_execution_fields_change_neither_id_params_nor_equality() -> None:
    plain = Ride(iters=4, checkpoints=2)
    tuned = Ride(
        iters=4,
        checkpoints=2,
        precision="bf16",
        max_batch="auto",
        engine="reference",
        progress=lambda done, total: None,
    )
    assert tuned == plain and hash(tuned) == hash(plain)
    assert tuned.id == plain.id and tuned.params() == plain.params()
    assert repr(tuned) == repr(plain)
    assert dataclasses.replace(plain, max_batch=3) == plain
    assert Ride(iters=5, checkpoints=2, precision="bf16") != plain  # a setting does change it


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ({"precision": "half"}, "precision"),
        ({"max_batch": 0}, "max_batch"),
        ({"max_batch": "all"}, "max_batch"),
        ({"engine": "fast"}, "engine"),
        ({"arch": "svhn"}, "arch"),
        ({"variant": "dae", "alpha": 0.9}, "alpha"),
        ({"iters": 0}, "iters"),
    ],
)
def test_bad_settings_name_the_parameter(bad: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Ride(**bad)


def test_registry_holds_the_four_variants() -> None:
    """``ride``, ``dae``, ``dip``, ``idip``: one class, the name fixing the variant (and alpha =
    1 for DAE and DIP, paper "Interpolation Parameter"; DIP's input is noise-free, so its names
    fix sigma at the default); only keyed settings are fed by a run."""
    implied = {
        "ride": {"variant": "ride"},
        "dae": {"variant": "dae", "alpha": 1.0},
        "dip": {"variant": "dip", "alpha": 1.0, "sigma": 0.5},
        "idip": {"variant": "idip", "sigma": 0.5},
    }
    for name, settings in implied.items():
        entry = DEFENDERS[name]
        assert entry.cls is Ride and dict(entry.implied) == settings and entry.summary
        assert entry.build() == Ride(**settings)
        assert entry.build().id.startswith(f"{name}-K2000-T5-")
    assert DEFENDERS["dae"].build(iters=9) == Ride(variant="dae", alpha=1.0, iters=9)
    with pytest.raises(ValueError, match="unknown setting"):
        DEFENDERS["dae"].build(alpha=0.5)  # the name fixes alpha
    fed = DEFENDERS["ride"].fed()
    assert {n: m.key for n, m in fed.items()} == {
        "iters": "ride_iters",
        "checkpoints": "ride_checkpoints",
        "alpha": "alpha",
        "sigma": "sigma",
        "lr": "lr",
        "weight_decay": "weight_decay",
        "dropout": "dropout",
    }
    assert fed["iters"].run_default == 200 and Ride().iters == 2000
    assert DEFENDERS["ride"].swept() == {"alpha": "alpha", "sigma": "sigma", "dropout": "dropout"}
    assert DEFENDERS["dae"].swept() == {"sigma": "sigma", "dropout": "dropout"}
    assert DEFENDERS["idip"].swept() == {"alpha": "alpha", "dropout": "dropout"}
    assert DEFENDERS["dip"].swept() == {"dropout": "dropout"}  # Fig. 5a: DIP with and without
    assert all(meta.help for meta in settings_of(Ride).values())
    assert list(settings_of(Ride)) == [n for n in Ride().params() if n != "name"]
    assert with_execution(Ride(), precision="bf16", max_batch=4).max_batch == 4
