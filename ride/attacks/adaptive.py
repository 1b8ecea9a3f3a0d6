"""The adaptive white-box attack: chosen per defender from what the defender declares.

Athalye, Carlini and Wagner, "Obfuscated gradients give a false sense of security" (2018),
and Tramer, Carlini, Brendel and Madry, "On adaptive attacks to adversarial example
defenses" (2020): attack each defence with the gradient it actually has. A defender that
declares ``differentiable = True`` is attacked through its own gradient (no approximation);
one that does not, with BPDA (its backward pass taken as the identity); one that declares
``randomised = True``, with Expectation over Transformation (``eot`` draws averaged per
gradient). Both walks are :func:`~ride.attacks.bpda.bpda`; the APGD-CE and APGD-DLR versions
(Croce and Hein, 2020) choose the same way and walk :func:`~ride.attacks.apgd.apgd_through`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Protocol, TypedDict, runtime_checkable

from torch import Tensor, nn

from ride.attacks.apgd import APGDSettings, apgd_through
from ride.attacks.apgd_walk import Loss, check_apgd
from ride.attacks.base import (
    EOT_HELP,
    EPS_HELP,
    ITERS_HELP,
    RANDOM_START_HELP,
    RESTARTS_HELP,
    ThroughDefender,
)
from ride.attacks.bpda import BPDAEOT
from ride.attacks.target import DefenderFn, Gradient, Target
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
    id_stem: ClassVar[str] = ""  # the name: adaptive-eot15-eps0.1-step0.02-it10

    def method(self, defender: object) -> Method:
        """The attack ``defender`` gets, from its ``differentiable`` and ``randomised``
        declarations (False when it declares nothing; :func:`choose_method`)."""
        return choose_method(defender, self.eot)

    def walk(self, defender: DefenderFn) -> tuple[int, Gradient]:
        method = self.method(defender)
        return method["draws"], method["gradient"]


ATTACKS.add("adaptive", Adaptive, "white-box, exact gradient or BPDA (+EOT) per defender")


@runtime_checkable
class ChoosesMethod(Protocol):
    """An attack that chooses its method per defender (:class:`Adaptive`,
    :class:`AdaptiveAPGD`); the pipeline records the choice with every row."""

    def method(self, defender: object) -> Method: ...


def choose_method(defender: object, eot: int) -> Method:
    """The method the adaptive attacks give ``defender``: the exact gradient when it declares
    ``differentiable``, else BPDA; ``eot`` draws when it declares ``randomised``, else one."""
    return {
        "gradient": "exact" if bool(getattr(defender, "differentiable", False)) else "bpda",
        "draws": eot if bool(getattr(defender, "randomised", False)) else 1,
    }


@dataclass(frozen=True)
class AdaptiveAPGD(ThroughDefender):
    """APGD through the defender (Croce and Hein, "Reliable evaluation of adversarial
    robustness with an ensemble of diverse parameter-free attacks", ICML 2020), the method
    chosen per defender as :class:`Adaptive` chooses it (Athalye et al., 2018; Tramer et al.,
    2020): the exact gradient through a ``differentiable`` defender, else BPDA (its backward
    pass the identity); the loss and gradient averaged over ``eot`` draws (EOT) on a
    ``randomised`` one, as AutoAttack's version for randomised defences runs APGD. The walk
    is :func:`~ride.attacks.apgd.apgd_through`, on the loss of the subclass
    (:class:`AdaptiveAPGDCE`, :class:`AdaptiveAPGDDLR`); ``on_step`` sees every iterate of
    its first run, as BPDA's does.
    """

    eps: float = setting(0.1, key="eps", help=EPS_HELP)
    iters: int = setting(10, key="attack_iters", help=ITERS_HELP)
    restarts: int = setting(1, key="restarts", help=RESTARTS_HELP)
    random_start: bool = setting(False, help=RANDOM_START_HELP)
    eot: int = setting(15, key="eot", help=EOT_HELP)

    name: ClassVar[str] = "adaptive-apgd-ce"
    loss: ClassVar[Loss] = "ce"

    def __post_init__(self) -> None:
        check_apgd(self.eps, self.iters, self.restarts, self.eot)

    def method(self, defender: object) -> Method:
        """The attack ``defender`` gets (:func:`choose_method`)."""
        return choose_method(defender, self.eot)

    def through(self, model: nn.Module, x: Tensor, y: Tensor, target: Target) -> Tensor:
        method = self.method(target.defender)
        settings = APGDSettings(
            self.eps,
            self.iters,
            self.loss,
            method["draws"],
            self.restarts,
            self.random_start,
            method["gradient"],
        )
        return apgd_through(model, x, y, target, settings)


@dataclass(frozen=True)
class AdaptiveAPGDCE(AdaptiveAPGD):
    """APGD-CE through the defender (Croce and Hein, 2020), BPDA or the exact gradient, with
    EOT on randomised defenders (see :class:`AdaptiveAPGD`).

    Example:
        >>> import torch
        >>> from ride.defenders import Median
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
        >>> x, y = torch.rand(2, 1, 28, 28), torch.tensor([3, 7])
        >>> attack = AdaptiveAPGDCE(model, Median(kernel=3), eot=15, eps=0.1, iters=5)
        >>> attack.id
        'adaptive-apgd-ce-eot15-eps0.1-it5'
        >>> attack.method(Median(kernel=3))  # detached, deterministic
        {'gradient': 'bpda', 'draws': 1}
        >>> bool((attack(x, y) - x).abs().max() <= 0.1 + 1e-6)
        True
    """

    name: ClassVar[str] = "adaptive-apgd-ce"
    loss: ClassVar[Loss] = "ce"


@dataclass(frozen=True)
class AdaptiveAPGDDLR(AdaptiveAPGD):
    """APGD-DLR through the defender (Croce and Hein, 2020), BPDA or the exact gradient, with
    EOT on randomised defenders (see :class:`AdaptiveAPGD`). Needs at least 3 classes.

    Example:
        >>> AdaptiveAPGDDLR(eot=20, eps=0.05, iters=100).id
        'adaptive-apgd-dlr-eot20-eps0.05-it100'
    """

    name: ClassVar[str] = "adaptive-apgd-dlr"
    loss: ClassVar[Loss] = "dlr"


ATTACKS.add("adaptive-apgd-ce", AdaptiveAPGDCE, "white-box APGD-CE, exact gradient or BPDA (+EOT)")
ATTACKS.add(
    "adaptive-apgd-dlr", AdaptiveAPGDDLR, "white-box APGD-DLR, exact gradient or BPDA (+EOT)"
)

__all__ = [
    "Adaptive",
    "AdaptiveAPGD",
    "AdaptiveAPGDCE",
    "AdaptiveAPGDDLR",
    "ChoosesMethod",
    "Method",
    "choose_method",
    "method_text",
]
