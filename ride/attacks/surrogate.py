"""BPDA through a differentiable surrogate of RIDE: the attacker no longer assumes the
defender is the identity.

Athalye, Carlini and Wagner, "Obfuscated gradients give a false sense of security" (2018):
BPDA replaces a non-differentiable defender's backward pass by that of a differentiable
approximation g. :class:`~ride.attacks.bpda.BPDA` takes g(x) = x; this attack takes g =
:func:`~ride.defenders.ride.ride_surrogate`, RIDE's Alg. 2 with a short fit (T = 1, K = 20
by default) differentiated through its optimiser steps, seeded like the defender's draw (the
same initial network and noise distribution). The forward pass, which the classifier and the
tracked iterates see, is the real defender; EOT averages the gradient over ``eot`` draws.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import ClassVar

from torch import Tensor, nn

from ride._checks import check_finite_number
from ride.attacks.base import check_count
from ride.attacks.bpda import BPDAEOT
from ride.attacks.target import DefenderFn, Gradient, Target
from ride.defenders.ride import (
    SURROGATE_CHECKPOINTS,
    SURROGATE_ITERS,
    SURROGATE_LR,
    Ride,
    ride_surrogate,
)
from ride.registry import ATTACKS, setting

__all__ = ["BPDASurrogate", "SurrogateGradient"]


class SurrogateGradient:
    """A RIDE-family defender whose value is the defender's and whose gradient is its
    surrogate's: ``g(x) + (defender(x) - g(x)).detach()``, g = :func:`ride_surrogate` with
    the same seeds (BPDA with g, Athalye et al. 2018)."""

    def __init__(self, defender: Ride, iters: int, checkpoints: int, lr: float) -> None:
        self.defender = defender
        self.iters, self.checkpoints, self.lr = iters, checkpoints, lr

    def __call__(self, x: Tensor, seeds: Sequence[int] | None = None) -> Tensor:
        if seeds is None:
            raise ValueError("the surrogate gradient needs the seeds of the defender's draw")
        defended = self.defender(x.detach(), seeds)  # (B, C, H, W), detached
        surrogate = ride_surrogate(
            x,
            self.defender,
            seeds,
            iters=self.iters,
            checkpoints=self.checkpoints,
            lr=self.lr,
        )
        return surrogate + (defended - surrogate).detach()


@dataclass(frozen=True)
class BPDASurrogate(BPDAEOT):
    """BPDA + EOT against RIDE whose backward pass is a short, fully differentiated RIDE fit
    (:func:`~ride.defenders.ride.ride_surrogate`: ``surrogate_checkpoints`` T,
    ``surrogate_iters`` K, SGD steps of ``surrogate_lr``) instead of the identity; the
    forward pass is the real defender. Attacks RIDE-family defenders only (ride, dae, dip,
    idip).

    Example:
        >>> import torch
        >>> from ride.defenders import Ride
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
        >>> attack = BPDASurrogate(model, Ride(iters=2, checkpoints=1), eot=2, iters=2)
        >>> attack.id
        'bpda-surrogate-eot2-K20-T1-lr1-eps0.1-step0.02-it2'
        >>> x, y = torch.rand(2, 1, 8, 8), torch.tensor([3, 7])
        >>> bool((attack(x, y, seeds=[0, 1]) - x).abs().max() <= 0.1 + 1e-6)
        True
    """

    surrogate_iters: int = setting(
        SURROGATE_ITERS, key="surrogate_iters", help="steps K of the surrogate's fit (10-50)"
    )
    surrogate_checkpoints: int = setting(
        SURROGATE_CHECKPOINTS, key="surrogate_checkpoints", help="checkpoints T of its fit (1)"
    )
    surrogate_lr: float = setting(
        SURROGATE_LR, key="surrogate_lr", help="SGD step of the surrogate's fit (1.0)"
    )

    name: ClassVar[str] = "bpda-surrogate"
    id_stem: ClassVar[str] = ""  # the name: bpda-surrogate-eot15-K20-T1-lr1-eps0.1-...

    def __post_init__(self) -> None:
        super().__post_init__()
        check_count(self.surrogate_iters, "surrogate_iters")
        check_count(self.surrogate_checkpoints, "surrogate_checkpoints")
        if check_finite_number(self.surrogate_lr, "surrogate_lr") <= 0:
            raise ValueError(f"surrogate_lr must be > 0, got {self.surrogate_lr}")

    def applies_to(self, defender: object) -> bool:
        """The surrogate is a short RIDE fit: it attacks RIDE-family defenders only."""
        return isinstance(defender, Ride)

    def through(self, model: nn.Module, x: Tensor, y: Tensor, target: Target) -> Tensor:
        """BPDA + EOT through ``target``, its defender's backward pass the surrogate's."""
        if not isinstance(target.defender, Ride):  # what applies_to says
            name = getattr(target.defender, "id", type(target.defender).__name__)
            raise ValueError(
                f"bpda-surrogate attacks RIDE-family defenders (ride, dae, dip, idip), "
                f"not {name}: use bpda-eot or adaptive"
            )
        through = SurrogateGradient(
            target.defender, self.surrogate_iters, self.surrogate_checkpoints, self.surrogate_lr
        )
        return super().through(model, x, y, replace(target, defender=through))

    def walk(self, defender: DefenderFn) -> tuple[int, Gradient]:
        """``eot`` draws, each differentiated through the surrogate (``"exact"`` through
        :class:`SurrogateGradient`)."""
        return self.eot, "exact"


ATTACKS.add("bpda-surrogate", BPDASurrogate, "white-box, RIDE's backward pass a short RIDE fit")
