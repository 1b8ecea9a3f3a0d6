"""docs/results/mnist.md is made from the runs' stored results alone: a section per preset,
each with its command, machine, n, status and intervals, the paper's number beside ours, a
verdict table over the RIDE rows, and "Not run yet." for a run that does not exist."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from analysis.pages import MNIST, PAGES, Page, Section
from analysis.results_page import main, render
from storage.layout import RunLayout
from storage.results import SCHEMA, write_results
from storage.runconfig import claim_run_dir

BPDA = "bpda-eps0.1-step0.02-it10"
RIDE = "ride-K2000-T5-a0.9-s0.5"
PAGE = Page(
    title="Test page",
    intro="Intro.",
    command="--data-dir DATA",
    sections=(
        Section("made", "A made run", "About it.", paper={("bpda", "ride"): "98%"}),
        Section("missing", "A run not made", "About that."),
    ),
)


def _row(index: int, attack_id: str, defender_id: str, right: float) -> dict[str, Any]:
    white_box = attack_id != "none"
    row: dict[str, Any] = dict.fromkeys(SCHEMA.names)
    row.update(
        run_id="mnist-made",
        dataset="mnist",
        index=index,
        label=1,
        attack_id=attack_id,
        attack="bpda" if white_box else "none",
        attack_params=json.dumps({"name": "bpda", "eps": 0.1} if white_box else {}),
        defender_id=defender_id,
        defender=defender_id.split("-")[0],
        defender_params=json.dumps({"name": defender_id.split("-")[0]}),
        seed=0,
        correct_clean=True,
        correct_defended=right >= 0.5,
        recheck_draws=4,
        recheck_correct=right,
        recheck_majority=right > 0.5,
        final_correct=1.0,
        attacker_draws=1 if white_box else None,
        attacker_correct=0.0 if white_box else None,
        chosen_iteration=10 if white_box else None,
        correct_every_draw=right == 1.0,
        status="ok",
    )
    return row


def _make_run(runs: Path, limit: int, images: int) -> None:
    layout = RunLayout(runs / "made")
    layout.root.mkdir(parents=True)
    config = {"dataset": "mnist", "limit": limit}
    claim_run_dir(layout.run_toml, config, frozenset(config), "0.4.0", run_id="mnist-made")
    (layout.root / "machine.txt").write_text("Test CPU, 2 cores\n")
    for attack_id in ("none", BPDA):
        for defender_id in ("none", RIDE):
            right = {"none": 1.0, BPDA: 0.25}[attack_id] if defender_id == RIDE else 0.0
            rows = [_row(i, attack_id, defender_id, right) for i in range(images)]
            write_results(layout.results, f"{attack_id}__{defender_id}", rows)


def test_a_made_run_gets_its_command_machine_status_tables_and_the_papers_number(
    tmp_path: Path,
) -> None:
    _make_run(tmp_path / "runs", limit=8, images=8)
    record = {"test_accuracy": 0.99, "test_images": 100, "epochs": 3, "lr": 0.002, "seed": 0}
    record["history"] = [{"epoch": e, "seconds": 30.0} for e in (1, 2, 3)]
    (tmp_path / "runs" / "mnist-cnn").mkdir()
    (tmp_path / "runs" / "mnist-cnn" / "classifier.json").write_text(json.dumps(record))
    text = render(PAGE, tmp_path / "runs", tmp_path / "docs")
    classifier = text.split("## The classifier")[1].split("## Verdict")[0]
    assert "- Test accuracy: 0.990 [0.946, 0.998] n=100 (paper: 98.98%)." in classifier
    assert "epochs 3, lr 0.002; seed 0" in classifier and "1.5 min on not recorded" in classifier
    made, missing = text.split("## A made run")[1].split("## A run not made")
    assert "    ride run --config configs/made.toml --data-dir DATA --out runs/made" in made
    assert "- Machine: Test CPU, 2 cores." in made
    assert "- Images: 8 per cell (complete)" in made
    assert f"| {BPDA} | 0.000 [0.000, 0.324] n=8 | 0.250 [" in made  # robust, interval, n
    assert f"| {RIDE} | {BPDA} | BPDA | 98% | 0.250 [" in made  # the white-box row
    assert "Not run yet." in missing and "configs/missing.toml" in missing
    verdict = text.split("## Verdict")[1].split("## A made run")[0]
    rows = [line for line in verdict.splitlines() if line.startswith(f"| {BPDA}")]
    assert rows == [
        f"| {BPDA} | {RIDE} | 98% | 0.250 [0.071, 0.591] n=8 | 0.000 [0.000, 0.324] n=8 | "
        "1.000 [0.676, 1.000] n=8 | 1.000 [0.676, 1.000] n=8 |"
    ]


def test_a_partial_run_says_how_far_it_got(tmp_path: Path) -> None:
    _make_run(tmp_path / "runs", limit=50, images=8)
    text = render(PAGE, tmp_path / "runs", tmp_path / "docs")
    assert "- Images: 8 per cell (partial: 8 of 50)" in text


def test_the_command_writes_the_page_and_refuses_a_missing_runs_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "docs" / "mnist.md"
    assert main(["--runs", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    assert "no folder" in capsys.readouterr().err and not out.exists()
    (tmp_path / "runs").mkdir()
    assert main(["--runs", str(tmp_path / "runs"), "--out", str(out)]) == 0
    text = out.read_text()
    assert text.startswith(f"# {MNIST.title}")
    assert text.count("Not run yet.") == len(MNIST.sections) and "Not trained yet." in text
    for section in MNIST.sections:  # every section names a preset that exists
        assert (Path(__file__).parents[2] / "configs" / f"{section.name}.toml").exists()


@pytest.mark.parametrize("dataset", sorted(PAGES))
def test_each_page_names_its_script_and_presets_that_exist(
    tmp_path: Path, dataset: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--dataset`` picks the page; without ``--out`` it is ``docs/results/<dataset>.md``."""
    repo = Path(__file__).parents[2]
    page = PAGES[dataset]
    assert (repo / page.script).exists() and page.script == f"docs/results/{dataset}.sh"
    script = (repo / page.script).read_text()
    for section in page.sections:
        assert (repo / "configs" / f"{section.name}.toml").exists()
        assert section.name in script  # the script makes every run of its page
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    assert main(["--dataset", dataset, "--runs", "runs"]) == 0
    text = (tmp_path / "docs" / "results" / f"{dataset}.md").read_text()
    assert text.startswith(f"# {page.title}") and f"`bash {page.script}`" in text
    assert text.count("Not run yet.") == len(page.sections)


def test_attacks_on_ride_are_compared_with_the_presets_first_attack_and_the_worst_case(
    tmp_path: Path,
) -> None:
    """Two attacks on RIDE over 10 images, BPDA listed first: EOT costs a quarter of a draw
    on images 0-5, finishes images 0-8 only, and its attacker saw that. The comparison runs
    on those 9, against BPDA (the preset's first attack, though EOT is lower)."""
    eot = "bpda-eot5-eps0.1-step0.02-it10"
    layout = RunLayout(tmp_path / "runs" / "made")
    layout.root.mkdir(parents=True)
    config = {"dataset": "mnist", "limit": 10, "attacks": ["none", "bpda", "bpda-eot"]}
    claim_run_dir(layout.run_toml, config, frozenset(config), "0.4.0", run_id="mnist-made")
    bpda = [1.0, 0.75, 0.5, 1.0, 0.75, 0.5, 1.0, 0.25, 0.0, 1.0]
    eot_rows = [_row(i, eot, RIDE, right - 0.25 * (i < 6)) for i, right in enumerate(bpda[:9])]
    for row in eot_rows:
        row.update(attack="bpda-eot", attacker_correct=row["recheck_correct"])
    rows = {
        BPDA: [
            {**_row(i, BPDA, RIDE, right), "attacker_correct": right}
            for i, right in enumerate(bpda)
        ],
        eot: eot_rows,
        "none": [_row(i, BPDA, "none", 0.0) for i in range(10)],  # not a RIDE defence
    }
    for name, each in rows.items():
        write_results(layout.results, f"{name}__{each[0]['defender_id']}", each)
    text = render(PAGE, tmp_path / "runs", tmp_path / "docs")
    made = text.split("## A made run")[1].split("## A run not made")[0]
    # Per image the attacker takes EOT on images 0-5 (its draws saw 0.25 less there), BPDA on
    # the ties 6-8: EOT's values, 4.25 / 9 = 0.472.
    assert f"Attacks on {RIDE}, compared:" in made
    assert "the worst of the attacks** (the attacker's choice" in made
    assert "0.472 [" in made and "n=9, worst of 2 attacks per image." in made
    # d = -0.25 on six images, 0 on three: mean -1/6; six non-zero differences of one sign:
    # exact sign-flip p = 2 / 2^6 = 0.031, one comparison (Holm = raw): resolved.
    assert f"reference **{BPDA}**" in made and "over the 1 comparisons" in made
    assert f"  - {eot}: -0.167 [" in made
    assert "n=9, p = 0.031, Holm (1) p = 0.031 (resolved)" in made
    assert made.count("compared:") == 1  # the undefended classifier gets none


def test_one_attack_on_ride_names_no_strongest(tmp_path: Path) -> None:
    _make_run(tmp_path / "runs", limit=8, images=8)
    assert "compared:" not in render(PAGE, tmp_path / "runs", tmp_path / "docs")


def test_a_ride_cell_not_made_yet_makes_the_run_partial() -> None:
    import pandas as pd

    from analysis.results_page import images_per_cell

    rows = [_row(i, a, d, 1.0) for i in range(4) for a in ("none", BPDA) for d in ("none", RIDE)]
    frame = pd.DataFrame(rows)
    assert images_per_cell(frame) == 4
    without = frame[~((frame["attack_id"] == BPDA) & (frame["defender_id"] == RIDE))]
    assert images_per_cell(without) == 0  # BPDA x RIDE still running: nothing is complete
    no_filter = frame[~((frame["attack_id"] == BPDA) & (frame["defender_id"] == "none"))]
    assert images_per_cell(no_filter) == 4  # another defender's cell may be left out
