"""How a run is cut into tasks (pipeline/plan.py), and the work an attack chunk does once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

import pipeline.chunks
from pipeline.chunks import attack_chunk, defend_chunk
from pipeline.config import RunConfig
from pipeline.costs import is_cheap, runs_in_attack_chunk
from pipeline.plan import MAX_ROWS, Task, clean_rows, defence_rows, row_ranges, task_rows
from pipeline.run import Run
from pipeline.sampling import prepare_images
from ride.classifiers import build_classifier, save_classifier
from storage.images import ImageStore, predictions_name
from storage.layout import RunLayout
from storage.results import VOLATILE_COLUMNS, read_results


def config(**settings: Any) -> RunConfig:
    base = {"dataset": "mnist", "attacks": ["none", "fgsm", "pgd", "bpda"],
            "defenders": ["none", "median", "tv-bregman", "ride"]}  # fmt: skip
    return RunConfig.from_mapping({**base, **settings})


def run_of(cfg: RunConfig, n: int) -> Run:
    """The run of ``cfg`` on ``n`` images (its folder is never touched here)."""
    return Run.of(RunLayout(Path("unused")), cfg, n)


def sizes(cfg: RunConfig, n: int) -> dict[tuple[str, str | None], int]:
    run = run_of(cfg, n)
    return {
        (attack.id, defender): task_rows(run, attack, d)
        for attack in run.attacks
        for d, defender in [(None, None), *((d, d.id) for d in run.defenders)]
    }


def test_auto_gives_filters_chunks_of_thousands_and_ride_a_few_images() -> None:
    run = run_of(config(limit=10_000), 10_000)
    fgsm, pgd, bpda = (a for a in run.attacks if a.name != "none")
    median, ride = (d for d in run.defenders if d.name in ("median", "ride"))
    assert is_cheap(median) and not is_cheap(ride)
    assert task_rows(run, fgsm, None) >= 1024  # the attack chunk with the filters
    assert task_rows(run, fgsm, ride) <= 256  # RIDE: many tasks for the workers
    assert task_rows(run, bpda, ride) < task_rows(run, fgsm, ride)
    assert task_rows(run, pgd, None) <= task_rows(run, fgsm, None)  # costlier
    assert defence_rows(run, fgsm, median) == task_rows(run, fgsm, None)
    assert runs_in_attack_chunk(fgsm, median) and not runs_in_attack_chunk(bpda, median)


def test_auto_sizes_nest_are_powers_of_two_and_ignore_execution_settings() -> None:
    for n in (1, 7, 60, 300, 2000, 10_000):
        cfg = config(limit=n)
        found = sizes(cfg, n)
        assert found == sizes(config(limit=n, workers=7, threads=3, cache=False), n)
        for (attack_id, defender_id), rows in found.items():
            assert rows & (rows - 1) == 0 and 1 <= rows <= MAX_ROWS  # a power of two
            if defender_id is not None and not attack_id.startswith("bpda"):
                assert found[(attack_id, None)] % rows == 0  # inside one attack chunk
        clean = clean_rows(run_of(cfg, n))
        assert clean >= max(found.values()) or clean >= n


def test_a_gpu_run_gives_ride_as_many_images_as_fill_the_card() -> None:
    cpu = run_of(config(limit=10_000), 10_000)
    cuda = run_of(config(limit=10_000, device="cuda"), 10_000)
    fgsm = cpu.attacks[1]
    ride = cpu.defenders[-1]
    assert task_rows(cuda, fgsm, ride) >= 8 * task_rows(cpu, fgsm, ride)
    imagenet = run_of(config(dataset="imagenet", limit=1000, device="cuda"), 1000)
    assert task_rows(imagenet, fgsm, imagenet.defenders[-1]) <= 128


def test_a_number_is_every_task_s_size_as_before() -> None:
    cfg = config(limit=100, chunk_size=10)
    assert set(sizes(cfg, 100).values()) == {10} and clean_rows(run_of(cfg, 100)) == 10
    assert row_ranges(25, 10) == [(0, 10), (10, 20), (20, 25)]
    assert row_ranges(100, 4, within=(8, 16)) == [(8, 12), (12, 16)]


def test_chunk_size_auto_is_the_default_and_bad_values_are_refused() -> None:
    from pipeline.settings import ConfigError

    assert RunConfig().chunk_size == "auto"
    assert RunConfig.from_mapping({"chunk_size": "auto"}).run_id == RunConfig().run_id
    for bad in ("many", 0, -3, 2.5):
        with pytest.raises(ConfigError, match="chunk_size"):
            RunConfig.from_mapping({"chunk_size": bad})


CFG = RunConfig.from_mapping(
    {"limit": 4, "chunk_size": 4, "attacks": ["fgsm"],
     "defenders": ["none", "median", "tv-bregman", "ride"],
     "ride_iters": 120, "ride_checkpoints": 1}  # 120 units: costly, not a filter
)  # fmt: skip


def test_predictions_are_made_once_per_attack_chunk_and_shared_by_every_defender(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An attack chunk classifies its clean and adversarial images once, for all its
    defenders; a RIDE defence chunk reads them and classifies only its defended images."""
    layout = RunLayout(tmp_path)
    save_classifier(build_classifier("mnist-cnn"), layout.classifier, "mnist-cnn")
    run = Run.of(layout, CFG, prepare_images(layout, CFG))
    attack, defenders = run.attacks[0], run.defenders
    calls: list[int] = []
    real_predict = pipeline.chunks.predict

    def counting_predict(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        calls.append(len(x))
        return real_predict(model, x)

    monkeypatch.setattr(pipeline.chunks, "predict", counting_predict)
    outcome = attack_chunk(run, Task.attack_chunk(attack, 0, 4, defenders))
    # clean + adversarial once, then one pass per cheap defender's defended images.
    assert [o.defender_id for o in outcome.defences] == ["none", "median-k3", "tv-bregman-w2"]
    assert len(calls) == 2 + 3
    calls.clear()
    defend_chunk(run, Task.defence_chunk(attack, defenders[-1], 0, 4))
    assert len(calls) == 1  # RIDE: its defended images only
    shared = ImageStore(layout).read_rows(predictions_name(attack.id), 0, 4)
    frame = read_results(layout.results)
    for defender in defenders:
        rows = frame[frame.defender_id == defender.id].sort_values("index")
        assert list(rows["pred_clean"]) == list(shared[:, 0])
        assert list(rows["pred_adv"]) == list(shared[:, 1])
    calls.clear()
    again = attack_chunk(run, Task.attack_chunk(attack, 0, 4, defenders))
    assert again.action == "skipped" and calls == []


def test_results_equal_those_of_one_task_per_defender(tmp_path: Path) -> None:
    """The attack chunk stores the rows each defender's own task stored before (numbers
    equal; only times and the worker differ), and its timing columns add up."""
    shared, alone = tmp_path / "shared", tmp_path / "alone"
    runs = []
    for folder in (shared, alone):
        layout = RunLayout(folder)
        save_classifier(build_classifier("mnist-cnn", seed=1), layout.classifier, "mnist-cnn")
        runs.append(Run.of(layout, CFG, prepare_images(layout, CFG)))
    together, one_by_one = runs
    attack, defenders = together.attacks[0], together.defenders[:3]
    attack_chunk(together, Task.attack_chunk(attack, 0, 4, defenders))
    attack_chunk(one_by_one, Task.attack_chunk(attack, 0, 4))
    for defender in defenders:
        attack_chunk(one_by_one, Task.attack_chunk(attack, 0, 4, [defender]))
    a, b = (
        read_results(RunLayout(f).results)
        .drop(columns=list(VOLATILE_COLUMNS))
        .sort_values(["defender_id", "index"])
        .reset_index(drop=True)
        for f in (shared, alone)
    )
    pd.testing.assert_frame_equal(a, b)
    frame = read_results(RunLayout(shared).results)
    assert frame["compute_seconds"].gt(0).all() and frame["overhead_seconds"].ge(0).all()
    assert (frame["task_finished_at"] >= frame["task_started_at"]).all()
