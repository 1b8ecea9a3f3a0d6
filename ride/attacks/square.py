"""The Square attack, L-infinity: Andriushchenko, Croce, Flammarion and Hein, "Square Attack:
a query-efficient black-box adversarial attack via random search" (ECCV 2020).

A score-based attack: it reads the classifier's logits only, never a gradient. It starts at
a vertex of the eps-ball made of vertical stripes (their L-infinity initialisation) and runs
a random search (Algorithm 1): each iteration proposes the current best point with one random
square window moved to the opposite face of the ball per channel (their L-infinity sampling
distribution), and keeps the proposal when it lowers the margin loss (logit of the true class
minus the best other). The window's side shrinks as the query budget is spent (the schedule
of p). An image stops being updated once it is misclassified. As in AutoAttack's version, a
window's colour is drawn once per query (the authors' own code redraws a colour that would
leave the window unchanged), and an image misclassified as it is is left as it is.

Gray-box on the classifier alone (:func:`square`, :class:`Square`) or through a defender,
the margin averaged over ``eot`` defender draws per query (:func:`square_through`,
:class:`SquareEOT`; Expectation over Transformation: Athalye, Carlini and Wagner, 2018).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ride._checks import check_finite_number, check_seeds
from ride.attacks.base import (
    EPS_HELP,
    Attack,
    ThroughDefender,
    check_count,
    check_eps,
    check_inputs,
    eval_mode,
    project,
)
from ride.attacks.target import AttackerView, BPDAStep, DefenderFn, Target, draw_seeds
from ride.registry import ATTACKS, setting

#: The query counts, on a budget of 10,000, after which p is halved (Andriushchenko et al.:
#: at i in {10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000}); another budget halves p at the
#: same fractions of it.
P_HALVINGS: tuple[int, ...] = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
P_SCALE = 10_000

SQUARE_ITERS_HELP = "random-search iterations, one query each (Andriushchenko et al.: 10,000)"
P_INIT_HELP = "initial fraction p of the pixels one square changes (AutoAttack: 0.8)"
SQUARE_EOT_HELP = "defender draws whose margins are averaged per query"

#: What the search learns of points (n, C, H, W): their margins (n,), whether each is
#: misclassified (n,), and what else the caller keeps of the best point (rows per point).
Evaluation = tuple[Tensor, Tensor, tuple[Tensor, ...]]
#: (points (n, C, H, W), their rows in the batch (n,), iteration k) -> their evaluation.
EvaluateFn = Callable[[Tensor, Tensor, int], Evaluation]


def check_p_init(p_init: float) -> float:
    """``p_init`` as a float in (0, 1] (ValueError, one line, if not)."""
    p_init = check_finite_number(p_init, "p_init")
    if not 0.0 < p_init <= 1.0:
        raise ValueError(f"p_init must be in (0, 1], got {p_init}")
    return p_init


@dataclass(frozen=True)
class SquareSettings:
    """One Square run: the budget ``eps``, ``iters`` queries after the start, the initial
    fraction ``p_init`` of pixels a square changes and the defender draws averaged per query
    (``eot``, used through a defender). Checked when made (ValueError, one line); ``eps`` and
    ``p_init`` are kept as floats."""

    eps: float
    iters: int
    p_init: float = 0.8
    eot: int = 1

    def __post_init__(self) -> None:
        eps = check_eps(self.eps)
        check_count(self.iters, "iters")
        p_init = check_p_init(self.p_init)
        check_count(self.eot, "eot")
        object.__setattr__(self, "eps", eps)
        object.__setattr__(self, "p_init", p_init)


def margin_loss(logits: Tensor, y: Tensor) -> Tensor:
    """The margin (B,): logit of the true class minus the largest other logit, from logits
    (B, K); negative when another class wins (the loss of Andriushchenko et al.)."""
    true = logits.gather(1, y[:, None]).squeeze(1)  # (B,)
    others = logits.scatter(1, y[:, None], float("-inf"))  # (B, K), the true class masked
    return true - others.amax(dim=1)


def square_fraction(p_init: float, k: int, iters: int) -> float:
    """p at iteration k = 1..iters: ``p_init`` halved once per point of :data:`P_HALVINGS`
    that the k - 1 queries spent so far have passed, on the scale of a 10,000-query budget."""
    spent = P_SCALE * (k - 1) // iters
    return p_init / 2 ** bisect.bisect_left(P_HALVINGS, spent)


def square_side(p: float, height: int, width: int) -> int:
    """The side of a square covering about a fraction ``p`` of the image's pixels, at least
    one pixel and at most the image's shorter side."""
    return max(1, min(round(math.sqrt(p * height * width)), height, width))


def random_signs(shape: tuple[int, ...], generator: torch.Generator | None, like: Tensor) -> Tensor:
    """Signs -1 or +1 of ``shape``, uniform, drawn from ``generator``, as ``like``'s dtype."""
    bits = torch.randint(0, 2, shape, generator=generator, device=like.device)
    return (2 * bits - 1).to(like.dtype)


def stripes(x0: Tensor, eps: float, generator: torch.Generator | None) -> Tensor:
    """The L-infinity start: vertical stripes one pixel wide, each column moved by +eps or
    -eps per channel, at random; in [0, 1]."""
    b, c, _, w = x0.shape
    return project(x0 + eps * random_signs((b, c, 1, w), generator, x0), x0, eps)


def square_candidates(
    best: Tensor, x0: Tensor, eps: float, side: int, generator: torch.Generator | None
) -> Tensor:
    """One proposal per image (the L-infinity update of Algorithm 1): a ``side`` x ``side``
    window at a uniform position gets 2 eps times a random sign per channel added, and the
    result is projected on the eps-ball around ``x0`` and [0, 1]. Every image's window is
    drawn, so each image's draws do not depend on which others are still searched."""
    b, c, h, w = best.shape
    top = torch.randint(0, h - side + 1, (b, 1), generator=generator, device=best.device)
    left = torch.randint(0, w - side + 1, (b, 1), generator=generator, device=best.device)
    colour = random_signs((b, c, 1, 1), generator, best)
    rows = torch.arange(h, device=best.device)  # (H,)
    cols = torch.arange(w, device=best.device)  # (W,)
    in_rows = (rows >= top) & (rows < top + side)  # (B, H)
    in_cols = (cols >= left) & (cols < left + side)  # (B, W)
    window = (in_rows[:, None, :, None] & in_cols[:, None, None, :]).to(best.dtype)  # (B,1,H,W)
    return project(best + 2.0 * eps * colour * window, x0, eps)


class BestPoints:
    """Per image, the best point found so far, its margin, whether it is misclassified and
    what the caller keeps of its evaluation (the ``extras`` of :data:`Evaluation`)."""

    def __init__(self, points: Tensor, evaluation: Evaluation) -> None:
        margin, fooled, extras = evaluation
        self.points = points.clone()
        self.margin, self.fooled = margin.clone(), fooled.clone()
        self.extras = [extra.clone() for extra in extras]

    def take(self, rows: Tensor, points: Tensor, evaluation: Evaluation, accept: Tensor) -> None:
        """Replace the best points of images ``rows`` (n,) by ``points`` where ``accept``."""
        margin, fooled, extras = evaluation
        chosen = rows[accept]
        self.points[chosen] = points[accept]
        self.margin[chosen], self.fooled[chosen] = margin[accept], fooled[accept]
        for mine, new in zip(self.extras, extras, strict=True):
            mine[chosen] = new[accept]


def random_search(
    evaluate: EvaluateFn,
    x0: Tensor,
    settings: SquareSettings,
    generator: torch.Generator | None,
    report: Callable[[int, BestPoints], None] | None = None,
) -> Tensor:
    """Algorithm 1 of Andriushchenko et al. (2020), L-infinity, on every image of ``x0``.

    The clean image is evaluated first: one already misclassified is kept as it is. Every
    other image starts at :func:`stripes`. Iteration k = 1..iters proposes
    :func:`square_candidates` of side :func:`square_side` at p = :func:`square_fraction`
    and evaluates them for the images not yet misclassified; an image takes its proposal when
    its margin is strictly lower. ``report(k, best)`` sees the best points at k = 0..iters.
    """
    eps, iters = settings.eps, settings.iters
    batch = torch.arange(len(x0), device=x0.device)
    best = BestPoints(x0, evaluate(x0, batch, 0))
    start = stripes(x0, eps, generator)  # drawn for every image, as every window is
    todo = batch[~best.fooled]
    if len(todo):
        first = evaluate(start[todo], todo, 0)
        best.take(todo, start[todo], first, torch.ones_like(first[1]))
    if report is not None:
        report(0, best)
    _, _, height, width = x0.shape
    for k in range(1, iters + 1):
        side = square_side(square_fraction(settings.p_init, k, iters), height, width)
        candidates = square_candidates(best.points, x0, eps, side, generator)
        active = batch[~best.fooled]
        if len(active):
            proposal = candidates[active]
            evaluation = evaluate(proposal, active, k)
            best.take(active, proposal, evaluation, evaluation[0] < best.margin[active])
        if report is not None:
            report(k, best)
    return best.points


def square(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    iters: int,
    p_init: float = 0.8,
    generator: torch.Generator | None = None,
) -> Tensor:
    """The Square attack, L-infinity (Andriushchenko, Croce, Flammarion and Hein, ECCV 2020),
    on the classifier alone: :func:`random_search` on the margin loss, ``iters`` queries after
    the clean one and the start, every random draw from ``generator``. Returns, per image, the
    point of lowest margin found (the clean image where that is already misclassified).

    x: (B, C, H, W) in [0, 1]; y: (B,) int64 labels. Returns a new tensor in the eps-ball
    around ``x`` and in [0, 1]; no gradient is taken.
    """
    settings = SquareSettings(eps, iters, p_init)
    check_inputs(x, y)
    x0 = x.detach().clone()

    def evaluate(points: Tensor, rows: Tensor, _: int) -> Evaluation:
        margin = margin_loss(model(points), y[rows])
        return margin, margin < 0, ()

    with eval_mode(model), torch.no_grad():
        return random_search(evaluate, x0, settings, generator)


def square_through(
    model: nn.Module, x: Tensor, y: Tensor, target: Target, settings: SquareSettings
) -> Tensor:
    """The Square attack (see :func:`square`) through a defender, with Expectation over
    Transformation (Athalye, Carlini and Wagner, 2018): the classifier sees the defended
    point, and a point's margin is the mean over ``settings.eot`` defender draws; it counts
    as misclassified when every draw is. Draw j at iteration k uses
    ``draw_seeds(target.seeds, "square", k, j)`` (k = 0: the clean image and the start);
    the search's own draws come from ``target.generator``.

    ``target.on_step`` is called once per iterate k = 0..iters with what the attacker saw
    of the whole batch (:class:`~ride.attacks.target.BPDAStep`): x^(k) is each image's best
    point after iteration k (an image no longer searched stays at its point), reported with
    the draws it was evaluated with. Returns, per image, the point of lowest mean margin
    found (the clean image where every draw misclassifies it already).
    """
    check_inputs(x, y)
    seeds = check_seeds(target.seeds if target.seeds is not None else range(len(x)), len(x))
    x0 = x.detach().clone()
    evaluate = _evaluator_through(model, y, target.defender, seeds, settings.eot)
    on_step = target.on_step
    report = None if on_step is None else _reporter(model, y, on_step, settings.eot)
    with eval_mode(model):
        return random_search(evaluate, x0, settings, target.generator, report)


def _evaluator_through(
    model: nn.Module, y: Tensor, defender: DefenderFn, seeds: list[int], eot: int
) -> EvaluateFn:
    """Points evaluated through ``eot`` defender draws: the mean margin, misclassified when
    every draw is, and kept for the report the first defended draw and every draw's logits."""

    def evaluate(points: Tensor, rows: Tensor, k: int) -> Evaluation:
        y_rows, seeds_rows = y[rows], [seeds[i] for i in rows.tolist()]
        total = torch.zeros(len(points), dtype=points.dtype, device=points.device)
        fooled = torch.ones(len(points), dtype=torch.bool, device=points.device)
        first: Tensor | None = None
        logits_per_draw: list[Tensor] = []
        for j in range(eot):
            defended = defender(points, draw_seeds(seeds_rows, "square", k, j)).detach()
            with torch.no_grad():
                logits = model(defended)  # (n, K)
            total += margin_loss(logits, y_rows).to(points.dtype)
            fooled &= logits.argmax(dim=1) != y_rows
            first = defended if first is None else first
            logits_per_draw.append(logits)
        assert first is not None  # eot >= 1
        return total / eot, fooled, (first, torch.stack(logits_per_draw, dim=1))  # (n, eot, K)

    return evaluate


def _reporter(
    model: nn.Module, y: Tensor, on_step: Callable[[BPDAStep], None], eot: int
) -> Callable[[int, BestPoints], None]:
    """What the attacker saw at iterate k: every image's best point and its draws."""

    def report(k: int, best: BestPoints) -> None:
        defended, logits = best.extras  # (B, C, H, W), (B, eot, K)
        seen = AttackerView(k, best.points.clone(), y, eot)  # copies: the search goes on
        first = defended.clone()  # in place, and the step is kept
        for j in range(eot):
            seen.add(first, logits[:, j])
        on_step(seen.step(model))

    return report


@dataclass(frozen=True)
class Square(Attack):
    """The Square attack, L-infinity (Andriushchenko, Croce, Flammarion and Hein, "Square
    Attack: a query-efficient black-box adversarial attack via random search", ECCV 2020):
    random search over square windows moved to the faces of the eps-ball, on the margin
    loss, ``iters`` queries (the paper: 10,000; AutoAttack 5,000 with ``p_init`` 0.8).
    Gray-box and gradient-free: it reads the classifier's logits only (see :func:`square`).

    Example:
        >>> import torch
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
        >>> x, y = torch.rand(2, 1, 28, 28), torch.tensor([3, 7])
        >>> attack = Square(model, eps=0.1, iters=20)
        >>> attack.id
        'square-eps0.1-it20'
        >>> bool((attack(x, y) - x).abs().max() <= 0.1 + 1e-6)
        True
    """

    eps: float = setting(0.1, key="eps", help=EPS_HELP)
    iters: int = setting(10, key="attack_iters", help=SQUARE_ITERS_HELP)
    p_init: float = setting(0.8, help=P_INIT_HELP)

    name: ClassVar[str] = "square"

    def __post_init__(self) -> None:
        SquareSettings(self.eps, self.iters, self.p_init)

    def perturb(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        *,
        generator: torch.Generator | None = None,
        **_: Any,
    ) -> Tensor:
        return square(model, x, y, self.eps, self.iters, self.p_init, generator)


@dataclass(frozen=True)
class SquareEOT(ThroughDefender):
    """The Square attack (Andriushchenko et al., ECCV 2020) through the defender: the margin
    of every query averaged over ``eot`` defender draws (EOT, Athalye et al. 2018), the
    score-based attack that needs no gradient of the defender (see :func:`square_through`).

    Example:
        >>> import torch
        >>> from ride.defenders import Median
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
        >>> x, y = torch.rand(2, 1, 28, 28), torch.tensor([3, 7])
        >>> attack = SquareEOT(model, Median(kernel=3), eot=1, eps=0.1, iters=5)
        >>> attack.id
        'square-eot1-eps0.1-it5'
        >>> bool((attack(x, y) - x).abs().max() <= 0.1 + 1e-6)
        True
    """

    eot: int = setting(15, key="eot", help=SQUARE_EOT_HELP)
    eps: float = setting(0.1, key="eps", help=EPS_HELP)
    iters: int = setting(10, key="attack_iters", help=SQUARE_ITERS_HELP)
    p_init: float = setting(0.8, help=P_INIT_HELP)

    name: ClassVar[str] = "square-eot"
    id_stem: ClassVar[str] = "square"  # square-eot15-...: the eot setting completes the name

    def __post_init__(self) -> None:
        self.settings()

    @property
    def draws(self) -> int:
        """Defender draws averaged per query."""
        return self.eot

    def settings(self) -> SquareSettings:
        """The checked settings of :func:`square_through`."""
        return SquareSettings(self.eps, self.iters, self.p_init, self.eot)

    def through(self, model: nn.Module, x: Tensor, y: Tensor, target: Target) -> Tensor:
        return square_through(model, x, y, target, self.settings())


ATTACKS.add("square", Square, "gray-box, score-based random search (no gradient)")
ATTACKS.add("square-eot", SquareEOT, "white-box Square, the margin averaged over defender draws")
