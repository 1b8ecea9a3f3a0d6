"""Plugins: a defender from outside the package, named by import path or installed as an
entry point, is a name, its keyed settings run keys and options, like a built-in. (A defender
that is a plain callable: tests/ride/test_callable_plugins.py.)"""

from __future__ import annotations

import importlib
import logging
import os
import subprocess
import sys
import textwrap
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pluginerrors import assert_refused_defender

from flows.cli import build_parser, resolve_settings
from pipeline.config import ConfigError, RunConfig, run_keys
from pipeline.sampling import claim_run
from ride import registry
from ride.plugins import check_plugin_class, is_import_path, load_entry_points, resolve
from ride.registry import ATTACKS, DEFENDERS
from storage.layout import RunLayout

ROOT = Path(__file__).resolve().parents[2]

JPEGISH = '''
from dataclasses import dataclass
from typing import ClassVar

import torch

from ride.defenders import DefenderBase
from ride.registry import setting


@dataclass(frozen=True)
class Jpegish(DefenderBase):
    """Quantise to a few grey levels (a stand-in for JPEG compression).

    More text that is not the summary.
    """

    quality: int = setting(75, key="jpegish_quality", sweep=True, help="grey levels, >= 2")
    name: ClassVar[str] = "jpegish"
    cost_hint: ClassVar[float | None] = 0.5

    def __post_init__(self) -> None:
        if self.quality < 2:
            raise ValueError(f"quality must be >= 2, got {self.quality}")

    def __call__(self, x, seeds=None):
        levels = self.quality - 1
        return torch.round(x * levels) / levels


class NeedsArguments:
    name = "plain"

    def __init__(self, width):
        self.width = width

    def __call__(self, x, seeds=None):
        return x


@dataclass
class NotFrozen:
    id = "not-frozen"

    def params(self):
        return {"name": "not-frozen"}

    def __call__(self, x, seeds=None):
        return x


@dataclass(frozen=True)
class NoCall(DefenderBase):
    """A defender that forgot __call__."""


@dataclass(frozen=True)
class NoId:
    def __call__(self, x, seeds=None):
        return x
'''

Write = Callable[[str, str], None]


@pytest.fixture
def plugin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, Write]]:
    """A folder on sys.path to write plugin modules into; whatever the test registers and
    imports from it is forgotten afterwards."""
    monkeypatch.syspath_prepend(str(tmp_path))
    registries = [r for r in vars(registry).values() if isinstance(r, registry.Registry)]
    before = {id(r): set(r.names()) for r in registries}
    written: list[str] = []

    def write(module: str, source: str) -> None:
        (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))
        written.append(module)
        importlib.invalidate_caches()

    yield tmp_path, write
    for r in registries:
        for name in set(r.names()) - before[id(r)]:
            r.remove(name)
    for module in written:
        sys.modules.pop(module, None)


@pytest.fixture
def tmpmod(plugin_dir: tuple[Path, Write]) -> None:
    plugin_dir[1]("tmpmod", JPEGISH)


# --- by import path


@pytest.mark.usefixtures("tmpmod")
def test_a_plugin_by_import_path_is_registered_and_runs(tmp_path: Path) -> None:
    assert "tmpmod:Jpegish" not in DEFENDERS
    cfg = RunConfig.from_mapping({"defenders": ["tmpmod:Jpegish"], "jpegish_quality": 3})
    entry = DEFENDERS["tmpmod:Jpegish"]
    assert entry.summary == "Quantise to a few grey levels (a stand-in for JPEG compression)."
    (defender,) = cfg.defender_configs()
    assert defender.id == "jpegish-quality3"
    assert defender.params() == {"name": "jpegish", "quality": 3}
    assert (defender.randomised, defender.differentiable, defender.cost_hint) == (False, False, 0.5)
    assert run_keys()["jpegish_quality"].used_by == ("tmpmod:Jpegish",)

    # Its key is a run key like a built-in's: swept, type-checked, range-checked.
    swept = RunConfig.from_mapping({"defenders": "tmpmod:Jpegish", "jpegish_quality": [3, 5]})
    assert [d.id for d in swept.defender_configs()] == ["jpegish-quality3", "jpegish-quality5"]
    with pytest.raises(ConfigError, match="jpegish_quality: expected an integer"):
        RunConfig.from_mapping({"defenders": ["tmpmod:Jpegish"], "jpegish_quality": "x"})
    with pytest.raises(ConfigError, match="jpegish_quality: quality must be >= 2, got 1"):
        RunConfig.from_mapping({"defenders": ["tmpmod:Jpegish"], "jpegish_quality": 1})

    # At its default it leaves the run's identity alone; off it, it is another run, and
    # run.toml records it.
    at_default = RunConfig.from_mapping({"defenders": ["tmpmod:Jpegish"]})
    assert "jpegish_quality" not in at_default.run_record()
    assert cfg.run_record()["jpegish_quality"] == 3
    assert cfg.run_id != at_default.run_id
    assert at_default.run_record()["defenders"] == ["tmpmod:Jpegish"]
    (tmp_path / "run").mkdir()
    claim_run(RunLayout(tmp_path / "run"), cfg)
    recorded = tomllib.loads((tmp_path / "run" / "run.toml").read_text())["config"]
    assert recorded["jpegish_quality"] == 3 and recorded["defenders"] == ["tmpmod:Jpegish"]


def test_a_run_config_made_directly_registers_its_plugins(plugin_dir: tuple[Path, Write]) -> None:
    plugin_dir[1]("tmpmod_direct", JPEGISH)
    cfg = RunConfig(defenders=("tmpmod_direct:Jpegish",), settings=(("jpegish_quality", 4),))
    assert [d.id for d in cfg.defender_configs()] == ["jpegish-quality4"]


@pytest.mark.usefixtures("tmpmod")
def test_resolve_imports_once_and_leaves_other_names_alone() -> None:
    first = resolve(DEFENDERS, "tmpmod:Jpegish")
    assert resolve(DEFENDERS, "tmpmod:Jpegish") is first
    assert resolve(DEFENDERS, "median").name == "median"
    with pytest.raises(ValueError, match="unknown defender 'nope'"):
        resolve(DEFENDERS, "nope")
    assert is_import_path("a.b_c:D") and is_import_path("m:Outer.Inner")
    assert not is_import_path("tv-bregman") and not is_import_path("a:b:c")


@pytest.mark.usefixtures("tmpmod")
@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("tmpmod:NeedsArguments", "defender plugin tmpmod:NeedsArguments: NeedsArguments(width) "
         "takes arguments; a defender with settings is a @dataclass(frozen=True) subclass of "
         "DefenderBase"),
        ("tmpmod:NotFrozen", "defender plugin tmpmod:NotFrozen: NotFrozen is not frozen; declare "
         "it @dataclass(frozen=True)"),
        ("tmpmod:NoCall", "defender plugin tmpmod:NoCall does not follow the defender protocol: "
         "NoCall lacks __call__"),
        ("tmpmod:NoId", "defender plugin tmpmod:NoId does not follow the defender protocol: NoId "
         "lacks id, params"),
        ("tmpmod:Missing", "defender plugin tmpmod:Missing: module tmpmod has no Missing"),
        ("nomod_xyz:Thing", "defender plugin nomod_xyz:Thing: cannot import nomod_xyz "
         "(ModuleNotFoundError: No module named 'nomod_xyz')"),
    ],
)  # fmt: skip
def test_a_class_that_breaks_the_protocol_is_a_one_line_error(name: str, message: str) -> None:
    assert_refused_defender(name, message)


def test_attack_plugins_follow_the_attack_protocol(plugin_dir: tuple[Path, Write]) -> None:
    plugin_dir[1](
        "tmpattacks",
        """
        from dataclasses import dataclass
        from typing import ClassVar

        from ride.attacks import Attack
        from ride.registry import setting


        @dataclass(frozen=True)
        class Nudge(Attack):
            '''Add a constant to every pixel.'''

            amount: float = setting(0.01, key="nudge_amount", help="added to every pixel")
            name: ClassVar[str] = "nudge"

            @property
            def id(self):
                return f"nudge-a{self.amount}"

            def perturb(self, model, x, y, **kwargs):
                return (x + self.amount).clamp(0, 1)


        @dataclass(frozen=True)
        class NoPerturb:
            name = "noperturb"
        """,
    )
    cfg = RunConfig.from_mapping({"attacks": ["none", "tmpattacks:Nudge"], "nudge_amount": 0.05})
    assert [a.id for a in cfg.attack_configs()] == ["none", "nudge-a0.05"]
    assert "tmpattacks:Nudge" in ATTACKS
    with pytest.raises(ValueError, match="attack protocol: NoPerturb lacks perturb, id, params"):
        resolve(ATTACKS, "tmpattacks:NoPerturb")
    with pytest.raises(ValueError, match="is not a class"):
        check_plugin_class("attack", "x", object())


# --- the command line


@pytest.mark.usefixtures("tmpmod")
@pytest.mark.parametrize(
    "given",
    [["--defender", "tmpmod:Jpegish"], ["--defender=tmpmod:Jpegish"]],
)
def test_an_import_path_plugin_on_the_command_line_brings_its_options(
    given: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["run", "--defender", "none", *given, "--jpegish-quality", "50"]
    args = build_parser(argv).parse_args(argv)
    assert args.jpegish_quality == 50
    cfg = RunConfig.from_mapping(resolve_settings(args))
    assert [d.id for d in cfg.defender_configs()] == ["none", "jpegish-quality50"]
    with pytest.raises(SystemExit):
        build_parser(["run", *given, "--help"]).parse_args(["run", *given, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--jpegish-quality" in text and "[tmpmod:Jpegish]" in text


@pytest.mark.usefixtures("tmpmod")
def test_the_default_argv_is_the_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    argv = ["run", "--defender", "tmpmod:Jpegish", "--jpegish-quality", "50"]
    monkeypatch.setattr(sys, "argv", ["ride", *argv])
    assert build_parser().parse_args(argv).jpegish_quality == 50


@pytest.mark.usefixtures("tmpmod")
def test_a_presets_plugins_bring_their_options(tmp_path: Path) -> None:
    preset = tmp_path / "preset.toml"
    preset.write_text('defenders = ["tmpmod:Jpegish"]\njpegish_quality = 7\n')
    argv = ["run", "--config", str(preset), "--jpegish-quality", "9"]
    args = build_parser(argv).parse_args(argv)
    cfg = RunConfig.from_mapping(resolve_settings(args))
    assert [d.id for d in cfg.defender_configs()] == ["jpegish-quality9"]


def test_a_plugin_that_cannot_be_imported_is_reported_by_the_settings_check(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from flows.cli import main

    assert main(["run", "--defender", "nomod_xyz:Thing", "--limit", "2"]) == 1
    err = capsys.readouterr().err
    assert "ride: error: --defender: defender plugin nomod_xyz:Thing: cannot import" in err


# --- by entry point

PLUGIN_PACKAGE = '''
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ride.classifiers import ClassifierSpec
from ride.defenders import DefenderBase
from ride.registry import DEFENDERS, setting


@dataclass(frozen=True)
class Posterise(DefenderBase):
    """Posterise: a few grey levels.

    Details.
    """

    levels: int = setting(4, key="posterise_levels", help="grey levels")
    name: ClassVar[str] = "posterise"

    def __call__(self, x, seeds=None):
        return torch.round(x * (self.levels - 1)) / (self.levels - 1)


@dataclass(frozen=True)
class SelfRegistered(DefenderBase):
    """Registers itself when its module is imported."""

    name: ClassVar[str] = "self-registered"

    def __call__(self, x, seeds=None):
        return x.clone()


@dataclass(frozen=True)
class TinyNet(ClassifierSpec):
    """A linear classifier of 28x28 grey images."""

    name: ClassVar[str] = "tiny-net"
    input_shape: ClassVar[tuple[int, int, int]] = (1, 28, 28)

    def network(self, num_classes, seed):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, num_classes))


def posterise_function(x, seeds):
    """Posterise, as a plain function."""
    return torch.round(x * 3) / 3


class NotCallable:
    """Neither a dataclass nor callable."""
'''

SELF_REGISTERING = """
from fake_ride_plugins import SelfRegistered
from ride.registry import DEFENDERS

DEFENDERS.add("self-registered", SelfRegistered, "registered by its module")
"""

ENTRY_POINTS = """
[ride.defenders]
posterise = fake_ride_plugins:Posterise
selfreg-module = fake_ride_selfreg
broken-import = fake_ride_nowhere:Gone
not-callable = fake_ride_plugins:NotCallable
plain-function = fake_ride_plugins:posterise_function

[ride.classifiers]
tiny-net = fake_ride_plugins:TinyNet
"""


@pytest.fixture
def fake_dist(plugin_dir: tuple[Path, Write]) -> Path:
    """An installed distribution (``fake_dist-0.1.dist-info``) with ride entry points."""
    folder, write = plugin_dir
    write("fake_ride_plugins", PLUGIN_PACKAGE)
    write("fake_ride_selfreg", SELF_REGISTERING)
    info = folder / "fake_dist-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-dist\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    return folder


def test_entry_point_plugins_are_registered_and_broken_ones_skipped(
    fake_dist: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="ride.plugins"):
        failed = load_entry_points()
    assert failed == ["ride.defenders:broken-import", "ride.defenders:not-callable"]
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and all("\n" not in line for line in lines)
    assert lines[0].startswith("ride: skipped plugin broken-import = fake_ride_nowhere:Gone")
    assert "ModuleNotFoundError" in lines[0]
    assert "not-callable" in lines[1] and "NotCallable has no __call__" in lines[1]

    entry = DEFENDERS["posterise"]
    assert entry.summary == "Posterise: a few grey levels."
    assert DEFENDERS["self-registered"].summary == "registered by its module"
    assert "broken-import" not in DEFENDERS and "not-callable" not in DEFENDERS
    cfg = RunConfig.from_mapping({"defenders": ["posterise"], "posterise_levels": 3})
    assert [d.id for d in cfg.defender_configs()] == ["posterise-levels3"]
    plain = RunConfig.from_mapping({"defenders": ["plain-function"]}).defender_configs()[0]
    assert (plain.id, plain.randomised) == ("posterise_function", True)
    assert DEFENDERS["plain-function"].summary == "Posterise, as a plain function."

    classifiers = getattr(registry, "CLASSIFIERS", None)
    if classifiers is not None:  # the registry of classifiers takes the ride.classifiers group
        from ride.classifiers import build_classifier

        assert "tiny-net" in classifiers
        assert build_classifier("tiny-net", seed=0)[1].out_features == 10

    # Loading again registers nothing twice and fails the same way.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ride.plugins"):
        assert load_entry_points() == failed


def test_ride_run_help_lists_entry_point_plugins(
    fake_dist: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    load_entry_points()
    with pytest.raises(SystemExit):
        build_parser(["run", "--help"]).parse_args(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # help lines are wrapped
    assert "posterise (Posterise: a few grey levels.)" in text
    assert "--posterise-levels" in text


@pytest.mark.slow
def test_import_ride_loads_entry_points_once_and_survives_broken_ones(fake_dist: Path) -> None:
    """A fresh process: ``import ride`` registers the installed plugins by itself."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(fake_dist), str(ROOT)])}
    done = subprocess.run(
        [sys.executable, "-m", "flows.cli", "run", "--help"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "posterise (Posterise: a few grey levels.)" in " ".join(done.stdout.split())
    assert "--posterise-levels" in done.stdout
    warnings = [line for line in done.stderr.splitlines() if "skipped plugin" in line]
    assert len(warnings) == 2, done.stderr
