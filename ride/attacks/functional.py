"""L-infinity attacks in [0, 1] pixel space: gray-box FGSM and PGD, white-box BPDA (+EOT).

FGSM: Goodfellow, Shlens and Szegedy, "Explaining and harnessing adversarial examples" (2014).
PGD: Madry et al., "Towards deep learning models resistant to adversarial attacks" (2017).
BPDA and EOT: Athalye, Carlini and Wagner, "Obfuscated gradients give a false sense of
security" (2018). The paper evaluates PGD with 10 iterations (MNIST eps 0.1, step 0.02; CIFAR
and ImageNet eps 0.05, step 0.01), FGSM with step 0.015 on ImageNet, and its white-box claim
(Table 2) under BPDA ("Defense Against White-Box Attack").

Every attack is one walk of projected sign steps (``_sign_steps``); they differ only in the
gradient they follow. BPDA is PGD whose classifier sees the defended image: the defender is
wrapped so that its forward pass is the defender and its backward pass the identity. Against
a differentiable defender the same walk can follow the true gradient through the defender
(``bpda(..., gradient="exact")``): no approximation is needed there (Tramer et al., "On
adaptive attacks to adversarial example defenses", 2020).

Invariants (enforced here, once): the result lies in the eps-ball around ``x`` and in [0, 1]
after every step, the classifier runs in eval mode (its mode is restored afterwards), inputs are
never mutated and no gradient reaches the classifier's parameters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ride._checks import (
    check_finite_number,
    check_images,
    check_seeds,
    check_unit_range,
)
from ride.seeding import derive_seed

#: The gradient an attack follows: (current iterate x^(k), k) -> d loss / d x^(k).
GradientFn = Callable[[Tensor, int], Tensor]

#: How :func:`bpda` differentiates through the defender: ``"bpda"`` takes its backward pass
#: as the identity (:func:`bpda_identity`), ``"exact"`` backpropagates through it.
Gradient = Literal["bpda", "exact"]
GRADIENTS: tuple[Gradient, ...] = ("bpda", "exact")


class DefenderFn(Protocol):
    """What BPDA needs of a defender: (B, C, H, W) in [0, 1] and one seed per image."""

    def __call__(self, x: Tensor, seeds: Sequence[int] | None = None) -> Tensor: ...


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


def bpda_identity(x: Tensor, defended: Tensor) -> Tensor:
    """BPDA's wrapper: the value of ``defended``, the gradient of the identity in ``x``.

    ``x + (defended - x).detach()`` equals ``defended`` in the forward pass, and the
    backward pass sends the gradient at the defended image unchanged to ``x`` (the
    Backward Pass Differentiable Approximation with g(x) = x, Athalye et al. 2018).
    """
    return x + (defended - x).detach()


def _project(x_adv: Tensor, x: Tensor, eps: float) -> Tensor:
    """Clip ``x_adv`` to the L-infinity eps-ball around ``x`` and to [0, 1]."""
    return torch.minimum(torch.maximum(x_adv, x - eps), x + eps).clamp(0.0, 1.0)


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """The classifier in eval mode for the attack; its mode restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _sign_steps(
    gradient: GradientFn, x: Tensor, eps: float, step: float, iters: int, start: Tensor
) -> Tensor:
    """``iters`` projected sign-gradient ascent steps from ``start`` (the one attack walk)."""
    x_adv = start
    for k in range(iters):
        grad = gradient(x_adv, k)
        x_adv = _project(x_adv + step * grad.sign(), x, eps)
    return x_adv.detach()


def _check_walk(eps: float, step: float, iters: int) -> tuple[float, float]:
    eps = _check_eps(eps)
    step = check_finite_number(step, "step")
    if step <= 0:
        raise ValueError(f"step must be > 0, got {step}")
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < 1:
        raise ValueError(f"iters must be an int >= 1, got {iters!r}")
    return eps, step


def _random_start(x0: Tensor, eps: float, generator: torch.Generator | None) -> Tensor:
    noise = torch.rand(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    return _project(x0 + (2.0 * noise - 1.0) * eps, x0, eps)


def fgsm(model: nn.Module, x: Tensor, y: Tensor, eps: float) -> Tensor:
    """Fast Gradient Sign Method (Goodfellow et al., 2014): ``clip(x + eps sign(grad))``.

    x: (B, C, H, W) in [0, 1]; y: (B,) int64 labels. Returns a new tensor.
    """
    eps = _check_eps(eps)
    _check_inputs(x, y)
    x0 = x.detach().clone()
    with _eval_mode(model):
        return _sign_steps(lambda xk, _: _input_gradient(model, xk, y), x0, eps, eps, 1, x0)


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
    eps, step = _check_walk(eps, step, iters)
    _check_inputs(x, y)
    x0 = x.detach().clone()
    start = _random_start(x0, eps, generator) if random_start else x0
    with _eval_mode(model):
        return _sign_steps(lambda xk, _: _input_gradient(model, xk, y), x0, eps, step, iters, start)


@dataclass(frozen=True, eq=False)
class BPDAStep:
    """What BPDA saw at iterate ``iteration`` (0 = the start, before any step).

    ``adversarial`` is x^(k), ``defended`` the first defender draw on it (the one whose
    classifier output the gradient was taken at); predictions are (B,) class indices.
    """

    iteration: int
    adversarial: Tensor  # (B, C, H, W)
    defended: Tensor  # (B, C, H, W)
    pred_adversarial: Tensor  # (B,)
    pred_defended: Tensor  # (B,)


def draw_seeds(seeds: Sequence[int], *stage: str | int) -> list[int]:
    """One seed per image for one defender draw, derived from the images' seeds and ``stage``."""
    return [derive_seed(int(s), *stage) for s in seeds]


def _draw_gradient(
    model: nn.Module,
    defender: DefenderFn,
    x_adv: Tensor,
    y: Tensor,
    draw: list[int],
    gradient: Gradient,
) -> tuple[Tensor, Tensor, Tensor]:
    """One defender draw at iterate ``x_adv``: the loss gradient in ``x_adv`` (through the
    identity for BPDA, through the defender itself for ``"exact"``), the defended image and
    the classifier's logits on it."""
    if gradient == "bpda":
        defended = defender(x_adv, draw).detach()
    with torch.enable_grad():
        x_req = x_adv.detach().requires_grad_(True)
        if gradient == "bpda":
            logits = model(bpda_identity(x_req, defended))
        else:
            through = defender(x_req, draw)  # the graph kept: the exact gradient
            if not through.requires_grad:
                name = getattr(defender, "id", type(defender).__name__)
                raise ValueError(
                    f"defender {name} gives no gradient to its input (its output is detached): "
                    'it is not differentiable, attack it with gradient="bpda"'
                )
            defended = through.detach()
            logits = model(through)
        loss = F.cross_entropy(logits, y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, [x_req])
    return grad, defended, logits


def bpda(
    model: nn.Module,
    defender: DefenderFn,
    x: Tensor,
    y: Tensor,
    eps: float,
    step: float,
    iters: int,
    eot: int = 1,
    random_start: bool = False,
    *,
    seeds: Sequence[int] | None = None,
    generator: torch.Generator | None = None,
    on_step: Callable[[BPDAStep], None] | None = None,
    gradient: Gradient = "bpda",
) -> Tensor:
    """BPDA, optionally with Expectation over Transformation (Athalye et al., 2018).

    PGD (see :func:`pgd`) whose forward pass classifies the defended image and whose
    backward pass treats the defender as the identity (:func:`bpda_identity`). With
    ``eot > 1`` the gradient is the mean over ``eot`` independent defender draws before the
    sign step, the standard attack on randomised defenders (DiffPure's evaluation used 15).

    ``seeds`` (one per image) seed the defender: draw j at iterate k uses
    ``draw_seeds(seeds, "bpda", k, j)``. ``on_step`` is called once per iterate
    k = 0..iters-1 with what the attack saw there (x^(k), its first defended draw and both
    predictions); the final iterate is returned, not defended. The defender runs with
    gradients enabled inside where it needs them (RIDE fits a network); none of its
    gradients reach ``x``.

    ``gradient="exact"`` is the full-gradient white-box attack on a differentiable defender:
    the defender runs on the iterate with the graph kept, and the gradient of the loss is
    taken through it (its Jacobian included) instead of through the identity; draws,
    seeds, EOT averaging and ``on_step`` are the same. The defender's output must then
    depend on its input through autograd (ValueError otherwise).
    """
    eps, step = _check_walk(eps, step, iters)
    if isinstance(eot, bool) or not isinstance(eot, int) or eot < 1:
        raise ValueError(f"eot must be an int >= 1, got {eot!r}")
    if gradient not in GRADIENTS:
        raise ValueError(f"gradient must be one of {', '.join(GRADIENTS)}, got {gradient!r}")
    _check_inputs(x, y)
    image_seeds = check_seeds(seeds if seeds is not None else range(len(x)), len(x))
    x0 = x.detach().clone()
    start = _random_start(x0, eps, generator) if random_start else x0

    def walk_gradient(x_adv: Tensor, k: int) -> Tensor:
        total = torch.zeros_like(x_adv)
        for j in range(eot):
            draw = draw_seeds(image_seeds, "bpda", k, j)
            grad, defended, logits = _draw_gradient(model, defender, x_adv, y, draw, gradient)
            total += grad
            if j == 0 and on_step is not None:
                with torch.no_grad():
                    pred_adversarial = model(x_adv).argmax(dim=1)
                on_step(
                    BPDAStep(k, x_adv.detach(), defended, pred_adversarial, logits.argmax(dim=1))
                )
        return total / eot

    with _eval_mode(model):
        return _sign_steps(walk_gradient, x0, eps, step, iters, start)
