"""The batched RIDE engine (one grouped conv over B networks) against the per-image reference."""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Sequence

import pytest
import torch

from ride.defenders import build_defender
from ride.defenders.ride import BatchedEngine, Ride, ride
from ride.defenders.ride.streams import blocks
from ride.registry import DEFENDERS
from ride.seeding import generator_for

#: the package ``ride.defenders.ride`` (its name is shadowed by the function ``ride``)
#: The module whose names ride() looks up when it runs (patched below).
RIDE_DEFEND = importlib.import_module("ride.defenders.ride.defend")

#: float32 tolerance of batched vs reference: the grouped convolution sums in another order.
ATOL_F32 = 1e-5

SHAPES = {"mnist": (1, 28), "cifar": (3, 32)}


def _x(b: int, arch: str, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    c, size = SHAPES[arch]
    return torch.rand(b, c, size, size, generator=generator_for(seed), dtype=dtype)


@pytest.mark.parametrize("b", [2, 5])
@pytest.mark.parametrize("arch", ["mnist", "cifar"])
@pytest.mark.parametrize("variant", ["ride", "dip"])
def test_batched_equals_reference(b: int, arch: str, variant: str) -> None:
    cfg = DEFENDERS[variant].build(arch=arch, iters=3, checkpoints=2)
    seeds = list(range(10, 10 + b))
    x64 = _x(b, arch, torch.float64)
    ref = ride(x64, cfg, seeds, engine="reference")
    out = ride(x64, cfg, seeds)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, ref, rtol=0.0, atol=1e-10)
    x32 = x64.float()
    torch.testing.assert_close(
        ride(x32, cfg, seeds), ride(x32, cfg, seeds, engine="reference"), rtol=0.0, atol=ATOL_F32
    )


@pytest.mark.parametrize("variant", ["dae", "idip"])
def test_batched_equals_reference_all_flags(variant: str) -> None:
    """Every Ride flag off its default, and several blocks of random numbers per fit."""
    cfg = DEFENDERS[variant].build(
        arch="cifar",
        iters=5,
        checkpoints=2,
        batch=2,
        dropout=0.3,
        estimate_samples=3,
        reset_optimizer_each_checkpoint=False,
        noisy_target=False,
        return_iterate=True,
        loss="l1",
        **({"alpha": 0.5} if variant == "idip" else {}),
    )
    x = _x(3, "cifar", torch.float64, seed=1)
    ref = dataclasses.replace(cfg, engine="reference")(x, [1, 2, 3])
    torch.testing.assert_close(cfg(x, [1, 2, 3]), ref, rtol=0.0, atol=1e-10)


def test_batched_equals_reference_across_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    streams = importlib.import_module("ride.defenders.ride.streams")
    monkeypatch.setattr(streams, "BLOCK_ELEMENTS", 14000)  # 2 steps per block
    cfg = Ride(iters=5, checkpoints=2, batch=2, noisy_target=True)
    assert blocks(cfg.with_arch_for((1, 10, 10)), (1, 10, 10)) == [2, 2, 1]
    x = torch.rand(2, 1, 10, 10, generator=generator_for(2), dtype=torch.float64)
    ref = ride(x, cfg, [4, 5], engine="reference")
    torch.testing.assert_close(ride(x, cfg, [4, 5]), ref, rtol=0.0, atol=1e-10)


def test_other_images_do_not_change_an_image() -> None:
    cfg = Ride(iters=4, checkpoints=2)
    x = _x(3, "mnist", torch.float64)
    y = x.clone()
    y[1] = torch.rand(y[1].shape, generator=generator_for(9), dtype=y.dtype)
    a = ride(x, cfg, [1, 2, 3])
    c = ride(y, cfg, [1, 2, 3])
    assert torch.equal(a[0], c[0]) and torch.equal(a[2], c[2])
    assert not torch.equal(a[1], c[1])


def test_shape_range_input_untouched_and_grad_context() -> None:
    cfg = Ride(arch="cifar", iters=3, checkpoints=2)
    x = _x(2, "cifar", torch.float32)
    keep = x.clone()
    xg = x.clone().requires_grad_(True)
    with torch.enable_grad():
        out = ride(xg, cfg, [0, 1])
        loss = (xg * 2.0).sum()  # the caller's graph keeps working
    loss.backward()
    assert xg.grad is not None and torch.equal(xg.grad, torch.full_like(x, 2.0))
    assert not out.requires_grad
    assert out.shape == x.shape and out.dtype == x.dtype
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert torch.equal(xg.detach(), keep)
    with torch.no_grad():
        assert torch.equal(out, ride(x, cfg, [0, 1]))


def test_unknown_engine() -> None:
    with pytest.raises(ValueError, match="engine"):
        ride(_x(1, "mnist", torch.float32), Ride(iters=1, checkpoints=1), [0], engine="x")  # type: ignore[arg-type]


def test_packed_dropout_masks_have_the_dropout_distribution() -> None:
    """Rate 0.5 masks from random bits: values {0, 2}, half kept, no pattern, seeded."""
    from ride.defenders.ride.streams import packed_dropout_bits, unpack_keep_masks

    cpu = torch.device("cpu")
    shape = (7, 1, 28, 28, 2)  # (L, n, H, W, C/8): 16 channels, numel not a multiple of 8
    packed = packed_dropout_bits(generator_for(3), shape, cpu)
    assert packed.shape == shape and packed.dtype == torch.uint8
    masks = unpack_keep_masks(packed, torch.float32)
    assert masks.shape == (7, 1, 28, 28, 16)
    assert set(masks.unique().tolist()) == {0.0, 2.0}
    flat = masks.flatten() / 2
    n = flat.numel()
    assert abs(float(flat.mean()) - 0.5) < 4 * 0.5 / n**0.5  # within 4 sigma
    for lag in (1, 8, 16, 64):  # neighbours, across byte and word boundaries: uncorrelated
        corr = torch.corrcoef(torch.stack([flat[:-lag], flat[lag:]]))[0, 1]
        assert abs(float(corr)) < 4 / n**0.5, lag
    assert torch.equal(packed, packed_dropout_bits(generator_for(3), shape, cpu))
    assert not torch.equal(packed, packed_dropout_bits(generator_for(4), shape, cpu))
    # bit b of byte j is element 8j + b
    byte = torch.tensor([[0b10000001, 0b00000010]], dtype=torch.uint8)
    expected = [*[2, 0, 0, 0, 0, 0, 0, 2], *[0, 2, 0, 0, 0, 0, 0, 0]]
    assert unpack_keep_masks(byte, torch.float64).tolist() == [expected]


def test_memory_estimate_is_linear_in_the_batch_and_picks_max_batch() -> None:
    from ride.defenders.ride import estimate_memory_bytes, max_batch_for

    for arch, shape in (
        ("mnist", (1, 28, 28)),
        ("cifar", (3, 32, 32)),
        ("imagenet", (3, 224, 224)),
    ):
        cfg = Ride(arch=arch)  # type: ignore[arg-type]
        one = estimate_memory_bytes(cfg, shape, 1)
        assert one > 0
        assert estimate_memory_bytes(cfg, shape, 8) == pytest.approx(8 * one, rel=1e-6)
        assert max_batch_for(cfg, shape, 7 * one) == 7
        assert max_batch_for(cfg, shape, one // 2) == 1  # never zero
    small = estimate_memory_bytes(Ride(arch="mnist"), (1, 28, 28), 1)
    large = estimate_memory_bytes(Ride(arch="imagenet"), (3, 224, 224), 1)
    assert large > 10 * small
    # without an arch, the network of the images' shape
    assert estimate_memory_bytes(Ride(), (3, 224, 224), 1) == large


def test_max_batch_fits_the_images_in_groups() -> None:
    x = torch.rand(5, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    cfg = Ride(iters=3, checkpoints=2)
    seeds = [11, 12, 13, 14, 15]
    grouped = ride(x, cfg, seeds, max_batch=2)
    expected = torch.cat([ride(x[i : i + 2], cfg, seeds[i : i + 2]) for i in (0, 2, 4)])
    assert torch.equal(grouped, expected)
    with pytest.raises(ValueError, match="max_batch must be an int >= 1"):
        ride(x, cfg, seeds, max_batch=0)


def test_max_batch_auto_sizes_the_groups_from_the_free_memory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``max_batch="auto"``: as many images per group as the memory estimate fits in the
    budget (here two of five), so the result is the ``max_batch=2`` one."""
    from ride.defenders.ride import estimate_memory_bytes, memory_budget_bytes

    assert memory_budget_bytes(torch.device("cpu")) > 0
    x = torch.rand(5, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    cfg = Ride(iters=3, checkpoints=1)
    seeds = [1, 2, 3, 4, 5]
    two_images = int(2.5 * estimate_memory_bytes(cfg, (1, 28, 28), 1))
    monkeypatch.setattr(RIDE_DEFEND, "memory_budget_bytes", lambda device: two_images)
    groups: list[int] = []

    class Counting(BatchedEngine):
        def __init__(self, x: torch.Tensor, cfg: Ride, seeds: Sequence[int]) -> None:
            groups.append(x.shape[0])
            super().__init__(x, cfg, seeds)

    monkeypatch.setattr(RIDE_DEFEND, "BatchedEngine", Counting)
    auto = ride(x, cfg, seeds, max_batch="auto")
    assert groups == [2, 2, 1]
    assert torch.equal(auto, ride(x, cfg, seeds, max_batch=2))
    with pytest.raises(ValueError, match="max_batch must be an int >= 1 or 'auto'"):
        ride(x, cfg, seeds, max_batch="all")  # type: ignore[arg-type]


@pytest.mark.parametrize("precision", ["fp32", "tf32"])
def test_fit_precision_sets_cudnn_and_restores_it(precision: str) -> None:
    """On CUDA, fp32 turns cuDNN's default TF32 convolutions off and tf32 on, for the fit
    only (the flag is plain process state: checked here without a GPU)."""
    from ride.defenders.ride import fit_precision

    conv = torch.backends.cudnn.conv  # type: ignore[attr-defined]
    before = conv.fp32_precision
    with fit_precision(precision, torch.device("cuda")):
        assert conv.fp32_precision == ("ieee" if precision == "fp32" else "tf32")
    assert conv.fp32_precision == before
    with pytest.raises(RuntimeError, match="boom"), fit_precision(precision, torch.device("cuda")):
        raise RuntimeError("boom")
    assert conv.fp32_precision == before


@pytest.mark.slow
def test_bf16_fits_in_bfloat16_and_returns_the_input_dtype() -> None:
    """bf16: autocast convolutions (so not the fp32 result), an image of the input's dtype in
    [0, 1] close to fp32's, the same in both engines, and no autocast left behind."""
    cfg = Ride(iters=40, checkpoints=1, lr=1e-3)
    x = _x(2, "mnist", torch.float32)
    seeds = [3, 4]
    full = ride(x, cfg, seeds)
    half = ride(x, cfg, seeds, precision="bf16")
    assert half.dtype == torch.float32 and half.shape == x.shape
    assert float(half.min()) >= 0.0 and float(half.max()) <= 1.0
    assert not torch.equal(half, full)
    # each step's forward uses that step's weights (a stale bf16 weight cache: mean 0.035)
    assert float((half - full).abs().mean()) < 0.01
    assert float((half - full).abs().max()) < 0.05
    reference = ride(x, cfg, seeds, precision="bf16", engine="reference")
    assert float((half - reference).abs().max()) < 0.05
    assert not torch.is_autocast_enabled("cpu")
    assert torch.equal(dataclasses.replace(cfg, precision="bf16")(x, seeds), half)


def test_precision_errors() -> None:
    x = _x(1, "mnist", torch.float32)
    cfg = Ride(iters=1, checkpoints=1)
    with pytest.raises(ValueError, match="precision 'tf32' needs a CUDA device"):
        ride(x, cfg, [0], precision="tf32")
    with pytest.raises(ValueError, match="unknown precision 'fp16'; choose from: fp32, tf32, bf16"):
        ride(x, cfg, [0], precision="fp16")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown precision"):
        Ride(iters=1, checkpoints=1, precision="half")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown precision"):  # filters too: a typo is a typo
        build_defender(DEFENDERS["median"].build(), precision="half")  # type: ignore[arg-type]
