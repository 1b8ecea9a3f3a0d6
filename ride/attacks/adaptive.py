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

from dataclasses import dataclass
from typing import ClassVar, TypedDict

from ride._checks import fmt_number
from ride.attacks.functional import DefenderFn, Gradient
from ride.attacks.modules import BPDAEOT
from ride.registry import ATTACKS


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
class Adaptive(BPDAEOT):
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

    name: ClassVar[str] = "adaptive"

    @property
    def id(self) -> str:
        """``adaptive-eot15-eps0.1-step0.02-it10``, ``-rs`` appended with a random start."""
        rs = "-rs" if self.random_start else ""
        return (
            f"{self.name}-eot{self.eot}-eps{fmt_number(self.eps)}"
            f"-step{fmt_number(self.step)}-it{fmt_number(self.iters)}{rs}"
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

    def walk(self, defender: DefenderFn) -> tuple[int, Gradient]:
        method = self.method(defender)
        return method["draws"], method["gradient"]


ATTACKS.add("adaptive", Adaptive, "white-box, exact gradient or BPDA (+EOT) per defender")

__all__ = ["Adaptive", "Method", "method_text"]
