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
from fractions import Fraction
from pathlib import Path

import pandas as pd

from analysis.ensemble import in_order, per_image_ensemble
from analysis.intervals import Estimate
from analysis.pages import PAGES, Page, Section
from analysis.paired import compare_to_reference
from analysis.publish import run_steps, this_run
from analysis.sanity import sanity_section
from analysis.sweeps import find_sweeps, sweep_section
from analysis.tables import ROBUST, accuracy_table, clean_accuracy, column_estimate
from analysis.timing import hours, time_split, wall_time_line
from analysis.whitebox import whitebox_rows
from storage.files import StorageError, atomic_write_bytes
from storage.kept import keep_run
from storage.layout import RunLayout
from storage.results import read_results
from storage.runconfig import read_run_document

RIDE_FAMILY = ("ride", "dae", "dip", "idip")
"""The defenders of the verdict table (``defender`` column: the family name)."""

MACHINE_FILE = "machine.txt"
"""One line naming the machine that made a run (``docs/results/mnist.sh`` writes it)."""


def machine_line(run: Path) -> str:
    """The machine that made ``run`` (its ``machine.txt``), or "not recorded"."""
    path = run / MACHINE_FILE
    return path.read_text().strip() if path.exists() else "not recorded"


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


def attack_comparison_lines(results: pd.DataFrame, order: Sequence[str] = ()) -> list[str]:
    """How the attacks on each RIDE-family defence compare, per defence attacked by two or
    more: the per-image worst case over them (:func:`~analysis.ensemble.per_image_ensemble`),
    then each attack's robust accuracy minus the reference's on the images every attack
    finished, tested together (:func:`~analysis.paired.compare_to_reference`: bootstrap
    interval, sign-flip p, Holm). The reference is the first attack of ``order`` (the run's
    attacks as its preset lists them, the paper's first), chosen before the results are seen.
    Empty without two such attacks."""
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
        names = dict(zip(rows["attack_id"], rows["attack"], strict=False))
        listed = in_order(map(str, per_image.columns), names, order)
        reference = str(listed[0])
        ensemble = per_image_ensemble(results, str(defender_id), order)
        lines += ["", f"Attacks on {defender_id}, compared:", ""]
        if ensemble is not None:
            left = f" (left out: {', '.join(ensemble.left_out)})" if ensemble.left_out else ""
            lines.append(
                f"- **Per image, the worst of the attacks** (the attacker's choice from its "
                f"own draws, scored by the fresh draws): {ensemble.text()}{left}."
            )
        comparisons = compare_to_reference(per_image[listed], reference)
        lines.append(
            f"- Each attack minus the reference **{reference}** (the preset's first attack, "
            f"chosen before the results) on the {len(per_image)} images every attack "
            "finished: mean, 95% bootstrap interval, sign-flip permutation p and Holm's "
            f"correction over the {len(comparisons)} comparisons (resolved: Holm p < 0.05):"
        )
        for attack_id in listed[1:]:
            comparison = comparisons[str(attack_id)]
            verdict = "resolved" if comparison.resolved else "not resolved"
            lines.append(f"  - {attack_id}: {comparison.text()} ({verdict})")
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
    document = read_run_document(layout.run_toml)
    config = document["config"]
    planned = int(config.get("limit", 0) or 0)
    done = images_per_cell(results)
    status = "complete" if planned and done >= planned else f"partial: {done:,} of {planned:,}"
    split = time_split(results)
    clean = clean_accuracy(results)
    lines += [
        f"- Machine: {machine_line(run)}.",
        f"- Images: {done:,} per cell ({status}); clean accuracy of the classifier on them "
        f"{clean.text() if clean else 'n/a'}.",
    ]
    growth = document.get("growth", [])
    if split is not None:
        lines.append(wall_time_line(split, growth))
    lines += ["", *_accuracy_lines(results), *_whitebox_lines(results, section.paper)]
    lines += attack_comparison_lines(results, config.get("attacks", ()))
    lines += _one_level_down(sanity_section(results, run_steps(layout, results)))
    lines += _one_level_down(sweep_section(results))
    if section.figures:
        lines += _figure_lines(run, section.name, out_dir)
    return [*lines, ""]


def _one_level_down(lines: list[str]) -> list[str]:
    """A report section's lines under a section of the page: each heading one level lower."""
    return [f"#{line}" if line.startswith("#") else line for line in lines]


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
        f"- Training time: {hours(seconds)} on {machine_line(runs / page.classifier)}.",
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
