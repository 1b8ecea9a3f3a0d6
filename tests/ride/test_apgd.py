"""APGD-CE and APGD-DLR (Croce and Hein, ICML 2020), gray-box and through a defender (BPDA or
the exact gradient, with EOT): the paper's schedule, torchattacks' numbers, the invariants."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchattacks  # the test extra (pyproject.toml): the reference APGD only
from torch import Tensor, nn
from toydefenders import NoisyAffine, NoisyDefender

from pipeline.settings import run_keys
from pipeline.whitebox import attack_draws
from ride.attacks import (
    APGDCE,
    APGDDLR,
    ATTACKS,
    AdaptiveAPGDCE,
    AdaptiveAPGDDLR,
    APGDSettings,
    BPDAStep,
    Target,
    apgd,
    apgd_checkpoints,
    apgd_through,
    dlr_loss,
    draw_seeds,
    make_attack,
)
from ride.attacks.adaptive import ChoosesMethod
from ride.attacks.apgd_walk import LOSSES, Loss, apgd_loss
from ride.attacks.base import project
from ride.attacks.target import DefenderFn
from ride.datasets import ImageSet
from ride.defenders import Median, NoDefence, Ride
from ride.seeding import derive_seed, generator_for

EPS = 0.05


class Bowl(nn.Module):
    """Two logits of a one-pixel image: z_0 = 100 (x - c)^2, z_1 = 0. Label 0's cross-entropy
    softplus(-z_0) peaks at x = c, so the sign of its gradient is sign(c - x); the label is
    always predicted (z_0 >= z_1), so APGD returns its highest-loss iterate."""

    def __init__(self, c: float) -> None:
        super().__init__()
        self.c = c

    def forward(self, x: Tensor) -> Tensor:
        z0 = 100.0 * ((x - self.c) ** 2).flatten(1).sum(dim=1)
        return torch.stack([z0, torch.zeros_like(z0)], dim=1)


@pytest.fixture(scope="module")
def mlp(digits_train: ImageSet) -> nn.Module:
    """A small deterministic classifier: a seeded 784-64-10 MLP, 200 full-batch Adam steps."""
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))  # as conftest's trained_cnn
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10))
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(200):
        optimiser.zero_grad()
        F.cross_entropy(model(digits_train.images), digits_train.labels).backward()
        optimiser.step()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


@pytest.fixture()
def batch(digits_test: ImageSet) -> tuple[Tensor, Tensor]:
    return digits_test.images[:16], digits_test.labels[:16]


def accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(dim=1) == y).float().mean())


# (a) the paper's schedule and losses, known values


def test_checkpoints_are_the_papers() -> None:
    # p = 0, .22, .41, .57, .70, .80, .87, .93, .99 (p_{j+1} = p_j + max(p_j - p_{j-1} - .03, .06))
    assert apgd_checkpoints(100) == (0, 22, 41, 57, 70, 80, 87, 93, 99)
    assert apgd_checkpoints(10) == (0, 3, 5, 6, 7, 8, 9, 10)  # ceil(p_j 10), repeats once
    assert apgd_checkpoints(1000) == (0, 220, 410, 570, 700, 800, 870, 930, 990)
    assert apgd_checkpoints(1) == (0, 1)


def test_dlr_loss_known_values() -> None:
    logits = torch.tensor([[3.0, 1.0, 2.0, 0.0], [3.0, 1.0, 2.0, 0.0]])
    y = torch.tensor([0, 2])
    # y=0: -(3 - 2)/(3 - 1); y=2: -(2 - 3)/(3 - 1): positive exactly when misclassified
    assert torch.allclose(dlr_loss(logits, y), torch.tensor([-0.5, 0.5]))
    assert torch.allclose(dlr_loss(5.0 * logits - 7.0, y), dlr_loss(logits, y))  # invariance
    ce = apgd_loss("ce")(logits, y)
    assert torch.allclose(ce, F.cross_entropy(logits, y, reduction="none"))


def test_the_iterates_of_a_one_pixel_problem_follow_algorithm_1() -> None:
    """Hand-run Algorithm 1 on x0 = 0.5, eps = 0.1 (ball [0.4, 0.6]), maximum at c = 0.53,
    10 iterations (checkpoints 3, 5, 6, 7, 8, 9), eta0 = 0.2, alpha = rho = 0.75:

    x1 = 0.6 (a plain step); x2 = .6 + .75(.4 - .6) + .25(.6 - .5) = .475; x3 = .5375 (best).
    k=3: x4 = .45 is evaluated; 2 of 3 steps raised the loss (< 2.25): eta = 0.1 and the walk
    restarts from x3. x5 = .4625. k=5: no rise among 2 steps: eta = 0.05, x6 = .51875 is
    replaced by x3. k=6: 1 of 1 rose and eta was halved at 5: no change; x7 = .51875.
    k=7: no rise: eta = 0.025, x8 = .5515625 replaced by x3. x9 = .5234375, the new best.
    """
    x, y = torch.tensor([[[[0.5]]]]), torch.tensor([0])
    steps: list[BPDAStep] = []
    result = apgd_through(
        Bowl(0.53),
        x,
        y,
        Target(NoDefence(), on_step=steps.append),
        APGDSettings(0.1, 10, gradient="exact"),
    )
    iterates = [float(s.adversarial) for s in steps]
    expected = [0.5, 0.6, 0.475, 0.5375, 0.45, 0.4625, 0.51875, 0.51875, 0.5515625, 0.5234375]
    assert iterates[:-1] == pytest.approx(expected, abs=1e-6)  # x^(10) is evaluated, too
    assert float(result) == pytest.approx(0.5234375, abs=1e-6)
    assert torch.equal(apgd(Bowl(0.53), x, y, 0.1, 10), result)  # gray-box: the same walk


# (b) the reference: torchattacks' APGD on a deterministic model


@pytest.mark.parametrize("loss", LOSSES)
def test_robust_accuracy_and_loss_match_torchattacks(
    mlp: nn.Module, digits_test: ImageSet, loss: Loss
) -> None:
    x, y = digits_test.images[:200], digits_test.labels[:200]
    iters = 20
    ours = apgd(mlp, x, y, EPS, iters, loss)
    reference = torchattacks.APGD(
        mlp, norm="Linf", eps=EPS, steps=iters, n_restarts=1, seed=0, loss=loss
    )
    with torch.random.fork_rng():  # torchattacks seeds the global generator
        theirs = reference(x, y)
        torch.manual_seed(0)
        x_best, robust_theirs, _, _ = reference.attack_single_run(x, y)
    ours_acc, theirs_acc = accuracy(mlp, ours, y), accuracy(mlp, theirs, y)
    loss_fn = apgd_loss(loss)
    with torch.no_grad():
        robust_ours = mlp(ours).argmax(dim=1) == y
        both = robust_ours & robust_theirs.bool()
        ours_loss = float(loss_fn(mlp(ours), y)[both].mean())
        theirs_loss = float(loss_fn(mlp(x_best), y)[both].mean())
    print(f"APGD-{loss}: robust {ours_acc:.3f} vs {theirs_acc:.3f}, loss on the {int(both.sum())}")
    print(f"  images robust to both {ours_loss:.4f} vs {theirs_loss:.4f}")
    assert 0.2 < theirs_acc < accuracy(mlp, x, y) - 0.2  # the comparison has room both ways
    assert abs(ours_acc - theirs_acc) <= 0.03
    assert ours_loss >= theirs_loss - 0.005


# (c) invariants


def test_results_stay_in_the_ball_nothing_is_mutated_or_trained(
    batch: tuple[Tensor, Tensor],
) -> None:
    x, y = batch
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Dropout(0.1), nn.Linear(784, 10))
    model.train()
    x_before = x.clone()
    steps: list[BPDAStep] = []
    results = [
        apgd(model, x, y, EPS, 6, "dlr", restarts=2, random_start=True, generator=generator_for(1)),
        apgd_through(
            model,
            x,
            y,
            Target(
                NoisyDefender(),
                seeds=range(len(x)),
                generator=generator_for(2),
                on_step=steps.append,
            ),
            APGDSettings(EPS, 6, "ce", eot=2, restarts=2, random_start=True),
        ),
    ]
    assert torch.equal(x, x_before)
    assert model.training  # restored after the attack ran it in eval mode
    assert all(p.grad is None for p in model.parameters())
    assert [s.iteration for s in steps] == list(range(14))  # both runs' iterates 0..6
    for image in [*(s.adversarial for s in steps), *results]:
        assert float((image - x).abs().max()) <= EPS + 1e-6
        assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
        assert not image.requires_grad


@pytest.mark.parametrize("loss", LOSSES)
def test_batched_equals_one_by_one(mlp: nn.Module, digits_test: ImageSet, loss: Loss) -> None:
    x, y = digits_test.images[:8], digits_test.labels[:8]
    batched = apgd(mlp, x, y, EPS, 10, loss)
    alone = torch.cat([apgd(mlp, x[i : i + 1], y[i : i + 1], EPS, 10, loss) for i in range(8)])
    assert torch.allclose(batched, alone, atol=1e-6)
    seeds = list(range(30, 38))
    settings = APGDSettings(EPS, 4, loss, eot=2)
    through = apgd_through(mlp, x, y, Target(NoisyDefender(), seeds=seeds), settings)
    one_by_one = [
        apgd_through(
            mlp,
            x[i : i + 1],
            y[i : i + 1],
            Target(NoisyDefender(), seeds=seeds[i : i + 1]),
            settings,
        )
        for i in range(8)
    ]
    assert torch.allclose(through, torch.cat(one_by_one), atol=1e-6)


def test_restarts_are_seeded_and_never_worse(mlp: nn.Module, digits_test: ImageSet) -> None:
    x, y = digits_test.images[:64], digits_test.labels[:64]
    once = apgd(mlp, x, y, EPS, 5)
    a = apgd(mlp, x, y, EPS, 5, restarts=3, generator=generator_for(3))
    b = apgd(mlp, x, y, EPS, 5, restarts=3, generator=generator_for(3))
    assert torch.equal(a, b)
    with torch.no_grad():
        fooled_once = mlp(once).argmax(dim=1) != y
        fooled_three = mlp(a).argmax(dim=1) != y
    assert bool((fooled_three | ~fooled_once).all())  # a fooled image stays fooled
    assert torch.equal(a[fooled_once], once[fooled_once])  # and keeps its first result


# (d) EOT and the defender's draws


@pytest.mark.parametrize(
    ("defender", "gradient"), [(NoisyAffine(), "exact"), (NoisyDefender(), "bpda")]
)
def test_the_first_step_follows_the_mean_of_the_per_draw_gradients(
    mlp: nn.Module, batch: tuple[Tensor, Tensor], defender: DefenderFn, gradient: str
) -> None:
    x, y = batch
    seeds, eot = [7 + i for i in range(len(x))], 3
    grads = []
    for j in range(eot):
        x_req = x.clone().requires_grad_(True)
        defended = defender(x_req, draw_seeds(seeds, "apgd", 0, 0, j))
        inputs = defended if gradient == "exact" else x_req + (defended - x_req).detach()
        loss = F.cross_entropy(mlp(inputs), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, [x_req])
        grads.append(grad)
    mean = (grads[0] + grads[1] + grads[2]) / eot
    assert not torch.equal(mean.sign(), grads[0].sign())  # the draws disagree: EOT matters
    expected = project(x + 2.0 * EPS * mean.sign(), x, EPS)  # x^(1): eta = 2 eps, no momentum
    steps: list[BPDAStep] = []
    attack = AdaptiveAPGDCE(mlp, defender, eot=eot, eps=EPS, iters=2)
    assert attack.method(defender) == {"gradient": gradient, "draws": eot}
    attack.perturb(mlp, x, y, defender=defender, seeds=seeds, on_step=steps.append)
    assert torch.equal(steps[0].adversarial, x)
    assert torch.equal(steps[1].adversarial, expected)


def test_draws_are_seeded_disjoint_from_the_evaluations_and_reported(
    mlp: nn.Module, batch: tuple[Tensor, Tensor]
) -> None:
    x, y = batch[0][:3], batch[1][:3]
    seeds = [7, 8, 9]
    first, second = NoisyDefender(), NoisyDefender()
    steps: list[BPDAStep] = []
    settings = APGDSettings(EPS, 3, eot=2)
    a = apgd_through(mlp, x, y, Target(first, seeds=seeds, on_step=steps.append), settings)
    b = apgd_through(mlp, x, y, Target(second, seeds=seeds), settings)
    assert torch.equal(a, b) and first.calls == second.calls
    assert len(first.calls) == (3 + 1) * 2  # x^(0..iters), eot draws each
    assert first.calls[0] == draw_seeds(seeds, "apgd", 0, 0, 0)
    used = [s for call in first.calls for s in call]
    evaluation = set(seeds) | {derive_seed(s, "recheck", m) for s in seeds for m in range(1, 5)}
    bpda_draws = {s for k in range(3) for j in range(2) for s in draw_seeds(seeds, "bpda", k, j)}
    assert len(set(used)) == len(used) and not set(used) & (evaluation | bpda_draws)
    assert torch.equal(steps[0].defended, NoisyDefender()(x, draw_seeds(seeds, "apgd", 0, 0, 0)))
    with torch.no_grad():
        assert torch.equal(steps[0].pred_adversarial, mlp(x).argmax(dim=1))
        assert torch.equal(steps[0].pred_defended, mlp(steps[0].defended).argmax(dim=1))


def test_a_deterministic_defender_gets_one_draw(
    mlp: nn.Module, batch: tuple[Tensor, Tensor]
) -> None:
    x, y = batch
    median = Median(kernel=3)
    attack = AdaptiveAPGDDLR(eot=5, eps=EPS, iters=4)
    assert attack.method(median) == {"gradient": "bpda", "draws": 1}
    assert attack.method(NoDefence()) == {"gradient": "exact", "draws": 1}
    assert attack.method(Ride(iters=5, checkpoints=1)) == {"gradient": "bpda", "draws": 5}
    assert torch.equal(
        attack.perturb(mlp, x, y, defender=median),
        apgd_through(mlp, x, y, Target(median), APGDSettings(EPS, 4, "dlr", eot=1)),
    )
    # through no defence, the adaptive attack is the gray-box one, bit for bit
    assert torch.equal(
        AdaptiveAPGDCE(eps=EPS, iters=4).perturb(mlp, x, y, defender=NoDefence()),
        APGDCE(mlp, eps=EPS, iters=4)(x, y),
    )


# (e) settings, ids, registration, errors


def test_ids_params_and_registration() -> None:
    assert APGDCE().id == "apgd-ce-eps0.1-it10"
    assert APGDDLR(eps=0.05, iters=100, restarts=5, random_start=True).id == (
        "apgd-dlr-eps0.05-it100-restarts5-rs"
    )
    assert AdaptiveAPGDCE().id == "adaptive-apgd-ce-eot15-eps0.1-it10"
    assert AdaptiveAPGDDLR(eot=20, restarts=2).id == "adaptive-apgd-dlr-eot20-eps0.1-it10-restarts2"
    assert APGDCE().params() == {
        "name": "apgd-ce",
        "eps": 0.1,
        "iters": 10,
        "restarts": 1,
        "random_start": False,
    }
    assert AdaptiveAPGDDLR().params()["eot"] == 15
    names = ATTACKS.names()
    for name in ("apgd-ce", "apgd-dlr", "adaptive-apgd-ce", "adaptive-apgd-dlr"):
        assert name in names
    assert make_attack("apgd-dlr", iters=3) == APGDDLR(iters=3)
    assert make_attack("adaptive-apgd-ce", eot=2) == AdaptiveAPGDCE(eot=2)
    assert not APGDCE.adaptive and AdaptiveAPGDCE.adaptive
    assert AdaptiveAPGDCE(defender=Median()) == AdaptiveAPGDCE()  # not part of the identity
    assert isinstance(AdaptiveAPGDCE(), ChoosesMethod) and not isinstance(APGDCE(), ChoosesMethod)
    assert attack_draws(AdaptiveAPGDCE(eot=3), NoisyDefender()) == 3
    assert attack_draws(AdaptiveAPGDCE(eot=3), Median()) == 1
    keys = run_keys()
    for key in ("eps", "attack_iters", "restarts"):
        assert {"apgd-ce", "apgd-dlr", "adaptive-apgd-ce"} <= set(keys[key].used_by)
    assert "adaptive-apgd-dlr" in keys["eot"].used_by and "apgd-ce" not in keys["eot"].used_by
    assert keys["restarts"].default == 1


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m, x, y: apgd(m, x, y, -0.1, 5), r"eps must be in \(0, 1\], got -0.1"),
        (lambda m, x, y: apgd(m, x, y, EPS, 0), "iters must be an int >= 1, got 0"),
        (lambda m, x, y: apgd(m, x, y, EPS, 5, restarts=0), "restarts must be an int >= 1"),
        (
            lambda m, x, y: apgd(m, x, y, EPS, 5, "l2"),  # type: ignore[arg-type]
            "loss must be one of ce, dlr, got 'l2'",
        ),
        (lambda m, x, y: APGDSettings(EPS, 5, eot=0), "eot must be an int >= 1, got 0"),
        (
            lambda m, x, y: APGDSettings(EPS, 5, gradient="approx"),  # type: ignore[arg-type]
            "gradient must be one of bpda, exact",
        ),
        (
            lambda m, x, y: APGDSettings(EPS, 5, "l2"),  # type: ignore[arg-type]
            "loss must be one of ce, dlr, got 'l2'",
        ),
        (
            lambda m, x, y: apgd_through(
                m, x, y, Target(Median(), seeds=[1]), APGDSettings(EPS, 5)
            ),
            "one seed per",
        ),
        (lambda m, x, y: APGDCE(eps=-0.1), r"eps must be in \(0, 1\]"),
        (lambda m, x, y: APGDDLR(iters=0), "iters must be an int >= 1"),
        (lambda m, x, y: AdaptiveAPGDCE(eot=0), "eot must be an int >= 1"),
        (lambda m, x, y: AdaptiveAPGDCE(eot=True), "eot must be an int >= 1"),
        (lambda m, x, y: AdaptiveAPGDCE(m)(x, y), "give the defender it attacks"),
        (lambda m, x, y: APGDCE()(x, y), r"APGDCE has no model: construct it as APGDCE\(model"),
        (
            lambda m, x, y: apgd(
                nn.Sequential(nn.Flatten(), nn.Linear(784, 2)), x, y % 2, EPS, 2, "dlr"
            ),
            "the DLR loss needs logits",
        ),
    ],
)
def test_errors(mlp: nn.Module, batch: tuple[Tensor, Tensor], call: object, message: str) -> None:
    x, y = batch
    with pytest.raises(ValueError, match=message) as error:
        call(mlp, x[:2], y[:2])  # type: ignore[operator]
    assert "\n" not in str(error.value)  # one line
