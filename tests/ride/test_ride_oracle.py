"""Alg. 2 / Eq. 7-9 of the paper as a plain loop, written here from the paper, equals both
engines when fed the same noise and dropout masks.

Lin, Pfister and Zhang (arXiv 1909.06271), "Self-Supervised Data Estimation": Alg. 1 (DAE):
K steps of ``w <- w - eta dL/dw`` on ``L = MSE(s, h(z))`` with ``s, z ~ N(x_target, sigma)``
(Eq. 7), optimised with Adam (lr 1e-4, weight decay 1e-4; "Implementation of RIDE"), then
``x_est = E_z[h(z)]``; Alg. 2 (RIDE): ``x^(0) = x_adv``, per checkpoint t = 1..T run DAE
from ``w^(t-1)`` against ``x^(t-1)``, then ``x^(t) = alpha x^(t-1) + (1 - alpha) x_est^(t)``
(Eq. 9); return ``x_est^(T)``.

The oracle uses only torch and the network class (for the initial weights ``w^(0)``); the
engines' draws are recorded at their one seam, the ``FitEngine.draw_*`` methods.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from ride.defenders.ride import (
    BatchedEngine,
    FitEngine,
    ReconstructionFCN,
    ReferenceEngine,
    Ride,
    algorithm_2,
    ride,
)
from ride.defenders.ride.streams import Block
from ride.seeding import generator_for

#: Table 3, MNIST: dropout follows conv2 and conv3 (0-based 1 and 2); no dropout at the output.
MNIST_DROPOUT_AFTER = (1, 2)
SEEDS = [11, 12]
TOL = 1e-10  # float64: the fused Adam of the engines and torch's Adam round differently


def _recording(engine: type[FitEngine]) -> Any:
    """``engine`` that keeps, per image, every draw it makes (the same tensors it uses)."""

    class Recording(engine):  # type: ignore[valid-type, misc]
        def __init__(self, x: Tensor, cfg: Ride, seeds: list[int]) -> None:
            self.drawn: list[dict[str, Any]] = [
                {"z0": None, "blocks": [], "noise": []} for _ in seeds
            ]
            super().__init__(x, cfg, seeds)

        def draw_dip_input(self, i: int, x: Tensor) -> Tensor:
            z0 = super().draw_dip_input(i, x)
            self.drawn[i]["z0"] = z0
            return z0

        def draw_block(self, i: int, target: Tensor, steps: int) -> Block:
            block = super().draw_block(i, target, steps)
            self.drawn[i]["blocks"].append((target.detach().clone(), block))
            return block

        def draw_estimate_noise(self, i: int, target: Tensor) -> Tensor:
            noise = super().draw_estimate_noise(i, target)
            self.drawn[i]["noise"].append(noise)
            return noise

    return Recording


def _masks_of(block: Block, p: float) -> list[Tensor]:
    """The block's scaled dropout keep masks, (L, n, C_l, H, W) per layer, unpacked here:
    for rate 0.5 the engines keep one random bit per element, bit b of byte j being channel
    8j + b."""
    if not block.packed:
        return block.masks
    out = []
    for packed in block.masks:  # (L, n, H, W, C_l / 8) uint8
        bits = (packed.long().unsqueeze(-1) >> torch.arange(8)) & 1  # (L, n, H, W, C_l/8, 8)
        keep = bits.flatten(-2).movedim(-1, 2)  # (L, n, C_l, H, W)
        out.append(keep.to(torch.float64) / (1.0 - p))
    return out


def _h(z: Tensor, weights: list[Tensor], masks: list[Tensor] | None) -> Tensor:
    """The network h of Table 3: 3x3 convs, ReLU, dropout after conv2 and conv3, sigmoid."""
    out = z
    for i in range(0, len(weights), 2):
        out = F.conv2d(out, weights[i], weights[i + 1], padding=1)
        if i == len(weights) - 2:
            return torch.sigmoid(out)
        out = torch.relu(out)
        if masks is not None and i // 2 in MNIST_DROPOUT_AFTER:
            out = out * masks[MNIST_DROPOUT_AFTER.index(i // 2)]
    raise AssertionError("unreachable")


def _oracle(x: Tensor, cfg: Ride, seed: int, drawn: dict[str, Any]) -> Tensor:
    """Alg. 2 on one image x (1, C, H, W), fed the recorded noise and masks."""
    net = ReconstructionFCN("mnist", cfg.dropout, generator_for(seed), dtype=x.dtype)
    weights = [p.detach().clone().requires_grad_() for layer in net.layers() for p in layer]
    blocks, noises = iter(drawn["blocks"]), iter(drawn["noise"])
    x_t = x  # x^(0) = x_adv
    x_est = x_t
    for _t in range(cfg.checkpoints):
        # DAE(x^(t-1), w^(t-1), ...): Alg. 1 from the carried-over weights, a fresh Adam
        adam = torch.optim.Adam(weights, lr=cfg.lr, weight_decay=cfg.weight_decay)
        k = 0
        while k < cfg.iters:
            target, block = next(blocks)
            torch.testing.assert_close(target, x_t, rtol=0.0, atol=TOL)  # Eq. 7 around x^(t-1)
            masks = _masks_of(block, cfg.dropout) if cfg.dropout > 0 else None
            for j in range(block.inp.shape[0]):
                z, s = block.inp[j], block.s[j]  # (n, C, H, W): (s, z) ~ N(x^(t-1), sigma)^2
                assert not torch.equal(z, s)  # drawn independently
                out = _h(z, weights, None if masks is None else [m[j] for m in masks])
                loss = ((out - s) ** 2).mean()  # least-square loss l_h
                adam.zero_grad()
                loss.backward()
                adam.step()
                k += 1
        with torch.no_grad():
            eps = next(noises)  # (m, C, H, W)
            x_est = _h(x_t + cfg.sigma * eps, weights, None).mean(dim=0, keepdim=True)
            x_t = cfg.alpha * x_t + (1.0 - cfg.alpha) * x_est  # Eq. 9
    assert next(blocks, None) is None and next(noises, None) is None  # every draw used
    return x_est.clamp(0.0, 1.0)  # x_est^(T)


def _images() -> Tensor:
    return torch.rand(2, 1, 8, 8, generator=generator_for(5), dtype=torch.float64)


@pytest.mark.parametrize("dropout", [0.5, 0.3, 0.0])
def test_oracle_of_algorithm_2_equals_both_engines(dropout: float) -> None:
    cfg = Ride(arch="mnist", iters=3, checkpoints=2, dropout=dropout, lr=1e-2)
    x = _images()
    reference = [_recording(ReferenceEngine)(x[i : i + 1], cfg, [s]) for i, s in enumerate(SEEDS)]
    by_reference = torch.cat([algorithm_2(engine) for engine in reference])
    batched = _recording(BatchedEngine)(x, cfg, SEEDS)
    by_batched = algorithm_2(batched)
    oracle = torch.cat(
        [_oracle(x[i : i + 1], cfg, s, reference[i].drawn[0]) for i, s in enumerate(SEEDS)]
    )
    torch.testing.assert_close(by_reference, oracle, rtol=0.0, atol=TOL)
    torch.testing.assert_close(by_batched, oracle, rtol=0.0, atol=TOL)
    # the recording engines are the engines: ride() gives the same images
    assert torch.equal(by_reference, ride(x, cfg, SEEDS, engine="reference"))
    assert torch.equal(by_batched, ride(x, cfg, SEEDS))
    # and both engines draw the same numbers for an image (the noisy copies up to the
    # rounding of their target x^(t-1); the masks bit for bit)
    for i in range(len(SEEDS)):
        ours, theirs = reference[i].drawn[0], batched.drawn[i]
        assert torch.equal(ours["z0"], theirs["z0"])
        for (_, a), (_, b) in zip(ours["blocks"], theirs["blocks"], strict=True):
            torch.testing.assert_close(a.inp, b.inp, rtol=0.0, atol=TOL)
            torch.testing.assert_close(a.s, b.s, rtol=0.0, atol=TOL)
            assert all(torch.equal(m, n) for m, n in zip(a.masks, b.masks, strict=True))
        assert all(torch.equal(a, b) for a, b in zip(ours["noise"], theirs["noise"], strict=True))


def test_oracle_moves_away_from_a_wrong_reading() -> None:
    """The oracle is sensitive to the paper's choices: without Eq. 9 (alpha 1, i.e. DAE)
    the same draws give another image, so the equality above pins the interpolation."""
    cfg = Ride(arch="mnist", iters=3, checkpoints=2, lr=1e-2)
    x = _images()[:1]
    engine = _recording(ReferenceEngine)(x, cfg, SEEDS[:1])
    algorithm_2(engine)
    alg2 = _oracle(x, cfg, SEEDS[0], engine.drawn[0])
    dae = Ride(arch="mnist", variant="dae", alpha=1.0, iters=3, checkpoints=2, lr=1e-2)
    with pytest.raises(AssertionError):  # the second checkpoint's target is x^(1), not x^(0)
        _oracle(x, dae, SEEDS[0], engine.drawn[0])
    assert (alg2 - x).abs().max() > 1e-3
