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
    result_rows,
    step_rows,
)
from ride.attacks import BPDAStep
from ride.robustness import Choice
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


def _choice(every: list[bool]) -> Choice:
    _, adversarial, _ = _images()
    return Choice(
        adversarial, torch.tensor([4, 10]), torch.tensor([0.4, 1.0]), torch.tensor(every), 5
    )


def _verdict(choice: Choice | None = None, final: torch.Tensor | None = None) -> Verdict:
    clean, adversarial, defended = _images()
    predictions = {
        "clean": torch.tensor([3, 5]),
        "adv": torch.tensor([1, 5]),
        "defended": torch.tensor([3, 2]),
    }
    draw_predictions = torch.tensor([[3, 2], [0, 2]])  # (R, B): image 0 right in draw 0 only
    final_correct = (draw_predictions == LABELS) if final is None else final
    return Verdict(
        [11, 12],
        predictions,
        draw_predictions,
        final_correct,
        distance_columns(clean, adversarial, defended),
        choice,
    )


def test_distance_columns_are_the_schemas() -> None:
    columns = distance_columns(*_images())
    assert [list(c) for c in columns] == [[f"{p}_{n}" for p in DISTANCE_PAIRS for n in NORMS]] * 2
    assert set(columns[0]) <= set(SCHEMA.names) and set(columns[0]) <= set(STEPS_SCHEMA.names)
    assert columns[0]["adv_clean_linf"] == pytest.approx(0.1, abs=1e-6)


def test_result_rows_match_the_schema_and_say_what_was_found() -> None:
    rows = result_rows(
        CFG, ATTACK, DEFENDER, 10, LABELS, _verdict(),
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
    assert (first["recheck_majority"], first["final_correct"]) == (False, 0.5)  # 1 of 2: a tie
    assert first["correct_every_draw"] is False  # draw 1 was wrong
    assert first["attacker_correct"] is None and first["chosen_iteration"] is None  # gray-box
    assert first["error"] is None and first["attack_params"].startswith('{"eps": 0.1')


def test_white_box_rows_carry_the_attackers_choice_and_the_last_iterate() -> None:
    final = torch.tensor([[False, True], [False, True]])
    rows = result_rows(
        CFG, ATTACK, DEFENDER, 0, LABELS, _verdict(_choice([False, True]), final),
        seconds=0.0, worker="w", device="cpu",
    )  # fmt: skip
    assert [row["chosen_iteration"] for row in rows] == [4, 10]
    assert [row["attacker_correct"] for row in rows] == pytest.approx([0.4, 1.0])
    assert [row["attacker_draws"] for row in rows] == [5, 5]
    assert [row["recheck_correct"] for row in rows] == [0.5, 0.0]  # the chosen iterate
    assert [row["final_correct"] for row in rows] == [0.0, 1.0]  # the last iterate


def test_correct_at_every_draw_needs_every_attacker_draw_and_every_recheck_draw() -> None:
    verdict = _verdict(_choice([False, True]))
    verdict = Verdict(
        verdict.seeds,
        verdict.predictions,
        LABELS.repeat(2, 1),  # every re-check draw right
        verdict.final_draw_correct,
        verdict.distances,
        verdict.choice,
    )
    rows = result_rows(
        CFG, ATTACK, DEFENDER, 0, LABELS, verdict, seconds=0.0, worker="w", device="cpu"
    )
    assert [row["correct_every_draw"] for row in rows] == [False, True]
    assert [row["recheck_majority"] for row in rows] == [True, True]


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


def test_step_rows_say_what_the_attacker_saw_and_match_the_step_schema() -> None:
    clean, adversarial, defended = _images()
    step = BPDAStep(
        3, adversarial, defended, torch.tensor([3, 1]), torch.tensor([3, 5]),
        torch.tensor([0.8, 0.2]), 5,
    )  # fmt: skip
    rows = step_rows(CFG, ATTACK, DEFENDER, 0, clean, LABELS, step)
    assert [list(row) for row in rows] == [STEPS_SCHEMA.names] * 2
    assert [row["correct_adv"] for row in rows] == [True, False]
    assert [row["correct_defended"] for row in rows] == [True, True]
    assert [row["attacker_correct"] for row in rows] == pytest.approx([0.8, 0.2])
    assert {row["attacker_draws"] for row in rows} == {5}


def test_a_builder_that_drifts_from_its_schema_fails_at_once() -> None:
    row = {name: None for name in SCHEMA.names}
    assert list(complete(dict(reversed(row.items())), SCHEMA)) == SCHEMA.names
    with pytest.raises(ValueError, match=r"missing \['error'\], extra \['errors'\]"):
        complete({**{k: v for k, v in row.items() if k != "error"}, "errors": None}, SCHEMA)
