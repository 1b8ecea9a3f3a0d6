"""The published results of a dataset (``docs/results/<dataset>.md``: :data:`PAGES`),
regenerated from the runs' stored results alone: one section per run, each with the preset
that makes it, the command, the machine, the wall time, n, 95% Wilson intervals and the
paper's numbers beside ours.

``python -m analysis.results_page --dataset mnist --runs runs`` rewrites
``docs/results/mnist.md``; a run not (or not yet wholly) made says so in its section instead
of a table. Each run is ``ride run --config configs/<name>.toml ... --out runs/<name>``
(``docs/results/<dataset>.sh`` makes them all); the machine that made a run is recorded in
``runs/<name>/machine.txt``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import pandas as pd

from analysis.intervals import Estimate, paired_difference
from analysis.publish import this_run
from analysis.tables import (
    ROBUST,
    accuracy_table,
    clean_accuracy,
    column_estimate,
    find_sweeps,
    sweep_section,
    time_split,
    whitebox_rows,
)
from storage.files import StorageError, atomic_write_bytes
from storage.kept import keep_run
from storage.layout import RunLayout
from storage.results import read_results
from storage.runconfig import read_run_config, read_run_document

RIDE_FAMILY = ("ride", "dae", "dip", "idip")
"""The defenders of the verdict table (``defender`` column: the family name)."""

MACHINE_FILE = "machine.txt"
"""One line naming the machine that made a run (``docs/results/mnist.sh`` writes it)."""


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


def machine_line(run: Path) -> str:
    """The machine that made ``run`` (its ``machine.txt``), or "not recorded"."""
    path = run / MACHINE_FILE
    return path.read_text().strip() if path.exists() else "not recorded"


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def _cell(value: object) -> str:
    return value.text() if isinstance(value, Estimate) else ""


def _accuracy_lines(results: pd.DataFrame) -> list[str]:
    """The robust accuracy table (rows: attack, columns: defender; mean [95%] n=); the
    defenders of a sweep are left to their sweep's table."""
    swept = {d for sweep in find_sweeps(results) for d in sweep.columns}
    table = accuracy_table(results)
    table = table[[c for c in table.columns if c not in swept]]
    lines = [
        "| attack | " + " | ".join(str(c) for c in table.columns) + " |",
        "|---" * (len(table.columns) + 1) + "|",
    ]
    for attack, row in table.iterrows():
        lines.append(f"| {attack} | " + " | ".join(_cell(c) for c in row) + " |")
    return lines


def _whitebox_lines(results: pd.DataFrame, paper: dict[tuple[str, str], str]) -> list[str]:
    table = whitebox_rows(results)
    if table.empty:
        return []
    names = results.drop_duplicates("attack_id").set_index("attack_id")["attack"]
    families = results.drop_duplicates("defender_id").set_index("defender_id")["defender"]
    lines = [
        "",
        "| defence | attack | method | paper | robust | majority | final | every draw | "
        "attacker | no attack | n |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in table.itertuples(index=False):
        quoted = paper.get((str(names[row.attack]), str(families[row.defence])), "")
        lines.append(
            f"| {row.defence} | {row.attack} | {row.method} | {quoted} | "
            f"{row.robust.text(with_n=False)} | {row.majority.text(with_n=False)} | "
            f"{row.final.text(with_n=False)} | {row.every_draw:.3f} | {row.attacker:.3f} | "
            f"{_cell(row.no_attack)} | {row.n} |"
        )
    return lines


def strongest_attack_lines(results: pd.DataFrame) -> list[str]:
    """Which attack hurts each RIDE-family defence most: per defence attacked by two or more
    attacks, the one of lowest robust accuracy on the images every attack of it finished,
    and each other attack's paired difference from it (same images, 95% t interval;
    :func:`~analysis.intervals.paired_difference`). Empty without two such attacks."""
    ok = results[
        (results["status"] == "ok")
        & results["defender"].isin(RIDE_FAMILY)
        & (results["attack_id"] != "none")
    ]
    lines: list[str] = []
    for defender_id, rows in ok.groupby("defender_id"):
        per_image = rows.pivot_table(index="index", columns="attack_id", values=ROBUST)
        per_image = per_image.dropna()
        if per_image.shape[1] < 2 or len(per_image) < 2:
            continue
        means = per_image.mean().sort_values(kind="stable")
        strongest = str(means.index[0])
        lines += [
            "",
            f"Which attack hurts {defender_id} most, on the {len(per_image)} images every "
            f"attack finished: **{strongest}** (robust accuracy {means.iloc[0]:.3f}). Each "
            "other attack's robust accuracy minus it, paired over the same images (mean and "
            "95% t interval; an interval that leaves out 0 is a difference resolved at this "
            "n):",
            "",
        ]
        for attack_id in means.index[1:]:
            difference = paired_difference(per_image[attack_id], per_image[strongest])
            verdict = "resolved" if difference.resolved else "not resolved"
            lines.append(f"- {attack_id}: {difference.text()} ({verdict})")
    return lines


def section_lines(page: Page, section: Section, runs: Path, out_dir: Path) -> list[str]:
    """The markdown of one section: what, how, where, how long, and the tables."""
    run = runs / section.name
    command = (
        f"ride run --config configs/{section.name}.toml {page.command} --out runs/{section.name}"
    )
    lines = ["", f"## {section.title}", "", section.about, "", f"    {command}", ""]
    layout = RunLayout(run)
    if not layout.results.exists():
        return [*lines, "Not run yet.", ""]
    results, _ = this_run(layout, read_results(layout.results))
    planned = int(read_run_config(layout.run_toml).get("limit", 0) or 0)
    done = images_per_cell(results)
    status = "complete" if planned and done >= planned else f"partial: {done:,} of {planned:,}"
    split = time_split(results)
    clean = clean_accuracy(results)
    lines += [
        f"- Machine: {machine_line(run)}.",
        f"- Images: {done:,} per cell ({status}); clean accuracy of the classifier on them "
        f"{clean.text() if clean else 'n/a'}.",
    ]
    growth = read_run_document(layout.run_toml).get("growth", [])
    if split is not None and growth:
        sizes = " -> ".join(str(n) for n in [growth[0]["before"], *(g["after"] for g in growth)])
        lines.append(
            f"- Wall time: {_hours(split['busy'])} while a task ran (the run grew {sizes} "
            "images, the time between its runs left out); "
            f"{_hours(split['compute'])} of compute on {split['workers']:.0f} worker(s)."
        )
    elif split is not None and split["busy"] < 0.9 * split["span"]:  # stopped and resumed
        lines.append(
            f"- Wall time: {_hours(split['busy'])} while a task ran ({_hours(split['span'])} "
            "from the first task's start to the last task's end: the run was stopped and "
            f"resumed); {_hours(split['compute'])} of compute on {split['workers']:.0f} "
            "worker(s)."
        )
    elif split is not None:
        lines.append(
            f"- Wall time: {_hours(split['span'])} from the first task's start to the last "
            f"task's end; {_hours(split['compute'])} of compute on {split['workers']:.0f} "
            "worker(s)."
        )
    lines += ["", *_accuracy_lines(results), *_whitebox_lines(results, section.paper)]
    lines += strongest_attack_lines(results)
    lines += [f"#{line}" if line.startswith("#") else line for line in sweep_section(results)]
    if section.figures:
        lines += _figure_lines(run, section.name, out_dir)
    return [*lines, ""]


def images_per_cell(results: pd.DataFrame) -> int:
    """The images every cell of the run holds: the fewest of any (attack, defender) with
    rows, and 0 when a RIDE-family defender has no row yet under one of the run's attacks
    (every attack applies to RIDE, so that cell is planned but not yet made)."""
    ok = results[results["status"] == "ok"]
    if ok.empty:
        return 0
    counts = ok.groupby(["attack_id", "defender_id"])["index"].nunique()
    ride = set(results.loc[results["defender"].isin(RIDE_FAMILY), "defender_id"])
    made = set(counts.index)
    missing = [(a, d) for a in set(results["attack_id"]) for d in ride if (a, d) not in made]
    return 0 if missing else int(counts.min())


def _figure_lines(run: Path, name: str, out_dir: Path) -> list[str]:
    """Copy the run's figures (drawn by ``ride report``) next to the page; link them."""
    figures = sorted((run / "figures").glob("*.png")) if (run / "figures").exists() else []
    if not figures:
        return []
    target = out_dir / "figures"
    target.mkdir(parents=True, exist_ok=True)
    lines = [""]
    for figure in figures:
        copy = target / f"{name}-{figure.name}"
        shutil.copyfile(figure, copy)
        lines.append(f"![{figure.stem}](figures/{copy.name})")
    return lines


def verdict_lines(page: Page, runs: Path) -> list[str]:
    """One row per (run, attack) against a RIDE-family defender: the paper's number where
    it gives one, our robust accuracy with its interval and n, the majority vote, the
    last-iterate accuracy and the robust accuracy with no attack. Empty without such rows."""
    lines: list[str] = []
    for section in page.sections:
        layout = RunLayout(runs / section.name)
        if not layout.results.exists():
            continue
        results, _ = this_run(layout, read_results(layout.results))
        ok = results[(results["status"] == "ok") & results["defender"].isin(RIDE_FAMILY)]
        if ok.empty:
            continue
        table = accuracy_table(results)
        for (attack_id, defender_id), rows in ok.groupby(["attack_id", "defender_id"]):
            if attack_id == "none":
                continue
            attack, family = str(rows["attack"].iloc[0]), str(rows["defender"].iloc[0])
            clean = table.loc["none", defender_id] if "none" in table.index else None
            robust = table.loc[attack_id, defender_id]
            lines.append(
                f"| {attack_id} | {defender_id} | "
                f"{section.paper.get((attack, family), '')} | {_cell(robust)} | "
                f"{_cell(column_estimate(rows, 'recheck_majority'))} | "
                f"{_cell(column_estimate(rows, 'final_correct'))} | {_cell(clean)} |"
            )
    if not lines:
        return []
    return [
        "| attack | defence | paper | robust accuracy | majority vote | final iterate | "
        "no attack |",
        "|---|---|---|---|---|---|---|",
        *lines,
    ]


def classifier_lines(page: Page, runs: Path) -> list[str]:
    """The classifier section: its ``ride train`` command and test accuracy (from
    ``runs/<classifier>/classifier.json``) beside the paper's."""
    lines = [
        "",
        "## The classifier",
        "",
        page.classifier_about,
        "",
        f"    {page.train_command}",
        "",
    ]
    path = runs / page.classifier / "classifier.json"
    if not path.exists():
        return [*lines, "Not trained yet."]
    record = json.loads(path.read_text())
    images = int(record.get("test_images", 0))
    accuracy = float(record["test_accuracy"])
    measured = Estimate.of(Fraction(round(accuracy * images)), images)  # a count of images
    recipe = ", ".join(
        f"{key} {record[key]}"
        for key in ("epochs", "batch_size", "lr", "lr_decay", "weight_decay", "max_shift")
        if key in record
    )
    seconds = sum(float(epoch.get("seconds", 0.0)) for epoch in record.get("history", []))
    lines.append(f"- Test accuracy: {measured.text()} (paper: {page.classifier_paper}).")
    if not recipe:  # pretrained weights: nothing was trained here
        return lines
    return [
        *lines,
        f"- Recipe (the defaults of `ride train`): {recipe}; seed {record.get('seed')}.",
        f"- Training time: {_hours(seconds)} on {machine_line(runs / page.classifier)}.",
    ]


def render(page: Page, runs: Path, out_dir: Path) -> str:
    lines = [f"# {page.title}", "", page.intro, ""]
    verdict = verdict_lines(page, runs)
    if verdict:
        lines += ["## Verdict", "", *verdict, ""]
    lines += [
        f"Made by `bash {page.script}` (every run resumes), which ends with "
        "`python -m analysis.results_page`, the script that writes this page from the "
        "runs' stored results.",
        *classifier_lines(page, runs),
    ]
    for section in page.sections:
        lines += section_lines(page, section, runs, out_dir)
    return "\n".join(lines).rstrip() + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m analysis.results_page",
        description="Write docs/results/<dataset>.md from the runs under --runs.",
    )
    parser.add_argument(
        "--dataset", choices=sorted(PAGES), default="mnist", help="whose page (mnist)"
    )
    parser.add_argument(
        "--runs",
        type=Path,
        default=Path("runs"),
        help="folder of the runs, or of their kept copies (docs/results/data)",
    )
    parser.add_argument("--out", type=Path, help="the page to write (docs/results/<dataset>.md)")
    parser.add_argument(
        "--keep",
        type=Path,
        default=None,
        help="first copy each run of the page found under --runs into this folder "
        "(storage.kept: run.toml, machine, compacted results, figures; no images), then "
        "write the page from the copies (docs/results/data: small enough to commit)",
    )
    args = parser.parse_args(argv)
    out: Path = args.out or Path("docs/results") / f"{args.dataset}.md"
    if not args.runs.is_dir():
        print(f"results_page: error: no folder {args.runs}", file=sys.stderr)
        return 2
    page = PAGES[args.dataset]
    runs: Path = args.runs
    if args.keep is not None:
        try:
            names = (page.classifier, *(section.name for section in page.sections))
            for name in dict.fromkeys(names):  # the classifier's folder may be a section's
                if (runs / name).is_dir():
                    kept = keep_run(runs / name, args.keep / name)
                    print(f"kept {runs / name} in {args.keep / name} ({kept / 2**20:.1f} MiB)")
        except StorageError as error:
            print(f"results_page: error: {error}", file=sys.stderr)
            return 1
        runs = args.keep
    text = render(page, runs, out.parent)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, text.encode())
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
