"""`ride cards DIR...`: the defence cards of several runs as one leaderboard (markdown on
stdout, optional CSV), and a directory that is not a run skipped with one line and exit 1."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest

from analysis.cards import validate_card, write_card
from flows.cli import main
from storage.layout import RunLayout
from storage.results import SCHEMA, write_results
from storage.runconfig import claim_run_dir

PGD = "pgd-eps0.1-step0.02-it10"


def make_run(root: Path, eps: float, correct: dict[tuple[str, str], int]) -> None:
    """A 10-image digits run; ``correct[(attack_id, defender_id)]`` images right."""
    config = {
        "dataset": "digits",
        "classifier": "mnist-cnn",
        "eps": eps,
        "attacks": ["none", "pgd"],
    }
    root.mkdir(parents=True)
    claim_run_dir(RunLayout(root).run_toml, config, frozenset(config), "0.2.0", "ride run")
    for (attack_id, defender_id), k in correct.items():
        rows = []
        for i in range(10):
            row: dict[str, Any] = dict.fromkeys(SCHEMA.names)
            row.update(
                run_id=f"digits-{root.name}",
                dataset="digits",
                index=i,
                label=i,
                attack_id=attack_id,
                attack="none" if attack_id == "none" else "pgd",
                attack_params=json.dumps({"eps": eps, "name": "pgd"}),
                defender_id=defender_id,
                defender=defender_id.split("-")[0],
                defender_params=json.dumps({"name": defender_id.split("-")[0]}),
                seed=0,
                correct_clean=True,
                correct_defended=i < k,
                recheck_draws=1,
                recheck_correct=float(i < k),
                recheck_majority=i < k,
                final_correct=float(i < k),
                correct_every_draw=i < k,
                status="ok",
            )
            rows.append(row)
        write_results(RunLayout(root).results, f"{attack_id}__{defender_id}", rows)


@pytest.fixture
def runs(tmp_path: Path) -> tuple[Path, Path]:
    demo, whitebox = tmp_path / "demo", tmp_path / "other"
    make_run(
        demo, 0.1, {("none", "none"): 10, (PGD, "none"): 1, ("none", "ride"): 9, (PGD, "ride"): 6}
    )
    make_run(whitebox, 0.05, {("none", "median-k3"): 9, (PGD, "median-k3"): 3})
    write_card(RunLayout(demo))  # one run with its card.json, the other built on the fly
    return demo, whitebox


def test_leaderboard_of_two_runs_printed_and_written_as_csv(
    runs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    demo, other = runs
    table, markdown = tmp_path / "board.csv", tmp_path / "board.md"
    code = main(["cards", str(demo), str(other), "--csv", str(table), "--out-md", str(markdown)])
    out, err = capsys.readouterr()
    assert code == 0 and err == ""
    assert out == markdown.read_text()
    lines = [line for line in out.splitlines() if line.startswith("| ") and "rank" not in line]
    assert len(lines) == 3
    # Best robust accuracy first: ride 0.6, median 0.3, none 0.1.
    assert lines[0].startswith(f"| 1 | {demo} | digits | mnist-cnn | ride | 0.1 | 0.900 | 0.600 [")
    assert f"| 2 | {other} | digits | mnist-cnn | median-k3 | 0.05 | 0.900 | 0.300 [" in lines[1]
    assert lines[2].startswith(f"| 3 | {demo} |") and f"| {PGD} | 10 |" in lines[2]
    rows = list(csv.DictReader(io.StringIO(table.read_text())))
    assert [(r["rank"], r["run"], r["defender_id"]) for r in rows] == [
        ("1", str(demo), "ride"),
        ("2", str(other), "median-k3"),
        ("3", str(demo), "none"),
    ]
    assert rows[0]["robust_accuracy"] == "0.6" and rows[0]["robust_n"] == "10"
    assert rows[0]["strongest_attack"] == PGD and rows[0]["robust_statistic"] == "recheck_correct"
    assert 0 < float(rows[0]["robust_low"]) < 0.6 < float(rows[0]["robust_high"]) < 1
    assert rows[1]["run_id"] == "digits-other" and rows[1]["eps"] == "0.05"
    validate_card(json.loads((demo / "card.json").read_text()))
    assert not (other / "card.json").exists()  # built, not written


def test_a_directory_that_is_not_a_run_is_skipped_with_one_line_and_exit_1(
    runs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    demo, other = runs
    stray = tmp_path / "stray"
    stray.mkdir()
    code = main(["cards", str(demo), str(stray), str(other)])
    out, err = capsys.readouterr()
    assert code == 1
    assert err.splitlines() == [
        f"ride: error: {stray} is not a run directory (no card.json, no results/); skipped"
    ]
    assert str(demo) in out and str(other) in out and str(stray) not in out
