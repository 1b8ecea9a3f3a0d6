"""Run settings: presets, command-line overrides, ids and validation."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from flows.cli import build_parser, resolve_settings
from pipeline.config import ConfigError, RunConfig


def parse(*args: str) -> argparse.Namespace:
    return build_parser().parse_args(["run", *args])


def test_command_line_overrides_the_preset(tmp_path: Path) -> None:
    preset = tmp_path / "p.toml"
    preset.write_text('ride_iters = 2000\neps = 0.05\nattacks = ["pgd"]\n')
    settings = resolve_settings(parse("--config", str(preset), "--eps", "0.1"))
    cfg = RunConfig.from_mapping(settings)
    assert (cfg.value("ride_iters"), cfg.value("eps"), cfg.attacks) == (2000, 0.1, ("pgd",))


def test_repeatable_options_replace_the_default_lists() -> None:
    cfg = RunConfig.from_mapping(resolve_settings(parse("--attack", "pgd", "--defender", "dae")))
    assert cfg.attacks == ("pgd",) and cfg.defenders == ("dae",)
    assert [d.id.split("-")[0] for d in cfg.defender_configs()] == ["dae"]


def test_demo_defaults() -> None:
    cfg = RunConfig()
    assert cfg.attacks == ("none", "fgsm", "pgd")
    assert cfg.defenders == ("none", "median", "tv-bregman", "ride")
    assert (cfg.value("eps"), cfg.value("step"), cfg.value("attack_iters")) == (0.1, 0.02, 10)
    assert [a.id for a in cfg.attack_configs()] == [
        "none",
        "fgsm-eps0.1",
        "pgd-eps0.1-step0.02-it10",
    ]


def test_run_id_ignores_execution_settings() -> None:
    assert RunConfig(workers=1).run_id == RunConfig(workers=4, threads=2).run_id
    assert RunConfig.from_mapping({"eps": 0.05}).run_id != RunConfig().run_id


def test_keys_added_later_keep_earlier_runs_ids_and_resumable() -> None:
    """``precision`` came in 0.2.x: at fp32 a run keeps the id (and ``run.toml``) that
    version 0.2.0 gave it; another precision is another run."""
    assert RunConfig(chunk_size=10).run_id == "digits-e19020dd56"  # 0.2.0: default chunk 10
    assert "precision" not in RunConfig().run_record()
    assert "precision" in RunConfig().to_dict()
    assert RunConfig(precision="bf16").run_id != RunConfig().run_id
    assert RunConfig(precision="bf16").run_record()["precision"] == "bf16"


def test_a_run_toml_of_0_2_0_is_resumed_at_fp32_only(tmp_path: Path) -> None:
    from pipeline.config import V020_KEYS
    from storage.runconfig import RunConfigMismatch, check_same_run, claim_run_dir

    toml = tmp_path / "run.toml"
    old = RunConfig(chunk_size=10)  # 0.2.0's default chunk size
    before = {k: v for k, v in old.to_dict().items() if k in V020_KEYS}
    claim_run_dir(toml, before, frozenset(before) - RunConfig.execution_keys(), "0.2.0")
    check_same_run(toml, old.run_record(), old.identity())
    with pytest.raises(RunConfigMismatch, match=r"differs in: chunk_size"):  # now auto
        check_same_run(toml, RunConfig().run_record(), RunConfig().identity())
    half = RunConfig(chunk_size=10, precision="bf16")
    with pytest.raises(RunConfigMismatch, match=r"differs in: precision"):
        check_same_run(toml, half.run_record(), half.identity())


def test_duplicates_are_refused() -> None:
    with pytest.raises(ConfigError, match="given twice"):
        RunConfig(attacks=("pgd", "pgd"))


def test_scheduler_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RIDE_SCHEDULER", "tcp://10.0.0.1:8786")
    assert resolve_settings(parse())["scheduler"] == "tcp://10.0.0.1:8786"
    assert resolve_settings(parse("--scheduler", "tcp://x:1"))["scheduler"] == "tcp://x:1"


@pytest.mark.parametrize("preset", sorted((Path(__file__).parents[2] / "configs").glob("*.toml")))
def test_presets_parse_into_valid_runs(preset: Path) -> None:
    from pipeline.config import load_preset

    cfg = RunConfig.from_mapping(load_preset(preset))
    assert cfg.attack_configs() and cfg.defender_configs()


def test_demo_preset_is_the_default_run() -> None:
    from pipeline.config import load_preset

    preset = Path(__file__).parents[2] / "configs" / "demo.toml"
    assert RunConfig.from_mapping(load_preset(preset)) == RunConfig()


def test_white_box_presets_expand_to_the_documented_runs() -> None:
    from pipeline.config import load_preset

    configs = Path(__file__).parents[2] / "configs"
    demo = RunConfig.from_mapping(load_preset(configs / "whitebox-demo.toml"))
    assert [a.id for a in demo.attack_configs()] == [
        "none",
        "bpda-eps0.1-step0.02-it10",
        "bpda-eot5-eps0.1-step0.02-it10",
    ]
    assert [d.id for d in demo.defender_configs()][-1].startswith("ride-K50-T2-a0.9-s0.5")
    assert (demo.recheck, demo.limit) == (4, 30)
    paper = RunConfig.from_mapping(load_preset(configs / "table2-mnist.toml"))
    assert [a.id for a in paper.attack_configs()][-1] == "bpda-eot15-eps0.1-step0.02-it10"
    assert [d.id for d in paper.defender_configs()][-1] == "ride-K2000-T5-a0.9-s0.5"
