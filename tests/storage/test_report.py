"""The accuracy table is computed from result rows only."""

from __future__ import annotations

import pandas as pd

from storage.report import accuracy_report, accuracy_table, clean_accuracy


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
