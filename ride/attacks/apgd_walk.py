"""APGD's walk: Croce and Hein, "Reliable evaluation of adversarial robustness with an
ensemble of diverse parameter-free attacks" (ICML 2020), Algorithm 1, L-infinity.

Sign steps with momentum whose step size (2 eps at first) is halved per image at the
checkpoints where progress stalls, the walk then going on from the best point; restarts from
uniform points of the eps-ball on the images not yet fooled. The walk sees the classifier
only through an evaluation of each iterate (the loss, its gradient, whether it fools), so
the same walk runs gray-box (:func:`~ride.attacks.apgd.apgd`) and through a defender
(:func:`~ride.attacks.apgd.apgd_through`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from ride.attacks.base import check_count, check_eps, project, uniform_start
from ride.attacks.target import LossFn

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

#: The evaluation of one restart: (index of the images it attacks, restart r) -> EvaluateFn.
EvaluatorFn = Callable[[Tensor, int], EvaluateFn]


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


def check_loss(loss: str) -> None:
    """ValueError unless ``loss`` is one of :data:`LOSSES`."""
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")


def apgd_loss(loss: Loss) -> LossFn:
    """The per-image loss (B,) APGD maximises: cross-entropy or :func:`dlr_loss`."""
    check_loss(loss)
    if loss == "dlr":
        return dlr_loss
    return lambda logits, y: F.cross_entropy(logits, y, reduction="none")


def apgd_checkpoints(iters: int) -> tuple[int, ...]:
    """APGD's checkpoints ``w_j = ceil(p_j iters) <= iters`` (Croce and Hein, Sec. 3.2).

    ``p_0 = 0``, ``p_1 = 0.22``, ``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)``: for 100
    iterations 0, 22, 41, 57, 70, 80, 87, 93, 99. The p_j are kept in exact hundredths, so no
    rounding error moves a checkpoint; repeated ones (few iterations) are listed once.
    """
    check_count(iters, "iters")
    p = [0, 22]  # hundredths
    while p[-1] + max(p[-1] - p[-2] - 3, 6) <= 100:
        p.append(p[-1] + max(p[-1] - p[-2] - 3, 6))
    return tuple(dict.fromkeys(-(-pj * iters // 100) for pj in p))


def check_apgd(eps: float, iters: int, restarts: int, eot: int = 1) -> float:
    """``eps`` as a float after APGD's settings are checked (ValueError, one line, if not)."""
    eps = check_eps(eps)
    for name, value in (("iters", iters), ("restarts", restarts), ("eot", eot)):
        check_count(value, name)
    return eps


def apgd_walk(
    evaluate: EvaluateFn, x: Tensor, start: Tensor, eps: float, iters: int
) -> tuple[Tensor, Tensor, Tensor]:
    """One run of APGD (Croce and Hein, Algorithm 1) from ``start``, every image with its own
    step size and checkpoint state: the image it returns (see :func:`~ride.attacks.apgd.apgd`),
    the loss there and whether it fools the classifier.

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
        z = project(x_k + eta * grad_k.sign(), x, eps)
        if k == 0:
            x_next = z
        else:
            x_next = project(
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


def apgd_restarts(
    evaluator: EvaluatorFn,
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
        start = uniform_start(x_r, eps, generator) if random_start or r > 0 else x_r
        adv_r, loss_r, fooled_r = apgd_walk(evaluator(index, r), x_r, start, eps, iters)
        better = fooled_r | (loss_r > loss[index])
        chosen = index[better]
        out[chosen], loss[chosen], fooled[chosen] = adv_r[better], loss_r[better], fooled_r[better]
    return out
