"""The differentiable surrogate of RIDE (a short Alg. 2 fit differentiated end to end) and
the ``bpda-surrogate`` attack whose backward pass it is."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from ride.attacks import BPDAStep, draw_seeds, make_attack
from ride.attacks.surrogate import BPDASurrogate, SurrogateGradient
from ride.datasets import ImageSet
from ride.defenders import Median, Ride, make_defender
from ride.defenders.ride import ride_surrogate
from ride.registry import ATTACKS
from ride.seeding import generator_for


def _x(size: int = 8, dtype: torch.dtype = torch.float64) -> Tensor:
    return torch.rand(2, 1, size, size, generator=generator_for(3), dtype=dtype)


def _input_gradient(x: Tensor, defender: Ride, v: Tensor, **kw: object) -> Tensor:
    """d <surrogate(x), v> / dx."""
    x_req = x.clone().requires_grad_()
    out = ride_surrogate(x_req, defender, [1, 2], **kw)  # type: ignore[arg-type]
    (grad,) = torch.autograd.grad((out * v).sum(), [x_req])
    return grad


@pytest.mark.parametrize("name", ["ride", "dae", "dip", "idip"])
def test_gradient_is_finite_non_zero_and_not_the_identity(name: str) -> None:
    x = _x()
    v = torch.randn(x.shape, generator=generator_for(4), dtype=x.dtype)
    defender = make_defender(name)
    assert isinstance(defender, Ride)
    grad = _input_gradient(x, defender, v, iters=5)
    assert bool(grad.isfinite().all()) and float(grad.abs().sum()) > 0
    # BPDA's identity would give v itself
    assert float((grad - v).abs().max()) > 0.1 * float(v.abs().max())


@pytest.mark.parametrize(
    ("defender", "checkpoints"),
    [
        (Ride(), 1),
        (Ride(variant="idip", alpha=0.5, dropout=0.3, loss="l1"), 2),
        (Ride(noisy_target=False, estimate_samples=2, return_iterate=True, batch=2), 2),
    ],
)
def test_gradcheck_in_float64(defender: Ride, checkpoints: int) -> None:
    x = torch.rand(1, 1, 4, 4, generator=generator_for(2), dtype=torch.float64) * 0.8 + 0.1
    x.requires_grad_()
    assert torch.autograd.gradcheck(
        lambda x: ride_surrogate(x, defender, [7], iters=2, checkpoints=checkpoints, lr=0.5),
        (x,),
        fast_mode=True,
    )


def test_seeded_deterministic_and_detached_without_grad() -> None:
    x = _x(dtype=torch.float32)
    a = ride_surrogate(x, Ride(), [1, 2], iters=3)
    assert not a.requires_grad and a.shape == x.shape
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    assert torch.equal(a, ride_surrogate(x, Ride(), [1, 2], iters=3))
    assert not torch.equal(a, ride_surrogate(x, Ride(), [1, 3], iters=3))
    # an image's estimate depends on its own seed and pixels only (up to the rounding of the
    # grouped convolution)
    torch.testing.assert_close(a[:1], ride_surrogate(x[:1], Ride(), [1], iters=3))
    with torch.no_grad():
        assert not ride_surrogate(x.requires_grad_(), Ride(), [1, 2], iters=3).requires_grad


def test_the_fit_moves_the_estimate_towards_the_image() -> None:
    """Eq. 7's fit: more SGD steps bring x_est closer to x (digits-like blobs)."""
    x = torch.zeros(2, 1, 12, 12)
    x[:, :, 3:9, 4:8] = 1.0
    far = ride_surrogate(x, Ride(), [1, 2], iters=1)
    near = ride_surrogate(x, Ride(), [1, 2], iters=30)
    assert float((near - x).square().mean()) < 0.5 * float((far - x).square().mean())


def test_surrogate_errors() -> None:
    x = _x()
    with pytest.raises(ValueError, match="surrogate lr must be > 0"):
        ride_surrogate(x, Ride(), [1, 2], lr=0.0)
    with pytest.raises(ValueError, match="iters must be"):
        ride_surrogate(x, Ride(), [1, 2], iters=0)
    with pytest.raises(ValueError, match="seeds"):
        ride_surrogate(x, Ride(), [1])


def test_attack_is_registered_with_its_settings() -> None:
    attack = make_attack("bpda-surrogate", eot=3, surrogate_iters=10)
    assert isinstance(attack, BPDASurrogate) and attack.adaptive
    assert attack.id == "bpda-surrogate-eot3-K10-T1-lr1-eps0.1-step0.02-it10"
    assert attack.params()["surrogate_iters"] == 10
    assert "bpda-surrogate" in ATTACKS
    for bad in ({"surrogate_iters": 0}, {"surrogate_checkpoints": 1.5}, {"surrogate_lr": -1.0}):
        with pytest.raises(ValueError, match="surrogate_"):
            make_attack("bpda-surrogate", **bad)


def test_attack_needs_a_ride_family_defender() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    x, y = _x(dtype=torch.float32), torch.tensor([1, 2])
    with pytest.raises(ValueError, match=r"^bpda-surrogate attacks RIDE-family defenders .*median"):
        BPDASurrogate(model, Median(), iters=1, eot=1)(x, y)
    # what a run asks before it plans the pair; every other attack applies to every defender
    attack = make_attack("bpda-surrogate")
    family = [
        make_defender(name, iters=2, checkpoints=1) for name in ("ride", "dae", "dip", "idip")
    ]
    assert all(attack.applies_to(d) for d in family)
    assert not any(attack.applies_to(make_defender(name)) for name in ("none", "median"))
    assert make_attack("bpda-eot").applies_to(make_defender("none"))


def test_value_is_the_defender_gradient_the_surrogate() -> None:
    defender = Ride(iters=2, checkpoints=1)
    x = _x(dtype=torch.float32).requires_grad_()
    through = SurrogateGradient(defender, iters=3, checkpoints=1, lr=1.0)
    out = through(x, [1, 2])
    assert torch.equal(out.detach(), defender(x.detach(), [1, 2]))
    (grad,) = torch.autograd.grad(out.sum(), [x])
    surrogate = ride_surrogate(x, defender, [1, 2], iters=3)
    (expected,) = torch.autograd.grad(surrogate.sum(), [x])
    torch.testing.assert_close(grad, expected)


@pytest.mark.slow
def test_attack_lowers_the_accuracy_of_a_tiny_ride(
    trained_cnn: nn.Module, digits_test: ImageSet
) -> None:
    model = trained_cnn.eval()
    defender = Ride(iters=50, checkpoints=1, lr=1e-2)
    x, y = torch.as_tensor(digits_test.images[:12]), torch.as_tensor(digits_test.labels[:12])
    check_seeds = list(range(1000, 1012))
    with torch.no_grad():
        right = model(defender(x, check_seeds)).argmax(dim=1) == y
    x, y = x[right][:6], y[right][:6]  # defended correctly without an attack
    assert len(x) == 6
    seeds = list(range(6))
    eps = 0.2
    steps: list[BPDAStep] = []
    attack = BPDASurrogate(model, defender, eps=eps, step=0.05, iters=4, eot=1, surrogate_iters=10)
    x_adv = attack.perturb(model, x, y, seeds=seeds, on_step=steps.append)
    assert float((x_adv - x).abs().max()) <= eps + 1e-6
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    with torch.no_grad():
        attacked = model(defender(x_adv, check_seeds[:6])).argmax(dim=1) == y
    assert int(attacked.sum()) < len(x)  # all 6 correct without the attack
    # one tracked iterate per step and the final one; what it saw is the real defender's
    # draw 0
    assert [s.iteration for s in steps] == [0, 1, 2, 3, 4]
    assert torch.allclose(
        steps[0].defended, defender(x, draw_seeds(seeds, "bpda", 0, 0)), atol=1e-6
    )
