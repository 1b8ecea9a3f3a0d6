"""APGD through a defender with restarts: the attacker's choice of iterate sees every
restart (it once saw only the first), and an image a restart skips keeps its best iterate."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from toydefenders import NoisyDefender

from pipeline.whitebox import attack_iters
from ride.attacks import AdaptiveAPGDCE, APGDSettings, BPDAStep, Target, apgd_through
from ride.robustness import IterateChoice
from ride.seeding import generator_for

EPS, ITERS = 0.02, 4  # eps: the first run fools 7 of the 16 images


def toy() -> tuple[nn.Module, Tensor, Tensor]:
    """A random linear classifier on 16 random 1x8x8 images labelled by its own predictions:
    every image starts correct, and a small eps fools some of them."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(64, 5))
        x = torch.rand(16, 1, 8, 8)
    with torch.no_grad():
        y = model(x).argmax(dim=1)
    return model, x, y


def attack(restarts: int) -> list[BPDAStep]:
    model, x, y = toy()
    steps: list[BPDAStep] = []
    target = Target(NoisyDefender(), range(16), generator_for(5), steps.append)
    apgd_through(model, x, y, target, APGDSettings(EPS, ITERS, "ce", eot=2, restarts=restarts))
    return steps


def choice(steps: list[BPDAStep]) -> Tensor:
    chooser = IterateChoice()
    for step in steps:
        chooser.see(step.iteration, step.adversarial, step.attacker_correct, step.attacker_draws)
    return chooser.choice().attacker_correct


def test_every_restart_is_reported_as_whole_batch_iterates() -> None:
    steps = attack(restarts=3)
    assert [s.iteration for s in steps] == list(range(3 * (ITERS + 1)))
    assert all(len(s.adversarial) == 16 and s.attacker_draws == 2 for s in steps)
    _, x, _ = toy()
    for step in steps:
        assert float((step.adversarial - x).abs().max()) <= EPS + 1e-6


def test_the_choice_over_every_restart_is_never_weaker_than_over_the_first() -> None:
    """The first restart's iterates are the same with one run or three (same seeds and
    generator), so the choice over all of them can only find lower fractions."""
    one, three = attack(restarts=1), attack(restarts=3)
    for a, b in zip(one, three[: ITERS + 1], strict=True):
        assert torch.equal(a.adversarial, b.adversarial)
        assert torch.equal(a.attacker_correct, b.attacker_correct)
    first, every = choice(one), choice(three)
    assert bool((every <= first).all())
    assert float(every.mean()) < float(first.mean())  # 0.219 against 0.375 here


def test_an_image_a_restart_skips_is_reported_at_its_best_iterate() -> None:
    """An image fooled by every draw in the first run is not run again: in every later
    restart it is reported at a point where none of the attacker's draws was correct."""
    steps = attack(restarts=2)
    first_run = torch.stack([s.attacker_correct for s in steps[: ITERS + 1]])  # (K + 1, B)
    fooled = (first_run == 0).any(dim=0)  # (B,)
    assert bool(fooled.any()) and not bool(fooled.all())
    for step in steps[ITERS + 1 :]:
        assert bool((step.attacker_correct[fooled] == 0).all())


def test_the_pipeline_expects_every_restarts_iterates() -> None:
    assert attack_iters(AdaptiveAPGDCE(iters=10)) == 10
    assert attack_iters(AdaptiveAPGDCE(iters=10, restarts=3)) == 32  # 3 x 11 iterates, 0..32
