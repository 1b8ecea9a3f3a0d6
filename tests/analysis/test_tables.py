"""The report is computed from result rows only: every accuracy is the robust accuracy (mean
recheck_correct) with its 95% Wilson interval and n; the white-box section adds the majority
vote, the last iterate, every draw, the attacker's view and the same defence with no attack;
rows written before 0.4.0 get one line of error."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from resultrows import agreeing

from analysis.intervals import Estimate, wilson_interval
from analysis.report import accuracy_report
from analysis.tables import OutdatedResults, accuracy_table, check_current, clean_accuracy
from analysis.whitebox import whitebox_rows
from storage.files import StorageError
from storage.results import SCHEMA


def frame() -> pd.DataFrame:
    rows = []
    for attack in ("none", "pgd"):
        for defender in ("median-k3", "none"):
            for index in range(4):
                # 'none' attack: all correct; pgd: undefended 1/4, median 2/4.
                correct = True if attack == "none" else index < (1 if defender == "none" else 2)
                rows.append(
                    {
                        "dataset": "digits",
                        "attack_id": attack,
                        "defender_id": defender,
                        "index": index,
                        "correct_clean": index != 3,
                        **agreeing(correct),
                        "status": "ok",
                        "error": None,
                    }
                )
    rows.append(
        {
            "dataset": "digits",
            "attack_id": "pgd",
            "defender_id": "median-k3",
            "index": 9,
            "correct_clean": None,
            **dict.fromkeys(agreeing(False)),
            "status": "failed",
            "error": "RuntimeError: boom",
        }
    )
    return pd.DataFrame(rows)


def test_table_has_attacks_as_rows_none_first_and_cells_with_n_and_interval() -> None:
    table = accuracy_table(frame())
    assert list(table.index) == ["none", "pgd"]
    assert list(table.columns) == ["none", "median-k3"]
    cell = table.loc["pgd", "none"]
    assert isinstance(cell, Estimate)
    assert (cell.mean, cell.n, cell.correct) == (0.25, 4, 1)
    assert (cell.low, cell.high) == wilson_interval(1, 4)
    assert table.loc["pgd", "median-k3"].mean == 0.5
    assert table.loc["none", "median-k3"].mean == 1.0


def test_clean_accuracy_counts_each_image_once() -> None:
    clean = clean_accuracy(frame())
    assert clean is not None and (clean.mean, clean.n) == (0.75, 4)


def test_markdown_report_lists_cells_with_interval_and_n_and_failures() -> None:
    text = accuracy_report(frame())
    assert "Clean accuracy (no attack, no defence): 0.750 [0.301, 0.954] n=4." in text
    assert "| pgd | 0.250 [0.046, 0.699] n=4 | 0.500 [0.150, 0.850] n=4 |" in text
    assert "1 rows failed" in text and "RuntimeError: boom" in text


def test_the_table_counts_the_fresh_draws_not_draw_0() -> None:
    # A randomised defender right at draw 0 of every image but at 1 of 4 draws on average.
    rows = frame()
    pgd = (rows["attack_id"] == "pgd") & (rows["defender_id"] == "median-k3")
    pgd &= rows["status"] == "ok"
    rows.loc[pgd, ["correct_defended", "recheck_draws", "recheck_correct"]] = [True, 4, 0.25]
    cell = accuracy_table(rows).loc["pgd", "median-k3"]
    assert (cell.mean, cell.correct) == (0.25, 1)
    assert accuracy_table(rows, column="correct_defended").loc["pgd", "median-k3"].mean == 1.0


BPDA_EOT = "bpda-eot15-eps0.1-step0.02-it10"


def whitebox_frame() -> pd.DataFrame:
    """4 images, 4 re-check draws. Under BPDA+EOT (15 attacker draws): the undefended
    classifier is always wrong; ride-K10 is right at 3, 2, 1 and 0 of the 4 fresh draws on
    the iterate the attacker chose (robust 0.375, majority only for the first image: 2 of 4
    is no strict majority), at 4, 3, 2, 1 on the final iterate (final 0.625), never at every
    draw, and the attacker saw 3 of its 15 draws right on image 0 (attacker 0.05). With no
    attack ride-K10 is right at 4, 4, 3 and 3 draws (0.875); 'none' x 'none' was not run."""
    rows = []
    ride = {
        "recheck_correct": [0.75, 0.5, 0.25, 0.0],
        "recheck_majority": [True, False, False, False],
        "final_correct": [1.0, 0.75, 0.5, 0.25],
        "attacker_correct": [0.2, 0.0, 0.0, 0.0],
    }
    none = {"recheck_correct": [0.0] * 4, "recheck_majority": [False] * 4,
            "final_correct": [0.0] * 4, "attacker_correct": [0.0] * 4}  # fmt: skip
    for defender, values in (("none", none), ("ride-K10", ride)):
        for index in range(4):
            rows.append(
                {
                    "dataset": "digits",
                    "attack": "bpda-eot",
                    "attack_id": BPDA_EOT,
                    "attack_params": '{"eps": 0.1, "eot": 15, "name": "bpda-eot"}',
                    "defender_id": defender,
                    "index": index,
                    "correct_clean": True,
                    "correct_defended": values["recheck_correct"][index] > 0,
                    "recheck_draws": 4,
                    "correct_every_draw": False,
                    "attacker_draws": 15,
                    "chosen_iteration": 10,
                    **{column: value[index] for column, value in values.items()},
                    "status": "ok",
                    "error": None,
                }
            )
    for index, right in enumerate([4, 4, 3, 3]):
        rows.append(
            {
                "dataset": "digits",
                "attack": "none",
                "attack_id": "none",
                "attack_params": '{"name": "none"}',
                "defender_id": "ride-K10",
                "index": index,
                "correct_clean": True,
                **agreeing(
                    right > 0,
                    recheck_draws=4,
                    recheck_correct=right / 4,
                    final_correct=right / 4,
                    correct_every_draw=right == 4,
                ),
                "status": "ok",
                "error": None,
            }
        )
    return pd.DataFrame(rows)


def test_whitebox_rows_give_robust_majority_final_every_draw_attacker_and_no_attack() -> None:
    table = whitebox_rows(whitebox_frame())
    assert list(table["defence"]) == ["none", "ride-K10"]
    ride = table.set_index("defence").loc["ride-K10"]
    assert (ride["robust"].mean, ride["majority"].mean, ride["final"].mean) == (0.375, 0.25, 0.625)
    assert (ride["robust"].low, ride["robust"].high) == wilson_interval(1.5, 4)
    assert (ride["majority"].low, ride["majority"].high) == wilson_interval(1, 4)
    assert (ride["every_draw"], ride["attacker"], ride["n"]) == (0.0, 0.05, 4)
    assert ride["no_attack"].mean == 0.875 and ride["no_attack"].n == 4
    assert ride["distance"] == "Linf 0.1" and ride["dataset"] == "digits"
    assert table.set_index("defence").loc["none", "no_attack"] is None  # 'none' not run


def test_report_explains_each_column_and_heads_with_the_strongest_attack() -> None:
    text = accuracy_report(whitebox_frame())
    assert "## White-box attacks (BPDA, BPDA+EOT)" in text
    for column in ("robust", "majority", "final", "every draw", "attacker", "no attack", "n"):
        assert f"\n- {column}: " in text  # one line each
    assert (
        "| defence | dataset | attack | distance | robust | majority | final | every draw "
        "| attacker | no attack | n | method |"
    ) in text
    assert (
        f"| ride-K10 | digits | {BPDA_EOT} | Linf 0.1 | 0.375 [0.092, 0.781] "
        "| 0.250 [0.046, 0.699] | 0.625 [0.219, 0.908] | 0.000 | 0.050 "
        "| 0.875 [0.396, 0.987] n=4 | 4 | BPDA + EOT 15 |"
    ) in text
    assert f"| none | digits | {BPDA_EOT} | Linf 0.1 | 0.000 [0.000, 0.490] " in text
    assert "| 0.000 | 0.000 |  | 4 | BPDA + EOT 15 |" in text  # no 'none' attack: blank
    assert (
        "Headline (robust accuracy under the strongest attack, per defence): "
        f"none 0.000 [0.000, 0.490] n=4 under {BPDA_EOT} (BPDA + EOT 15); "
        f"ride-K10 0.375 [0.092, 0.781] n=4 under {BPDA_EOT} (BPDA + EOT 15)."
    ) in text
    assert "worst" not in text.lower()


def test_a_gray_box_attack_stronger_than_the_white_box_one_heads_the_defence() -> None:
    rows = whitebox_frame()
    fgsm = rows[rows["attack_id"] == "none"].assign(
        attack="fgsm", attack_id="fgsm-eps0.1", recheck_correct=0.25
    )
    text = accuracy_report(pd.concat([rows, fgsm], ignore_index=True))
    assert "ride-K10 0.250 [0.046, 0.699] n=4 under fgsm-eps0.1 (gray-box)." in text


def test_majority_table_counts_the_vote() -> None:
    table = accuracy_table(whitebox_frame(), column="recheck_majority")
    assert table.loc[BPDA_EOT, "ride-K10"].mean == 0.25


def test_gray_box_runs_have_no_white_box_section() -> None:
    assert "White-box" not in accuracy_report(frame())
    assert whitebox_rows(frame()).empty


def test_time_split_adds_the_workers_spans_and_leaves_untimed_rows_out() -> None:
    from analysis.timing import time_section, time_split

    rows = pd.DataFrame(
        {  # worker a: tasks 0-4 s and 5-10 s; worker b: one task 1-3 s; one untimed row
            "worker": ["a", "a", "a", "b", "c"],
            "compute_seconds": [1.5, 1.5, 4.0, 1.0, None],
            "overhead_seconds": [0.5, 0.5, 0.5, 0.5, None],
            "task_started_at": [100.0, 100.0, 105.0, 101.0, None],
            "task_finished_at": [104.0, 104.0, 110.0, 103.0, None],
        }
    )
    split = time_split(rows)
    assert split == {
        "compute": 8.0,
        "in_tasks": 2.0,
        "between_tasks": (10.0 + 2.0) - 10.0,
        "workers": 2.0,
        "span": 10.0,
        "busy": 4.0 + 5.0,  # 100-104 and 105-110: the union of the tasks' intervals
    }
    section = "\n".join(time_section(rows))
    assert "| compute: attack, defence, classification | 8.0 | 67% |" in section
    assert time_split(rows.iloc[4:]) is None and time_section(rows.iloc[4:]) == []


NEW_COLUMNS = ("recheck_majority", "final_correct", "attacker_draws", "attacker_correct",
               "chosen_iteration", "correct_every_draw")  # fmt: skip


def test_a_frame_without_the_new_columns_gets_one_line_of_error() -> None:
    old = frame().drop(columns=["recheck_majority", "final_correct", "correct_every_draw"])
    with pytest.raises(OutdatedResults) as raised:
        accuracy_report(old)
    assert str(raised.value) == (
        "results written by ride-pipeline < 0.4.0 lack recheck_majority: rerun the run with "
        "ride-pipeline >= 0.4.0 (its robust accuracy is counted differently)"
    )
    assert isinstance(raised.value, StorageError)  # the command line prints it as one line
    white = whitebox_frame()
    white.loc[white["attack"] == "bpda-eot", "attacker_correct"] = None
    with pytest.raises(OutdatedResults, match="lack attacker_correct"):
        whitebox_rows(white)
    check_current(frame())  # a current frame passes, failed rows and all


def test_ride_report_on_rows_written_before_0_4_0_prints_one_line(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """read_results reads an old file with the new columns empty; the report says why."""
    from flows.cli import main

    fields = [f for f in SCHEMA if f.name not in NEW_COLUMNS]
    fields.insert(SCHEMA.names.index("recheck_majority"), pa.field("correct_worst", pa.bool_()))
    old_schema = pa.schema(fields)
    row: dict[str, Any] = dict.fromkeys(old_schema.names)
    row.update(
        run_id="digits-0", dataset="digits", index=0, label=1, attack_id="none", attack="none",
        attack_params=json.dumps({"name": "none"}), defender_id="none", defender="none",
        defender_params=json.dumps({"name": "none"}), seed=0, correct_clean=True,
        correct_defended=True, recheck_draws=1, recheck_correct=1.0, correct_worst=True,
        status="ok",
    )  # fmt: skip
    (tmp_path / "results").mkdir()
    table = pa.Table.from_pylist([row], schema=old_schema)
    pq.write_table(table, tmp_path / "results" / "none__none__0000000-0000001.parquet")
    assert main(["report", str(tmp_path)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        "ride: error: results written by ride-pipeline < 0.4.0 lack recheck_majority (1 of 1 "
        "rows, none x none among them): rerun the run with ride-pipeline >= 0.4.0 (its robust "
        "accuracy is counted differently)"
    ]
