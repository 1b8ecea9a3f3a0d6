"""Plugins for everyone: a defender without settings may be a plain function ``(x, seeds) ->
x'`` or a class made with no arguments whose instances are called; a classifier plugin is
named by import path like a defender.

A plain callable is a name and an id like a built-in (its name, or its ``name`` attribute),
declares ``randomised``, ``differentiable`` and ``cost_hint`` as attributes or is taken to
be randomised and not differentiable, is checked on every output like any defender, and
travels to another process by the path it was imported from.
"""

from __future__ import annotations

import importlib
import pickle
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from pluginerrors import assert_refused_defender

from pipeline.config import ConfigError, RunConfig
from pipeline.execution import CheckedDefender
from ride import registry
from ride.classifiers import CLASSIFIERS, build_classifier, classifier_input
from ride.defenders import CallableDefender, make_defender
from ride.plugins import callable_defender, resolve
from ride.registry import DEFENDERS

CALLABLES = '''
import torch


def posterise(x, seeds):
    """Four grey levels: a plain function.

    More text that is not the summary.
    """
    return torch.round(x * 3) / 3


def same(x, seeds=None):
    return x.clone()


same.name = "copy"
same.randomised = False
same.differentiable = True
same.cost_hint = 0.1


class Jitter:
    """Seeded noise, clamped: a class without settings."""

    made = 0

    def __init__(self):
        type(self).made += 1

    def __call__(self, x, seeds):
        out = torch.empty_like(x)
        for i, image in enumerate(x):
            gen = torch.Generator().manual_seed(int(seeds[i]))
            out[i] = (image + 0.1 * torch.randn(image.shape, generator=gen)).clamp(0, 1)
        return out


class Declared:
    name = "declared"
    randomised = False
    cost_hint = 3

    def __call__(self, x, seeds=None):
        return 1 - x


def crop(x, seeds):
    return x[..., 1:-1, 1:-1].clone()


def brighten(x, seeds):
    return x * 2


def one_argument(x):
    return x


class NeedsArguments:
    def __init__(self, width):
        self.width = width

    def __call__(self, x, seeds):
        return x


class NoCall:
    pass


class BadCall:
    def __call__(self, x):
        return x


def bad_flag(x, seeds):
    return x


bad_flag.randomised = "no"


def bad_cost(x, seeds):
    return x


bad_cost.cost_hint = -1

unnamed = lambda x, seeds: x  # noqa: E731
NOT_CALLABLE = 3
'''

CLASSIFIER = '''
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ride.classifiers import ClassifierSpec


@dataclass(frozen=True)
class TinyNet(ClassifierSpec):
    """A linear classifier of 28x28 grey images."""

    name: ClassVar[str] = "tiny-net"
    input_shape: ClassVar[tuple[int, int, int]] = (1, 28, 28)

    def network(self, num_classes, seed):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, num_classes))


class PlainSpec:
    def network(self, num_classes, seed):
        return nn.Linear(1, num_classes)


def factory(num_classes, seed):
    return nn.Linear(1, num_classes)
'''

Write = Callable[[str, str], None]


@pytest.fixture
def write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Write]:
    """Writes plugin modules into a folder on sys.path; what the test registers and imports
    from there is forgotten afterwards."""
    monkeypatch.syspath_prepend(str(tmp_path))
    registries = [r for r in vars(registry).values() if isinstance(r, registry.Registry)]
    before = {id(r): set(r.names()) for r in registries}
    written: list[str] = []

    def write_module(module: str, source: str) -> None:
        (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))
        written.append(module)
        importlib.invalidate_caches()

    yield write_module
    for r in registries:
        for name in set(r.names()) - before[id(r)]:
            r.remove(name)
    for module in written:
        sys.modules.pop(module, None)


@pytest.fixture
def callables(write: Write) -> None:
    write("tmpcall", CALLABLES)


X = torch.linspace(0, 1, 2 * 1 * 8 * 8).reshape(2, 1, 8, 8)


@pytest.mark.usefixtures("callables")
def test_a_function_is_a_defender_named_after_it_and_conservative() -> None:
    cfg = RunConfig.from_mapping({"defenders": ["none", "tmpcall:posterise"]})
    defender = cfg.defender_configs()[1]
    assert isinstance(defender, CallableDefender)
    assert (defender.id, defender.params()) == ("posterise", {"name": "posterise"})
    assert (defender.randomised, defender.differentiable, defender.cost_hint) == (
        True,
        False,
        None,
    )
    assert torch.equal(defender(X, [0, 1]), torch.round(X * 3) / 3)
    assert DEFENDERS["tmpcall:posterise"].summary == "Four grey levels: a plain function."
    assert type(defender).__module__ == "tmpcall"  # a plugin, named as one in errors
    assert make_defender("tmpcall:posterise") == defender  # no settings: all alike


@pytest.mark.usefixtures("callables")
def test_a_class_without_settings_is_made_once_per_defender_and_called() -> None:
    defender = resolve(DEFENDERS, "tmpcall:Jitter").build()
    jitter = sys.modules["tmpcall"].Jitter
    assert (defender.id, defender.randomised, defender.differentiable) == ("Jitter", True, False)
    assert jitter.made == 0  # made on the first call, not when it is registered
    first, again = defender(X, [3, 4]), defender(X, [3, 4])
    assert jitter.made == 1
    assert torch.equal(first, again) and not torch.equal(first, defender(X, [5, 4]))
    assert torch.equal(first[1], defender(X, [5, 4])[1])  # image i depends on seeds[i] alone
    assert DEFENDERS["tmpcall:Jitter"].summary == "Seeded noise, clamped: a class without settings."


@pytest.mark.usefixtures("callables")
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("tmpcall:same", ("copy", False, True, 0.1)),
        ("tmpcall:Declared", ("declared", False, False, 3)),
    ],
)
def test_what_a_callable_declares_is_respected(
    name: str, expected: tuple[str, bool, bool, float]
) -> None:
    defender = resolve(DEFENDERS, name).build()
    declared = (defender.id, defender.randomised, defender.differentiable, defender.cost_hint)
    assert declared == expected
    assert defender.params() == {"name": expected[0]}


@pytest.mark.usefixtures("callables")
def test_a_declared_differentiable_callable_passes_gradients_through() -> None:
    defender = resolve(DEFENDERS, "tmpcall:same").build()
    x = X.clone().requires_grad_(True)
    defender(x, [0, 1]).sum().backward()
    assert x.grad is not None and torch.equal(x.grad, torch.ones_like(X))


@pytest.mark.usefixtures("callables")
@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("tmpcall:NOT_CALLABLE", "defender plugin tmpcall:NOT_CALLABLE is not callable (got int): "
         "a defender is called with (x, seeds)"),
        ("tmpcall:one_argument", "defender plugin tmpcall:one_argument: one_argument(x) cannot "
         "take (x, seeds)"),
        ("tmpcall:NeedsArguments", "defender plugin tmpcall:NeedsArguments: NeedsArguments(width) "
         "takes arguments; a defender with settings is a @dataclass(frozen=True) subclass of "
         "DefenderBase"),
        ("tmpcall:NoCall", "defender plugin tmpcall:NoCall: NoCall has no __call__(self, x, "
         "seeds)"),
        ("tmpcall:BadCall", "defender plugin tmpcall:BadCall: BadCall.__call__(self, x) cannot "
         "take (x, seeds)"),
        ("tmpcall:bad_flag", "defender plugin tmpcall:bad_flag: randomised must be True or "
         "False, got 'no'"),
        ("tmpcall:bad_cost", "defender plugin tmpcall:bad_cost: cost_hint must be a number > 0 "
         "or None, got -1"),
        ("tmpcall:unnamed", "defender plugin tmpcall:unnamed: its name '<lambda>' cannot name "
         "results; give it a name attribute (letters, digits, '-', '_', '.')"),
    ],
)  # fmt: skip
def test_a_callable_that_cannot_be_a_defender_is_a_one_line_error(name: str, message: str) -> None:
    assert_refused_defender(name, message)


@pytest.mark.usefixtures("callables")
@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("tmpcall:crop", "returned shape (2, 1, 6, 6) for input (2, 1, 8, 8)"),
        ("tmpcall:brighten", "returned values in [0, 2], outside [0, 1]"),
    ],
)
def test_a_callable_that_breaks_the_protocol_when_run_gets_the_same_one_line_error(
    name: str, problem: str
) -> None:
    checked = CheckedDefender(resolve(DEFENDERS, name).build())
    with pytest.raises(ValueError) as caught:
        checked(X, [0, 1])
    assert str(caught.value) == f"defender plugin {name} broke its protocol: {problem}"


@pytest.mark.usefixtures("callables")
def test_a_callable_defender_travels_to_another_process_by_its_path() -> None:
    defender = resolve(DEFENDERS, "tmpcall:Declared").build()
    cls = type(defender)
    assert pickle.loads(pickle.dumps(defender)) == defender
    assert type(pickle.loads(pickle.dumps(defender))) is cls
    # A process that has not registered it yet (a Dask worker) registers it on the way in.
    data = pickle.dumps(defender)
    DEFENDERS.remove("tmpcall:Declared")
    copy = pickle.loads(data)
    assert copy.id == "declared" and torch.equal(copy(X), 1 - X)
    assert "tmpcall:Declared" in DEFENDERS
    # One registered under another name (an entry point's) is found by what it wraps.
    declared = sys.modules["tmpcall"].Declared
    DEFENDERS.add("declared-ep", callable_defender("ep", declared, "tmpcall:Declared"), "")
    DEFENDERS.remove("tmpcall:Declared")
    assert type(pickle.loads(data)) is DEFENDERS["declared-ep"].cls


def test_a_dataclass_plugin_is_still_held_to_the_full_protocol(write: Write) -> None:
    write(
        "tmpdc",
        """
        from dataclasses import dataclass

        @dataclass(frozen=True)
        class Settingsless:
            def __call__(self, x, seeds=None):
                return x
        """,
    )
    with pytest.raises(ValueError, match="lacks id, params"):
        resolve(DEFENDERS, "tmpdc:Settingsless")


def test_a_classifier_plugin_by_import_path_loads(write: Write) -> None:
    write("tmpnets", CLASSIFIER)
    entry = resolve(CLASSIFIERS, "tmpnets:TinyNet")
    assert entry.summary == "A linear classifier of 28x28 grey images."
    assert classifier_input("tmpnets:TinyNet") == (1, 28, 28)
    model = build_classifier("tmpnets:TinyNet", seed=0)
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert torch.equal(model[1].weight, build_classifier("tmpnets:TinyNet", seed=0)[1].weight)
    with pytest.raises(ValueError) as caught:
        resolve(CLASSIFIERS, "tmpnets:PlainSpec")
    assert str(caught.value) == (
        "classifier plugin tmpnets:PlainSpec: PlainSpec is not a dataclass; declare it "
        "@dataclass(frozen=True)"
    )
    with pytest.raises(ValueError, match=r"^classifier plugin tmpnets:factory is not a class"):
        resolve(CLASSIFIERS, "tmpnets:factory")


def test_a_run_names_its_classifier_plugin_by_import_path(write: Write) -> None:
    """``ride run --classifier pkg.mod:Spec``: the run's settings register it (so do the
    workers, :func:`pipeline.execution.register_plugins`); one that does not import is a
    one-line error of ``classifier``."""
    from pipeline.config import RunConfig
    from pipeline.execution import register_plugins

    write("tmpnets", CLASSIFIER)
    cfg = RunConfig.from_mapping({"classifier": "tmpnets:TinyNet", "limit": 4})
    assert cfg.classifier == "tmpnets:TinyNet" and "tmpnets:TinyNet" in CLASSIFIERS
    CLASSIFIERS.remove("tmpnets:TinyNet")  # a worker that has not seen it yet
    register_plugins(cfg)
    assert "tmpnets:TinyNet" in CLASSIFIERS
    with pytest.raises(ConfigError) as caught:
        RunConfig.from_mapping({"classifier": "tmpnets:Nope"})
    assert "\n" not in str(caught.value)
    assert "classifier plugin tmpnets:Nope: module tmpnets has no Nope" in str(caught.value)
