"""Gray-box L-infinity attacks in [0, 1] pixel space: FGSM and PGD.

FGSM: Goodfellow, Shlens and Szegedy, "Explaining and harnessing adversarial examples" (2014).
PGD: Madry et al., "Towards deep learning models resistant to adversarial attacks" (2017).
The paper evaluates PGD with 10 iterations (MNIST eps 0.1, step 0.02; CIFAR and ImageNet
eps 0.05, step 0.01) and FGSM with step 0.015 on ImageNet ("Defense Against White-Box Attack").

Invariants (enforced here, once): the result lies in the eps-ball around ``x`` and in [0, 1]
after every step, the classifier runs in eval mode (its mode is restored afterwards), inputs are
never mutated and no gradient reaches the classifier's parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ride._checks import check_finite_number, check_images, check_unit_range, fmt_number

ATTACKS: tuple[str, ...] = ("none", "fgsm", "pgd")

AttackName = Literal["none", "fgsm", "pgd"]


def _check_eps(eps: float) -> float:
    eps = check_finite_number(eps, "eps")
    if not 0.0 < eps <= 1.0:
        raise ValueError(f"eps must be in (0, 1], got {eps}")
    return eps


def _check_inputs(x: Tensor, y: Tensor) -> None:
    check_images(x)
    check_unit_range(x)
    if y.shape != (x.shape[0],):
        raise ValueError(f"y must have shape ({x.shape[0]},), got {tuple(y.shape)}")


def _input_gradient(model: nn.Module, x_adv: Tensor, y: Tensor) -> Tensor:
    """d(sum of cross-entropy)/d(x_adv), without touching the parameters' ``.grad``."""
    with torch.enable_grad():
        x_req = x_adv.detach().requires_grad_(True)
        loss = F.cross_entropy(model(x_req), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, [x_req])
    return grad


def _project(x_adv: Tensor, x: Tensor, eps: float) -> Tensor:
    """Clip ``x_adv`` to the L-infinity eps-ball around ``x`` and to [0, 1]."""
    return torch.minimum(torch.maximum(x_adv, x - eps), x + eps).clamp(0.0, 1.0)


def _sign_steps(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    step: float,
    iters: int,
    start: Tensor,
) -> Tensor:
    """``iters`` projected sign-gradient ascent steps of the cross-entropy from ``start``."""
    was_training = model.training
    model.eval()
    try:
        x_adv = start
        for _ in range(iters):
            grad = _input_gradient(model, x_adv, y)
            x_adv = _project(x_adv + step * grad.sign(), x, eps)
    finally:
        model.train(was_training)
    return x_adv.detach()


def fgsm(model: nn.Module, x: Tensor, y: Tensor, eps: float) -> Tensor:
    """Fast Gradient Sign Method (Goodfellow et al., 2014): ``clip(x + eps sign(grad))``.

    x: (B, C, H, W) in [0, 1]; y: (B,) int64 labels. Returns a new tensor.
    """
    eps = _check_eps(eps)
    _check_inputs(x, y)
    x0 = x.detach().clone()
    return _sign_steps(model, x0, y, eps, eps, 1, x0)


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
    start this is exactly FGSM.
    """
    eps = _check_eps(eps)
    step = check_finite_number(step, "step")
    if step <= 0:
        raise ValueError(f"step must be > 0, got {step}")
    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    _check_inputs(x, y)
    x0 = x.detach().clone()
    start = x0
    if random_start:
        noise = torch.rand(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        start = _project(x0 + (2.0 * noise - 1.0) * eps, x0, eps)
    return _sign_steps(model, x0, y, eps, step, iters, start)


@dataclass(frozen=True)
class AttackConfig:
    """Settings of one attack; ``id`` names it in storage, e.g. ``pgd-eps0.1-step0.02-it10``."""

    name: AttackName
    eps: float = 0.1
    step: float = 0.02
    iters: int = 10
    random_start: bool = False

    def __post_init__(self) -> None:
        if self.name not in ATTACKS:
            raise ValueError(f"unknown attack {self.name!r}; choose from: {', '.join(ATTACKS)}")
        _check_eps(self.eps)
        if not check_finite_number(self.step, "step") > 0:
            raise ValueError(f"step must be > 0, got {self.step}")
        if isinstance(self.iters, bool) or not isinstance(self.iters, int) or self.iters < 1:
            raise ValueError(f"iters must be an int >= 1, got {self.iters!r}")

    @property
    def id(self) -> str:
        """Stable readable id: ``none``, ``fgsm-eps0.1``, ``pgd-eps0.1-step0.02-it10[-rs]``."""
        if self.name == "none":
            return "none"
        if self.name == "fgsm":
            return f"fgsm-eps{fmt_number(self.eps)}"
        rs = "-rs" if self.random_start else ""
        return (
            f"pgd-eps{fmt_number(self.eps)}-step{fmt_number(self.step)}"
            f"-it{fmt_number(self.iters)}{rs}"
        )

    def params(self) -> dict[str, float | int | bool | str]:
        """The settings that matter for this attack (those named by its id)."""
        if self.name == "none":
            return {"name": "none"}
        if self.name == "fgsm":
            return {"name": "fgsm", "eps": self.eps}
        return {
            "name": "pgd",
            "eps": self.eps,
            "step": self.step,
            "iters": self.iters,
            "random_start": self.random_start,
        }


def run_attack(
    cfg: AttackConfig,
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Run the attack described by ``cfg``; ``none`` returns a copy of ``x``."""
    if cfg.name == "none":
        _check_inputs(x, y)
        return x.detach().clone()
    if cfg.name == "fgsm":
        return fgsm(model, x, y, cfg.eps)
    return pgd(model, x, y, cfg.eps, cfg.step, cfg.iters, cfg.random_start, generator)
