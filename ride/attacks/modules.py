"""Attacks as objects: one frozen dataclass per attack, its settings as fields.

In the style of torchattacks: ``PGD(model, eps=0.1, step=0.02, iters=10)(x, y)``. The
pipeline builds the same classes without a model (``PGD(eps=0.1)``), names them by ``id``
and runs ``attack.perturb(model, x, y, ...)`` in each task. The walks themselves are the
functions of :mod:`ride.attacks.functional`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ride._checks import fmt_number
from ride.attacks.functional import (
    BPDAStep,
    DefenderFn,
    Gradient,
    Loss,
    _check_eps,
    _check_inputs,
    _check_walk,
    apgd,
    bpda,
    check_apgd,
    fgsm,
    pgd,
)
from ride.registry import ATTACKS, setting, setting_values

EPS_HELP = "Linf budget in [0, 1] pixel units (MNIST 0.1; CIFAR-10 and ImageNet 0.05)"
STEP_HELP = "step size of each sign step (MNIST 0.02; CIFAR-10 and ImageNet 0.01)"
ITERS_HELP = "iterations of PGD, BPDA and APGD (paper: 10)"
RANDOM_START_HELP = "start at a uniform random point of the eps-ball"
EOT_HELP = "defender draws averaged per gradient (adaptive: on randomised defenders only)"
RESTARTS_HELP = "APGD runs per image; each after the first starts at a uniform point of the ball"


@dataclass(frozen=True)
class Attack:
    """An L-infinity attack in [0, 1] pixel space; subclasses add their settings.

    ``model`` (optional) binds the classifier for ``attack(x, y)``; the pipeline leaves it
    out and calls :meth:`perturb` with the model of the task. Neither is part of the attack's
    identity (``id``, ``params()``, equality).
    """

    model: nn.Module | None = field(default=None, compare=False, repr=False)

    name: ClassVar[str] = "none"
    adaptive: ClassVar[bool] = False  # the adversarial image depends on the defender

    @property
    def id(self) -> str:
        return self.name

    def params(self) -> dict[str, float | int | bool | str]:
        """The settings that matter for this attack (those its id names)."""
        return {"name": self.name, **setting_values(self)}

    def applies_to(self, defender: object) -> bool:
        """Can this attack be run against ``defender``? Every attack can, unless it says
        otherwise (the RIDE surrogate attacks the RIDE family only); a run leaves out the
        pairs it cannot."""
        return True

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
        """Adversarial images for ``x`` (B, C, H, W) in [0, 1] with labels ``y`` (B,)."""
        raise NotImplementedError

    def __call__(self, x: Tensor, y: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if self.model is None:
            cls = type(self).__name__
            raise ValueError(f"{cls} has no model: construct it as {cls}(model, ...)")
        return self.perturb(self.model, x, y, generator=generator)


@dataclass(frozen=True)
class NoAttack(Attack):
    """No attack: the adversarial image is a copy of the clean one (the clean baseline).

    Example:
        >>> import torch
        >>> x, y = torch.rand(2, 1, 28, 28), torch.tensor([3, 7])
        >>> torch.equal(NoAttack(torch.nn.Flatten())(x, y), x)
        True
    """

    name: ClassVar[str] = "none"

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor, **_: Any) -> Tensor:
        _check_inputs(x, y)
        return x.detach().clone()


@dataclass(frozen=True)
class FGSM(Attack):
    """Fast Gradient Sign Method (Goodfellow, Shlens and Szegedy, 2014): one sign step of
    size ``eps`` (paper, Table 1: eps 0.015 on ImageNet).

    Example:
        >>> import torch
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
        >>> x, y = torch.rand(2, 1, 28, 28), torch.tensor([3, 7])
        >>> x_adv = FGSM(model, eps=0.1)(x, y)
        >>> bool((x_adv - x).abs().max() <= 0.1 + 1e-6)
        True
    """

    eps: float = setting(
        0.1,
        key="fgsm_eps",
        fallback="eps",
        run_default=None,
        help="FGSM's eps when it differs from eps (paper Table 1: 0.015)",
    )

    name: ClassVar[str] = "fgsm"

    def __post_init__(self) -> None:
        _check_eps(self.eps)

    @property
    def id(self) -> str:
        return f"fgsm-eps{fmt_number(self.eps)}"

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor, **_: Any) -> Tensor:
        return fgsm(model, x, y, self.eps)


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
        _check_walk(self.eps, self.step, self.iters)

    @property
    def id(self) -> str:
        """``pgd-eps0.1-step0.02-it10``, ``-rs`` appended with a random start."""
        rs = "-rs" if self.random_start else ""
        return (
            f"{self.name}-eps{fmt_number(self.eps)}-step{fmt_number(self.step)}"
            f"-it{fmt_number(self.iters)}{rs}"
        )

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


@dataclass(frozen=True)
class ThroughDefender(Attack):
    """An attack whose adversarial image depends on the defender it attacks (white-box:
    BPDA, the adaptive attacks). ``defender`` (optional) binds the defender for
    ``attack(x, y)``; the pipeline passes it to :meth:`perturb` instead. ``seeds`` give each
    image's defender draws."""

    defender: DefenderFn | None = field(default=None, compare=False, repr=False)

    adaptive: ClassVar[bool] = True

    def target(self, defender: DefenderFn | None) -> DefenderFn:
        """The defender to attack: ``defender`` when given, else the bound one."""
        target = defender if defender is not None else self.defender
        if target is None:
            raise ValueError(f"{type(self).__name__} is adaptive: give the defender it attacks")
        return target

    def __call__(
        self,
        x: Tensor,
        y: Tensor,
        generator: torch.Generator | None = None,
        seeds: Sequence[int] | None = None,
    ) -> Tensor:
        if self.model is None:
            cls = type(self).__name__
            raise ValueError(f"{cls} has no model: construct it as {cls}(model, defender, ...)")
        return self.perturb(self.model, x, y, generator=generator, seeds=seeds)


@dataclass(frozen=True)
class BPDA(ThroughDefender):
    """BPDA (Athalye, Carlini and Wagner, 2018): PGD whose classifier sees the defended
    image, the defender's backward pass taken as the identity (paper, "Defense Against
    White-Box Attack", Table 2). One defender draw per gradient; ``seeds`` give each image's
    defender draws (see :func:`~ride.attacks.functional.bpda`).

    Example:
        >>> import torch
        >>> from ride.defenders import Median
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
        >>> x, y = torch.rand(2, 1, 28, 28), torch.tensor([3, 7])
        >>> x_adv = BPDA(model, Median(kernel=3), eps=0.1, step=0.02, iters=5)(x, y)
        >>> bool((x_adv - x).abs().max() <= 0.1 + 1e-6)
        True
    """

    eps: float = setting(0.1, key="eps", help=EPS_HELP)
    step: float = setting(0.02, key="step", help=STEP_HELP)
    iters: int = setting(10, key="attack_iters", help=ITERS_HELP)
    random_start: bool = setting(False, help=RANDOM_START_HELP)

    name: ClassVar[str] = "bpda"

    def __post_init__(self) -> None:
        _check_walk(self.eps, self.step, self.iters)

    @property
    def draws(self) -> int:
        """Defender draws averaged per gradient."""
        return 1

    @property
    def id(self) -> str:
        """``bpda-eps0.1-step0.02-it10``; ``bpda-eot15-...`` for :class:`BPDAEOT`."""
        rs = "-rs" if self.random_start else ""
        prefix = f"bpda-eot{self.draws}" if self.name == "bpda-eot" else self.name
        return (
            f"{prefix}-eps{fmt_number(self.eps)}-step{fmt_number(self.step)}"
            f"-it{fmt_number(self.iters)}{rs}"
        )

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
        target = self.target(defender)
        draws, gradient = self.walk(target)
        return bpda(
            model,
            target,
            x,
            y,
            self.eps,
            self.step,
            self.iters,
            draws,
            self.random_start,
            seeds=seeds,
            generator=generator,
            on_step=on_step,
            gradient=gradient,
        )

    def walk(self, defender: DefenderFn) -> tuple[int, Gradient]:
        """The defender draws per gradient and the gradient followed through ``defender``:
        BPDA's are fixed (:class:`~ride.attacks.adaptive.Adaptive` chooses per defender)."""
        return self.draws, "bpda"


@dataclass(frozen=True)
class BPDAEOT(BPDA):
    """BPDA with Expectation over Transformation (Athalye et al., 2018): the gradient is the
    mean over ``eot`` independent defender draws, the attack on randomised defenders
    (DiffPure's evaluation used 15).

    Example:
        >>> import torch
        >>> from ride.defenders import Median
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
        >>> BPDAEOT(model, Median(), eot=4, eps=0.1, step=0.02, iters=10).id
        'bpda-eot4-eps0.1-step0.02-it10'
    """

    eot: int = setting(15, key="eot", help=EOT_HELP)

    name: ClassVar[str] = "bpda-eot"

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.eot, bool) or not isinstance(self.eot, int) or self.eot < 1:
            raise ValueError(f"eot must be an int >= 1, got {self.eot!r}")

    @property
    def draws(self) -> int:
        return self.eot


@dataclass(frozen=True)
class APGD(Attack):
    """Auto-PGD, L-infinity (Croce and Hein, "Reliable evaluation of adversarial robustness
    with an ensemble of diverse parameter-free attacks", ICML 2020): sign steps with momentum
    whose size (2 eps at first) halves at checkpoints where the loss stalls, restarting from
    the best point; ``iters`` steps, ``restarts`` runs (Croce and Hein: 100 iterations).
    Gray-box, on the loss ``loss`` of the subclass: :class:`APGDCE`, :class:`APGDDLR`.
    """

    eps: float = setting(0.1, key="eps", help=EPS_HELP)
    iters: int = setting(10, key="attack_iters", help=ITERS_HELP)
    restarts: int = setting(1, key="restarts", help=RESTARTS_HELP)
    random_start: bool = setting(False, help=RANDOM_START_HELP)

    name: ClassVar[str] = "apgd-ce"
    loss: ClassVar[Loss] = "ce"

    def __post_init__(self) -> None:
        check_apgd(self.eps, self.iters, self.restarts)

    @property
    def id(self) -> str:
        """``apgd-ce-eps0.1-it10``; ``-restarts2`` with more runs, ``-rs`` with a random start."""
        return f"{self.name}-eps{fmt_number(self.eps)}-it{fmt_number(self.iters)}{self._suffix()}"

    def _suffix(self) -> str:
        restarts = f"-restarts{self.restarts}" if self.restarts > 1 else ""
        return restarts + ("-rs" if self.random_start else "")

    def perturb(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        *,
        generator: torch.Generator | None = None,
        **_: Any,
    ) -> Tensor:
        return apgd(
            model,
            x,
            y,
            self.eps,
            self.iters,
            self.loss,
            self.restarts,
            self.random_start,
            generator,
        )


@dataclass(frozen=True)
class APGDCE(APGD):
    """APGD-CE (Croce and Hein, 2020): APGD on the cross-entropy, AutoAttack's first attack.

    Example:
        >>> import torch
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
        >>> x, y = torch.rand(2, 1, 28, 28), torch.tensor([3, 7])
        >>> attack = APGDCE(model, eps=0.1, iters=10)
        >>> attack.id
        'apgd-ce-eps0.1-it10'
        >>> bool((attack(x, y) - x).abs().max() <= 0.1 + 1e-6)
        True
    """

    name: ClassVar[str] = "apgd-ce"
    loss: ClassVar[Loss] = "ce"


@dataclass(frozen=True)
class APGDDLR(APGD):
    """APGD-DLR (Croce and Hein, 2020): APGD on the Difference of Logits Ratio loss
    (:func:`~ride.attacks.functional.dlr_loss`), invariant to shifts and scalings of the
    logits; AutoAttack's second attack. Needs at least 3 classes.

    Example:
        >>> APGDDLR(eps=0.05, iters=100, restarts=5).id
        'apgd-dlr-eps0.05-it100-restarts5'
    """

    name: ClassVar[str] = "apgd-dlr"
    loss: ClassVar[Loss] = "dlr"


ATTACKS.add("none", NoAttack, "no attack")
ATTACKS.add("fgsm", FGSM, "gray-box")
ATTACKS.add("pgd", PGD, "gray-box")
ATTACKS.add("bpda", BPDA, "white-box, through each defender")
ATTACKS.add("bpda-eot", BPDAEOT, "white-box, averaged over defender draws")
ATTACKS.add("apgd-ce", APGDCE, "gray-box, Auto-PGD on the cross-entropy")
ATTACKS.add("apgd-dlr", APGDDLR, "gray-box, Auto-PGD on the DLR loss")

__all__ = ["APGD", "APGDCE", "APGDDLR", "BPDA", "BPDAEOT", "FGSM", "PGD", "Attack", "NoAttack"]
