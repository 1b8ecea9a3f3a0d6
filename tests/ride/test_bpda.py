"""BPDA and BPDA+EOT: PGD through a defender whose backward pass is the identity."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn
from toydefenders import NoisyDefender

from ride.attacks import (
    BPDA,
    BPDAEOT,
    PGD,
    BPDASettings,
    BPDAStep,
    Target,
    bpda,
    bpda_identity,
    draw_seeds,
    pgd,
)
from ride.classifiers import accuracy
from ride.datasets import ImageSet
from ride.defenders import Median, NoDefence, Ride, TVBregman
from ride.seeding import generator_for

EPS, STEP = 0.1, 0.02


@pytest.fixture()
def batch(digits_test: ImageSet) -> tuple[Tensor, Tensor]:
    return digits_test.images[:32], digits_test.labels[:32]


def test_identity_wrapper_forward_is_defended_and_backward_is_identity() -> None:
    x = torch.rand(2, 1, 4, 4, requires_grad=True)
    defended = torch.rand(2, 1, 4, 4)
    out = bpda_identity(x, defended)
    assert torch.equal(out, defended)
    (out * torch.arange(32.0).view(2, 1, 4, 4)).sum().backward()
    assert x.grad is not None
    assert torch.equal(x.grad, torch.arange(32.0).view(2, 1, 4, 4))


def test_bpda_through_the_identity_defender_is_pgd(
    trained_cnn: nn.Module, batch: tuple[Tensor, Tensor]
) -> None:
    x, y = batch
    assert torch.equal(
        bpda(trained_cnn, x, y, Target(NoDefence()), BPDASettings(EPS, STEP, 5)),
        pgd(trained_cnn, x, y, EPS, STEP, 5),
    )
    with_start = bpda(
        trained_cnn,
        x,
        y,
        Target(NoDefence(), generator=generator_for(4)),
        BPDASettings(EPS, STEP, 3, random_start=True),
    )
    assert torch.equal(
        with_start,
        pgd(trained_cnn, x, y, EPS, STEP, 3, random_start=True, generator=generator_for(4)),
    )


def test_bpda_eot_with_one_draw_is_bpda(
    trained_cnn: nn.Module, batch: tuple[Tensor, Tensor]
) -> None:
    x, y = batch
    seeds = list(range(100, 100 + len(x)))
    plain = BPDA(iters=3).perturb(trained_cnn, x, y, defender=NoisyDefender(), seeds=seeds)
    eot1 = BPDAEOT(trained_cnn, NoisyDefender(), iters=3, eot=1)(x, y, seeds=seeds)
    assert torch.equal(plain, eot1)


def test_eot_over_a_deterministic_defender_is_bpda(
    trained_cnn: nn.Module, batch: tuple[Tensor, Tensor]
) -> None:
    x, y = batch
    median = Median(kernel=3)
    once = bpda(trained_cnn, x, y, Target(median), BPDASettings(EPS, STEP, 4))
    averaged = bpda(trained_cnn, x, y, Target(median), BPDASettings(EPS, STEP, 4, eot=3))
    assert torch.equal(once, averaged)


def test_every_iterate_stays_in_the_eps_ball_and_unit_range(
    trained_cnn: nn.Module, batch: tuple[Tensor, Tensor]
) -> None:
    x, y = batch
    steps: list[BPDAStep] = []
    target = Target(
        NoisyDefender(), seeds=range(len(x)), generator=generator_for(0), on_step=steps.append
    )
    final = bpda(trained_cnn, x, y, target, BPDASettings(EPS, 0.05, 6, eot=2, random_start=True))
    assert [s.iteration for s in steps] == list(range(7))  # 0..iters: the final one too
    assert torch.equal(steps[-1].adversarial, final)
    for image in [*(s.adversarial for s in steps), final]:
        assert float((image - x).abs().max()) <= EPS + 1e-6
        assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
    for s in steps:
        assert s.pred_adversarial.shape == s.pred_defended.shape == y.shape
        assert float(s.defended.min()) >= 0.0 and float(s.defended.max()) <= 1.0
        assert s.attacker_draws == 2 and s.attacker_correct.shape == y.shape
        assert set((s.attacker_correct * 2).tolist()) <= {0.0, 1.0, 2.0}  # of 2 draws


def test_steps_report_what_the_attack_saw(
    trained_cnn: nn.Module, batch: tuple[Tensor, Tensor]
) -> None:
    x, y = batch
    steps: list[BPDAStep] = []
    median = Median(kernel=3)
    bpda(trained_cnn, x, y, Target(median, on_step=steps.append), BPDASettings(EPS, STEP, 3))
    assert torch.equal(steps[0].adversarial, x)  # no random start: x^(0) is the clean image
    assert torch.equal(steps[0].defended, median(x))
    with torch.no_grad():
        assert torch.equal(steps[0].pred_adversarial, trained_cnn(x).argmax(1))
        assert torch.equal(steps[0].pred_defended, trained_cnn(median(x)).argmax(1))


def test_each_draw_gets_its_own_seeds_and_reruns_repeat_them(
    trained_cnn: nn.Module, batch: tuple[Tensor, Tensor]
) -> None:
    x, y = batch
    x, y = x[:3], y[:3]
    first, second = NoisyDefender(), NoisyDefender()
    settings = BPDASettings(EPS, STEP, 2, eot=3)
    a = bpda(trained_cnn, x, y, Target(first, seeds=[7, 8, 9]), settings)
    b = bpda(trained_cnn, x, y, Target(second, seeds=[7, 8, 9]), settings)
    assert torch.equal(a, b)
    assert first.calls == second.calls
    assert len(first.calls) == 2 * 3  # iters x eot draws
    assert first.calls[0] == draw_seeds([7, 8, 9], "bpda", 0, 0)
    all_seeds = [seed for call in first.calls for seed in call]
    assert len(set(all_seeds)) == len(all_seeds)


def test_the_adaptive_attack_beats_the_gray_box_attack_on_a_filter(
    trained_cnn: nn.Module, digits_test: ImageSet
) -> None:
    # TV undoes much of a gray-box attack (0.52 right here), the attack through it less
    # (0.45). (Against this shift-trained classifier a 3x3 median is almost transparent:
    # BPDA through it and PGD leave the same 0.29-0.30.)
    x, y = digits_test.images[:96], digits_test.labels[:96]
    tv = TVBregman(weight=2.0)
    gray_box = accuracy(trained_cnn, tv(pgd(trained_cnn, x, y, EPS, STEP, 10)), y)
    through_tv = bpda(trained_cnn, x, y, Target(tv), BPDASettings(EPS, STEP, 10))
    white_box = accuracy(trained_cnn, tv(through_tv), y)
    assert white_box < gray_box, (white_box, gray_box)


def test_bpda_through_ride_keeps_the_invariants(
    trained_cnn: nn.Module, batch: tuple[Tensor, Tensor]
) -> None:
    x, y = batch
    x, y = x[:2], y[:2]
    x_before = x.clone()
    trained_cnn.train()
    try:
        ride = Ride(iters=3, checkpoints=1)
        with torch.no_grad():  # RIDE fits its networks even when the caller disabled gradients
            adv = bpda(trained_cnn, x, y, Target(ride, seeds=[1, 2]), BPDASettings(EPS, STEP, 2))
        assert trained_cnn.training  # mode restored
    finally:
        trained_cnn.eval()  # the fixture is shared by the session
    assert torch.equal(x, x_before)
    assert all(p.grad is None for p in trained_cnn.parameters())
    assert float((adv - x).abs().max()) <= EPS + 1e-6
    assert not adv.requires_grad


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m, x, y: BPDASettings(EPS, STEP, 2, eot=0), "eot must be an int"),
        (lambda m, x, y: BPDASettings(EPS, STEP, 0), "iters must be an int"),
        (lambda m, x, y: BPDASettings(EPS, 0.0, 2), "step must be > 0"),
        (
            lambda m, x, y: bpda(
                m, x, y, Target(NoDefence(), seeds=[1]), BPDASettings(EPS, STEP, 2)
            ),
            "one seed per",
        ),
        (lambda m, x, y: BPDA(m)(x, y), "give the defender"),
        (lambda m, x, y: BPDAEOT(eot=0), "eot must be an int"),
    ],
)
def test_errors(
    trained_cnn: nn.Module, batch: tuple[Tensor, Tensor], call: object, message: str
) -> None:
    x, y = batch
    with pytest.raises(ValueError, match=message):
        call(trained_cnn, x[:2], y[:2])  # type: ignore[operator]


def test_ids_and_params() -> None:
    assert BPDA().id == "bpda-eps0.1-step0.02-it10"
    assert BPDAEOT(eot=15).id == "bpda-eot15-eps0.1-step0.02-it10"
    assert BPDAEOT(eot=15).params()["eot"] == 15
    assert "eot" not in BPDA().params()
    assert BPDA().adaptive and BPDAEOT(eot=2).adaptive
    assert not PGD().adaptive
    assert BPDA(defender=Median()) == BPDA()  # the defender is not part of the identity


def test_perturb_is_the_attack_through_its_target(
    trained_cnn: nn.Module, batch: tuple[Tensor, Tensor]
) -> None:
    x, y = batch[0][:4], batch[1][:4]
    seeds = [1, 2, 3, 4]
    attack = BPDAEOT(eot=2, iters=2, random_start=True)
    seen: dict[str, list[BPDAStep]] = {"perturb": [], "through": [], "bpda": []}
    by_perturb = attack.perturb(
        trained_cnn,
        x,
        y,
        generator=generator_for(3),
        defender=NoisyDefender(),
        seeds=seeds,
        on_step=seen["perturb"].append,
    )
    target = attack.target(NoisyDefender(), seeds, generator_for(3), seen["through"].append)
    by_through = attack.through(trained_cnn, x, y, target)
    by_function = bpda(
        trained_cnn,
        x,
        y,
        Target(NoisyDefender(), seeds, generator_for(3), seen["bpda"].append),
        BPDASettings(EPS, STEP, 2, eot=2, random_start=True),
    )
    assert torch.equal(by_perturb, by_through) and torch.equal(by_perturb, by_function)
    assert [len(steps) for steps in seen.values()] == [3, 3, 3]  # iterates 0..2
    bound = BPDAEOT(trained_cnn, Median(), eot=2).target()  # the bound defender, no seeds
    assert isinstance(bound.defender, Median) and bound.seeds is None and bound.on_step is None


def test_settings_keep_eps_and_step_as_floats() -> None:
    settings = BPDASettings(1, 1, 3)
    assert isinstance(settings.eps, float) and isinstance(settings.step, float)
    assert (settings.eot, settings.random_start, settings.gradient) == (1, False, "bpda")
