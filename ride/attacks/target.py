"""The defender a white-box attack goes through (:class:`Target`), and what the attacker sees
of it at every iterate (:class:`BPDAStep`).

BPDA and EOT: Athalye, Carlini and Wagner, "Obfuscated gradients give a false sense of
security" (2018). A white-box attack classifies the defended iterate; its gradient passes
the defender as the identity (BPDA, :func:`bpda_identity`) or, through a differentiable
defender, exactly (Tramer et al., "On adaptive attacks to adversarial example defenses",
2020). Every defender draw is seeded per image (:func:`draw_seeds`), so an attack reruns
bit for bit and its draws are none of the evaluation's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ride.seeding import derive_seed

#: Per-image losses (B,) from logits (B, K) and labels (B,).
LossFn = Callable[[Tensor, Tensor], Tensor]

#: How a white-box attack differentiates through the defender: ``"bpda"`` takes its backward
#: pass as the identity (:func:`bpda_identity`), ``"exact"`` backpropagates through it.
Gradient = Literal["bpda", "exact"]
GRADIENTS: tuple[Gradient, ...] = ("bpda", "exact")


class DefenderFn(Protocol):
    """What BPDA needs of a defender: (B, C, H, W) in [0, 1] and one seed per image."""

    def __call__(self, x: Tensor, seeds: Sequence[int] | None = None) -> Tensor: ...


def check_gradient(gradient: str) -> None:
    """ValueError unless ``gradient`` is one of :data:`GRADIENTS`."""
    if gradient not in GRADIENTS:
        raise ValueError(f"gradient must be one of {', '.join(GRADIENTS)}, got {gradient!r}")


@dataclass(frozen=True, eq=False)
class BPDAStep:
    """What the attacker saw at iterate ``iteration`` (0 = the start, before any step).

    ``adversarial`` is x^(k), ``defended`` the attacker's first defender draw on it (the one
    whose classifier output the first gradient was taken at); predictions are (B,) class
    indices. ``attacker_correct`` (B,) is the fraction of the attacker's ``attacker_draws``
    draws at x^(k) that the classifier got right: what the attacker knows of how well the
    defender does there, from which it picks the iterate it submits
    (:class:`~ride.robustness.IterateChoice`).
    """

    iteration: int
    adversarial: Tensor  # (B, C, H, W)
    defended: Tensor  # (B, C, H, W)
    pred_adversarial: Tensor  # (B,)
    pred_defended: Tensor  # (B,)
    attacker_correct: Tensor  # (B,) float in [0, 1]
    attacker_draws: int = 1


@dataclass(frozen=True, eq=False)
class Target:
    """The defender a white-box attack goes through, and how it draws from it.

    ``seeds`` (one per image; None: 0..B-1) seed the defender's draws (:func:`draw_seeds`);
    ``generator`` is the attack's own, for its random starts and restarts; ``on_step`` is
    told what the attacker saw at each iterate (:class:`BPDAStep`).
    """

    defender: DefenderFn
    seeds: Sequence[int] | None = None
    generator: torch.Generator | None = None
    on_step: Callable[[BPDAStep], None] | None = None


def draw_seeds(seeds: Sequence[int], *stage: str | int) -> list[int]:
    """One seed per image for one defender draw, derived from the images' seeds and ``stage``."""
    return [derive_seed(int(s), *stage) for s in seeds]


def bpda_identity(x: Tensor, defended: Tensor) -> Tensor:
    """BPDA's wrapper: the value of ``defended``, the gradient of the identity in ``x``.

    ``x + (defended - x).detach()`` equals ``defended`` in the forward pass, and the
    backward pass sends the gradient at the defended image unchanged to ``x`` (the
    Backward Pass Differentiable Approximation with g(x) = x, Athalye et al. 2018).
    """
    return x + (defended - x).detach()


class AttackerView:
    """What the attacker sees at one iterate, draw by draw: its first defended draw and the
    count of its draws the classifier got right (a :class:`BPDAStep` at the end)."""

    def __init__(self, k: int, x_k: Tensor, y: Tensor, draws: int) -> None:
        self.k, self.x_k, self.y, self.draws = k, x_k.detach(), y, draws
        self.correct = torch.zeros(len(x_k), dtype=torch.float32, device=x_k.device)
        self.first: tuple[Tensor, Tensor] | None = None

    def add(self, defended: Tensor, logits: Tensor) -> None:
        predicted = logits.detach().argmax(dim=1)
        self.correct += (predicted == self.y).float()
        if self.first is None:
            self.first = (defended.detach(), predicted)

    def step(self, model: nn.Module) -> BPDAStep:
        if self.first is None:
            raise RuntimeError("no defender draw was seen at this iterate")
        with torch.no_grad():
            pred_adversarial = model(self.x_k).argmax(dim=1)
        defended, pred_defended = self.first
        return BPDAStep(
            self.k,
            self.x_k,
            defended,
            pred_adversarial,
            pred_defended,
            self.correct / self.draws,
            self.draws,
        )


def draw_gradient(
    model: nn.Module,
    defender: DefenderFn,
    x_adv: Tensor,
    y: Tensor,
    draw: list[int],
    gradient: Gradient,
    loss: LossFn | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """One defender draw at iterate ``x_adv``: the loss gradient in ``x_adv`` (through the
    identity for BPDA, through the defender itself for ``"exact"``), the defended image and
    the classifier's logits on it. ``loss`` gives the per-image losses (B,) whose sum is
    differentiated (None: the cross-entropy)."""
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
        total = (
            F.cross_entropy(logits, y, reduction="sum") if loss is None else loss(logits, y).sum()
        )
        (grad,) = torch.autograd.grad(total, [x_req])
    return grad, defended, logits
