"""The rows of the adaptive attack record the method it chose for each defender; the rows of
every other attack keep their params."""

from __future__ import annotations

import json

from pipeline.config import RunConfig
from pipeline.rows import failed_rows, identity_columns
from pipeline.whitebox import attack_draws, attack_iters
from ride.attacks import make_attack
from ride.defenders import make_defender

CFG = RunConfig.from_mapping(
    {"attacks": ["adaptive", "bpda-eot", "bpda"], "defenders": ["median", "ride"], "eot": 3}
)


def _params(attack_name: str, defender_name: str) -> dict[str, object]:
    attack = next(a for a in CFG.attack_configs() if a.name == attack_name)
    defender = next(d for d in CFG.defender_configs() if d.name == defender_name)
    row = identity_columns(CFG, attack, defender, 0, 3)
    params: dict[str, object] = json.loads(row["attack_params"])
    return params


def test_adaptive_rows_record_the_method_chosen_for_their_defender() -> None:
    assert _params("adaptive", "median") == {
        "name": "adaptive", "eps": 0.1, "step": 0.02, "iters": 10, "random_start": False, "eot": 3,
        "gradient": "bpda", "draws": 1,
    }  # fmt: skip
    ride = _params("adaptive", "ride")  # randomised, not differentiable: BPDA+EOT
    assert (ride["gradient"], ride["draws"]) == ("bpda", 3)


def test_other_attacks_keep_their_params() -> None:
    for name in ("bpda", "bpda-eot"):
        attack = next(a for a in CFG.attack_configs() if a.name == name)
        for defender in CFG.defender_configs():
            row = identity_columns(CFG, attack, defender, 0, 3)
            assert row["attack_params"] == json.dumps(attack.params(), sort_keys=True)


def test_failed_adaptive_rows_also_say_the_method() -> None:
    attack, defender = make_attack("adaptive", eot=2), make_defender("ride")
    (row,) = failed_rows(CFG, attack, defender, 0, [4], "boom")
    assert json.loads(row["attack_params"])["draws"] == 2


def test_iterations_and_draws_per_defender() -> None:
    adaptive = make_attack("adaptive", eot=4, iters=3)
    assert attack_iters(adaptive) == 3
    assert attack_draws(adaptive, make_defender("ride")) == 4
    assert attack_draws(adaptive, make_defender("median")) == 1
    assert attack_draws(make_attack("bpda-eot", eot=5), make_defender("median")) == 5
    assert attack_draws(make_attack("bpda"), make_defender("ride")) == 1
