"""The adaptive attack: the exact gradient through a differentiable defender, BPDA through the
others, EOT on the randomised ones, chosen from what each defender declares."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from toydefenders import NoisyAffine

from pipeline.settings import run_keys
from ride.attacks import (
    ATTACKS,
    BPDA,
    BPDAEOT,
    PGD,
    BPDASettings,
    BPDAStep,
    Target,
    bpda,
    draw_seeds,
    make_attack,
)
from ride.attacks.adaptive import Adaptive, method_text
from ride.attacks.base import project
from ride.classifiers import accuracy
from ride.datasets import ImageSet
from ride.defenders import Median, NoDefence, Ride

EPS, STEP = 0.1, 0.02


class InvertModule(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return 1.0 - x


class Invert:
    """A differentiable, deterministic defender whose Jacobian is -I: x -> 1 - x."""

    name: ClassVar[str] = "invert"
    differentiable: ClassVar[bool] = True
    randomised: ClassVar[bool] = False

    def __call__(self, x: Tensor, seeds: Sequence[int] | None = None) -> Tensor:
        return 1.0 - x


class NoisyDetached(NoisyAffine):
    """The same draws, not differentiable (what BPDA+EOT is for)."""

    differentiable: ClassVar[bool] = False

    def __call__(self, x: Tensor, seeds: Sequence[int] | None = None) -> Tensor:
        return super().__call__(x.detach(), seeds)


class Undeclared:
    def __call__(self, x: Tensor, seeds: Sequence[int] | None = None) -> Tensor:
        return x.detach().clone()


class LyingDefender(Undeclared):
    """Declares itself differentiable but detaches its output."""

    differentiable: ClassVar[bool] = True


@pytest.fixture()
def batch(digits_test: ImageSet) -> tuple[Tensor, Tensor]:
    return digits_test.images[:16], digits_test.labels[:16]


# (a) the exact gradient beats the identity approximation through a sign-flipping defender


def test_exact_gradient_beats_bpda_when_the_defender_flips_the_gradient(
    trained_cnn: nn.Module, digits_test: ImageSet
) -> None:
    x, y = digits_test.images[:64], digits_test.labels[:64]
    model = nn.Sequential(InvertModule(), trained_cnn)  # model(Invert(x)) = trained_cnn(x)
    defender = Invert()
    clean = accuracy(model, defender(x), y)
    attack = Adaptive(eot=15, eps=EPS, step=STEP, iters=10)
    assert attack.method(defender) == {"gradient": "exact", "draws": 1}
    exact = attack.perturb(model, x, y, defender=defender, seeds=range(64))
    approx = BPDA(eps=EPS, step=STEP, iters=10).perturb(
        model, x, y, defender=defender, seeds=range(64)
    )
    exact_acc = accuracy(model, defender(exact), y)
    bpda_acc = accuracy(model, defender(approx), y)
    print(f"clean {clean:.3f}, BPDA {bpda_acc:.3f}, exact gradient {exact_acc:.3f}")
    assert clean > 0.9
    assert bpda_acc > 0.8  # the identity's gradient points the wrong way: no harm done
    assert exact_acc < bpda_acc - 0.5


# (b) the choice


def test_the_method_follows_what_the_defender_declares() -> None:
    attack = Adaptive(eot=7)
    assert attack.method(Invert()) == {"gradient": "exact", "draws": 1}
    assert attack.method(NoisyAffine()) == {"gradient": "exact", "draws": 7}
    assert attack.method(NoisyDetached()) == {"gradient": "bpda", "draws": 7}
    assert attack.method(Median(kernel=3)) == {"gradient": "bpda", "draws": 1}
    assert attack.method(Undeclared()) == {"gradient": "bpda", "draws": 1}
    assert method_text(attack.method(Invert())) == "exact gradient"
    assert method_text(attack.method(NoisyAffine())) == "exact gradient + EOT 7"
    assert method_text(attack.method(NoisyDetached())) == "BPDA + EOT 7"
    assert method_text(attack.method(Median())) == "BPDA"


def test_the_method_for_the_built_in_defenders() -> None:
    attack = Adaptive(eot=15)
    assert attack.method(NoDefence()) == {"gradient": "exact", "draws": 1}
    assert attack.method(Median()) == {"gradient": "bpda", "draws": 1}
    assert attack.method(Ride(iters=5, checkpoints=1)) == {"gradient": "bpda", "draws": 15}


# (c) bit-for-bit equal to BPDA, BPDA+EOT and PGD where they coincide


def test_non_differentiable_deterministic_defender_gets_bpda_bit_for_bit(
    trained_cnn: nn.Module, batch: tuple[Tensor, Tensor]
) -> None:
    x, y = batch
    median = Median(kernel=3)
    seeds = list(range(50, 50 + len(x)))
    ours: list[BPDAStep] = []
    theirs: list[BPDAStep] = []
    a = Adaptive(eot=4, iters=3).perturb(
        trained_cnn, x, y, defender=median, seeds=seeds, on_step=ours.append
    )
    b = BPDA(iters=3).perturb(
        trained_cnn, x, y, defender=median, seeds=seeds, on_step=theirs.append
    )
    assert torch.equal(a, b)
    assert len(ours) == len(theirs) == 4  # iterates 0..3
    for s, t in zip(ours, theirs, strict=True):
        assert s.iteration == t.iteration
        assert torch.equal(s.adversarial, t.adversarial) and torch.equal(s.defended, t.defended)
        assert torch.equal(s.pred_defended, t.pred_defended)


def test_randomised_non_differentiable_defender_gets_bpda_eot_bit_for_bit(
    trained_cnn: nn.Module, batch: tuple[Tensor, Tensor]
) -> None:
    x, y = batch
    seeds = list(range(len(x)))
    a = Adaptive(eot=3, iters=2).perturb(trained_cnn, x, y, defender=NoisyDetached(), seeds=seeds)
    b = BPDAEOT(eot=3, iters=2).perturb(trained_cnn, x, y, defender=NoisyDetached(), seeds=seeds)
    assert torch.equal(a, b)


def test_through_the_identity_it_is_pgd_bit_for_bit(
    trained_cnn: nn.Module, batch: tuple[Tensor, Tensor]
) -> None:
    class Identity:
        differentiable: ClassVar[bool] = True
        randomised: ClassVar[bool] = False

        def __call__(self, x: Tensor, seeds: Sequence[int] | None = None) -> Tensor:
            return x.clone()

    x, y = batch
    expected = PGD(iters=4).perturb(trained_cnn, x, y)
    adaptive = Adaptive(eot=5, iters=4).perturb(trained_cnn, x, y, defender=Identity())
    assert torch.equal(adaptive, expected)
    exact = BPDASettings(EPS, STEP, 4, gradient="exact")
    assert torch.equal(bpda(trained_cnn, x, y, Target(Identity()), exact), expected)


def test_through_no_defence_it_is_pgd_bit_for_bit(
    trained_cnn: nn.Module, batch: tuple[Tensor, Tensor]
) -> None:
    x, y = batch
    adaptive = Adaptive(eot=5, iters=4).perturb(trained_cnn, x, y, defender=NoDefence())
    assert torch.equal(adaptive, PGD(iters=4).perturb(trained_cnn, x, y))


# (d) EOT over the exact gradient


def test_one_eot_step_follows_the_mean_of_the_per_draw_gradients(
    trained_cnn: nn.Module, batch: tuple[Tensor, Tensor]
) -> None:
    x, y = batch
    seeds, eot, defender = [7 + i for i in range(len(x))], 3, NoisyAffine()
    was_training = trained_cnn.training
    trained_cnn.eval()
    try:
        grads = []
        for j in range(eot):
            x_req = x.clone().requires_grad_(True)
            logits = trained_cnn(defender(x_req, draw_seeds(seeds, "bpda", 0, j)))
            loss = F.cross_entropy(logits, y, reduction="sum")
            (grad,) = torch.autograd.grad(loss, [x_req])
            grads.append(grad)
    finally:
        trained_cnn.train(was_training)
    total = torch.zeros_like(x)
    for grad in grads:
        total += grad
    mean = total / eot
    assert not torch.equal(mean.sign(), grads[0].sign())  # the draws disagree: EOT matters
    expected = project(x + STEP * mean.sign(), x, EPS)
    one_step = Adaptive(trained_cnn, defender, eot=eot, eps=EPS, step=STEP, iters=1)
    assert torch.equal(one_step(x, y, seeds=seeds), expected)
    exact = BPDASettings(EPS, STEP, 1, eot=eot, gradient="exact")
    assert torch.equal(bpda(trained_cnn, x, y, Target(defender, seeds=seeds), exact), expected)


# (e) invariants


def test_iterates_stay_in_the_ball_and_nothing_is_mutated_or_trained(
    batch: tuple[Tensor, Tensor],
) -> None:
    x, y = batch
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Dropout(0.1), nn.Linear(784, 10))
    model.train()
    x_before = x.clone()
    steps: list[BPDAStep] = []
    final = Adaptive(eot=2, eps=EPS, step=0.05, iters=5).perturb(
        model, x, y, defender=NoisyAffine(), seeds=range(len(x)), on_step=steps.append
    )
    assert torch.equal(x, x_before)
    assert model.training  # restored after the attack ran it in eval mode
    assert all(p.grad is None for p in model.parameters())
    assert [s.iteration for s in steps] == list(range(6))  # 0..iters
    for image in [*(s.adversarial for s in steps), final]:
        assert float((image - x).abs().max()) <= EPS + 1e-6
        assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
    for s in steps:
        assert not s.defended.requires_grad and not s.adversarial.requires_grad
    assert not final.requires_grad


def test_a_defender_that_claims_a_gradient_it_lacks_is_refused(
    batch: tuple[Tensor, Tensor],
) -> None:
    x, y = batch
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    with pytest.raises(ValueError, match="gives no gradient to its input"):
        Adaptive(iters=1).perturb(model, x, y, defender=LyingDefender())
    with pytest.raises(ValueError, match="gradient must be one of bpda, exact"):
        BPDASettings(EPS, STEP, 1, gradient="approx")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="give the defender"):
        Adaptive(iters=1).perturb(model, x, y)
    with pytest.raises(ValueError, match="has no model"):
        Adaptive()(x, y)


# (f) ids and params


def test_ids_params_and_registration() -> None:
    assert "adaptive" in ATTACKS.names()
    assert Adaptive().id == "adaptive-eot15-eps0.1-step0.02-it10"
    assert Adaptive(eot=2, eps=0.05, step=0.01, iters=3).id == "adaptive-eot2-eps0.05-step0.01-it3"
    assert Adaptive().params() == {
        "name": "adaptive",
        "eps": 0.1,
        "step": 0.02,
        "iters": 10,
        "random_start": False,
        "eot": 15,
    }
    assert Adaptive(random_start=True).id == "adaptive-eot15-eps0.1-step0.02-it10-rs"
    assert make_attack("adaptive", eot=5, iters=2) == Adaptive(eot=5, iters=2)
    assert Adaptive.adaptive and Adaptive(eot=3) != Adaptive(eot=4)
    # the attacks that were there keep their ids
    assert BPDA().id == "bpda-eps0.1-step0.02-it10"
    assert BPDAEOT().id == "bpda-eot15-eps0.1-step0.02-it10"
    for bad in (0, -1, True, 2.0):
        with pytest.raises(ValueError, match="eot must be an int >= 1"):
            Adaptive(eot=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="eps must be in"):
        Adaptive(eps=0.0)


def test_run_keys_feed_the_adaptive_attack() -> None:
    keys = run_keys()
    for key in ("eps", "step", "attack_iters", "eot"):
        assert "adaptive" in keys[key].used_by
    assert keys["eot"].default == 15
