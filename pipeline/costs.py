"""The cost model: how much work an image takes in each kind of chunk task.

Work is counted in *units*: 1 is a 3x3 median filter on one image (a defender's
``cost_hint``; RIDE: its Adam steps ``iters * checkpoints``); a classifier pass is taken as
``CLASSIFIER_PASS`` units and an attack iteration as one forward and backward pass.

The model decides where a defender runs (:func:`runs_in_attack_chunk`: a *cheap* defender,
a filter, runs inside its gray-box attack's chunk task; RIDE and its family, and every
defender under a white-box attack, in tasks of their own), how many images a task takes
(:mod:`pipeline.plan`), which tasks Dask runs first and the ETA the flow logs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pipeline.whitebox import attack_draws, attack_iters
from ride.attacks import Attack
from ride.defenders import Defender

CLASSIFIER_PASS = 1.0
"""Units of one classifier forward pass on one image (backward: as much again)."""
CHEAP = 100.0
"""A defender costing at most this many units per image runs inside its attack's chunk task."""


def defence_cost(defender: Defender | None) -> float:
    """Units to defend one image once: the defender's ``cost_hint``, else guessed from its
    params (``iters * checkpoints`` when it has them, else 1)."""
    hint = getattr(defender, "cost_hint", None)
    if hint is not None:
        return float(hint)
    settings = defender.params() if defender is not None else {}
    return float(int(settings.get("iters", 1)) * int(settings.get("checkpoints", 1)))


def is_cheap(defender: Defender) -> bool:
    """Does ``defender`` run inside its attack's chunk task (a filter), rather than in tasks
    of its own (RIDE and its family)?"""
    return defence_cost(defender) <= CHEAP


def is_gray_box(attack: Attack) -> bool:
    """An attack whose images do not depend on the defender (and ``none``): made once per
    attack chunk and shared by every defender."""
    return not attack.adaptive


def runs_in_attack_chunk(attack: Attack, defender: Defender) -> bool:
    """Does ``defender`` run inside ``attack``'s attack chunks (no task of its own)?"""
    return is_gray_box(attack) and is_cheap(defender)


def attack_cost(attack: Attack) -> float:
    """Units to attack one image gray-box: a forward and backward pass per iteration."""
    if attack.name == "none":
        return 0.0
    iters: Any = getattr(attack, "iters", 1)
    return 2 * CLASSIFIER_PASS * (iters if isinstance(iters, int) else 1)


def adaptive_fits(attack: Attack, defender: Defender) -> int:
    """Defender calls per image of a white-box attack on ``defender``: its iterations times
    its draws per gradient, plus the final defence."""
    return attack_iters(attack) * attack_draws(attack, defender) + 1


def attack_chunk_cost(attack: Attack, defenders: Sequence[Defender]) -> float:
    """Units per image of an attack chunk: the attack, the clean and adversarial
    classification, and each cheap defender with the classification of its output."""
    cheap = [d for d in defenders if is_cheap(d)]
    return (
        attack_cost(attack)
        + 2 * CLASSIFIER_PASS
        + sum(defence_cost(d) + CLASSIFIER_PASS for d in cheap)
    )


def defence_chunk_cost(attack: Attack, defender: Defender) -> float:
    """Units per image of a defence chunk: the defender's fits (many under a white-box
    attack) and the classification of each."""
    fits = adaptive_fits(attack, defender) if attack.adaptive else 1
    return fits * (defence_cost(defender) + 2 * CLASSIFIER_PASS)
