"""The accuracy table is computed from result rows only."""

from __future__ import annotations

import pandas as pd

from analysis.tables import accuracy_report, accuracy_table, clean_accuracy, whitebox_rows


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
                        "correct_defended": correct,
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
            "correct_defended": None,
            "status": "failed",
            "error": "RuntimeError: boom",
        }
    )
    return pd.DataFrame(rows)


def test_table_has_attacks_as_rows_and_none_first() -> None:
    table = accuracy_table(frame())
    assert list(table.index) == ["none", "pgd"]
    assert list(table.columns) == ["none", "median-k3"]
    assert table.loc["pgd", "none"] == (0.25, 4)
    assert table.loc["pgd", "median-k3"] == (0.5, 4)
    assert table.loc["none", "median-k3"] == (1.0, 4)


def test_clean_accuracy_counts_each_image_once() -> None:
    assert clean_accuracy(frame()) == (0.75, 4)


def test_markdown_report_lists_cells_and_failures() -> None:
    text = accuracy_report(frame())
    assert "Clean accuracy (no attack, no defence): 0.750 (n=4)" in text
    assert "| pgd | 0.250 (n=4) | 0.500 (n=4) |" in text
    assert "1 rows failed" in text and "RuntimeError: boom" in text


def whitebox_frame() -> pd.DataFrame:
    """BPDA+EOT over 4 images: ride correct on the final draw for 3, robust throughout for 1."""
    rows = []
    for defender, final, worst in (("none", [0, 0, 0, 0], [0, 0, 0, 0]),
                                   ("ride-K10", [1, 1, 1, 0], [1, 0, 0, 0])):  # fmt: skip
        for index in range(4):
            rows.append(
                {
                    "dataset": "digits",
                    "attack": "bpda-eot",
                    "attack_id": "bpda-eot15-eps0.1-step0.02-it10",
                    "attack_params": '{"eps": 0.1, "eot": 15, "name": "bpda-eot"}',
                    "defender_id": defender,
                    "index": index,
                    "correct_clean": True,
                    "correct_defended": bool(final[index]),
                    "recheck_correct": 0.5 * final[index],
                    "correct_worst": bool(worst[index]),
                    "status": "ok",
                    "error": None,
                }
            )
    return pd.DataFrame(rows)


def test_whitebox_rows_give_final_recheck_and_worst_case_per_defence() -> None:
    table = whitebox_rows(whitebox_frame())
    assert list(table["defence"]) == ["none", "ride-K10"]
    ride = table.set_index("defence").loc["ride-K10"]
    assert (ride["final"], ride["recheck"], ride["worst"], ride["n"]) == (0.75, 0.375, 0.25, 4)
    assert ride["distance"] == "Linf 0.1" and ride["dataset"] == "digits"
    assert (table["worst"] <= table["final"]).all()


def test_report_headline_is_the_worst_case_under_bpda_eot() -> None:
    text = accuracy_report(whitebox_frame())
    assert "## White-box attacks (BPDA, BPDA+EOT)" in text
    assert "| ride-K10 | digits | bpda-eot15-eps0.1-step0.02-it10 | Linf 0.1 | 0.750 |" in text
    assert "Headline (worst case under BPDA+EOT): none 0.000, ride-K10 0.250." in text


def test_worst_case_table_counts_correct_worst() -> None:
    table = accuracy_table(whitebox_frame(), column="correct_worst")
    assert table.loc["bpda-eot15-eps0.1-step0.02-it10", "ride-K10"] == (0.25, 4)


def test_gray_box_runs_have_no_white_box_section() -> None:
    assert "White-box" not in accuracy_report(frame())
    assert whitebox_rows(frame()).empty


def test_time_split_adds_the_workers_spans_and_leaves_untimed_rows_out() -> None:
    from analysis.tables import time_section, time_split

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
    }
    section = "\n".join(time_section(rows))
    assert "| compute: attack, defence, classification | 8.0 | 67% |" in section
    assert time_split(rows.iloc[4:]) is None and time_section(rows.iloc[4:]) == []
