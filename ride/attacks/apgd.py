"""APGD-CE and APGD-DLR: Croce and Hein, "Reliable evaluation of adversarial robustness with
an ensemble of diverse parameter-free attacks" (ICML 2020), AutoAttack's first two attacks.

Gray-box (:func:`apgd`, the classes :class:`APGDCE` and :class:`APGDDLR`) or through a
defender with BPDA and EOT as AutoAttack's version for randomised defences runs it
(:func:`apgd_through`; its classes are the adaptive ones of :mod:`ride.attacks.adaptive`).
Both walk :func:`~ride.attacks.apgd_walk.apgd_walk`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ride._checks import check_seeds
from ride.attacks.apgd_walk import (
    EvaluateFn,
    Evaluation,
    EvaluatorFn,
    Loss,
    apgd_loss,
    apgd_restarts,
    check_apgd,
    check_loss,
)
from ride.attacks.base import (
    EPS_HELP,
    ITERS_HELP,
    RANDOM_START_HELP,
    RESTARTS_HELP,
    Attack,
    check_inputs,
    eval_mode,
)
from ride.attacks.target import (
    AttackerView,
    BPDAStep,
    Gradient,
    LossFn,
    Target,
    check_gradient,
    draw_gradient,
    draw_seeds,
)
from ride.registry import ATTACKS, setting


def apgd(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    iters: int,
    loss: Loss = "ce",
    restarts: int = 1,
    random_start: bool = False,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Auto-PGD, L-infinity (Croce and Hein, ICML 2020): APGD-CE (``loss="ce"``) or
    APGD-DLR (``loss="dlr"``), the first two attacks of AutoAttack.

    Sign-gradient ascent with momentum (alpha = 0.75) whose step size starts at 2 eps and is
    halved per image at the checkpoints of :func:`~ride.attacks.apgd_walk.apgd_checkpoints`
    when progress stalls (rho = 0.75), restarting from the best point; ``iters`` steps.
    Returns, per image, the iterate that fools the classifier with the highest loss, or,
    when none does, the highest-loss iterate (Algorithm 1's x_max). ``restarts`` > 1 runs
    again from uniform points of the eps-ball (drawn from ``generator``) on the images not
    yet fooled. x: (B, C, H, W) in [0, 1]; y: (B,) int64 labels. Returns a new tensor.
    """
    eps = check_apgd(eps, iters, restarts)
    loss_fn = apgd_loss(loss)
    check_inputs(x, y)
    x0 = x.detach().clone()

    def evaluator(index: Tensor, _: int) -> EvaluateFn:
        y_r = y[index]

        def evaluate(x_k: Tensor, k: int) -> Evaluation:
            with torch.enable_grad():
                x_req = x_k.detach().requires_grad_(True)
                logits = model(x_req)
                losses = loss_fn(logits, y_r)
                (grad,) = torch.autograd.grad(losses.sum(), [x_req])
            return losses.detach(), grad, logits.detach().argmax(dim=1) != y_r

        return evaluate

    with eval_mode(model):
        return apgd_restarts(evaluator, x0, eps, iters, restarts, random_start, generator)


@dataclass(frozen=True)
class APGDSettings:
    """One APGD walk through one defender: APGD's settings (``eps``, ``iters``, ``loss``,
    ``restarts``, ``random_start``), the defender draws averaged per iterate (``eot``, EOT)
    and the gradient taken through the defender (``"bpda"``: the identity; ``"exact"``: its
    own). Checked when made (ValueError, one line); ``eps`` is kept as a float."""

    eps: float
    iters: int
    loss: Loss = "ce"
    eot: int = 1
    restarts: int = 1
    random_start: bool = False
    gradient: Gradient = "bpda"

    def __post_init__(self) -> None:
        eps = check_apgd(self.eps, self.iters, self.restarts, self.eot)
        check_gradient(self.gradient)
        check_loss(self.loss)
        object.__setattr__(self, "eps", eps)


def apgd_through(
    model: nn.Module, x: Tensor, y: Tensor, target: Target, settings: APGDSettings
) -> Tensor:
    """APGD (see :func:`apgd`) through a defender, with Expectation over Transformation: the
    white-box APGD-CE / APGD-DLR of AutoAttack's version for randomised defences (Croce and
    Hein, 2020; BPDA and EOT: Athalye, Carlini and Wagner, 2018).

    The classifier sees the defended iterate. Its gradient is taken through the identity
    (``gradient="bpda"``, :func:`~ride.attacks.target.bpda_identity`) or through the
    defender itself (``"exact"``, a differentiable defender). At every iterate the loss and
    its gradient are the means over ``eot`` defender draws; the classifier counts as fooled
    there when every draw is misclassified. Draw j at iterate k of restart r uses
    ``draw_seeds(target.seeds, "apgd", r, k, j)``, disjoint from the evaluation's draws;
    random starts and restarts are drawn from ``target.generator``.

    ``target.on_step`` is called once per iterate k = 0..iters of every run, restart r's
    iterate k as iterate ``r * (iters + 1) + k`` (:class:`RestartSteps`), so the attacker's
    choice of iterate spans every restart: ``(iters + 1) * restarts`` calls, each with the
    whole batch (:class:`~ride.attacks.target.BPDAStep`; a checkpoint's restart from the best
    point is not an iterate of its own). The attack's result (the best iterate, as
    :func:`apgd` chooses it) is returned, not defended again.
    """
    loss_fn = apgd_loss(settings.loss)
    check_inputs(x, y)
    seeds = check_seeds(target.seeds if target.seeds is not None else range(len(x)), len(x))
    x0 = x.detach().clone()
    steps = None if target.on_step is None else RestartSteps(target.on_step, len(x), settings)
    evaluator = _evaluator_through(model, y, target, seeds, settings, loss_fn, steps)
    eps, iters, restarts = settings.eps, settings.iters, settings.restarts
    with eval_mode(model):
        out = apgd_restarts(
            evaluator, x0, eps, iters, restarts, settings.random_start, target.generator
        )
    if steps is not None:
        steps.finish()
    return out


class RestartSteps:
    """The attacker's view of every restart of :func:`apgd_through`, told to ``on_step`` as
    one sequence of whole-batch iterates: restart r's iterate k is iterate
    ``r * (iters + 1) + k``.

    A restart runs only on the images no run has fooled yet (every draw misclassified). An
    image it skips is reported at its best iterate so far (the lowest fraction of attacker
    draws correct; ties: the later), with what the attacker saw there; restarts that do not
    run at all (every image fooled) are reported the same way. So ``on_step`` is called
    ``(iters + 1) * restarts`` times whatever happens, and an attacker choosing the iterate
    of the lowest fraction never loses a better one.
    """

    def __init__(
        self, on_step: Callable[[BPDAStep], None], batch: int, settings: APGDSettings
    ) -> None:
        self.on_step, self.batch, self.settings = on_step, batch, settings
        self.best: BPDAStep | None = None
        self.reported = 0

    def see(self, step: BPDAStep, index: Tensor, r: int) -> None:
        """Restart ``r``'s ``step`` on the images ``index`` of the batch."""
        if self.best is None:
            if len(index) != self.batch:
                raise RuntimeError("the first run of APGD must cover the whole batch")
            self.best = step
        merged = _merge(self.best, step, index)
        take = merged.attacker_correct <= self.best.attacker_correct  # (B,): ties, the later
        self.best = _where(take, merged, self.best)
        iteration = r * (self.settings.iters + 1) + step.iteration
        self._report(merged, iteration)

    def finish(self) -> None:
        """Report the best iterates for the restarts that did not run."""
        total = (self.settings.iters + 1) * self.settings.restarts
        while self.best is not None and self.reported < total:
            self._report(self.best, self.reported)

    def _report(self, step: BPDAStep, iteration: int) -> None:
        if iteration != self.reported:
            raise RuntimeError(f"APGD reported iterate {iteration}, expected {self.reported}")
        self.on_step(replace(step, iteration=iteration))
        self.reported += 1


#: The per-image fields of a :class:`~ride.attacks.target.BPDAStep` (each (B, ...)).
PER_IMAGE_VIEW = (
    "adversarial",
    "defended",
    "pred_adversarial",
    "pred_defended",
    "attacker_correct",
)


def _merge(whole: BPDAStep, part: BPDAStep, index: Tensor) -> BPDAStep:
    """``whole`` with the images ``index`` replaced by ``part``'s (a restart's subset)."""
    merged: dict[str, Any] = {}
    for name in PER_IMAGE_VIEW:
        tensor = getattr(whole, name).clone()
        tensor[index] = getattr(part, name).to(tensor.dtype)
        merged[name] = tensor
    return replace(whole, **merged)


def _where(take: Tensor, first: BPDAStep, second: BPDAStep) -> BPDAStep:
    """Per image (``take``, (B,)), ``first``'s view where True, else ``second``'s."""
    chosen: dict[str, Any] = {}
    for name in PER_IMAGE_VIEW:
        a, b = getattr(first, name), getattr(second, name)
        mask = take.view(-1, *([1] * (a.dim() - 1)))  # (B, 1, 1, 1) for images
        chosen[name] = torch.where(mask, a, b)
    return replace(first, **chosen)


def _evaluator_through(
    model: nn.Module,
    y: Tensor,
    target: Target,
    seeds: list[int],
    settings: APGDSettings,
    loss_fn: LossFn,
    steps: RestartSteps | None,
) -> EvaluatorFn:
    """APGD's evaluation of an iterate through the defender: the means over ``eot`` draws of
    the loss and its gradient, fooled when every draw is; ``steps`` sees every restart."""
    eot, gradient = settings.eot, settings.gradient

    def evaluator(index: Tensor, r: int) -> EvaluateFn:
        y_r = y[index]
        seeds_r = [seeds[i] for i in index.tolist()]

        def evaluate(x_k: Tensor, k: int) -> Evaluation:
            total_loss = torch.zeros(len(x_k), dtype=x_k.dtype, device=x_k.device)
            total_grad = torch.zeros_like(x_k)
            fooled = torch.ones(len(x_k), dtype=torch.bool, device=x_k.device)
            seen = AttackerView(k, x_k, y_r, eot)
            for j in range(eot):
                draw = draw_seeds(seeds_r, "apgd", r, k, j)
                grad, defended, logits = draw_gradient(
                    model, target.defender, x_k, y_r, draw, gradient, loss_fn
                )
                logits = logits.detach()
                total_loss += loss_fn(logits, y_r)
                total_grad += grad
                fooled &= logits.argmax(dim=1) != y_r
                seen.add(defended, logits)
            if steps is not None:
                steps.see(seen.step(model), index, r)
            return total_loss / eot, total_grad / eot, fooled

        return evaluate

    return evaluator


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
    (:func:`~ride.attacks.apgd_walk.dlr_loss`), invariant to shifts and scalings of the
    logits; AutoAttack's second attack. Needs at least 3 classes.

    Example:
        >>> APGDDLR(eps=0.05, iters=100, restarts=5).id
        'apgd-dlr-eps0.05-it100-restarts5'
    """

    name: ClassVar[str] = "apgd-dlr"
    loss: ClassVar[Loss] = "dlr"


ATTACKS.add("apgd-ce", APGDCE, "gray-box, Auto-PGD on the cross-entropy")
ATTACKS.add("apgd-dlr", APGDDLR, "gray-box, Auto-PGD on the DLR loss")
