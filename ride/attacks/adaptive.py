"""The adaptive white-box attack: chosen per defender from what the defender declares.

Athalye, Carlini and Wagner, "Obfuscated gradients give a false sense of security" (2018),
and Tramer, Carlini, Brendel and Madry, "On adaptive attacks to adversarial example
defenses" (2020): attack each defence with the gradient it actually has. A defender that
declares ``differentiable = True`` is attacked through its own gradient (no approximation);
one that does not, with BPDA (its backward pass taken as the identity); one that declares
``randomised = True``, with Expectation over Transformation (``eot`` draws averaged per
gradient). Both walks are :func:`~ride.attacks.functional.bpda`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, TypedDict

import torch
from torch import Tensor, nn

from ride._checks import fmt_number
from ride.attacks.functional import BPDAStep, DefenderFn, Gradient, _check_walk, bpda
from ride.attacks.modules import EOT_HELP, EPS_HELP, ITERS_HELP, STEP_HELP, Attack
from ride.registry import ATTACKS, setting


class Method(TypedDict):
    """How :class:`Adaptive` attacks one defender: the gradient it follows and the defender
    draws averaged per gradient."""

    gradient: Gradient
    draws: int


def method_text(method: Method) -> str:
    """``exact gradient``, ``BPDA``, ``exact gradient + EOT 15``, ``BPDA + EOT 15``."""
    text = "exact gradient" if method["gradient"] == "exact" else "BPDA"
    return f"{text} + EOT {method['draws']}" if method["draws"] > 1 else text


@dataclass(frozen=True)
class Adaptive(Attack):
    """The adaptive white-box attack (Athalye, Carlini and Wagner, 2018; Tramer et al.,
    "On adaptive attacks to adversarial example defenses", 2020): PGD through the defender,
    chosen per defender from what it declares (:meth:`method`):

    - ``differentiable`` defender: the exact gradient through it; otherwise BPDA;
    - ``randomised`` defender: the mean gradient over ``eot`` draws (EOT); otherwise one.

    A defender that declares neither is attacked with BPDA and one draw. Through a
    non-differentiable deterministic defender this is :class:`~ride.attacks.BPDA`, through
    the identity it is PGD, bit for bit.

    Example:
        >>> import torch
        >>> from ride.defenders import Median
        >>> attack = Adaptive(eot=15, eps=0.1, step=0.02, iters=10)
        >>> attack.id
        'adaptive-eot15-eps0.1-step0.02-it10'
        >>> attack.method(Median(kernel=3))  # detached, deterministic
        {'gradient': 'bpda', 'draws': 1}
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
        >>> x, y = torch.rand(2, 1, 28, 28), torch.tensor([3, 7])
        >>> x_adv = Adaptive(model, Median(kernel=3), eps=0.1, step=0.02, iters=3)(x, y)
        >>> bool((x_adv - x).abs().max() <= 0.1 + 1e-6)
        True
    """

    defender: DefenderFn | None = field(default=None, compare=False, repr=False)
    eps: float = setting(0.1, key="eps", help=EPS_HELP)
    step: float = setting(0.02, key="step", help=STEP_HELP)
    iters: int = setting(10, key="attack_iters", help=ITERS_HELP)
    eot: int = setting(15, key="eot", help=EOT_HELP)

    name: ClassVar[str] = "adaptive"
    adaptive: ClassVar[bool] = True

    def __post_init__(self) -> None:
        _check_walk(self.eps, self.step, self.iters)
        if isinstance(self.eot, bool) or not isinstance(self.eot, int) or self.eot < 1:
            raise ValueError(f"eot must be an int >= 1, got {self.eot!r}")

    @property
    def id(self) -> str:
        """``adaptive-eot15-eps0.1-step0.02-it10``."""
        return (
            f"{self.name}-eot{self.eot}-eps{fmt_number(self.eps)}"
            f"-step{fmt_number(self.step)}-it{fmt_number(self.iters)}"
        )

    def method(self, defender: object) -> Method:
        """The attack ``defender`` gets, from its ``differentiable`` and ``randomised``
        declarations (False when it declares nothing)."""
        differentiable = bool(getattr(defender, "differentiable", False))
        randomised = bool(getattr(defender, "randomised", False))
        return {
            "gradient": "exact" if differentiable else "bpda",
            "draws": self.eot if randomised else 1,
        }

    def perturb(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        *,
        generator: torch.Generator | None = None,
        defender: DefenderFn | None = None,
        seeds: Sequence[int] | None = None,
        on_step: Callable[[BPDAStep], None] | None = None,
    ) -> Tensor:
        target = defender if defender is not None else self.defender
        if target is None:
            raise ValueError("Adaptive is adaptive: give the defender it attacks")
        method = self.method(target)
        return bpda(
            model,
            target,
            x,
            y,
            self.eps,
            self.step,
            self.iters,
            method["draws"],
            seeds=seeds,
            generator=generator,
            on_step=on_step,
            gradient=method["gradient"],
        )

    def __call__(
        self,
        x: Tensor,
        y: Tensor,
        generator: torch.Generator | None = None,
        seeds: Sequence[int] | None = None,
    ) -> Tensor:
        if self.model is None:
            raise ValueError(
                "Adaptive has no model: construct it as Adaptive(model, defender, ...)"
            )
        return self.perturb(self.model, x, y, generator=generator, seeds=seeds)


ATTACKS.add("adaptive", Adaptive, "white-box, exact gradient or BPDA (+EOT) per defender")

__all__ = ["Adaptive", "Method", "method_text"]
