"""The white-box section states, per defence, the attack the adaptive attack chose for it."""

from __future__ import annotations

import json

import pandas as pd

from analysis.tables import accuracy_report, whitebox_rows

ADAPTIVE_ID = "adaptive-eot15-eps0.1-step0.02-it10"
METHODS = {  # defence -> (gradient, draws, final correct of 4, worst correct of 4)
    "none": ("exact", 1, 0, 0),
    "median-k3": ("bpda", 1, 2, 2),
    "ride-K10": ("bpda", 15, 3, 1),
    "smooth": ("exact", 15, 2, 1),
}


def adaptive_frame() -> pd.DataFrame:
    rows = []
    for defence, (gradient, draws, final, worst) in METHODS.items():
        params = {"name": "adaptive", "eps": 0.1, "step": 0.02, "iters": 10, "eot": 15}
        params |= {"gradient": gradient, "draws": draws}
        for index in range(4):
            rows.append(
                {
                    "dataset": "digits",
                    "attack": "adaptive",
                    "attack_id": ADAPTIVE_ID,
                    "attack_params": json.dumps(params, sort_keys=True),
                    "defender_id": defence,
                    "index": index,
                    "correct_clean": True,
                    "correct_defended": index < final,
                    "recheck_correct": float(index < final),
                    "correct_worst": index < worst,
                    "status": "ok",
                    "error": None,
                }
            )
    bpda = {"name": "bpda-eot", "eps": 0.1, "step": 0.02, "iters": 10, "eot": 5}
    for index in range(4):
        rows.append(
            rows[index]
            | {
                "attack": "bpda-eot",
                "attack_id": "bpda-eot5-eps0.1-step0.02-it10",
                "attack_params": json.dumps(bpda, sort_keys=True),
            }
        )
    return pd.DataFrame(rows)


def test_whitebox_rows_name_the_method_per_defence() -> None:
    table = whitebox_rows(adaptive_frame())
    adaptive = table[table["attack"] == ADAPTIVE_ID].set_index("defence")
    assert list(adaptive.index) == ["none", "median-k3", "ride-K10", "smooth"]
    assert adaptive["method"].to_dict() == {
        "none": "exact gradient",
        "median-k3": "BPDA",
        "ride-K10": "BPDA + EOT 15",
        "smooth": "exact gradient + EOT 15",
    }
    bpda = table[table["attack"] != ADAPTIVE_ID]
    assert list(bpda["method"]) == ["BPDA + EOT 5"]


def test_report_states_the_method_per_defence_and_heads_with_the_adaptive_attack() -> None:
    text = accuracy_report(adaptive_frame())
    assert (
        "| defence | dataset | attack | distance | final | recheck | worst | n | method |" in text
    )
    lines = text.splitlines()
    for defence, cells in (
        ("none", "0.000 | 0.000 | 0.000 | 4 | exact gradient"),
        ("median-k3", "0.500 | 0.500 | 0.500 | 4 | BPDA"),
        ("ride-K10", "0.750 | 0.750 | 0.250 | 4 | BPDA + EOT 15"),
        ("smooth", "0.500 | 0.500 | 0.250 | 4 | exact gradient + EOT 15"),
    ):
        assert f"| {defence} | digits | {ADAPTIVE_ID} | Linf 0.1 | {cells} |" in lines
    bpda = "bpda-eot5-eps0.1-step0.02-it10"
    assert (
        f"| none | digits | {bpda} | Linf 0.1 | 0.000 | 0.000 | 0.000 | 4 | BPDA + EOT 5 |" in lines
    )
    assert (
        "Headline (worst case under the adaptive attack): none 0.000 (exact gradient), "
        "median-k3 0.500 (BPDA), ride-K10 0.250 (BPDA + EOT 15), "
        "smooth 0.250 (exact gradient + EOT 15)."
    ) in text
