"""BPDA and BPDA+EOT: Athalye, Carlini and Wagner, "Obfuscated gradients give a false sense
of security" (2018). The paper's white-box claim (Table 2, "Defense Against White-Box
Attack") is evaluated under BPDA.

BPDA is PGD whose classifier sees the defended image: the defender is wrapped so that its
forward pass is the defender and its backward pass the identity
(:func:`~ride.attacks.target.bpda_identity`). With EOT the gradient is the mean over ``eot``
defender draws. Against a differentiable defender the same walk can follow the true gradient
through it (``gradient="exact"``): no approximation is needed there (Tramer et al., "On
adaptive attacks to adversarial example defenses", 2020).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from ride._checks import check_seeds
from ride.attacks.base import (
    EOT_HELP,
    EPS_HELP,
    ITERS_HELP,
    RANDOM_START_HELP,
    STEP_HELP,
    GradientFn,
    ThroughDefender,
    check_count,
    check_inputs,
    check_walk,
    eval_mode,
    sign_steps,
    uniform_start,
)
from ride.attacks.target import (
    AttackerView,
    BPDAStep,
    DefenderFn,
    Gradient,
    Target,
    check_gradient,
    draw_gradient,
    draw_seeds,
)
from ride.registry import ATTACKS, setting


@dataclass(frozen=True)
class BPDASettings:
    """One BPDA walk against one defender: PGD's settings (``eps``, ``step``, ``iters``,
    ``random_start``), the defender draws averaged per gradient (``eot``, EOT) and the
    gradient taken through the defender (``"bpda"``: the identity; ``"exact"``: its own).
    Checked when made (ValueError, one line); ``eps`` and ``step`` are kept as floats."""

    eps: float
    step: float
    iters: int
    eot: int = 1
    random_start: bool = False
    gradient: Gradient = "bpda"

    def __post_init__(self) -> None:
        eps, step = check_walk(self.eps, self.step, self.iters)
        check_count(self.eot, "eot")
        check_gradient(self.gradient)
        object.__setattr__(self, "eps", eps)
        object.__setattr__(self, "step", step)


def bpda(model: nn.Module, x: Tensor, y: Tensor, target: Target, settings: BPDASettings) -> Tensor:
    """BPDA, optionally with Expectation over Transformation (Athalye et al., 2018).

    PGD (see :func:`~ride.attacks.pgd.pgd`) whose forward pass classifies the defended
    image and whose backward pass treats the defender as the identity
    (:func:`~ride.attacks.target.bpda_identity`). With ``settings.eot > 1`` the gradient is
    the mean over ``eot`` independent defender draws before the sign step, the standard
    attack on randomised defenders (DiffPure's evaluation used 15). The random start is
    drawn from ``target.generator``.

    ``target.seeds`` (one per image) seed the defender: draw j at iterate k uses
    ``draw_seeds(seeds, "bpda", k, j)``. ``target.on_step`` is called once per iterate
    k = 0..iters with what the attacker saw there (:class:`BPDAStep`: x^(k), its first
    defended draw, both predictions and the fraction of its draws classified correctly);
    the final iterate x^(iters), which takes no step, is queried with ``eot`` draws too, and
    only when ``on_step`` is given. The final iterate is returned. The defender runs with
    gradients enabled inside where it needs them (RIDE fits a network); none of its
    gradients reach ``x``.

    ``gradient="exact"`` is the full-gradient white-box attack on a differentiable defender:
    the defender runs on the iterate with the graph kept, and the gradient of the loss is
    taken through it (its Jacobian included) instead of through the identity; draws,
    seeds, EOT averaging and ``on_step`` are the same. The defender's output must then
    depend on its input through autograd (ValueError otherwise).
    """
    check_inputs(x, y)
    seeds = check_seeds(target.seeds if target.seeds is not None else range(len(x)), len(x))
    x0 = x.detach().clone()
    start = uniform_start(x0, settings.eps, target.generator) if settings.random_start else x0
    gradient = _eot_gradient(model, y, target, seeds, settings)
    with eval_mode(model):
        final = sign_steps(gradient, x0, settings.eps, settings.step, settings.iters, start)
        if target.on_step is not None:  # the final iterate, queried as every other one
            target.on_step(_final_step(model, final, y, target.defender, seeds, settings))
        return final


def _eot_gradient(
    model: nn.Module, y: Tensor, target: Target, seeds: list[int], settings: BPDASettings
) -> GradientFn:
    """The gradient BPDA follows: at iterate k the mean over ``eot`` draws of the loss
    gradient through the defender; ``on_step`` is told what the attacker saw there."""

    def walk_gradient(x_adv: Tensor, k: int) -> Tensor:
        total = torch.zeros_like(x_adv)
        seen = AttackerView(k, x_adv, y, settings.eot)
        for j in range(settings.eot):
            draw = draw_seeds(seeds, "bpda", k, j)
            grad, defended, logits = draw_gradient(
                model, target.defender, x_adv, y, draw, settings.gradient
            )
            total += grad
            seen.add(defended, logits)
        if target.on_step is not None:
            target.on_step(seen.step(model))
        return total / settings.eot

    return walk_gradient


def _final_step(
    model: nn.Module,
    final: Tensor,
    y: Tensor,
    defender: DefenderFn,
    seeds: list[int],
    settings: BPDASettings,
) -> BPDAStep:
    """What the attacker sees at the final iterate x^(iters): ``eot`` draws, no gradient."""
    seen = AttackerView(settings.iters, final, y, settings.eot)
    for j in range(settings.eot):
        draw = draw_seeds(seeds, "bpda", settings.iters, j)
        defended = defender(final, draw).detach()
        with torch.no_grad():
            seen.add(defended, model(defended))
    return seen.step(model)


@dataclass(frozen=True)
class BPDA(ThroughDefender):
    """BPDA (Athalye, Carlini and Wagner, 2018): PGD whose classifier sees the defended
    image, the defender's backward pass taken as the identity (paper, "Defense Against
    White-Box Attack", Table 2). One defender draw per gradient; ``seeds`` give each image's
    defender draws (see :func:`bpda`).

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
        check_walk(self.eps, self.step, self.iters)

    @property
    def draws(self) -> int:
        """Defender draws averaged per gradient."""
        return 1

    def walk(self, defender: DefenderFn) -> tuple[int, Gradient]:
        """The defender draws per gradient and the gradient followed through ``defender``:
        BPDA's are fixed (:class:`~ride.attacks.adaptive.Adaptive` chooses per defender)."""
        return self.draws, "bpda"

    def through(self, model: nn.Module, x: Tensor, y: Tensor, target: Target) -> Tensor:
        draws, gradient = self.walk(target.defender)
        settings = BPDASettings(self.eps, self.step, self.iters, draws, self.random_start, gradient)
        return bpda(model, x, y, target, settings)


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
    id_stem: ClassVar[str] = "bpda"  # bpda-eot15-...: the eot setting completes the name

    def __post_init__(self) -> None:
        super().__post_init__()
        check_count(self.eot, "eot")

    @property
    def draws(self) -> int:
        return self.eot


ATTACKS.add("bpda", BPDA, "white-box, through each defender")
ATTACKS.add("bpda-eot", BPDAEOT, "white-box, averaged over defender draws")
