"""Sweeps in the report: one table per swept defender family, a row per attack, the robust
accuracy at each value with its interval and n, and the best in bold (the paper's Tables
4-6)."""

from __future__ import annotations

import json

import pandas as pd
from resultrows import agreeing

from analysis.intervals import wilson_interval
from analysis.report import accuracy_report
from analysis.sweeps import find_sweeps, sweep_section, sweep_table

#: accuracy per (attack, kernel) of Table 4, on 1000 fake images
TABLE4 = {
    "fgsm-eps0.015": {3: 0.180, 5: 0.281, 7: 0.306, 9: 0.277, 11: 0.241},
    "pgd-eps0.05-step0.01-it10": {3: 0.005, 5: 0.128, 7: 0.238, 9: 0.251, 11: 0.228},
}
N = 1000


def rows_for(
    attack: str, defender: str, name: str, params: dict[str, object], acc: float
) -> list[dict[str, object]]:
    correct = round(acc * N)
    return [
        {
            "dataset": "imagenet",
            "attack_id": attack,
            "defender_id": defender,
            "defender": name,
            "defender_params": json.dumps({"name": name, **params}, sort_keys=True),
            "index": i,
            "correct_clean": True,
            **agreeing(i < correct),
            "status": "ok",
            "error": None,
        }
        for i in range(N)
    ]


def table4_frame() -> pd.DataFrame:
    rows: list[dict[str, object]] = []
    for attack, by_kernel in TABLE4.items():
        rows += rows_for(attack, "none", "none", {}, 0.0)
        # given out of order: the table sorts by value, not by id or arrival
        for k in (11, 3, 9, 5, 7):
            rows += rows_for(attack, f"median-k{k}", "median", {"kernel": k}, by_kernel[k])
        rows += rows_for(attack, "tv-bregman-w2", "tv-bregman", {"weight": 2.0}, 0.3)
    return pd.DataFrame(rows)


def test_find_sweeps_names_the_varying_setting_in_value_order() -> None:
    sweeps = find_sweeps(table4_frame())
    assert len(sweeps) == 1  # one tv-bregman id and 'none' are no sweeps
    (sweep,) = sweeps
    assert sweep.family == "median" and sweep.settings == ("kernel",)
    assert list(sweep.columns) == [f"median-k{k}" for k in (3, 5, 7, 9, 11)]
    assert list(sweep.columns.values()) == ["3", "5", "7", "9", "11"]


def test_sweep_table_holds_accuracy_n_and_interval() -> None:
    (sweep,) = find_sweeps(table4_frame())
    table = sweep_table(table4_frame(), sweep)
    assert list(table.index) == list(TABLE4)
    cell = table.loc["fgsm-eps0.015", "7"]
    assert (cell.mean, cell.n, (cell.low, cell.high)) == (0.306, N, wilson_interval(306, N))
    assert table.loc["pgd-eps0.05-step0.01-it10", "3"].mean == 0.005


def test_section_marks_the_best_value_per_attack_like_table_4() -> None:
    text = "\n".join(sweep_section(table4_frame()))
    assert "### median: kernel" in text
    assert "| attack | 3 | 5 | 7 | 9 | 11 |" in text
    fgsm = (
        "| fgsm-eps0.015 | 0.180 [0.157, 0.205] n=1000 | 0.281 [0.254, 0.310] n=1000 "
        "| **0.306** [0.278, 0.335] n=1000 | 0.277 [0.250, 0.306] n=1000 "
        "| 0.241 [0.216, 0.268] n=1000 |"
    )
    assert fgsm in text
    pgd = [line for line in text.splitlines() if line.startswith("| pgd-eps0.05")]
    assert [cell.split(" [")[0] for cell in pgd[0].split(" | ")[1:]] == [
        "0.005", "0.128", "0.238", "**0.251**", "0.228"
    ]  # fmt: skip
    assert "## Sweeps" in accuracy_report(table4_frame())


def test_two_swept_settings_and_ties() -> None:
    rows: list[dict[str, object]] = []
    for alpha in (0.9, 0.8):
        for sigma in (0.5, 0.25):
            params: dict[str, object] = {"alpha": alpha, "sigma": sigma, "iters": 5}
            name = f"ride-K5-T5-a{alpha}-s{sigma}"
            rows += rows_for("fgsm-eps0.1", name, "ride", params, 0.5 if sigma == 0.5 else 0.25)
    frame = pd.DataFrame(rows)
    (sweep,) = find_sweeps(frame)
    assert sweep.settings == ("alpha", "sigma")
    assert list(sweep.columns.values()) == [
        "alpha=0.8, sigma=0.25",
        "alpha=0.8, sigma=0.5",
        "alpha=0.9, sigma=0.25",
        "alpha=0.9, sigma=0.5",
    ]
    text = "\n".join(sweep_section(frame))
    line = next(line for line in text.splitlines() if line.startswith("| fgsm-eps0.1 |"))
    assert [cell.split(" [")[0] for cell in line.split(" | ")[1:]] == [
        "0.250", "**0.500**", "0.250", "**0.500**"
    ]  # fmt: skip  # ties: all bold


def test_no_sweep_no_section() -> None:
    frame = table4_frame()
    single = frame[
        ~frame["defender_id"].str.startswith("median") | (frame["defender_id"] == "median-k3")
    ]
    assert sweep_section(single) == [] and "## Sweeps" not in accuracy_report(single)
    failed = frame.assign(status="failed")
    assert find_sweeps(failed) == []
