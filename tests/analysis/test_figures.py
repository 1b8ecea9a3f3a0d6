"""Figures are drawn from the run's tables and images alone, as non-empty PNG files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from analysis.figures import draw_figures
from storage.images import ImageStore, adaptive_adv_name, defended_name
from storage.layout import RunLayout
from storage.results import SCHEMA, result_key, write_results
from storage.steps import STEPS_SCHEMA, write_steps

ATTACK = "bpda-eps0.1-step0.02-it2"
DEFENDERS = ("none", "median-k3")


def _white_box_run(root: Path) -> RunLayout:
    """A 3-image BPDA run with two defenders, written through the stores."""
    layout = RunLayout(root)
    store = ImageStore(layout)
    rng = np.random.default_rng(0)
    clean = rng.random((3, 1, 28, 28), dtype=np.float32)
    store.ensure_array("clean", clean.shape, 3)
    store.write_rows("clean", 0, clean)
    for defender in DEFENDERS:
        for name in (adaptive_adv_name(ATTACK, defender), defended_name(ATTACK, defender)):
            store.ensure_array(name, clean.shape, 3)
            store.write_rows(name, 0, np.clip(clean + 0.05, 0, 1))
        results: list[dict[str, Any]] = []
        steps: list[dict[str, Any]] = []
        for index in range(3):
            row: dict[str, Any] = {name: None for name in SCHEMA.names}
            row.update(
                run_id="r", dataset="digits", index=index, label=index, attack_id=ATTACK,
                attack="bpda", attack_params=json.dumps({"eps": 0.1}), defender_id=defender,
                defender="x", defender_params="{}", seed=0, pred_clean=index, pred_adv=9,
                pred_defended=index, correct_clean=True, correct_adv=False,
                correct_defended=True, recheck_draws=1, recheck_correct=1.0,
                recheck_majority=True, final_correct=1.0, attacker_draws=5,
                attacker_correct=0.4, chosen_iteration=2, correct_every_draw=index > 0,
                status="ok",
            )  # fmt: skip
            results.append(row)
            for iteration in range(3):
                step: dict[str, Any] = {name: 0.01 * iteration for name in STEPS_SCHEMA.names}
                step.update(
                    run_id="r", dataset="digits", index=index, label=index, attack_id=ATTACK,
                    defender_id=defender, iteration=iteration, pred_adv=9,
                    pred_defended=index, correct_adv=iteration == 0,
                    correct_defended=iteration < 2 or index > 0, attacker_draws=5,
                    attacker_correct=1.0 - 0.2 * iteration,
                )  # fmt: skip
                steps.append(step)
        write_results(layout.results, result_key(ATTACK, defender, 0, 3), results)
        write_steps(layout.steps, result_key(ATTACK, defender, 0, 3), steps)
    return layout


@pytest.mark.slow
def test_a_white_box_run_gets_three_non_empty_png_figures(tmp_path: Path) -> None:
    layout = _white_box_run(tmp_path)
    paths, problems = draw_figures(layout)
    assert problems == []
    assert [p.name for p in paths] == ["accuracy_by_iteration.png", "distances.png", "examples.png"]
    for path in paths:
        assert path.parent == layout.figures
        with Image.open(path) as image:
            assert image.format == "PNG"
            width, height = image.size
            assert width > 200 and height > 200
            pixels = np.asarray(image.convert("L"))
            assert pixels.std() > 5  # something was drawn
    assert not list(layout.figures.glob(".*"))  # no temporary file left behind


def test_a_run_without_results_draws_nothing(tmp_path: Path) -> None:
    assert draw_figures(RunLayout(tmp_path)) == ([], [])


def test_an_unreadable_image_chunk_costs_only_its_figure(tmp_path: Path) -> None:
    layout = _white_box_run(tmp_path)
    chunk = next((layout.images / "adv").rglob("c/*/*/*/*"))
    chunk.write_bytes(b"not a zarr chunk")
    paths, problems = draw_figures(layout)
    assert [p.name for p in paths] == ["accuracy_by_iteration.png", "distances.png"]
    assert len(problems) == 1 and problems[0].startswith("examples.png: ")


def test_fig_7b_draws_steps_without_the_attackers_fraction(tmp_path: Path) -> None:
    """Steps written before 0.4.0 (no attacker_correct) still get their figure."""
    from analysis.figures import accuracy_by_iteration
    from storage.steps import read_steps

    steps = read_steps(_white_box_run(tmp_path).steps)
    assert steps["attacker_correct"].tolist()[:3] == [1.0, 0.8, 0.6]
    old = steps.drop(columns=["attacker_draws", "attacker_correct"])
    path = accuracy_by_iteration(old, tmp_path / "old.png")
    with Image.open(path) as image:
        assert image.format == "PNG"
