"""Result and step rows have exactly their schema's columns, in its order."""

from __future__ import annotations

import pytest
import torch

from pipeline.config import RunConfig
from pipeline.rows import (
    Verdict,
    complete,
    distance_columns,
    failed_rows,
    final_step_rows,
    result_rows,
    robust_so_far,
    step_rows,
)
from ride.attacks import BPDAStep
from storage.results import DISTANCE_PAIRS, NORMS, SCHEMA
from storage.steps import STEPS_SCHEMA

CFG = RunConfig.from_mapping({"attacks": ["bpda"], "defenders": ["median"], "recheck": 2})
ATTACK, DEFENDER = CFG.attack_configs()[0], CFG.defender_configs()[0]
LABELS = torch.tensor([3, 5])


def _images() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    clean = torch.rand(2, 1, 28, 28, generator=generator)
    adversarial = (clean + 0.1).clamp(0, 1)
    defended = (clean - 0.05).clamp(0, 1)
    return clean, adversarial, defended


def _verdict(robust: list[bool] | None = None) -> Verdict:
    clean, adversarial, defended = _images()
    predictions = {
        "clean": torch.tensor([3, 5]),
        "adv": torch.tensor([1, 5]),
        "defended": torch.tensor([3, 2]),
    }
    draw_correct = torch.tensor([[True, False], [False, False]])
    return Verdict(
        [11, 12], predictions, draw_correct, distance_columns(clean, adversarial, defended), robust
    )


def test_distance_columns_are_the_schemas() -> None:
    columns = distance_columns(*_images())
    assert [list(c) for c in columns] == [[f"{p}_{n}" for p in DISTANCE_PAIRS for n in NORMS]] * 2
    assert set(columns[0]) <= set(SCHEMA.names) and set(columns[0]) <= set(STEPS_SCHEMA.names)
    assert columns[0]["adv_clean_linf"] == pytest.approx(0.1, abs=1e-6)


def test_result_rows_match_the_schema_and_say_what_was_found() -> None:
    rows = result_rows(
        CFG, ATTACK, DEFENDER, 10, LABELS, _verdict([True, True]),
        seconds=4.0, worker="host:1", device="cpu",
    )  # fmt: skip
    assert [list(row) for row in rows] == [SCHEMA.names] * 2
    first, second = rows
    assert (first["index"], first["label"], second["index"]) == (10, 3, 11)
    assert (first["attack_id"], first["defender_id"]) == (ATTACK.id, DEFENDER.id)
    assert (first["defender_seed"], first["seconds"], first["status"]) == (11, 2.0, "ok")
    assert (first["correct_clean"], first["correct_adv"], first["correct_defended"]) == (
        True,
        False,
        True,
    )
    assert (first["recheck_draws"], first["recheck_correct"]) == (2, 0.5)
    assert first["correct_worst"] is False  # draw 1 was wrong
    assert first["error"] is None and first["attack_params"].startswith('{"eps": 0.1')


def test_the_worst_case_needs_every_step_and_every_draw() -> None:
    verdict = _verdict([False, True])
    verdict = Verdict(
        verdict.seeds,
        verdict.predictions,
        torch.ones(2, 2, dtype=torch.bool),
        verdict.distances,
        verdict.robust_so_far,
    )
    rows = result_rows(
        CFG, ATTACK, DEFENDER, 0, LABELS, verdict, seconds=0.0, worker="w", device="cpu"
    )
    assert [row["correct_worst"] for row in rows] == [False, True]


def test_failed_rows_keep_the_identity_and_empty_every_measurement() -> None:
    rows = failed_rows(CFG, ATTACK, DEFENDER, 4, [7, 8], "attack failed: OSError: disk full")
    assert [list(row) for row in rows] == [SCHEMA.names] * 2
    assert [row["index"] for row in rows] == [4, 5] and rows[1]["label"] == 8
    assert {row["status"] for row in rows} == {"failed"}
    measured = set(SCHEMA.names) - {
        "run_id", "dataset", "index", "label", "attack_id", "attack", "attack_params",
        "defender_id", "defender", "defender_params", "seed", "status", "error",
    }  # fmt: skip
    assert all(rows[0][column] is None for column in measured)


def test_step_rows_and_the_final_iterate_match_the_step_schema() -> None:
    clean, adversarial, defended = _images()
    step = BPDAStep(3, adversarial, defended, torch.tensor([3, 1]), torch.tensor([3, 5]))
    rows = step_rows(CFG, ATTACK, DEFENDER, 0, clean, LABELS, step)
    assert [list(row) for row in rows] == [STEPS_SCHEMA.names] * 2
    assert [row["correct_adv"] for row in rows] == [True, False]
    results = result_rows(
        CFG, ATTACK, DEFENDER, 0, LABELS, _verdict(), seconds=0.0, worker="w", device="cpu"
    )
    final = final_step_rows(results, 10)
    assert [list(row) for row in final] == [STEPS_SCHEMA.names] * 2
    assert final[0]["iteration"] == 10 and final[1]["pred_defended"] == 2
    assert robust_so_far([*rows, *final], 0, 2) == [True, False]


def test_a_builder_that_drifts_from_its_schema_fails_at_once() -> None:
    row = {name: None for name in SCHEMA.names}
    assert list(complete(dict(reversed(row.items())), SCHEMA)) == SCHEMA.names
    with pytest.raises(ValueError, match=r"missing \['error'\], extra \['errors'\]"):
        complete({**{k: v for k, v in row.items() if k != "error"}, "errors": None}, SCHEMA)
