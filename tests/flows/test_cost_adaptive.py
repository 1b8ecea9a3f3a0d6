"""The cost of an adaptive-attack defence task counts the draws it uses on that defender."""

from __future__ import annotations

from flows.evaluate import _cost, _Job
from ride.attacks import make_attack
from ride.defenders import make_defender

ADAPTIVE = make_attack("adaptive", iters=10, eot=4)
MEDIAN = make_defender("median")
RIDE = make_defender("ride", iters=100, checkpoints=2)


def test_adaptive_cost_uses_the_draws_chosen_per_defender() -> None:
    randomised = _Job(ADAPTIVE, (RIDE,), 0, 5, is_attack_chunk=False)
    deterministic = _Job(ADAPTIVE, (MEDIAN,), 0, 5, is_attack_chunk=False)
    assert _cost(randomised) == (10 * 4 + 1) * (200 + 2) * 5  # randomised: EOT 4
    assert _cost(deterministic) == (10 * 1 + 1) * (1 + 2) * 5  # deterministic: one draw
