"""The published results pages (``docs/results/<dataset>.md``): what each page holds.

A :class:`Page` is a dataset's page: its title and introduction, the classifier it quotes,
and one :class:`Section` per run, each made by ``ride run --config configs/<name>.toml``
into ``runs/<name>``. :data:`PAGES` holds them by dataset; :mod:`analysis.results_page`
renders them from the runs' stored results.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Section:
    """One run of the page: ``name`` is both its preset ``configs/<name>.toml`` and its
    folder ``runs/<name>``; ``paper`` maps (attack name, defender name) to the paper's
    number for that cell; ``figures`` copies the run's figures next to the page."""

    name: str
    title: str
    about: str
    paper: dict[tuple[str, str], str] = field(default_factory=dict)
    figures: bool = False


@dataclass(frozen=True)
class Page:
    """One dataset's page: the verdict, the classifier, then its sections in order."""

    title: str
    intro: str
    command: str  # the ride run options every section shares (data, weights)
    sections: tuple[Section, ...]
    script: str = "docs/results/mnist.sh"  # makes every run, then this page
    classifier: str = "mnist-cnn"  # the folder under runs/ whose classifier.json is quoted
    train_command: str = (
        "ride train --dataset mnist --data-dir ../shared/data/mnist --out runs/mnist-cnn"
    )
    classifier_about: str = (
        "The paper's two-conv, two-FC MNIST CNN, which the paper trains to 98.98% test accuracy."
    )
    classifier_paper: str = "98.98%"  # the paper's test accuracy of its classifier


MNIST = Page(
    title="RIDE on MNIST: the paper's claims, measured",
    intro=(
        "The paper (Table 2) reports 98% test accuracy for RIDE on MNIST under BPDA at "
        "L-infinity 0.1, with a two-conv, two-FC CNN of 98.98% clean accuracy. Every number "
        "below is the robust accuracy of `ride report`: the attacker queries the defender "
        "at every iterate with its own draws and submits, per image, the iterate its draws "
        "liked least; that image is defended with R fresh draws (seeds no attacker draw "
        "uses) and the fraction classified correctly is averaged over the images "
        "(`ride/robustness.py`). Intervals are 95% Wilson intervals over the n images."
    ),
    command="--data-dir ../shared/data/mnist --weights runs/mnist-cnn/classifier.pt",
    sections=(
        Section(
            "mnist-graybox-eps0.1",
            "Gray-box, all 10,000 test images, L-infinity 0.1 (the paper's budget)",
            "FGSM and PGD (10 steps of 0.02) on the classifier alone; each filter then "
            "defends the adversarial image (median 3-11, TV split-Bregman and Chambolle "
            "sweeps). The paper gives no MNIST gray-box numbers.",
        ),
        Section(
            "mnist-graybox-eps0.3",
            "Gray-box, all 10,000 test images, L-infinity 0.3 (the usual MNIST budget)",
            "FGSM and PGD (40 steps of 0.01, Madry et al.'s MNIST attack) on the classifier "
            "alone, the same filters.",
        ),
        Section(
            "mnist-ride-graybox",
            "RIDE at the paper's settings (K = 2000, T = 5), gray-box",
            "PGD at L-infinity 0.1 on the classifier alone, then RIDE; no attack beside it.",
        ),
        Section(
            "mnist-bpda-k2000",
            "Table 2's MNIST row: BPDA through RIDE at the paper's settings (K = 2000, T = 5)",
            "BPDA (10 steps of 0.02 at L-infinity 0.1, the backward pass of RIDE taken as "
            "the identity), R = 4 fresh draws per image.",
            paper={("bpda", "ride"): "98%"},
            figures=True,
        ),
        Section(
            "mnist-strong-k500",
            "Stronger attacks on RIDE at K = 500 (T = 5), EOT 5",
            "BPDA at K = 500 is the bridge to the K = 2000 row above; BPDA+EOT averages 5 "
            "defender draws per gradient, adaptive APGD-CE (Croce and Hein, 2020) runs "
            "through RIDE with BPDA and EOT 5, and bpda-surrogate differentiates a short RIDE "
            "fit (K = 20, T = 1) instead of assuming the identity. R = 4 fresh draws.",
            paper={("bpda", "ride"): "98% (at K = 2000)"},
        ),
        Section(
            "mnist-convergence-k500",
            "Did the attacks do their job? 100 iterations, Square and transfer at K = 500, "
            "with the baselines, growing",
            "BPDA with 100 steps of 0.02 at L-infinity 0.1 (the convergence curve from its "
            "per-step record), Square through each defender (100 queries, one draw each; no "
            "gradient) and the transfer attack (APGD-CE on the undefended classifier, 100 "
            "steps, 5 restarts, then defended), each on RIDE at K = 500 (T = 5) and, on the "
            "same images, on the undefended classifier, median 3, TV split-Bregman w4 and "
            "TV-Chambolle w0.1 (the best of the gray-box sweep at 0.1, chosen before this "
            "run). R = 4 fresh draws. About 230 RIDE fits per image: grown session by "
            "session. The sanity checks below each table say whether the attack converged "
            "and whether a gradient-free or transfer attack does better than BPDA.",
            paper={("bpda", "ride"): "98% (at K = 2000)"},
        ),
    ),
)


CIFAR10 = Page(
    title="RIDE on CIFAR-10: the paper's claims, measured on real images",
    intro=(
        "The paper (Table 2) reports 76% test accuracy for RIDE on CIFAR-10 under BPDA at "
        "L-infinity 0.05, with a ResNet-18 of 94.78% clean accuracy. Here: the first 1,017 "
        "real CIFAR-10 test images (`../shared/data/cifar10`, all that exist on these "
        "machines) and the published ResNet-56 of He et al.'s CIFAR design (93.39% on the "
        "10,000), the closest network available to the paper's ResNet-18, whose weights do "
        "not exist here: every CIFAR number below is for ResNet-56, not the paper's "
        "network. Accuracies as on the MNIST page: the robust accuracy of `ride report`, "
        "each with its 95% Wilson interval over the n images."
    ),
    command=(
        "--data-dir ../shared/data/cifar10 "
        "--weights ../shared/data/cifar10/weights/resnet56-4bfd9763.th"
    ),
    sections=(
        Section(
            "cifar10-graybox-eps0.05",
            "Gray-box, all 1,017 images, L-infinity 0.05 (the paper's budget)",
            "FGSM and PGD (10 steps of 0.01) on the classifier alone; each filter then "
            "defends the adversarial image (median 3-7, TV split-Bregman and Chambolle "
            "sweeps). The paper gives no CIFAR-10 gray-box numbers.",
        ),
        Section(
            "cifar10-graybox-eps8",
            "Gray-box, all 1,017 images, L-infinity 8/255 (the field's usual budget)",
            "FGSM and PGD (10 steps of 2/255) on the classifier alone, the same filters.",
        ),
        Section(
            "cifar10-ride-graybox",
            "RIDE gray-box at the paper's CIFAR-10 settings (K = 2000, T = 5), growing",
            "PGD at L-infinity 0.05 (10 steps of 0.01) on the classifier alone, then one "
            "fresh RIDE draw per image (the 3-32-32-32-32-3 network of Table 3, alpha 0.9, "
            "sigma 0.5), and RIDE on the clean images: what RIDE costs with no attack. Two "
            "RIDE fits per image, about 40 s each on one core of this CPU: the run is "
            "started at 64 images and grown (`--limit 128`, ...) session by session "
            "(`pipeline/growth.py`); its first images are never recomputed. The paper gives "
            "no CIFAR-10 gray-box number for RIDE.",
        ),
        Section(
            "cifar10-bpda-k2000",
            "Table 2's CIFAR-10 row: BPDA through RIDE at K = 2000, and the baselines under "
            "the same attack, growing",
            "BPDA at L-infinity 0.05 (10 steps of 0.01) through RIDE at the paper's settings, "
            "the attacker querying one RIDE draw at every iterate; R = 4 fresh draws on the "
            "iterate it submits, and the same 4 draws on the clean images. On the same images "
            "and under the same BPDA: the undefended ResNet-56 and the best filters of the "
            "gray-box sweep at 0.05 (median 5, TV split-Bregman w4, TV-Chambolle w0.1; chosen "
            "before this run on the 1,017 images). About 20 RIDE fits per image: the run is "
            "started at 8 images and grown session by session.",
            paper={("bpda", "ride"): "76%"},
        ),
        Section(
            "cifar10-strong-k500",
            "Stronger attacks on RIDE at K = 500, growing",
            "BPDA (the bridge to the K = 2000 row), adaptive APGD-CE and bpda-surrogate (EOT 5 "
            "each) through RIDE at K = 500 (T = 5), L-infinity 0.05, 10 iterations; R = 4 "
            "fresh draws per image. About 140 RIDE fits per image at a quarter of the paper's "
            "K: grown session by session.",
            paper={("bpda", "ride"): "76% (at K = 2000)"},
        ),
    ),
    script="docs/results/cifar10.sh",
    classifier="cifar10-graybox-eps0.05",
    train_command=(
        "--classifier cifar-resnet56 "
        "--weights ../shared/data/cifar10/weights/resnet56-4bfd9763.th  # no training here"
    ),
    classifier_about=(
        "He et al.'s CIFAR ResNet-56 with the published weights (`cifar-resnet56`, 93.39% "
        "on the 10,000 test images), loaded, not trained: the shared data has no training "
        "split. Its accuracy on the 1,017 images, from the first gray-box run:"
    ),
    classifier_paper="94.78% for the paper's ResNet-18 on the 10,000",
)

PAGES: dict[str, Page] = {"mnist": MNIST, "cifar10": CIFAR10}
"""The published pages by dataset: ``docs/results/<dataset>.md``."""
