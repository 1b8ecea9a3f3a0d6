"""One EOT step of the white-box attacks is the sign of the mean of the per-draw gradients
(Athalye, Carlini and Wagner, 2018: Expectation over Transformation), computed here by hand."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ride.attacks import BPDAEOT, Adaptive
from ride.defenders.base import DefenderBase
from ride.seeding import derive_seed, generator_for

EOT, EPS, STEP = 4, 0.05, 0.01


@dataclass(frozen=True)
class RandomGain(DefenderBase):
    """0.5 + (x - 0.5) a, a ~ U(-1, 1) per pixel drawn from each image's seed: randomised,
    within [0, 1], and its exact gradient (diag a) is not the identity."""

    name: ClassVar[str] = "random-gain"
    randomised: ClassVar[bool] = True
    differentiable: ClassVar[bool] = True

    def __call__(self, x: Tensor, seeds: Sequence[int] | None = None) -> Tensor:
        assert seeds is not None
        gains = torch.stack(
            [
                2.0 * torch.rand(x.shape[1:], generator=generator_for(s), dtype=x.dtype) - 1.0
                for s in seeds
            ]
        )  # (B, C, H, W)
        return 0.5 + (x - 0.5) * gains


@dataclass(frozen=True)
class DetachedRandomGain(RandomGain):
    """The same defender declaring no gradient: attacked with BPDA."""

    differentiable: ClassVar[bool] = False

    def __call__(self, x: Tensor, seeds: Sequence[int] | None = None) -> Tensor:
        return super().__call__(x, seeds).detach()


def _setup() -> tuple[nn.Module, Tensor, Tensor, list[int]]:
    torch.manual_seed(0)
    hidden = nn.Linear(36, 16)
    with torch.no_grad():
        hidden.weight.mul_(20.0)  # a sharply non-linear classifier: the draws' gradients differ
    model = nn.Sequential(nn.Flatten(), hidden, nn.Tanh(), nn.Linear(16, 3)).eval()
    x = 0.2 + 0.6 * torch.rand(3, 1, 6, 6, generator=generator_for(1))
    return model, x, torch.tensor([0, 1, 2]), [5, 6, 7]


def _draw_gradient(
    model: nn.Module,
    defender: RandomGain,
    x: Tensor,
    y: Tensor,
    j: int,
    seeds: list[int],
    exact: bool,
) -> Tensor:
    """Draw j of the first gradient: seeds derived as ``(seed, "bpda", iterate 0, draw j)``;
    through the defender (exact) or with the identity as its backward pass (BPDA)."""
    draw = [derive_seed(s, "bpda", 0, j) for s in seeds]
    x_req = x.clone().requires_grad_()
    defended = defender(x_req, draw)
    if not exact:
        defended = defended.detach().requires_grad_()
    loss = F.cross_entropy(model(defended), y, reduction="sum")
    (grad,) = torch.autograd.grad(loss, [defended if not exact else x_req])
    return grad


@pytest.mark.parametrize(
    ("attack", "defender", "exact"),
    [
        (Adaptive, RandomGain(), True),  # exact gradient + EOT
        (Adaptive, DetachedRandomGain(), False),  # BPDA + EOT
        (BPDAEOT, RandomGain(), False),  # BPDA + EOT whatever the defender declares
    ],
)
def test_one_eot_step_is_the_sign_of_the_mean_of_the_draws(
    attack: type[BPDAEOT], defender: RandomGain, exact: bool
) -> None:
    model, x, y, seeds = _setup()
    grads = [_draw_gradient(model, defender, x, y, j, seeds, exact) for j in range(EOT)]
    mean = torch.stack(grads).mean(dim=0)
    assert bool((mean != 0).all())
    expected = (x + STEP * mean.sign()).clamp(0.0, 1.0)  # within eps: step < eps
    x_adv = attack(model, defender, eot=EOT, eps=EPS, step=STEP, iters=1)(x, y, seeds=seeds)
    torch.testing.assert_close(x_adv, expected, rtol=0.0, atol=1e-7)
    # the draws disagree: one draw, or all but one, would give another step
    assert not torch.equal(grads[0].sign(), mean.sign())
    assert not torch.equal(torch.stack(grads[:-1]).mean(dim=0).sign(), mean.sign())
