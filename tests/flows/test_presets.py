"""Every preset in configs/ parses and expands to the attack and defender ids its header
documents; the paper presets say what they reproduce and what they cost."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import RunConfig, load_preset

CONFIGS = Path(__file__).parents[2] / "configs"

GRAYBOX = ["none", "fgsm-eps0.015", "pgd-eps0.05-step0.01-it10"]
RIDE_K2000 = "ride-K2000-T5-a0.9-s0.5"
ALPHAS = ["0.7", "0.8", "0.9", "0.95"]
SIGMAS = ["0.25", "0.5", "1", "2"]
MNIST_FILTERS = [
    "none",
    *(f"median-k{k}" for k in (3, 5, 7, 9, 11)),
    *(f"tv-bregman-w{w}" for w in ("0.5", "1", "2", "4", "8")),
    *(f"tv-chambolle-w{w}" for w in ("0.05", "0.1", "0.2", "0.3", "0.5")),
]

CIFAR_FILTERS = [
    "none",
    *(f"median-k{k}" for k in (3, 5, 7)),
    *(f"tv-bregman-w{w}" for w in ("0.5", "1", "2", "4", "8")),
    *(f"tv-chambolle-w{w}" for w in ("0.05", "0.1", "0.2", "0.3", "0.5")),
]
#: The undefended classifier and the best filters of the MNIST gray-box sweep at 0.1.
MNIST_BASELINES = ["none", "median-k3", "tv-bregman-w4", "tv-chambolle-w0.1"]
EPS8 = "0.03137254901960784"  # 8 / 255
STEP2 = "0.00784313725490196"  # 2 / 255

#: preset -> (dataset, classifier, attack ids, defender ids)
EXPECTED: dict[str, tuple[str, str, list[str], list[str]]] = {
    "demo.toml": (
        "digits",
        "mnist-cnn",
        ["none", "fgsm-eps0.1", "pgd-eps0.1-step0.02-it10"],
        ["none", "median-k3", "tv-bregman-w2", "ride-K200-T5-a0.9-s0.5"],
    ),
    "whitebox-demo.toml": (
        "digits",
        "mnist-cnn",
        ["none", "bpda-eps0.1-step0.02-it10", "bpda-eot5-eps0.1-step0.02-it10"],
        ["none", "median-k3", "tv-bregman-w2", "ride-K50-T2-a0.9-s0.5-c6b60f4d"],
    ),
    "table1-imagenet-graybox.toml": (
        "imagenet",
        "resnet50",
        GRAYBOX,
        [
            "none",
            "median-k7",
            "median-k9",
            "tv-bregman-w0.25",
            "tv-bregman-w0.125",
            RIDE_K2000,
        ],
    ),
    "table2-mnist.toml": (
        "mnist",
        "mnist-cnn",
        ["none", "bpda-eps0.1-step0.02-it10", "bpda-eot15-eps0.1-step0.02-it10"],
        ["none", "median-k3", "tv-bregman-w2", RIDE_K2000],
    ),
    "table2-cifar10.toml": (
        "cifar10",
        "cifar-resnet18",
        ["none", "bpda-eps0.05-step0.01-it10", "bpda-eot15-eps0.05-step0.01-it10"],
        ["none", "median-k3", "tv-bregman-w2", RIDE_K2000],
    ),
    "table2-imagenet.toml": (
        "imagenet",
        "resnet50",
        ["none", "bpda-eps0.05-step0.01-it10", "bpda-eot15-eps0.05-step0.01-it10"],
        ["none", "median-k9", "tv-bregman-w0.125", RIDE_K2000],
    ),
    "table4-median-sweep.toml": (
        "imagenet",
        "resnet50",
        GRAYBOX,
        ["none", *(f"median-k{k}" for k in (3, 5, 7, 9, 11))],
    ),
    "table5-tv-bregman-sweep.toml": (
        "imagenet",
        "resnet50",
        GRAYBOX,
        ["none", *(f"tv-bregman-w{w}" for w in ("0.075", "0.125", "0.25", "0.5", "0.75"))],
    ),
    "table6-tv-chambolle-sweep.toml": (
        "imagenet",
        "resnet50",
        GRAYBOX,
        [
            "none",
            *(f"tv-chambolle-w{w}" for w in ("0.25", "0.5", "0.75", "1", "1.25", "1.5", "1.75")),
        ],
    ),
    "fig5-ablation.toml": (
        "imagenet",
        "resnet50",
        ["fgsm-eps0.015"],
        [
            "none",
            "dip-K2000-T5-a1-s0.5",
            "idip-K2000-T5-a0.9-s0.5",
            "dae-K2000-T5-a1-s0.5",
            RIDE_K2000,
        ],
    ),
    "fig5-alpha.toml": (
        "imagenet",
        "resnet50",
        ["fgsm-eps0.015"],
        ["none", *(f"ride-K2000-T5-a{a}-s0.5" for a in ALPHAS)],
    ),
    "fig5-sigma.toml": (
        "imagenet",
        "resnet50",
        ["fgsm-eps0.015"],
        ["none", *(f"ride-K2000-T5-a0.9-s{s}" for s in SIGMAS)],
    ),
    "mnist-graybox-eps0.1.toml": (
        "mnist",
        "mnist-cnn",
        ["none", "fgsm-eps0.1", "pgd-eps0.1-step0.02-it10"],
        MNIST_FILTERS,
    ),
    "mnist-graybox-eps0.3.toml": (
        "mnist",
        "mnist-cnn",
        ["none", "fgsm-eps0.3", "pgd-eps0.3-step0.01-it40"],
        MNIST_FILTERS,
    ),
    "mnist-ride-graybox.toml": (
        "mnist",
        "mnist-cnn",
        ["none", "pgd-eps0.1-step0.02-it10"],
        ["none", RIDE_K2000],
    ),
    "mnist-bpda-k2000.toml": (
        "mnist",
        "mnist-cnn",
        ["none", "bpda-eps0.1-step0.02-it10"],
        ["none", RIDE_K2000],
    ),
    "mnist-strong-k500.toml": (
        "mnist",
        "mnist-cnn",
        [
            "none",
            "bpda-eps0.1-step0.02-it10",
            "bpda-eot5-eps0.1-step0.02-it10",
            "adaptive-apgd-ce-eot5-eps0.1-it10",
            "bpda-surrogate-eot5-K20-T1-lr1-eps0.1-step0.02-it10",
        ],
        ["none", "ride-K500-T5-a0.9-s0.5"],
    ),
    "cifar10-graybox-eps0.05.toml": (
        "cifar10",
        "cifar-resnet56",
        ["none", "fgsm-eps0.05", "pgd-eps0.05-step0.01-it10"],
        CIFAR_FILTERS,
    ),
    "cifar10-graybox-eps8.toml": (
        "cifar10",
        "cifar-resnet56",
        ["none", f"fgsm-eps{EPS8}", f"pgd-eps{EPS8}-step{STEP2}-it10"],
        CIFAR_FILTERS,
    ),
    "cifar10-ride-graybox.toml": (
        "cifar10",
        "cifar-resnet56",
        ["none", "pgd-eps0.05-step0.01-it10"],
        ["none", "ride-K2000-T5-a0.9-s0.5"],
    ),
    "cifar10-bpda-k2000.toml": (
        "cifar10",
        "cifar-resnet56",
        ["none", "bpda-eps0.05-step0.01-it10"],
        ["none", "median-k5", "tv-bregman-w4", "tv-chambolle-w0.1", "ride-K2000-T5-a0.9-s0.5"],
    ),
    "cifar10-strong-k500.toml": (
        "cifar10",
        "cifar-resnet56",
        [
            "none",
            "bpda-eps0.05-step0.01-it10",
            "adaptive-apgd-ce-eot5-eps0.05-it10",
            "bpda-surrogate-eot5-K20-T1-lr1-eps0.05-step0.01-it10",
        ],
        ["none", "ride-K500-T5-a0.9-s0.5"],
    ),
    "mnist-convergence-k500.toml": (
        "mnist",
        "mnist-cnn",
        [
            "none",
            "bpda-eps0.1-step0.02-it100",
            "square-eot1-eps0.1-it100",
            "apgd-ce-eps0.1-it100-restarts5",
        ],
        [*MNIST_BASELINES, "ride-K500-T5-a0.9-s0.5"],
    ),
    "mnist-gpu-full.toml": (
        "mnist",
        "mnist-cnn",
        [
            "none",
            "bpda-eps0.1-step0.02-it100",
            "bpda-eot20-eps0.1-step0.02-it100",
            "adaptive-apgd-ce-eot20-eps0.1-it100",
            "apgd-ce-eps0.1-it100",
        ],
        [*MNIST_BASELINES, RIDE_K2000],
    ),
}


def test_every_preset_is_documented_here() -> None:
    assert sorted(p.name for p in CONFIGS.glob("*.toml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_preset_expands_to_the_documented_ids(name: str) -> None:
    dataset, classifier, attacks, defenders = EXPECTED[name]
    settings = load_preset(CONFIGS / name)
    assert "data_dir" not in settings  # the data's location is the command line's business
    cfg = RunConfig.from_mapping(settings)
    assert (cfg.dataset, cfg.classifier) == (dataset, classifier)
    assert [a.id for a in cfg.attack_configs()] == attacks
    assert [d.id for d in cfg.defender_configs()] == defenders


@pytest.mark.parametrize("name", sorted(n for n in EXPECTED if n.startswith(("table", "fig"))))
def test_paper_presets_name_what_they_reproduce_and_cost(name: str) -> None:
    text = (CONFIGS / name).read_text()
    header = " ".join(line.lstrip("# ") for line in text.splitlines() if line.startswith("#"))
    assert text.startswith("# Paper ") and "Cost:" in header and "Run: ride run --config" in header
    for attack in EXPECTED[name][2]:
        assert attack in header


@pytest.mark.parametrize(
    "name", sorted(n for n in EXPECTED if n.startswith(("mnist-", "cifar10-")))
)
def test_results_presets_name_their_page_run_folder_and_cost(name: str) -> None:
    text = (CONFIGS / name).read_text()
    header = " ".join(line.lstrip("# ") for line in text.splitlines() if line.startswith("#"))
    page = name.split("-")[0]
    assert text.startswith(f"# docs/results/{page}.md, ") and "Cost:" in header
    stem = name.removesuffix(".toml")
    assert f"ride run --config configs/{name}" in header and f"--out runs/{stem}" in header
