"""The cost of an adaptive-attack defence task counts the draws it uses on that defender."""

from __future__ import annotations

from pipeline.plan import Task
from ride.attacks import make_attack
from ride.defenders import make_defender

ADAPTIVE = make_attack("adaptive", iters=10, eot=4)
MEDIAN = make_defender("median")
RIDE = make_defender("ride", iters=100, checkpoints=2)


def test_adaptive_cost_uses_the_draws_chosen_per_defender() -> None:
    randomised = Task.defence_chunk(ADAPTIVE, RIDE, 0, 5)
    deterministic = Task.defence_chunk(ADAPTIVE, MEDIAN, 0, 5)
    assert randomised.cost == (10 * 4 + 1) * (200 + 2) * 5  # randomised: EOT 4
    assert deterministic.cost == (10 * 1 + 1) * (1 + 2) * 5  # deterministic: one draw
