"""The Parquet step store: one row per image, attack, defender and iterate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest

from storage.results import UnreadableFile
from storage.steps import (
    STEPS_SCHEMA,
    correct_at_every_step,
    read_steps,
    steps_finished,
    steps_path,
    write_steps,
)


def step_row(index: int, iteration: int, correct: bool, defender: str = "ride") -> dict[str, Any]:
    row: dict[str, Any] = {name: 0.0 for name in STEPS_SCHEMA.names}
    row.update(
        run_id="digits-abc",
        dataset="digits",
        index=index,
        label=3,
        attack_id="bpda-eps0.1-step0.02-it2",
        defender_id=defender,
        iteration=iteration,
        pred_adv=5,
        pred_defended=3 if correct else 5,
        correct_adv=False,
        correct_defended=correct,
        attacker_draws=2,
        attacker_correct=1.0 if correct else 0.5,
    )
    return row


def test_steps_round_trip_with_the_fixed_schema(tmp_path: Path) -> None:
    rows = [step_row(i, k, True) for i in range(2) for k in range(3)]
    path = write_steps(tmp_path, "key", rows)
    assert path == steps_path(tmp_path, "key")
    assert pq.read_schema(path).remove_metadata() == STEPS_SCHEMA
    frame = read_steps(tmp_path)
    assert len(frame) == 6 and list(frame.columns) == STEPS_SCHEMA.names
    assert read_steps(tmp_path, "key").equals(frame)
    assert read_steps(tmp_path, "other").empty
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind


def test_a_step_file_counts_only_when_it_reads_back_whole(tmp_path: Path) -> None:
    path = write_steps(tmp_path, "key", [step_row(i, k, True) for i in range(2) for k in range(3)])
    assert steps_finished(tmp_path, "key", 6) and not steps_finished(tmp_path, "other")
    path.write_bytes(path.read_bytes()[:-10])  # the footer cut off
    with pytest.raises(UnreadableFile, match=r"key\.parquet is unreadable"):
        read_steps(tmp_path)
    notes: list[str] = []
    assert not steps_finished(tmp_path, "key", 6, notes.append)
    assert (tmp_path / "_key.parquet.corrupt").exists() and "redone" in notes[0]
    assert read_steps(tmp_path).empty


def test_rows_must_match_the_schema(tmp_path: Path) -> None:
    row = step_row(0, 0, True)
    del row["iteration"]
    with pytest.raises(ValueError, match=r"missing \{'iteration'\}"):
        write_steps(tmp_path, "key", [row])
    with pytest.raises(ValueError, match="no rows"):
        write_steps(tmp_path, "key", [])


def test_an_image_counts_only_if_every_attacker_draw_at_every_iterate_was_right() -> None:
    rows = [step_row(0, k, True) for k in range(3)]  # always correct
    rows += [step_row(1, k, k != 1) for k in range(3)]  # one draw wrong once, right at the end
    rows += [step_row(2, k, k == 0) for k in range(3)]
    robust = correct_at_every_step(pd.DataFrame(rows))
    assert robust.droplevel(["attack_id", "defender_id"]).to_dict() == {
        0: True,
        1: False,
        2: False,
    }
