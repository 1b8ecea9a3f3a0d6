"""What every L-infinity attack shares: the checks, the projection, the sign-step walk, the
:class:`Attack` base class whose id is written from its declared settings, and the base of
the white-box attacks (:class:`ThroughDefender`).

Invariants (enforced here, once): the result lies in the eps-ball around ``x`` and in [0, 1]
after every step, the classifier runs in eval mode (its mode is restored afterwards), inputs
are never mutated and no gradient reaches the classifier's parameters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ride._checks import check_finite_number, check_images, check_unit_range, fmt_number
from ride.attacks.target import BPDAStep, DefenderFn, Target
from ride.registry import ATTACKS, setting_values

#: The gradient an attack follows: (current iterate x^(k), k) -> d loss / d x^(k).
GradientFn = Callable[[Tensor, int], Tensor]

EPS_HELP = "Linf budget in [0, 1] pixel units (MNIST 0.1; CIFAR-10 and ImageNet 0.05)"
STEP_HELP = "step size of each sign step (MNIST 0.02; CIFAR-10 and ImageNet 0.01)"
ITERS_HELP = "iterations of PGD, BPDA and APGD (paper: 10)"
RANDOM_START_HELP = "start at a uniform random point of the eps-ball"
EOT_HELP = "defender draws averaged per gradient (adaptive: on randomised defenders only)"
RESTARTS_HELP = "APGD runs per image; each after the first starts at a uniform point of the ball"


def check_eps(eps: float) -> float:
    """``eps`` as a float in (0, 1] (ValueError, one line, if not)."""
    eps = check_finite_number(eps, "eps")
    if not 0.0 < eps <= 1.0:
        raise ValueError(f"eps must be in (0, 1], got {eps}")
    return eps


def check_count(value: int, name: str) -> None:
    """ValueError unless ``value`` is an int >= 1 (iterations, draws, restarts)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")


def check_walk(eps: float, step: float, iters: int) -> tuple[float, float]:
    """``eps`` and ``step`` as floats after a sign-step walk's settings are checked."""
    eps = check_eps(eps)
    step = check_finite_number(step, "step")
    if step <= 0:
        raise ValueError(f"step must be > 0, got {step}")
    check_count(iters, "iters")
    return eps, step


def check_inputs(x: Tensor, y: Tensor) -> None:
    """ValueError unless ``x`` is (B, C, H, W) in [0, 1] without NaN and ``y`` is (B,)."""
    check_images(x)
    check_unit_range(x)
    if y.shape != (x.shape[0],):
        raise ValueError(f"y must have shape ({x.shape[0]},), got {tuple(y.shape)}")


def project(x_adv: Tensor, x: Tensor, eps: float) -> Tensor:
    """Clip ``x_adv`` to the L-infinity eps-ball around ``x`` and to [0, 1]."""
    return torch.minimum(torch.maximum(x_adv, x - eps), x + eps).clamp(0.0, 1.0)


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """The classifier in eval mode for the attack; its mode restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def uniform_start(x0: Tensor, eps: float, generator: torch.Generator | None) -> Tensor:
    """A uniform point of the eps-ball around ``x0`` (in [0, 1]), drawn from ``generator``."""
    noise = torch.rand(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    return project(x0 + (2.0 * noise - 1.0) * eps, x0, eps)


def input_gradient(model: nn.Module, x_adv: Tensor, y: Tensor) -> Tensor:
    """d(sum of cross-entropy)/d(x_adv), without touching the parameters' ``.grad``."""
    with torch.enable_grad():
        x_req = x_adv.detach().requires_grad_(True)
        loss = F.cross_entropy(model(x_req), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, [x_req])
    return grad


def sign_steps(
    gradient: GradientFn, x: Tensor, eps: float, step: float, iters: int, start: Tensor
) -> Tensor:
    """``iters`` projected sign-gradient ascent steps from ``start``: the one walk of FGSM,
    PGD and BPDA, which differ only in the gradient they follow."""
    x_adv = start
    for k in range(iters):
        grad = gradient(x_adv, k)
        x_adv = project(x_adv + step * grad.sign(), x, eps)
    return x_adv.detach()


@dataclass(frozen=True)
class IdTag:
    """How an attack's id writes one setting: ``tag`` then the value (``eps0.1``); a ``flag``
    is its tag alone, when set (``rs``); at its ``omitted`` value the setting is left out."""

    tag: str
    flag: bool = False
    omitted: object = None


#: The settings an attack's id names, in the order it names them. A setting not listed here
#: (a plugin's) is named after them by its field name, as a defender's id names it.
ID_TAGS: dict[str, IdTag] = {
    "eot": IdTag("eot"),
    "surrogate_iters": IdTag("K"),
    "surrogate_checkpoints": IdTag("T"),
    "surrogate_lr": IdTag("lr"),
    "eps": IdTag("eps"),
    "step": IdTag("step"),
    "iters": IdTag("it"),
    "restarts": IdTag("restarts", omitted=1),
    "p_init": IdTag("p", omitted=0.8),
    "random_start": IdTag("rs", flag=True),
}


def attack_id(stem: str, settings: Mapping[str, Any]) -> str:
    """An attack's id: ``stem`` and its ``settings`` as :data:`ID_TAGS` writes them.

    Example:
        >>> attack_id("pgd", {"eps": 0.1, "step": 0.02, "iters": 10, "random_start": True})
        'pgd-eps0.1-step0.02-it10-rs'
        >>> attack_id("apgd-ce", {"eps": 0.05, "iters": 100, "restarts": 1, "eot": 3})
        'apgd-ce-eot3-eps0.05-it100'
    """
    names = [name for name in ID_TAGS if name in settings]
    names += [name for name in settings if name not in ID_TAGS]
    parts: list[str] = []
    for name in names:
        tag, value = ID_TAGS.get(name, IdTag(name)), settings[name]
        if tag.flag:
            parts += [tag.tag] if value else []
        elif tag.omitted is None or value != tag.omitted:
            text = fmt_number(value) if isinstance(value, int | float) else value
            parts.append(f"{tag.tag}{text}")
    return "-".join([stem, *parts])


@dataclass(frozen=True)
class Attack:
    """An L-infinity attack in [0, 1] pixel space; subclasses add their settings.

    In the style of torchattacks: ``PGD(model, eps=0.1, step=0.02, iters=10)(x, y)``. The
    pipeline builds the same classes without a model (``PGD(eps=0.1)``), names them by
    ``id`` and runs ``attack.perturb(model, x, y, ...)`` in each task. ``model`` is not
    part of the attack's identity (``id``, ``params()``, equality). The id is the name (or
    ``id_stem``) and the settings (:func:`attack_id`).
    """

    model: nn.Module | None = field(default=None, compare=False, repr=False)

    name: ClassVar[str] = "none"
    id_stem: ClassVar[str] = ""  # what the id starts with when it is not the name
    adaptive: ClassVar[bool] = False  # the adversarial image depends on the defender

    @property
    def id(self) -> str:
        return attack_id(self.id_stem or self.name, setting_values(self))

    def params(self) -> dict[str, float | int | bool | str]:
        """The settings that matter for this attack (those its id names)."""
        return {"name": self.name, **setting_values(self)}

    def applies_to(self, defender: object) -> bool:
        """Can this attack be run against ``defender``? Every attack can, unless it says
        otherwise (the RIDE surrogate attacks the RIDE family only); a run leaves out the
        pairs it cannot."""
        return True

    def perturb(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        *,
        generator: torch.Generator | None = None,
        defender: DefenderFn | None = None,
        seeds: Sequence[int] | None = None,
        on_step: Callable[[BPDAStep], None] | None = None,
    ) -> Tensor:
        """Adversarial images for ``x`` (B, C, H, W) in [0, 1] with labels ``y`` (B,)."""
        raise NotImplementedError

    def __call__(self, x: Tensor, y: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if self.model is None:
            cls = type(self).__name__
            raise ValueError(f"{cls} has no model: construct it as {cls}(model, ...)")
        return self.perturb(self.model, x, y, generator=generator)


@dataclass(frozen=True)
class NoAttack(Attack):
    """No attack: the adversarial image is a copy of the clean one (the clean baseline).

    Example:
        >>> import torch
        >>> x, y = torch.rand(2, 1, 28, 28), torch.tensor([3, 7])
        >>> torch.equal(NoAttack(torch.nn.Flatten())(x, y), x)
        True
    """

    name: ClassVar[str] = "none"

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor, **_: Any) -> Tensor:
        check_inputs(x, y)
        return x.detach().clone()


@dataclass(frozen=True)
class ThroughDefender(Attack):
    """An attack whose adversarial image depends on the defender it attacks (white-box:
    BPDA, the adaptive attacks). ``defender`` (optional) binds the defender for
    ``attack(x, y)``; the pipeline passes it to :meth:`perturb` instead. ``seeds`` give each
    image's defender draws. Subclasses write :meth:`through`, the attack on a :class:`Target`.
    """

    defender: DefenderFn | None = field(default=None, compare=False, repr=False)

    adaptive: ClassVar[bool] = True

    def target(
        self,
        defender: DefenderFn | None = None,
        seeds: Sequence[int] | None = None,
        generator: torch.Generator | None = None,
        on_step: Callable[[BPDAStep], None] | None = None,
    ) -> Target:
        """The :class:`Target` to attack: ``defender`` when given, else the bound one."""
        chosen = defender if defender is not None else self.defender
        if chosen is None:
            raise ValueError(f"{type(self).__name__} is adaptive: give the defender it attacks")
        return Target(chosen, seeds, generator, on_step)

    def perturb(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        *,
        generator: torch.Generator | None = None,
        defender: DefenderFn | None = None,
        seeds: Sequence[int] | None = None,
        on_step: Callable[[BPDAStep], None] | None = None,
        **_: Any,
    ) -> Tensor:
        return self.through(model, x, y, self.target(defender, seeds, generator, on_step))

    def through(self, model: nn.Module, x: Tensor, y: Tensor, target: Target) -> Tensor:
        """Adversarial images for ``x`` (B, C, H, W) in [0, 1] with labels ``y`` (B,),
        attacked through ``target``."""
        raise NotImplementedError

    def __call__(
        self,
        x: Tensor,
        y: Tensor,
        generator: torch.Generator | None = None,
        seeds: Sequence[int] | None = None,
    ) -> Tensor:
        if self.model is None:
            cls = type(self).__name__
            raise ValueError(f"{cls} has no model: construct it as {cls}(model, defender, ...)")
        return self.perturb(self.model, x, y, generator=generator, seeds=seeds)


ATTACKS.add("none", NoAttack, "no attack")
