"""PGD: Madry et al., "Towards deep learning models resistant to adversarial attacks"
(2017). The paper evaluates it with 10 iterations (MNIST eps 0.1, step 0.02; CIFAR-10 and
ImageNet eps 0.05, step 0.01)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ride.attacks.base import (
    EPS_HELP,
    ITERS_HELP,
    RANDOM_START_HELP,
    STEP_HELP,
    Attack,
    check_inputs,
    check_walk,
    eval_mode,
    input_gradient,
    sign_steps,
    uniform_start,
)
from ride.registry import ATTACKS, setting


def pgd(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    step: float,
    iters: int,
    random_start: bool = False,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Projected Gradient Descent, L-infinity (Madry et al., 2017).

    ``iters`` sign steps of size ``step`` on the cross-entropy, each followed by projection
    to the eps-ball around ``x`` and to [0, 1]. With ``random_start`` the walk starts at
    ``x + U(-eps, eps)`` drawn from ``generator``. With ``iters=1, step=eps`` and no random
    start this is exactly FGSM. x: (B, C, H, W) in [0, 1]; y: (B,) int64 labels.
    """
    eps, step = check_walk(eps, step, iters)
    check_inputs(x, y)
    x0 = x.detach().clone()
    start = uniform_start(x0, eps, generator) if random_start else x0
    with eval_mode(model):
        return sign_steps(lambda xk, _: input_gradient(model, xk, y), x0, eps, step, iters, start)


@dataclass(frozen=True)
class PGD(Attack):
    """Projected Gradient Descent, L-infinity (Madry et al., 2017): ``iters`` sign steps of
    size ``step``, each projected to the eps-ball and [0, 1] (paper: 10 iterations; MNIST
    eps 0.1 step 0.02, CIFAR-10 and ImageNet eps 0.05 step 0.01).

    Example:
        >>> import torch
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
        >>> x, y = torch.rand(2, 1, 28, 28), torch.tensor([3, 7])
        >>> attack = PGD(model, eps=0.1, step=0.02, iters=10)
        >>> attack.id
        'pgd-eps0.1-step0.02-it10'
        >>> bool((attack(x, y) - x).abs().max() <= 0.1 + 1e-6)
        True
    """

    eps: float = setting(0.1, key="eps", help=EPS_HELP)
    step: float = setting(0.02, key="step", help=STEP_HELP)
    iters: int = setting(10, key="attack_iters", help=ITERS_HELP)
    random_start: bool = setting(False, help=RANDOM_START_HELP)

    name: ClassVar[str] = "pgd"

    def __post_init__(self) -> None:
        check_walk(self.eps, self.step, self.iters)

    def perturb(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        *,
        generator: torch.Generator | None = None,
        **_: Any,
    ) -> Tensor:
        return pgd(model, x, y, self.eps, self.step, self.iters, self.random_start, generator)


ATTACKS.add("pgd", PGD, "gray-box")
