"""FGSM and PGD (L-infinity): the invariants every attack must keep."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ride.attacks import ATTACKS, FGSM, PGD, NoAttack, fgsm, make_attack, pgd
from ride.classifiers import accuracy
from ride.datasets import ImageSet
from ride.seeding import generator_for

EPS = 0.1


@pytest.fixture()
def batch(digits_test: ImageSet) -> tuple[torch.Tensor, torch.Tensor]:
    return digits_test.images[:64], digits_test.labels[:64]


def _all_attacks(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    return {
        "fgsm": fgsm(model, x, y, EPS),
        "pgd": pgd(model, x, y, EPS, 0.02, 10),
        "pgd-rs": pgd(model, x, y, EPS, 0.02, 3, random_start=True, generator=generator_for(1)),
    }


def test_results_stay_in_eps_ball_and_unit_range(
    trained_cnn: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, y = batch
    for name, adv in _all_attacks(trained_cnn, x, y).items():
        assert adv.shape == x.shape, name
        assert float((adv - x).abs().max()) <= EPS + 1e-6, name
        assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0, name
        assert not adv.requires_grad, name


def test_inputs_not_mutated_mode_restored_no_param_grads(
    trained_cnn: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, y = batch
    x_copy, y_copy = x.clone(), y.clone()
    trained_cnn.train()
    try:
        _all_attacks(trained_cnn, x, y)
        assert trained_cnn.training
    finally:
        trained_cnn.eval()
    _all_attacks(trained_cnn, x, y)
    assert not trained_cnn.training
    assert torch.equal(x, x_copy) and torch.equal(y, y_copy)
    assert all(p.grad is None for p in trained_cnn.parameters())


def test_pgd_one_step_of_size_eps_is_fgsm(
    trained_cnn: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, y = batch
    assert torch.equal(pgd(trained_cnn, x, y, EPS, EPS, 1), fgsm(trained_cnn, x, y, EPS))


def test_attacks_work_under_no_grad(
    trained_cnn: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, y = batch
    with torch.no_grad():
        adv = pgd(trained_cnn, x, y, EPS, 0.02, 2)
    assert torch.equal(adv, pgd(trained_cnn, x, y, EPS, 0.02, 2))


def test_pgd_lowers_accuracy(trained_cnn: nn.Module, digits_test: ImageSet) -> None:
    x, y = digits_test.images[:200], digits_test.labels[:200]
    clean = accuracy(trained_cnn, x, y)
    fg = accuracy(trained_cnn, fgsm(trained_cnn, x, y, EPS), y)
    adv = accuracy(trained_cnn, pgd(trained_cnn, x, y, EPS, 0.02, 10), y)
    assert clean >= 0.95
    assert adv < 0.5 and adv <= fg < clean


def test_random_start_is_seeded(
    trained_cnn: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, y = batch
    a = pgd(trained_cnn, x, y, EPS, 0.02, 2, random_start=True, generator=generator_for(5))
    b = pgd(trained_cnn, x, y, EPS, 0.02, 2, random_start=True, generator=generator_for(5))
    assert torch.equal(a, b)


def test_ids_and_params_are_stable() -> None:
    names = ATTACKS.names()  # the built-in ones first, in order; modules add theirs after
    builtin = ("none", "fgsm", "pgd", "bpda", "bpda-eot", "apgd-ce", "apgd-dlr", "adaptive")
    assert names[: len(builtin)] == builtin
    assert NoAttack().id == "none"
    assert FGSM().id == "fgsm-eps0.1"
    assert FGSM(eps=0.015).id == "fgsm-eps0.015"
    assert PGD().id == "pgd-eps0.1-step0.02-it10"
    assert PGD(eps=0.05, step=0.01).id == "pgd-eps0.05-step0.01-it10"
    assert PGD(random_start=True).id == "pgd-eps0.1-step0.02-it10-rs"
    assert PGD(eps=1.0).id == "pgd-eps1-step0.02-it10"
    assert PGD().params() == {
        "name": "pgd",
        "eps": 0.1,
        "step": 0.02,
        "iters": 10,
        "random_start": False,
    }
    assert FGSM().params() == {"name": "fgsm", "eps": 0.1}
    assert NoAttack().params() == {"name": "none"}


def test_make_attack_builds_the_registered_class() -> None:
    assert make_attack("pgd", eps=0.05) == PGD(eps=0.05)
    assert make_attack("none") == NoAttack()
    assert isinstance(make_attack("fgsm"), FGSM)


def test_the_model_is_not_part_of_the_identity(trained_cnn: nn.Module) -> None:
    assert PGD(trained_cnn, eps=0.05) == PGD(eps=0.05)
    assert PGD(trained_cnn).params() == PGD().params()


def test_objects_equal_the_functions(
    trained_cnn: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, y = batch
    none = NoAttack(trained_cnn)(x, y)
    assert torch.equal(none, x) and none.data_ptr() != x.data_ptr()
    assert torch.equal(FGSM(trained_cnn)(x, y), fgsm(trained_cnn, x, y, EPS))
    assert torch.equal(PGD(trained_cnn, iters=2)(x, y), pgd(trained_cnn, x, y, EPS, 0.02, 2))
    assert torch.equal(
        make_attack("pgd", iters=2).perturb(trained_cnn, x, y), pgd(trained_cnn, x, y, EPS, 0.02, 2)
    )


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("cw", {}, "unknown attack 'cw'; choose from: none, fgsm, pgd"),
        ("pgd", {"eps": 0.0}, "eps must be in"),
        ("pgd", {"eps": 1.5}, "eps must be in"),
        ("pgd", {"step": 0.0}, "step must be > 0"),
        ("pgd", {"iters": 0}, "iters must be"),
        ("fgsm", {"iters": 3}, "unknown setting"),
    ],
)
def test_attack_validation(name: str, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_attack(name, **kwargs)


def test_an_attack_without_a_model_says_so(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    with pytest.raises(ValueError, match=r"PGD has no model: construct it as PGD\(model"):
        PGD()(*batch)


def test_bad_inputs(trained_cnn: nn.Module) -> None:
    x = torch.rand(2, 1, 28, 28)
    y = torch.tensor([0, 1])
    with pytest.raises(ValueError, match="eps must be in"):
        fgsm(trained_cnn, x, y, 0.0)
    with pytest.raises(ValueError, match=r"shape \(B, C, H, W\)"):
        fgsm(trained_cnn, x[0], y, EPS)
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        pgd(trained_cnn, bad, y, EPS, 0.02, 1)
    with pytest.raises(ValueError, match="step must be > 0"):
        pgd(trained_cnn, x, y, EPS, -0.1, 1)
    with pytest.raises(ValueError, match="iters must be an int >= 1"):
        pgd(trained_cnn, x, y, EPS, 0.02, 0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fgsm(trained_cnn, x + 1.0, y, EPS)
    with pytest.raises(ValueError, match="y must have shape"):
        fgsm(trained_cnn, x, y[:1], EPS)
