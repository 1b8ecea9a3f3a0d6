"""Sweep keys expand into one defender id per value; data_dir, fgsm_eps and the per-dataset
defaults of RunConfig."""

from __future__ import annotations

import argparse

import pytest

from flows.cli import build_parser, resolve_settings
from pipeline.config import ConfigError, RunConfig, parse_sweep


def parse(*args: str) -> argparse.Namespace:
    return build_parser().parse_args(["run", *args])


def ids(cfg: RunConfig) -> list[str]:
    return [d.id for d in cfg.defender_configs()]


def test_one_id_per_value_in_the_order_given() -> None:
    cfg = RunConfig.from_mapping(
        {"defenders": ["none", "median", "tv-bregman"], "median_kernel": [3, 5, 7, 9, 11],
         "bregman_weight": [0.25, 0.075]}
    )  # fmt: skip
    assert ids(cfg) == [
        "none",
        "median-k3",
        "median-k5",
        "median-k7",
        "median-k9",
        "median-k11",
        "tv-bregman-w0.25",
        "tv-bregman-w0.075",
    ]
    assert cfg.value("median_kernel") == (3, 5, 7, 9, 11)
    assert cfg.to_dict()["median_kernel"] == [3, 5, 7, 9, 11]  # TOML-ready for run.toml


def test_each_defender_gets_the_product_of_the_sweeps_it_uses() -> None:
    cfg = RunConfig.from_mapping(
        {"defenders": ["dip", "idip", "dae", "ride"], "alpha": [0.8, 0.9], "sigma": [0.25, 1],
         "ride_iters": 5, "ride_checkpoints": 2}
    )  # fmt: skip
    assert ids(cfg) == [
        "dip-K5-T2-a1-s0.5",  # no alpha, no noise: one config
        "idip-K5-T2-a0.8-s0.5",  # alpha only
        "idip-K5-T2-a0.9-s0.5",
        "dae-K5-T2-a1-s0.25",  # sigma only
        "dae-K5-T2-a1-s1",
        "ride-K5-T2-a0.8-s0.25",  # alpha x sigma
        "ride-K5-T2-a0.8-s1",
        "ride-K5-T2-a0.9-s0.25",
        "ride-K5-T2-a0.9-s1",
    ]
    assert len(set(ids(cfg))) == len(ids(cfg))


def test_a_single_value_stays_a_scalar_and_keeps_the_run_id() -> None:
    assert RunConfig.from_mapping({"median_kernel": [3]}).value("median_kernel") == 3
    assert RunConfig.from_mapping({"alpha": "0.9"}).value("alpha") == 0.9
    assert RunConfig.from_mapping({"median_kernel": (3,)}) == RunConfig()
    assert (
        RunConfig.from_mapping({"median_kernel": [3], "sigma": [0.5]}).run_id == RunConfig().run_id
    )
    assert RunConfig.from_mapping({"median_kernel": (3, 5)}).run_id != RunConfig().run_id


def test_command_line_comma_lists() -> None:
    settings = resolve_settings(
        parse("--median-kernel", "3,5,7", "--bregman-weight", "1,2,3", "--alpha", "0.9",
              "--chambolle-weight", "0.5, 1.5", "--sigma", "0.25,0.5")
    )  # fmt: skip
    assert settings["median_kernel"] == (3, 5, 7)
    assert settings["bregman_weight"] == (1.0, 2.0, 3.0)
    assert settings["chambolle_weight"] == (0.5, 1.5)
    assert settings["alpha"] == 0.9 and settings["sigma"] == (0.25, 0.5)
    cfg = RunConfig.from_mapping({**settings, "defenders": ["median", "tv-bregman"]})
    assert ids(cfg) == [
        "median-k3",
        "median-k5",
        "median-k7",
        "tv-bregman-w1",
        "tv-bregman-w2",
        "tv-bregman-w3",
    ]
    assert parse_sweep("3", int) == 3 and parse_sweep("1,2", float) == (1.0, 2.0)
    with pytest.raises(ConfigError, match="expected an integer or a comma list"):
        parse_sweep("3,x", int)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"median_kernel": [3, 3]}, "median_kernel lists 3 twice"),
        ({"median_kernel": []}, "median_kernel lists no values"),
        ({"median_kernel": [3, 4]}, "median kernel must be an odd int"),
        ({"median_kernel": [3, 0]}, "median_kernel: median kernel must be an odd int >= 1, got 0"),
        ({"median_kernel": [3.5]}, "median_kernel takes an integer or a list of them, got 3.5"),
        ({"alpha": [0.9, True]}, "alpha takes a number or a list of them, got True"),
        ({"alpha": [0.9, 1.5], "defenders": ["ride"]}, "alpha must be in [0, 1]"),
        ({"sigma": "0.5,,1"}, "sigma: expected a number or a comma list"),
        ({"bregman_weight": [1, 1.0]}, "bregman_weight lists 1.0 twice"),
        ({"fgsm_eps": 0}, "fgsm_eps: eps must be in (0, 1], got 0"),
    ],
)
def test_bad_sweeps_are_one_line_config_errors(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        RunConfig.from_mapping(settings)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_command_line_rejects_a_bad_list(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse("--median-kernel", "3,five")
    assert "expected an integer or a comma list of them, got '3,five'" in capsys.readouterr().err


def test_fgsm_eps_applies_to_fgsm_only() -> None:
    cfg = RunConfig.from_mapping({"attacks": ["fgsm", "pgd"], "fgsm_eps": 0.015, "eps": 0.05})
    assert [a.id for a in cfg.attack_configs()] == ["fgsm-eps0.015", "pgd-eps0.05-step0.02-it10"]
    assert (
        RunConfig.from_mapping({"fgsm_eps": None}).run_id == RunConfig().run_id
    )  # unset: an old run's id


def test_data_dir_is_an_execution_setting() -> None:
    assert "data_dir" in RunConfig.execution_keys() and "data_dir" not in RunConfig().identity()
    here = RunConfig(dataset="mnist", data_dir="/mnt/a")
    there = RunConfig(dataset="mnist", data_dir="/cluster/b")
    assert here.run_id == there.run_id
    with pytest.raises(ConfigError, match="data_dir is empty"):
        RunConfig(data_dir="")


def test_dataset_picks_its_classifier_and_ride_network() -> None:
    expected = {
        "digits": ("mnist-cnn", "mnist"),
        "mnist": ("mnist-cnn", "mnist"),
        "cifar10": ("cifar-resnet18", "cifar"),
        "imagenet": ("resnet50", "imagenet"),
    }
    for dataset, (classifier, arch) in expected.items():
        cfg = RunConfig.from_mapping({"dataset": dataset, "defenders": ["ride", "dip"]})
        assert cfg.classifier == classifier
        assert [getattr(d, "arch", None) for d in cfg.defender_configs()] == [arch, arch]
    chosen = RunConfig.from_mapping({"dataset": "imagenet", "classifier": "vgg19"})
    assert chosen.classifier == "vgg19"
    # digits and MNIST use the default network: their ids carry no hash
    assert ids(RunConfig.from_mapping({"dataset": "mnist", "defenders": ["ride"]})) == [
        "ride-K200-T5-a0.9-s0.5"
    ]
