"""L-infinity attacks in [0, 1] pixel space: gray-box FGSM, PGD and APGD, white-box BPDA (+EOT).

FGSM: Goodfellow, Shlens and Szegedy, "Explaining and harnessing adversarial examples" (2014).
PGD: Madry et al., "Towards deep learning models resistant to adversarial attacks" (2017).
BPDA and EOT: Athalye, Carlini and Wagner, "Obfuscated gradients give a false sense of
security" (2018). The paper evaluates PGD with 10 iterations (MNIST eps 0.1, step 0.02; CIFAR
and ImageNet eps 0.05, step 0.01), FGSM with step 0.015 on ImageNet, and its white-box claim
(Table 2) under BPDA ("Defense Against White-Box Attack").

APGD-CE and APGD-DLR: Croce and Hein, "Reliable evaluation of adversarial robustness with an
ensemble of diverse parameter-free attacks" (ICML 2020), AutoAttack's first two attacks.

FGSM, PGD and BPDA are one walk of projected sign steps (``_sign_steps``); they differ only in
the gradient they follow. APGD walks its own (``_apgd_walk``: momentum, a step size halved at
checkpoints), gray-box (:func:`apgd`) or through a defender like BPDA (:func:`apgd_through`).
BPDA is PGD whose classifier sees the defended image: the defender is wrapped so that its
forward pass is the defender and its backward pass the identity. Against
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

#: Per-image losses (B,) from logits (B, K) and labels (B,).
LossFn = Callable[[Tensor, Tensor], Tensor]

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


def draw_seeds(seeds: Sequence[int], *stage: str | int) -> list[int]:
    """One seed per image for one defender draw, derived from the images' seeds and ``stage``."""
    return [derive_seed(int(s), *stage) for s in seeds]


class _AttackerView:
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


def _draw_gradient(
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
        seen = _AttackerView(k, x_adv, y, eot)
        for j in range(eot):
            draw = draw_seeds(image_seeds, "bpda", k, j)
            grad, defended, logits = _draw_gradient(model, defender, x_adv, y, draw, gradient)
            total += grad
            seen.add(defended, logits)
        if on_step is not None:
            on_step(seen.step(model))
        return total / eot

    with _eval_mode(model):
        final = _sign_steps(walk_gradient, x0, eps, step, iters, start)
        if on_step is not None:  # the final iterate, queried as every other one
            seen = _AttackerView(iters, final, y, eot)
            for j in range(eot):
                draw = draw_seeds(image_seeds, "bpda", iters, j)
                defended = defender(final, draw).detach()
                with torch.no_grad():
                    seen.add(defended, model(defended))
            on_step(seen.step(model))
        return final


# APGD: Croce and Hein, "Reliable evaluation of adversarial robustness with an ensemble of
# diverse parameter-free attacks" (ICML 2020), Algorithm 1, L-infinity.

#: APGD's objective: ``"ce"`` the cross-entropy, ``"dlr"`` the Difference of Logits Ratio.
Loss = Literal["ce", "dlr"]
LOSSES: tuple[Loss, ...] = ("ce", "dlr")

APGD_ALPHA = 0.75
"""APGD's momentum: the weight of the new sign step against the last move (Croce and Hein)."""
APGD_RHO = 0.75
"""Condition 1's threshold: the fraction of loss-increasing steps since the last checkpoint
below which the step size is halved (Croce and Hein)."""

#: What APGD sees at one iterate, per image: the loss (B,), its gradient (B, C, H, W) and
#: whether the classifier is fooled there (B,) bool.
Evaluation = tuple[Tensor, Tensor, Tensor]

#: The evaluation of an iterate: (x^(k) of the images attacked, k) -> :data:`Evaluation`.
EvaluateFn = Callable[[Tensor, int], Evaluation]


def dlr_loss(logits: Tensor, y: Tensor) -> Tensor:
    """The Difference of Logits Ratio (Croce and Hein, 2020), per image (B,):

    ``DLR(z, y) = -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3 + 1e-12)``, with ``z_pi1 >=
    z_pi2 >= ...`` the sorted logits. Invariant to shifting and scaling the logits; positive
    exactly when the image is misclassified. Needs at least 3 classes.
    """
    if logits.ndim != 2 or logits.shape[1] < 3:
        raise ValueError(f"the DLR loss needs logits (B, K) with K >= 3, got {tuple(logits.shape)}")
    z_y = logits.gather(1, y.view(-1, 1)).squeeze(1)
    is_y = F.one_hot(y, logits.shape[1]).bool()
    z_other = logits.masked_fill(is_y, float("-inf")).amax(dim=1)
    z_sorted = logits.sort(dim=1, descending=True).values
    return -(z_y - z_other) / (z_sorted[:, 0] - z_sorted[:, 2] + 1e-12)


def apgd_loss(loss: Loss) -> LossFn:
    """The per-image loss (B,) APGD maximises: cross-entropy or :func:`dlr_loss`."""
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")
    if loss == "dlr":
        return dlr_loss
    return lambda logits, y: F.cross_entropy(logits, y, reduction="none")


def apgd_checkpoints(iters: int) -> tuple[int, ...]:
    """APGD's checkpoints ``w_j = ceil(p_j iters) <= iters`` (Croce and Hein, Sec. 3.2).

    ``p_0 = 0``, ``p_1 = 0.22``, ``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)``: for 100
    iterations 0, 22, 41, 57, 70, 80, 87, 93, 99. The p_j are kept in exact hundredths, so no
    rounding error moves a checkpoint; repeated ones (few iterations) are listed once.
    """
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < 1:
        raise ValueError(f"iters must be an int >= 1, got {iters!r}")
    p = [0, 22]  # hundredths
    while p[-1] + max(p[-1] - p[-2] - 3, 6) <= 100:
        p.append(p[-1] + max(p[-1] - p[-2] - 3, 6))
    return tuple(dict.fromkeys(-(-pj * iters // 100) for pj in p))


def check_apgd(eps: float, iters: int, restarts: int, eot: int = 1) -> float:
    """``eps`` as a float after APGD's settings are checked (ValueError, one line, if not)."""
    eps = _check_eps(eps)
    for name, value in (("iters", iters), ("restarts", restarts), ("eot", eot)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return eps


def _apgd_walk(
    evaluate: EvaluateFn, x: Tensor, start: Tensor, eps: float, iters: int
) -> tuple[Tensor, Tensor, Tensor]:
    """One run of APGD (Croce and Hein, Algorithm 1) from ``start``, every image with its own
    step size and checkpoint state: the image it returns (see :func:`apgd`), the loss there
    and whether it fools the classifier.

    ``evaluate`` is called at x^(0), ..., x^(iters) (k = 0..iters). Step k goes from x^(k) to
    x^(k+1): z = P(x^(k) + eta sign(grad)), then with momentum
    x^(k+1) = P(x^(k) + alpha (z - x^(k)) + (1 - alpha)(x^(k) - x^(k-1))) (none at k = 0).
    At a checkpoint k = w_j the step size is halved, and the walk restarts from the best
    point, where Condition 1 (fewer than rho (w_j - w_{j-1}) of the steps since w_{j-1}
    raised the loss) or Condition 2 (the step size was not halved at w_{j-1} and the best
    loss has not risen since) holds; the next step then starts from the best point, its loss
    and its gradient (no new evaluation).
    """
    batch = len(x)
    checkpoints = set(apgd_checkpoints(iters)[1:])
    eta = torch.full((batch, 1, 1, 1), 2.0 * eps, dtype=x.dtype, device=x.device)  # (B, 1, 1, 1)
    x_k, x_prev = start, start
    loss_k, grad_k, fooled = evaluate(x_k, 0)
    x_max, loss_max, grad_max = x_k, loss_k, grad_k  # the highest-loss iterate
    x_out, loss_out, fooled_out = x_k, loss_k, fooled  # the result: (fooled, loss) highest
    successes = torch.zeros(batch, dtype=torch.long, device=x.device)
    loss_max_last = loss_max  # f_max at the last checkpoint
    halved_last = torch.zeros(batch, dtype=torch.bool, device=x.device)
    last_checkpoint = 0
    for k in range(iters):
        z = _project(x_k + eta * grad_k.sign(), x, eps)
        if k == 0:
            x_next = z
        else:
            x_next = _project(
                x_k + APGD_ALPHA * (z - x_k) + (1.0 - APGD_ALPHA) * (x_k - x_prev), x, eps
            )
        loss_next, grad_next, fooled = evaluate(x_next, k + 1)
        rises = loss_next > loss_max
        x_max = torch.where(rises.view(-1, 1, 1, 1), x_next, x_max)
        grad_max = torch.where(rises.view(-1, 1, 1, 1), grad_next, grad_max)
        loss_max = torch.where(rises, loss_next, loss_max)
        better = (fooled & ~fooled_out) | ((fooled == fooled_out) & (loss_next > loss_out))
        x_out = torch.where(better.view(-1, 1, 1, 1), x_next, x_out)
        loss_out = torch.where(better, loss_next, loss_out)
        fooled_out = fooled_out | fooled
        if k in checkpoints:
            condition_1 = successes < APGD_RHO * (k - last_checkpoint)
            condition_2 = ~halved_last & ~(loss_max > loss_max_last)
            halve = condition_1 | condition_2
            eta = torch.where(halve.view(-1, 1, 1, 1), eta / 2.0, eta)
            x_next = torch.where(halve.view(-1, 1, 1, 1), x_max, x_next)
            grad_next = torch.where(halve.view(-1, 1, 1, 1), grad_max, grad_next)
            loss_next = torch.where(halve, loss_max, loss_next)
            successes = torch.zeros_like(successes)
            halved_last, loss_max_last, last_checkpoint = halve, loss_max, k
        successes += (loss_next > loss_k).long()
        x_prev, x_k, loss_k, grad_k = x_k, x_next, loss_next, grad_next
    return x_out.detach(), loss_out, fooled_out


def _apgd_restarts(
    evaluator: Callable[[Tensor, int], EvaluateFn],
    x: Tensor,
    eps: float,
    iters: int,
    restarts: int,
    random_start: bool,
    generator: torch.Generator | None,
) -> Tensor:
    """APGD run ``restarts`` times: run 0 from ``x`` (from a uniform point of the eps-ball
    with ``random_start``), every further run from a uniform point, on the images no run has
    fooled yet; per image the result of highest (fooled, loss). ``evaluator(index, r)`` is
    the evaluation of restart r on the images ``x[index]``."""
    out, loss = x.clone(), torch.full((len(x),), float("-inf"), device=x.device)
    fooled = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    for r in range(restarts):
        index = (~fooled).nonzero().squeeze(1)
        if len(index) == 0:
            break
        x_r = x[index]
        start = _random_start(x_r, eps, generator) if random_start or r > 0 else x_r
        adv_r, loss_r, fooled_r = _apgd_walk(evaluator(index, r), x_r, start, eps, iters)
        better = fooled_r | (loss_r > loss[index])
        chosen = index[better]
        out[chosen], loss[chosen], fooled[chosen] = adv_r[better], loss_r[better], fooled_r[better]
    return out


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
    """Auto-PGD, L-infinity (Croce and Hein, "Reliable evaluation of adversarial robustness
    with an ensemble of diverse parameter-free attacks", ICML 2020): APGD-CE (``loss="ce"``)
    or APGD-DLR (``loss="dlr"``), the first two attacks of AutoAttack.

    Sign-gradient ascent with momentum (alpha = 0.75) whose step size starts at 2 eps and is
    halved per image at the checkpoints of :func:`apgd_checkpoints` when progress stalls
    (rho = 0.75), restarting from the best point (see :func:`_apgd_walk`); ``iters`` steps.
    Returns, per image, the iterate that fools the classifier with the highest loss, or,
    when none does, the highest-loss iterate (Algorithm 1's x_max). ``restarts`` > 1 runs
    again from uniform points of the eps-ball (drawn from ``generator``) on the images not
    yet fooled. x: (B, C, H, W) in [0, 1]; y: (B,) int64 labels. Returns a new tensor.
    """
    eps = check_apgd(eps, iters, restarts)
    loss_fn = apgd_loss(loss)
    _check_inputs(x, y)
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

    with _eval_mode(model):
        return _apgd_restarts(evaluator, x0, eps, iters, restarts, random_start, generator)


def apgd_through(
    model: nn.Module,
    defender: DefenderFn,
    x: Tensor,
    y: Tensor,
    eps: float,
    iters: int,
    loss: Loss = "ce",
    eot: int = 1,
    restarts: int = 1,
    random_start: bool = False,
    *,
    seeds: Sequence[int] | None = None,
    generator: torch.Generator | None = None,
    on_step: Callable[[BPDAStep], None] | None = None,
    gradient: Gradient = "bpda",
) -> Tensor:
    """APGD (see :func:`apgd`) through a defender, with Expectation over Transformation: the
    white-box APGD-CE / APGD-DLR of AutoAttack's version for randomised defences (Croce and
    Hein, 2020; BPDA and EOT: Athalye, Carlini and Wagner, 2018).

    The classifier sees the defended iterate. Its gradient is taken through the identity
    (``gradient="bpda"``, :func:`bpda_identity`) or through the defender itself
    (``"exact"``, a differentiable defender). At every iterate the loss and its gradient are
    the means over ``eot`` defender draws; the classifier counts as fooled there when every
    draw is misclassified. Draw j at iterate k of restart r uses
    ``draw_seeds(seeds, "apgd", r, k, j)``, disjoint from the evaluation's draws.

    ``on_step`` is called once per iterate k = 0..iters of the first run (restart 0), as
    :func:`bpda` calls it (:class:`BPDAStep`; a checkpoint's restart from the best point is
    not an iterate of its own); the attack's result (the best iterate, as :func:`apgd`
    chooses it) is returned, not defended again.
    """
    eps = check_apgd(eps, iters, restarts, eot)
    if gradient not in GRADIENTS:
        raise ValueError(f"gradient must be one of {', '.join(GRADIENTS)}, got {gradient!r}")
    loss_fn = apgd_loss(loss)
    _check_inputs(x, y)
    image_seeds = check_seeds(seeds if seeds is not None else range(len(x)), len(x))
    x0 = x.detach().clone()

    def evaluator(index: Tensor, r: int) -> EvaluateFn:
        y_r = y[index]
        seeds_r = [image_seeds[i] for i in index.tolist()]

        def evaluate(x_k: Tensor, k: int) -> Evaluation:
            total_loss = torch.zeros(len(x_k), dtype=x_k.dtype, device=x_k.device)
            total_grad = torch.zeros_like(x_k)
            fooled = torch.ones(len(x_k), dtype=torch.bool, device=x_k.device)
            seen = _AttackerView(k, x_k, y_r, eot)
            for j in range(eot):
                draw = draw_seeds(seeds_r, "apgd", r, k, j)
                grad, defended, logits = _draw_gradient(
                    model, defender, x_k, y_r, draw, gradient, loss_fn
                )
                logits = logits.detach()
                total_loss += loss_fn(logits, y_r)
                total_grad += grad
                fooled &= logits.argmax(dim=1) != y_r
                seen.add(defended, logits)
            if r == 0 and on_step is not None:
                on_step(seen.step(model))
            return total_loss / eot, total_grad / eot, fooled

        return evaluate

    with _eval_mode(model):
        return _apgd_restarts(evaluator, x0, eps, iters, restarts, random_start, generator)
