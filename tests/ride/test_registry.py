"""The registries: a defender declared in one class is a name, an option, a TOML key, a sweep
and an id everywhere, with nothing else to edit."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest
import torch
from torch import Tensor

from pipeline.config import ConfigError, RunConfig, run_keys
from ride.registry import (
    ATTACKS,
    DEFENDERS,
    Registry,
    execution,
    setting,
    setting_values,
    settings_of,
    with_execution,
)


@dataclass(frozen=True)
class Blur:
    """A box blur: the whole of a new defender (a test-only one)."""

    width: int = setting(3, key="blur_width", sweep=True, help="box side in pixels, odd")
    padding: str = setting("zeros", help="padding mode")
    chunk: int = execution(64, help="images per call")

    name: ClassVar[str] = "blur"
    randomised: ClassVar[bool] = False

    def __post_init__(self) -> None:
        if self.width < 1 or self.width % 2 == 0:
            raise ValueError(f"width must be an odd int >= 1, got {self.width}")

    @property
    def id(self) -> str:
        return f"blur-w{self.width}"

    def params(self) -> dict[str, float | int | bool | str]:
        return {"name": self.name, **setting_values(self)}

    def __call__(self, x: Tensor, seeds: Sequence[int] | None = None) -> Tensor:
        kernel = torch.ones(x.shape[1], 1, self.width, self.width) / self.width**2
        return torch.conv2d(x, kernel, padding=self.width // 2, groups=x.shape[1])


@pytest.fixture
def blur() -> Iterator[None]:
    DEFENDERS.add("blur", Blur, "box blur")
    try:
        yield
    finally:
        DEFENDERS.remove("blur")


def parse(*args: str) -> argparse.Namespace:
    from flows.cli import build_parser

    return build_parser().parse_args(["run", *args])


@pytest.mark.usefixtures("blur")
def test_a_registered_defender_is_a_run_option_key_sweep_and_id(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from flows.cli import resolve_settings

    assert "blur" in DEFENDERS.names()
    assert run_keys()["blur_width"].used_by == ("blur",)
    settings = resolve_settings(parse("--defender", "blur", "--blur-width", "3,5"))
    cfg = RunConfig.from_mapping(settings)
    assert [d.id for d in cfg.defender_configs()] == ["blur-w3", "blur-w5"]
    assert cfg.to_dict()["blur_width"] == [3, 5]
    with pytest.raises(SystemExit):
        parse("--help")
    assert "--blur-width" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="blur_width: width must be an odd int"):
        RunConfig.from_mapping({"blur_width": 4})


@pytest.mark.usefixtures("blur")
def test_a_new_key_at_its_default_keeps_every_earlier_run_id() -> None:
    assert RunConfig(chunk_size=10).run_id == "digits-e19020dd56"  # 0.2.0: default chunk 10
    assert "blur_width" not in RunConfig().run_record()
    assert RunConfig.from_mapping({"blur_width": 5}).run_record()["blur_width"] == 5


def test_settings_and_execution_fields() -> None:
    assert list(settings_of(Blur)) == ["width", "padding"]
    fast = with_execution(Blur(), chunk=8, precision="bf16")  # precision: not a Blur field
    assert fast.chunk == 8 and fast == Blur() and fast.params() == Blur().params()


def test_entries_build_with_implied_settings_fixed() -> None:
    registry: Registry[Blur] = Registry("filter")
    registry.add("blur5", Blur, "5x5", width=5)
    assert registry["blur5"].build() == Blur(width=5)
    assert registry["blur5"].fed() == {}  # an implied setting is never fed by a run
    with pytest.raises(ValueError, match=r"unknown setting\(s\) width for 'blur5'"):
        registry["blur5"].build(width=3)
    with pytest.raises(ValueError, match="registered twice"):
        registry.add("blur5", Blur, "again")
    with pytest.raises(ValueError, match=r"unknown filter 'gauss'; choose from: blur5"):
        registry["gauss"]
    with pytest.raises(ValueError, match="implies unknown settings"):
        registry.add("odd", Blur, "", radius=2)


def test_every_built_in_setting_has_help_and_every_key_one_type() -> None:
    for registry in (ATTACKS, DEFENDERS):
        for entry in registry.entries():
            for name, meta in settings_of(entry.cls).items():
                assert meta.help.strip(), f"{entry.name}.{name}"
    kinds = {key: rk.kind for key, rk in run_keys().items()}
    assert kinds["median_kernel"] is int and kinds["eps"] is float
    assert run_keys()["ride_iters"].default == 200  # the demo's K, not the class's 2000
    assert run_keys()["fgsm_eps"].fallback == "eps"


def test_a_package_imports_every_module_it_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What ride/defenders, ride/attacks and ride/datasets do on import: a module dropped
    into the folder registers its class with no import added anywhere."""
    package = tmp_path / "plugins_pkg"
    package.mkdir()
    (package / "__init__.py").write_text(
        "from ride.registry import import_modules\nimport_modules(__name__, __path__)\n"
    )
    (package / "sharpen.py").write_text(
        "from dataclasses import dataclass\n"
        "from ride.registry import DEFENDERS, setting\n"
        "@dataclass(frozen=True)\n"
        "class Sharpen:\n"
        "    amount: float = setting(1.0, help='unsharp amount')\n"
        "DEFENDERS.add('sharpen-plugin', Sharpen, 'unsharp mask')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        importlib.import_module("plugins_pkg")
        assert DEFENDERS["sharpen-plugin"].build(amount=2.0).amount == 2.0
    finally:
        if "sharpen-plugin" in DEFENDERS:
            DEFENDERS.remove("sharpen-plugin")
