"""Attack ids and params, pinned: the ids name stored images, result rows and run
directories, so a refactor that changes one breaks every earlier run's resume and cache.

The literal ids below were computed with the attacks as they were before their ids were
derived from the declared settings (:func:`ride.attacks.base.attack_id`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import pytest

from ride.attacks import ATTACKS, Attack, make_attack
from ride.attacks.base import attack_id
from ride.registry import setting

#: (registered name, settings over its defaults, id)
PINNED: list[tuple[str, dict[str, Any], str]] = [
    ("none", {}, "none"),
    ("fgsm", {}, "fgsm-eps0.1"),
    ("fgsm", {"eps": 0.015}, "fgsm-eps0.015"),
    ("fgsm", {"eps": 1}, "fgsm-eps1"),
    ("pgd", {}, "pgd-eps0.1-step0.02-it10"),
    (
        "pgd",
        {"eps": 0.05, "step": 0.01, "iters": 100, "random_start": True},
        "pgd-eps0.05-step0.01-it100-rs",
    ),
    ("pgd", {"eps": 0.3, "step": 0.0025, "iters": 7}, "pgd-eps0.3-step0.0025-it7"),
    ("bpda", {}, "bpda-eps0.1-step0.02-it10"),
    (
        "bpda",
        {"eps": 0.05, "step": 0.01, "iters": 20, "random_start": True},
        "bpda-eps0.05-step0.01-it20-rs",
    ),
    (
        "bpda",
        {"eps": 0.03137254901960784, "step": 0.00784313725490196, "iters": 3},
        "bpda-eps0.03137254901960784-step0.00784313725490196-it3",
    ),
    ("bpda-eot", {}, "bpda-eot15-eps0.1-step0.02-it10"),
    (
        "bpda-eot",
        {"eot": 4, "eps": 0.05, "step": 0.01, "iters": 100},
        "bpda-eot4-eps0.05-step0.01-it100",
    ),
    ("bpda-eot", {"eot": 1, "random_start": True}, "bpda-eot1-eps0.1-step0.02-it10-rs"),
    ("apgd-ce", {}, "apgd-ce-eps0.1-it10"),
    ("apgd-ce", {"eps": 0.05, "iters": 100, "restarts": 5}, "apgd-ce-eps0.05-it100-restarts5"),
    ("apgd-ce", {"restarts": 2, "random_start": True}, "apgd-ce-eps0.1-it10-restarts2-rs"),
    ("apgd-dlr", {}, "apgd-dlr-eps0.1-it10"),
    ("apgd-dlr", {"eps": 0.05, "iters": 100, "restarts": 5}, "apgd-dlr-eps0.05-it100-restarts5"),
    ("apgd-dlr", {"iters": 3, "random_start": True}, "apgd-dlr-eps0.1-it3-rs"),
    ("adaptive", {}, "adaptive-eot15-eps0.1-step0.02-it10"),
    (
        "adaptive",
        {"eot": 20, "eps": 0.05, "step": 0.01, "iters": 50, "random_start": True},
        "adaptive-eot20-eps0.05-step0.01-it50-rs",
    ),
    ("adaptive", {"eot": 1, "iters": 3}, "adaptive-eot1-eps0.1-step0.02-it3"),
    ("adaptive-apgd-ce", {}, "adaptive-apgd-ce-eot15-eps0.1-it10"),
    (
        "adaptive-apgd-ce",
        {"eot": 20, "eps": 0.05, "iters": 100, "restarts": 3},
        "adaptive-apgd-ce-eot20-eps0.05-it100-restarts3",
    ),
    ("adaptive-apgd-ce", {"eot": 2, "random_start": True}, "adaptive-apgd-ce-eot2-eps0.1-it10-rs"),
    ("adaptive-apgd-dlr", {}, "adaptive-apgd-dlr-eot15-eps0.1-it10"),
    (
        "adaptive-apgd-dlr",
        {"eot": 20, "eps": 0.05, "iters": 100},
        "adaptive-apgd-dlr-eot20-eps0.05-it100",
    ),
    (
        "adaptive-apgd-dlr",
        {"restarts": 2, "random_start": True},
        "adaptive-apgd-dlr-eot15-eps0.1-it10-restarts2-rs",
    ),
    ("bpda-surrogate", {}, "bpda-surrogate-eot15-K20-T1-lr1-eps0.1-step0.02-it10"),
    (
        "bpda-surrogate",
        {
            "eot": 2,
            "iters": 2,
            "surrogate_iters": 10,
            "surrogate_checkpoints": 2,
            "surrogate_lr": 0.5,
        },
        "bpda-surrogate-eot2-K10-T2-lr0.5-eps0.1-step0.02-it2",
    ),
    (
        "bpda-surrogate",
        {"random_start": True, "eps": 0.05, "step": 0.01, "surrogate_lr": 2.0},
        "bpda-surrogate-eot15-K20-T1-lr2-eps0.05-step0.01-it10-rs",
    ),
    ("square", {}, "square-eps0.1-it10"),
    ("square", {"eps": 0.05, "iters": 5000, "p_init": 0.05}, "square-eps0.05-it5000-p0.05"),
    ("square", {"eps": 1, "p_init": 1}, "square-eps1-it10-p1"),
    ("square-eot", {}, "square-eot15-eps0.1-it10"),
    (
        "square-eot",
        {"eot": 4, "eps": 0.03137254901960784, "iters": 1000, "p_init": 0.3},
        "square-eot4-eps0.03137254901960784-it1000-p0.3",
    ),
    ("square-eot", {"eot": 1}, "square-eot1-eps0.1-it10"),
]


def test_every_registered_attack_is_pinned_at_its_defaults() -> None:
    assert {name for name, settings, _ in PINNED if not settings} == set(ATTACKS)


@pytest.mark.parametrize(("name", "settings", "expected"), PINNED)
def test_ids_are_todays(name: str, settings: dict[str, Any], expected: str) -> None:
    assert make_attack(name, **settings).id == expected


def test_the_registration_order_is_todays() -> None:
    assert ATTACKS.names() == (
        "none",
        "fgsm",
        "pgd",
        "bpda",
        "bpda-eot",
        "apgd-ce",
        "apgd-dlr",
        "adaptive",
        "adaptive-apgd-ce",
        "adaptive-apgd-dlr",
        "bpda-surrogate",
        "square",
        "square-eot",
    )


def test_params_name_the_settings_in_declaration_order() -> None:
    assert list(make_attack("bpda-surrogate").params()) == [
        "name",
        "eps",
        "step",
        "iters",
        "random_start",
        "eot",
        "surrogate_iters",
        "surrogate_checkpoints",
        "surrogate_lr",
    ]
    assert list(make_attack("adaptive-apgd-dlr").params()) == [
        "name",
        "eps",
        "iters",
        "restarts",
        "random_start",
        "eot",
    ]
    assert make_attack("bpda-eot", eot=4).params() == {
        "name": "bpda-eot",
        "eps": 0.1,
        "step": 0.02,
        "iters": 10,
        "random_start": False,
        "eot": 4,
    }


def test_an_id_names_the_settings_in_a_fixed_order() -> None:
    # one restart and no random start are left out; the order does not follow the fields'
    assert attack_id("x", {"random_start": False, "restarts": 1, "iters": 3, "eot": 2}) == (
        "x-eot2-it3"
    )
    assert attack_id("x", {"random_start": True, "restarts": 2, "eps": 1.0}) == (
        "x-eps1-restarts2-rs"
    )


def test_a_setting_the_id_table_does_not_know_is_named_by_its_field() -> None:
    @dataclass(frozen=True)
    class Nudge(Attack):
        amount: float = setting(0.01, help="added to every pixel")
        clip: bool = setting(True, help="clip to [0, 1]")
        eps: float = setting(0.1, help="budget")

        name: ClassVar[str] = "nudge"

    assert Nudge().id == "nudge-eps0.1-amount0.01-cliptrue"
    assert Nudge(amount=0.5, clip=False).id == "nudge-eps0.1-amount0.5-clipfalse"
