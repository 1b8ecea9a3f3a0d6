"""Every defender output is checked against the protocol (pipeline/execution.py): a plugin
that breaks it fails its chunk with one line naming it; the built-ins pass unchanged."""

from __future__ import annotations

import pickle
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from torch import Tensor

from pipeline.chunks import defend_rows
from pipeline.config import RunConfig
from pipeline.execution import CheckedDefender, executed_defender
from ride.attacks import make_attack
from ride.classifiers import build_classifier
from ride.defenders import DEFENDERS, DefenderBase, make_defender

CFG = RunConfig.from_mapping({"limit": 2, "defenders": ["none"], "attacks": ["none"]})
X = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
SEEDS = [11, 12]


@dataclass(frozen=True)
class Cropper(DefenderBase):
    """Loses a row and a column."""

    name: ClassVar[str] = "cropper"

    def __call__(self, x: Tensor, seeds: Sequence[int] | None = None) -> Tensor:
        return x[..., :-1, :-1].clone()


@dataclass(frozen=True)
class Scaled(DefenderBase):
    """Multiplies by a factor, adds an offset, can put a NaN or an inf in."""

    factor: float = 1.0
    offset: float = 0.0
    poison: float | None = None

    name: ClassVar[str] = "scaled"

    def __call__(self, x: Tensor, seeds: Sequence[int] | None = None) -> Tensor:
        out = x * self.factor + self.offset
        if self.poison is not None:
            out[0, 0, 0, 0] = self.poison
        return out


@dataclass(frozen=True)
class Noisy(DefenderBase):
    """Adds noise from its seeds, declaring itself deterministic (``lies``) or not."""

    lies: bool = True
    calls: list[int] | None = field(default=None, compare=False)  # lengths of its inputs

    name: ClassVar[str] = "noisy"

    @property
    def randomised(self) -> bool:  # type: ignore[override]
        return not self.lies

    def __call__(self, x: Tensor, seeds: Sequence[int] | None = None) -> Tensor:
        if self.calls is not None:
            self.calls.append(len(x))
        generator = torch.Generator().manual_seed(int(seeds[0]) if seeds else 0)
        noise = 0.01 * torch.randn(x.shape, generator=generator)
        return (x + noise).clamp(0, 1)


@dataclass(frozen=True)
class InPlace(DefenderBase):
    """Clamps its input in place."""

    name: ClassVar[str] = "in-place"

    def __call__(self, x: Tensor, seeds: Sequence[int] | None = None) -> Tensor:
        return x.mul_(0.5)


@dataclass(frozen=True)
class Numpy(DefenderBase):
    """Returns a numpy array."""

    name: ClassVar[str] = "numpy"

    def __call__(self, x: Tensor, seeds: Sequence[int] | None = None) -> Any:
        return x.numpy()


@pytest.fixture
def registered() -> Iterator[str]:
    """Cropper registered as a plugin named by import path."""
    DEFENDERS.add("my_pkg.purify:JpegDefender", Cropper, "a broken one")
    try:
        yield "my_pkg.purify:JpegDefender"
    finally:
        DEFENDERS.remove("my_pkg.purify:JpegDefender")


def checked(defender: Any) -> Any:
    return executed_defender(CFG, defender)


def broke(defender: Any, x: Tensor = X, seeds: Sequence[int] | None = SEEDS) -> str:
    with pytest.raises(ValueError) as caught:
        checked(defender)(x.clone(), seeds)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_the_error_names_the_plugin_by_its_registered_name(registered: str) -> None:
    assert broke(Cropper()) == (
        "defender plugin my_pkg.purify:JpegDefender broke its protocol: returned shape "
        "(2, 1, 27, 27) for input (2, 1, 28, 28)"
    )


@pytest.mark.parametrize(
    ("defender", "problem"),
    [
        (Cropper(), "returned shape (2, 1, 27, 27) for input (2, 1, 28, 28)"),
        (Scaled(poison=float("nan")), "returned 1 non-finite value(s) (NaN or inf)"),
        (Scaled(poison=float("inf")), "returned 1 non-finite value(s) (NaN or inf)"),
        (Scaled(factor=2.0), "outside [0, 1]"),
        (Scaled(offset=-0.5), "outside [0, 1]"),
        (Noisy(lies=True), "declares randomised = False but its first image came out "
         "different when defended again, alone, with another seed (max difference"),
        (InPlace(), "modified its input x in place"),
        (Numpy(), "returned a ndarray, not a torch.Tensor"),
    ],
)  # fmt: skip
def test_each_violation_is_one_line_naming_the_plugin(defender: Any, problem: str) -> None:
    message = broke(defender)
    cls = type(defender)
    assert message.startswith(
        f"defender plugin {cls.__module__}:{cls.__qualname__} broke its protocol: "
    )
    assert problem in message


def test_what_the_protocol_allows() -> None:
    # Rounding just past [0, 1] is no violation; an empty batch is none either.
    out = checked(Scaled(factor=1.0, offset=5e-7))(torch.ones(1, 1, 4, 4), [0])
    assert float(out.max()) == pytest.approx(1.0 + 5e-7)
    assert checked(Scaled())(torch.zeros(0, 1, 4, 4), []).shape == (0, 1, 4, 4)
    # A randomised defender may differ between seeds, and is called only once.
    calls: list[int] = []
    honest = Noisy(lies=False, calls=calls)
    defender = checked(honest)
    defender(X, SEEDS)
    defender(X, SEEDS)
    assert calls == [2, 2]
    # A deterministic one is re-run on one image, on the first call only.
    calls.clear()
    liar = checked(Noisy(lies=True, calls=calls))
    with pytest.raises(ValueError):
        liar(X, SEEDS)
    assert calls == [2, 1]
    # Without seeds (a notebook) the check still runs.
    assert checked(make_defender("median"))(X, None).shape == X.shape


@pytest.mark.parametrize(
    "defender",
    [
        make_defender("none"),
        make_defender("median", kernel=3),
        make_defender("tv-bregman"),
        make_defender("tv-chambolle"),
        make_defender("ride", iters=2, checkpoints=1),
        make_defender("dip", iters=2, checkpoints=1),
    ],
    ids=lambda d: d.id,
)
def test_built_ins_pass_and_their_output_is_unchanged(defender: Any) -> None:
    wrapped = checked(defender)
    assert type(wrapped) is CheckedDefender  # a stand-in: isinstance sees the defender's class
    assert isinstance(wrapped, type(defender)) and wrapped.__wrapped__ == defender
    assert repr(wrapped).startswith("CheckedDefender(")
    assert (wrapped.id, wrapped.params(), wrapped.name) == (
        defender.id,
        defender.params(),
        defender.name,
    )
    assert (wrapped.randomised, wrapped.differentiable, wrapped.cost_hint) == (
        defender.randomised,
        defender.differentiable,
        defender.cost_hint,
    )
    x = X.clone()
    torch.manual_seed(123)
    ours = wrapped(x, SEEDS)
    state_after_ours = torch.get_rng_state()
    torch.manual_seed(123)
    plain = wrapped.__wrapped__(x, SEEDS)  # the defender as the run executes it, unchecked
    assert torch.equal(ours, plain)
    assert torch.equal(torch.get_rng_state(), state_after_ours)  # no extra random draws
    assert torch.equal(x, X)
    assert pickle.loads(pickle.dumps(wrapped)).id == defender.id


def test_differentiable_outputs_keep_their_gradient() -> None:
    x = X.clone().requires_grad_(True)
    out = checked(make_defender("none"))(x, SEEDS)
    out.sum().backward()
    assert x.grad is not None and torch.equal(x.grad, torch.ones_like(X))


def test_a_chunk_defended_by_a_broken_plugin_raises_its_one_line(registered: str) -> None:
    model = build_classifier("mnist-cnn").eval()
    labels = torch.tensor([1, 2])
    attack = make_attack("none")
    with pytest.raises(ValueError, match=r"^defender plugin my_pkg.purify:JpegDefender broke"):
        defend_rows(CFG, attack, Cropper(), 0, X, labels, X, model)
    defended, rows = defend_rows(CFG, attack, make_defender("median"), 0, X, labels, X, model)
    assert defended.shape == X.shape and len(rows) == 2
    assert not np.isnan(defended.numpy()).any()
