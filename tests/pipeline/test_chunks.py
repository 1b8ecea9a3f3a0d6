"""The attack and defence of one chunk, as plain functions: no Prefect, no Dask."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.chunks import attack_chunk, defend_chunk, defend_rows
from pipeline.config import RunConfig
from pipeline.execution import executed_defender
from pipeline.plan import Task
from pipeline.run import Run
from pipeline.sampling import prepare_images
from pipeline.store import record_failure
from pipeline.timing import attack_share, attack_timing_path
from ride.attacks import BPDAEOT
from ride.classifiers import build_classifier, save_classifier
from ride.defenders import Ride
from ride.robustness import choose_iterations
from storage.images import (
    ImageStore,
    adaptive_adv_name,
    adaptive_final_name,
    adv_name,
    defended_name,
)
from storage.layout import RunLayout
from storage.results import SCHEMA, VOLATILE_COLUMNS, read_results, result_key
from storage.steps import STEPS_SCHEMA, correct_at_every_step, read_steps, steps_path

CFG = RunConfig.from_mapping(
    {"limit": 3, "chunk_size": 2, "attacks": ["fgsm"], "defenders": ["ride"],
     "ride_iters": 3, "ride_checkpoints": 2}
)  # fmt: skip
WHITE_BOX = RunConfig.from_mapping(
    {"limit": 3, "chunk_size": 3, "attacks": ["bpda-eot"], "eot": 2, "attack_iters": 3,
     "recheck": 3, "defenders": ["none", "ride"], "ride_iters": 3, "ride_checkpoints": 1}
)  # fmt: skip
VOLATILE = set(VOLATILE_COLUMNS)


def count_attacks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A list that gets one item per run of the BPDA+EOT attack from now on."""
    calls: list[str] = []
    real_perturb = BPDAEOT.perturb

    def counting_perturb(self: BPDAEOT, *args: Any, **kwargs: Any) -> torch.Tensor:
        calls.append("attack")
        return real_perturb(self, *args, **kwargs)

    monkeypatch.setattr(BPDAEOT, "perturb", counting_perturb)
    return calls


def attack_rows(attack: Any, start: int, stop: int, *defenders: Any) -> Task:
    """The attack chunk of rows ``[start, stop)``, running ``defenders`` (the cheap ones)."""
    return Task.attack_chunk(attack, start, stop, defenders)


def defence_rows(attack: Any, defender: Any, start: int, stop: int) -> Task:
    """The defence chunk of rows ``[start, stop)`` for ``defender``."""
    return Task.defence_chunk(attack, defender, start, stop)


def test_rows_of_a_chunk_equal_rows_of_its_images_one_by_one() -> None:
    """Per-image seeds: a chunk's results do not depend on the chunk size (up to float32
    rounding: the batched RIDE engine's grouped convolution rounds differently per size)."""
    torch.manual_seed(0)
    model = build_classifier("mnist-cnn").eval()
    clean = torch.rand(3, 1, 28, 28)
    labels = torch.tensor([1, 2, 3])
    adv = (clean + 0.05).clamp(0, 1)
    attack, defender = CFG.attack_configs()[0], CFG.defender_configs()[0]
    together, rows = defend_rows(CFG, attack, defender, 0, clean, labels, adv, model)
    for i in range(3):
        one = slice(i, i + 1)
        alone, row = defend_rows(CFG, attack, defender, i, clean[one], labels[one], adv[one], model)
        torch.testing.assert_close(alone[0], together[i], atol=1e-5, rtol=0)
        for key, value in row[0].items():
            if key in VOLATILE:
                continue
            if isinstance(value, float):
                assert value == pytest.approx(rows[i][key], abs=1e-5), key
            else:
                assert value == rows[i][key], key
    assert list(rows[0]) == SCHEMA.names
    assert rows[1]["index"] == 1 and rows[1]["label"] == 2


@pytest.mark.slow
def test_the_runs_precision_and_memory_sized_batches_reach_ride() -> None:
    """``precision`` changes how RIDE fits (not which defender it is), and each chunk's
    images are fitted in groups sized by the device's free memory."""
    half = replace(CFG, precision="bf16")
    config = half.defender_configs()[0]
    assert config == CFG.defender_configs()[0]
    defender = executed_defender(half, config)
    assert isinstance(defender, Ride)
    assert (defender.precision, defender.max_batch) == ("bf16", "auto")
    torch.manual_seed(0)
    model = build_classifier("mnist-cnn").eval()
    clean = torch.rand(2, 1, 28, 28)
    labels = torch.tensor([1, 2])
    attack = CFG.attack_configs()[0]
    in_bf16, _ = defend_rows(half, attack, config, 0, clean, labels, clean, model)
    in_fp32, _ = defend_rows(CFG, attack, config, 0, clean, labels, clean, model)
    assert in_bf16.dtype == torch.float32 and not torch.equal(in_bf16, in_fp32)
    assert float((in_bf16 - in_fp32).abs().max()) < 0.05


def test_attack_then_defend_chunks_store_images_and_rows(tmp_path: Path) -> None:
    layout = RunLayout(tmp_path)
    save_classifier(build_classifier("mnist-cnn"), layout.classifier, "mnist-cnn")
    assert prepare_images(layout, CFG) == 3
    run = Run.of(layout, CFG, 3)
    attack, defender = run.attacks[0], run.defenders[0]
    assert attack_chunk(run, attack_rows(attack, 2, 3)).action == "ran"
    assert attack_chunk(run, attack_rows(attack, 2, 3)).action == "skipped"
    store = ImageStore(layout)
    clean = store.read_rows("clean", 2, 3)
    adv = store.read_rows(adv_name(attack.id), 2, 3)
    assert np.abs(adv - clean).max() <= attack.eps + 1e-6
    outcome = defend_chunk(run, defence_rows(attack, defender, 2, 3))
    assert (outcome.action, outcome.count) == ("ran", 1)
    assert defend_chunk(run, defence_rows(attack, defender, 2, 3)).action == "skipped"
    assert store.has_rows(defended_name(attack.id, defender.id), 2)
    frame = pd.read_parquet(layout.results)
    assert list(frame["index"]) == [2] and frame["status"].item() == "ok"
    assert frame["adv_clean_linf"].item() <= attack.eps + 1e-6


def test_a_stored_output_that_does_not_read_back_is_recomputed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Markers and result files are trusted only with their data: a deleted adversarial or
    defended chunk, or a cut-short result file, is dropped and its chunk redone."""
    layout = RunLayout(tmp_path)
    save_classifier(build_classifier("mnist-cnn"), layout.classifier, "mnist-cnn")
    run = Run.of(layout, CFG, prepare_images(layout, CFG))
    attack, defender = run.attacks[0], run.defenders[0]
    attacking, defending = attack_rows(attack, 0, 2), defence_rows(attack, defender, 0, 2)
    store = ImageStore(layout)
    adv, defended = adv_name(attack.id), defended_name(attack.id, defender.id)
    attack_chunk(run, attacking)
    defend_chunk(run, defending)
    adv_before, defended_before = store.read_rows(adv, 0, 2), store.read_rows(defended, 0, 2)
    chunk = ("c", "0", "0", "0", "0")

    layout.images.joinpath(adv, *chunk).unlink()
    assert attack_chunk(run, attacking).action == "ran"
    np.testing.assert_array_equal(store.read_rows(adv, 0, 2), adv_before)
    layout.images.joinpath(defended, *chunk).unlink()
    assert defend_chunk(run, defending).action == "ran"
    np.testing.assert_array_equal(store.read_rows(defended, 0, 2), defended_before)
    result = layout.results / f"{result_key(attack.id, defender.id, 0, 2)}.parquet"
    result.write_bytes(result.read_bytes()[:100])
    assert defend_chunk(run, defending).action == "ran"
    assert len(read_results(layout.results)) == 2
    assert result.with_name(f"_{result.name}.corrupt").exists()
    assert defend_chunk(run, defending).action == "skipped"
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 3 and all("redone" in w or "recomputed" in w for w in warned)


def test_a_cut_short_step_file_makes_the_white_box_attack_run_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = _white_box_run(tmp_path)
    layout = run.layout
    attack, defender = run.attacks[0], run.defenders[0]
    key = result_key(attack.id, defender.id, 0, 3)
    (layout.results / f"{key}.parquet").unlink()
    path = steps_path(layout.steps, key)
    path.write_bytes(b"")  # what a power cut can leave
    calls = count_attacks(monkeypatch)
    assert defend_chunk(run, defence_rows(attack, defender, 0, 3)).action == "ran"
    assert calls == ["attack"]
    assert path.with_name(f"_{path.name}.corrupt").exists()
    assert len(read_steps(layout.steps, key)) == 3 * 4


def test_a_failed_chunk_records_one_failed_row_per_image(tmp_path: Path) -> None:
    layout = RunLayout(tmp_path)
    run = Run.of(layout, CFG, prepare_images(layout, CFG))
    attack, defender = run.attacks[0], run.defenders[0]
    record_failure(run, defence_rows(attack, defender, 0, 2), "attack failed: OSError: disk")
    frame = read_results(layout.results)
    assert list(frame.columns) == SCHEMA.names
    assert list(frame["index"]) == [0, 1] and set(frame["status"]) == {"failed"}
    assert set(frame["error"]) == {"attack failed: OSError: disk"}
    labels = ImageStore(layout).read_rows("labels", 0, 2)
    assert list(frame["label"]) == list(labels) and frame["pred_defended"].isna().all()
    assert (layout.results / f"{result_key(attack.id, defender.id, 0, 2)}.failed.parquet").exists()


def _white_box_run(tmp_path: Path) -> Run:
    layout = RunLayout(tmp_path)
    save_classifier(build_classifier("mnist-cnn", seed=1), layout.classifier, "mnist-cnn")
    assert prepare_images(layout, WHITE_BOX) == 3
    run = Run.of(layout, WHITE_BOX, 3)
    for defender in run.defenders:
        assert defend_chunk(run, defence_rows(run.attacks[0], defender, 0, 3)).action == "ran"
    return run


def test_bpda_chunks_store_adversarials_per_defender_and_one_step_row_per_iteration(
    tmp_path: Path,
) -> None:
    layout = _white_box_run(tmp_path).layout
    attack = WHITE_BOX.attack_configs()[0]
    store = ImageStore(layout)
    clean = store.read_rows("clean", 0, 3)
    adversarials = {}
    for defender in WHITE_BOX.defender_configs():
        adv = store.read_rows(adaptive_adv_name(attack.id, defender.id), 0, 3)
        assert np.abs(adv - clean).max() <= attack.eps + 1e-6
        assert adv.min() >= 0.0 and adv.max() <= 1.0
        adversarials[defender.id] = adv
    assert not np.array_equal(adversarials["none"], adversarials["ride-K3-T1-a0.9-s0.5"])

    steps = read_steps(layout.steps)
    assert list(steps.columns) == STEPS_SCHEMA.names
    per_image = steps.groupby(["defender_id", "index"])["iteration"].apply(sorted)
    assert len(per_image) == 2 * 3
    assert all(its == [0, 1, 2, 3] for its in per_image)  # iterates 0..iters, once each

    results = read_results(layout.results).set_index(["defender_id", "index"])
    assert (results["recheck_draws"] == 3).all()
    every_step = correct_at_every_step(steps).droplevel("attack_id")
    fractions = steps.pivot_table(
        index="iteration", columns=["defender_id", "index"], values="attacker_correct"
    )  # (iters + 1, images): what the attacker saw
    chosen = choose_iterations(torch.tensor(fractions.to_numpy()))
    for column, (key, iteration) in enumerate(zip(fractions.columns, chosen.tolist(), strict=True)):
        row = results.loc[key]
        assert row["chosen_iteration"] == iteration  # least often right, the later on a tie
        assert row["attacker_correct"] == pytest.approx(fractions.iloc[iteration, column])
        assert row["correct_every_draw"] == (every_step[key] and row["recheck_correct"] == 1.0)
        assert row["correct_every_draw"] <= row["correct_defended"]
    for defender in WHITE_BOX.defender_configs():  # the chosen iterate is the one evaluated
        final = store.read_rows(adaptive_final_name(attack.id, defender.id), 0, 3)
        evaluated = store.read_rows(adaptive_adv_name(attack.id, defender.id), 0, 3)
        last = results.loc[defender.id]["chosen_iteration"].to_numpy() == 3
        np.testing.assert_array_equal(evaluated[last], final[last])
        same = results.loc[defender.id]
        assert (same["final_correct"][last] == same["recheck_correct"][last]).all()


def test_a_resumed_bpda_chunk_reuses_its_stored_attack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = _white_box_run(tmp_path)
    layout, attack, defender = run.layout, run.attacks[0], run.defenders[1]
    key = result_key(attack.id, defender.id, 0, 3)
    before = read_results(layout.results)
    steps_before = read_steps(layout.steps, key)
    adv_before = ImageStore(layout).read_rows(adaptive_adv_name(attack.id, defender.id), 0, 3)

    # Killed after the attack was stored, before the results: the attack is not rerun.
    (layout.results / f"{key}.parquet").unlink()
    calls = count_attacks(monkeypatch)
    assert defend_chunk(run, defence_rows(attack, defender, 0, 3)).action == "ran"
    assert calls == []
    after = read_results(layout.results)
    pd.testing.assert_frame_equal(
        before.drop(columns=sorted(VOLATILE)), after.drop(columns=sorted(VOLATILE))
    )
    pd.testing.assert_frame_equal(steps_before, read_steps(layout.steps, key))

    # Killed before the step file was written: the attack runs again, to the same images.
    (layout.results / f"{key}.parquet").unlink()
    steps_path(layout.steps, key).unlink()
    assert defend_chunk(run, defence_rows(attack, defender, 0, 3)).action == "ran"
    assert calls == ["attack"]
    adv_after = ImageStore(layout).read_rows(adaptive_adv_name(attack.id, defender.id), 0, 3)
    np.testing.assert_array_equal(adv_before, adv_after)
    pd.testing.assert_frame_equal(steps_before, read_steps(layout.steps, key))


COSTLY_ONLY = RunConfig.from_mapping(
    {"limit": 4, "chunk_size": 4, "attacks": ["fgsm"], "defenders": ["ride", "dae"],
     "ride_iters": 3, "ride_checkpoints": 1}
)  # fmt: skip


def test_an_attack_chunk_that_ran_no_defender_leaves_its_work_to_its_rows_defence_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No row of the attack chunk carries its work when every defender has tasks of its own
    (RIDE at K = 3 is cheap enough to run inside it: the plan is told otherwise here): the
    chunk keeps its timing, and each defence chunk of its rows counts its rows' share of it,
    split over the two costly defenders, on top of its own time."""
    monkeypatch.setattr("pipeline.timing.runs_in_attack_chunk", lambda attack, defender: False)
    layout = RunLayout(tmp_path)
    save_classifier(build_classifier("mnist-cnn"), layout.classifier, "mnist-cnn")
    run = Run.of(layout, COSTLY_ONLY, prepare_images(layout, COSTLY_ONLY))
    attack, (ride, dae) = run.attacks[0], run.defenders
    attack_chunk(run, attack_rows(attack, 0, 4))
    path = attack_timing_path(layout, attack_rows(attack, 0, 4))
    kept = json.loads(path.read_text())
    assert kept["compute"] > 0 and kept["finished_at"] >= kept["started_at"]
    planted = {"compute": 8.0, "overhead": 4.0, "started_at": 1.0, "finished_at": 2.0}
    path.write_text(json.dumps(planted))
    share = attack_share(run, defence_rows(attack, ride, 2, 4), print)
    assert share is not None and (share.compute, share.overhead) == (2.0, 1.0)  # 2/4 over 2
    assert attack_share(run, defence_rows(attack, ride, 4, 6), print) is None  # no such chunk
    began = time.time()
    for defender in run.defenders:
        defend_chunk(run, defence_rows(attack, defender, 2, 4))
    rows = read_results(layout.results)
    assert len(rows) == 4
    per_chunk = rows.groupby("defender_id")[["compute_seconds", "overhead_seconds"]].sum()
    assert (per_chunk["compute_seconds"] > 2.0).all()
    assert (per_chunk["overhead_seconds"] > 1.0).all()
    assert (rows["task_started_at"] >= began).all()  # the defence task's own start
    # an unreadable timing file costs the count, not the chunk
    path.write_text("{")
    notes: list[str] = []
    assert attack_share(run, defence_rows(attack, dae, 0, 2), notes.append) is None
    assert len(notes) == 1 and "does not read" in notes[0]


def test_an_attack_chunk_whose_rows_carry_its_work_keeps_no_timing(tmp_path: Path) -> None:
    cfg = RunConfig.from_mapping(
        {"limit": 4, "chunk_size": 4, "attacks": ["fgsm"], "defenders": ["none", "ride"]}
    )
    layout = RunLayout(tmp_path)
    save_classifier(build_classifier("mnist-cnn"), layout.classifier, "mnist-cnn")
    run = Run.of(layout, cfg, prepare_images(layout, cfg))
    attack = run.attacks[0]
    attack_chunk(run, attack_rows(attack, 0, 4, run.defenders[0]))
    assert not attack_timing_path(layout, attack_rows(attack, 0, 4)).exists()
