"""A run kept in docs/results/data: compacted results, run.toml and machine only, and the
page written from the kept copy is the page written from the run."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from analysis.results_page import main, render
from analysis.timing import busy_seconds
from storage.compact import compact_results
from storage.files import StorageError
from storage.kept import keep_run, restore_run, restored_rows
from storage.layout import RunLayout
from storage.results import result_key, write_results
from storage.runconfig import claim_run_dir, record_growth
from storage.steps import STEPS_SCHEMA, write_steps
from tests.analysis.test_results_page import BPDA, PAGE, RIDE, _row


def made_run(runs: Path, growth: tuple[int, int] | None = None) -> RunLayout:
    layout = RunLayout(runs / "made")
    layout.root.mkdir(parents=True)
    config = {"dataset": "mnist", "limit": 8}
    claim_run_dir(layout.run_toml, config, frozenset(config), "0.4.0", run_id="mnist-made")
    (layout.root / "machine.txt").write_text("Test CPU, 2 cores\n")
    (layout.images / "clean").mkdir(parents=True)  # images are never kept
    for attack_id in ("none", BPDA):
        for defender_id in ("none", RIDE):
            for start, begun in ((0, 1000.0), (4, 5000.0)):  # two tasks, an hour apart
                rows = [_row(i, attack_id, defender_id, 1.0) for i in range(start, start + 4)]
                for row in rows:
                    row.update(task_started_at=begun, task_finished_at=begun + 60.0)
                    row.update(compute_seconds=10.0, overhead_seconds=1.0, worker="w")
                    row.update(pred_clean=1)  # the label: the classifier got it right
                key = result_key(attack_id, defender_id, start, start + 4)
                write_results(layout.results, key, rows)
    for start in (0, 4):  # BPDA's per-iterate record on RIDE: 2 iterations, falling
        steps = [
            dict.fromkeys(STEPS_SCHEMA.names) | {
                "run_id": "mnist-made", "dataset": "mnist", "index": i, "label": 1,
                "attack_id": BPDA, "defender_id": RIDE, "iteration": k, "pred_adv": 1,
                "pred_defended": 1, "correct_adv": True, "correct_defended": True,
                "attacker_draws": 1, "attacker_correct": float(k < 2 or i % 2 == 0),
            }
            for k in range(3)
            for i in range(start, start + 4)
        ]  # fmt: skip
        write_steps(layout.steps, result_key(BPDA, RIDE, start, start + 4), steps)
    if growth is not None:
        record_growth(layout.run_toml, {**config, "first_limit": growth[0]}, *growth)
    return layout


def test_keep_refuses_loose_result_files_then_copies_what_a_page_reads(tmp_path: Path) -> None:
    layout = made_run(tmp_path / "runs")
    kept = tmp_path / "data" / "made"
    with pytest.raises(StorageError, match=r"not compacted .*`ride compact "):
        keep_run(layout.root, kept)
    assert not kept.exists()
    compact_results(layout.results)
    assert keep_run(layout.root, kept) > 0
    assert sorted(p.name for p in kept.iterdir()) == ["machine.txt", "results", "run.toml", "steps"]
    frame = pd.read_parquet(kept / "results")
    assert len(frame) == 4 * 8 and set(frame["index"]) == set(range(8))
    same_page = render(PAGE, tmp_path / "runs", tmp_path / "docs")
    assert render(PAGE, tmp_path / "data", tmp_path / "docs") == same_page
    # the sanity checks read the kept steps: BPDA's best-so-far 1.0, 1.0, then 0.5 at k = 2
    assert "not converged: an upper bound)**" not in same_page
    assert "CHECK FAILED** (not converged: an upper bound): " in same_page
    assert "0: 1.000, 1: 1.000, 2: 0.500; fell 0.500 over the last half" in same_page
    keep_run(layout.root, kept)  # a second keep replaces the first copy
    assert len(pd.read_parquet(kept / "results")) == 4 * 8
    with pytest.raises(StorageError, match=r"no run\.toml"):
        keep_run(tmp_path / "data", tmp_path / "elsewhere")


def test_the_page_command_keeps_each_run_and_writes_from_the_copies(tmp_path: Path) -> None:
    layout = made_run(tmp_path / "runs")
    compact_results(layout.results)
    out, data = tmp_path / "docs" / "mnist.md", tmp_path / "data"
    argv = ["--runs", str(tmp_path / "runs"), "--out", str(out), "--keep", str(data)]
    assert main(argv) == 0  # the MNIST page has no section "made": nothing of it is kept
    assert not (data / "made").exists()


def test_busy_time_is_the_union_of_the_tasks_intervals() -> None:
    started = pd.Series([0.0, 10.0, 100.0, 100.0, 500.0])
    finished = pd.Series([20.0, 30.0, 110.0, 105.0, 600.0])
    assert busy_seconds(started, finished) == 30.0 + 10.0 + 100.0


def test_a_grown_run_counts_its_wall_time_without_the_time_between_its_runs(
    tmp_path: Path,
) -> None:
    made_run(tmp_path / "runs", growth=(4, 8))
    text = render(PAGE, tmp_path / "runs", tmp_path / "docs")
    assert "- Wall time: 2.0 min while a task ran (the run grew 4 -> 8 images" in text


def test_restore_makes_a_new_run_folder_that_names_its_restored_rows(tmp_path: Path) -> None:
    layout = made_run(tmp_path / "runs")
    compact_results(layout.results)
    keep_run(layout.root, tmp_path / "kept")
    run = RunLayout(tmp_path / "restored")
    assert restore_run(tmp_path / "kept", run.root) == 8
    assert restored_rows(run) == 8 and restored_rows(layout) == 0
    assert (run.root / "run.toml").read_bytes() == layout.run_toml.read_bytes()
    assert len(pd.read_parquet(run.results)) == 4 * 8
    assert not run.steps.exists()  # a restored run makes its attacks (and their steps) again
    with pytest.raises(StorageError, match="is not an empty folder"):
        restore_run(tmp_path / "kept", run.root)
    with pytest.raises(StorageError, match=r"holds no run\.toml"):
        restore_run(tmp_path / "runs", tmp_path / "other")
    run.restored.write_text('{"rows": -1}')
    with pytest.raises(StorageError, match="holds no row count"):
        restored_rows(run)


def test_a_restored_run_refuses_a_classifier_that_predicts_otherwise(tmp_path: Path) -> None:
    import numpy as np
    import torch

    from pipeline.classifier import check_restored_classifier
    from pipeline.config import RunConfig
    from storage.images import ImageStore

    layout = made_run(tmp_path / "runs")  # every kept row says pred_clean = 1 (see _row)
    layout.restored.write_text('{"rows": 8}')
    store = ImageStore(layout)
    shutil.rmtree(layout.images)
    store.ensure_array("clean", (8, 1, 28, 28), 8)
    store.write_rows("clean", 0, np.zeros((8, 1, 28, 28), dtype=np.float32))
    cfg = RunConfig.from_mapping({"dataset": "mnist", "limit": 8})

    def constant(label: int) -> torch.nn.Module:
        bias = torch.full((10,), -1.0)
        bias[label] = 1.0
        net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
        torch.nn.init.zeros_(net[1].weight)
        net[1].bias.data = bias
        return net

    check_restored_classifier(layout, constant(1), cfg)  # the classifier that made them
    with pytest.raises(StorageError, match="predicts 8 of the 8 restored images differently"):
        check_restored_classifier(layout, constant(2), cfg)
