"""The white-box section states, per defence, the attack the adaptive attack chose for it,
and heads with the robust accuracy under the strongest attack per defence."""

from __future__ import annotations

import json

import pandas as pd
from resultrows import agreeing

from analysis.report import accuracy_report
from analysis.whitebox import whitebox_rows

ADAPTIVE_ID = "adaptive-eot15-eps0.1-step0.02-it10"
METHODS = {  # defence -> (gradient, draws, final correct of 4, robust correct of 4)
    "none": ("exact", 1, 0, 0),
    "median-k3": ("bpda", 1, 2, 2),
    "ride-K10": ("bpda", 15, 3, 1),
    "smooth": ("exact", 15, 2, 1),
}


def adaptive_frame() -> pd.DataFrame:
    rows = []
    for defence, (gradient, draws, final, robust) in METHODS.items():
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
                    **agreeing(index < robust, final_correct=float(index < final)),
                    "attacker_draws": draws,
                    "attacker_correct": float(index < robust),
                    "chosen_iteration": 10,
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


def test_report_states_the_method_per_defence_and_heads_with_the_strongest_attack() -> None:
    text = accuracy_report(adaptive_frame())
    lines = text.split("## White-box")[1].splitlines()
    for defence, attack_id, robust, final, method in (
        ("none", ADAPTIVE_ID, "0.000 [0.000, 0.490]", "0.000 [0.000, 0.490]", "exact gradient"),
        ("median-k3", ADAPTIVE_ID, "0.500 [0.150, 0.850]", "0.500 [0.150, 0.850]", "BPDA"),
        ("ride-K10", ADAPTIVE_ID, "0.250 [0.046, 0.699]", "0.750 [0.301, 0.954]",
         "BPDA + EOT 15"),
        ("smooth", ADAPTIVE_ID, "0.250 [0.046, 0.699]", "0.500 [0.150, 0.850]",
         "exact gradient + EOT 15"),
        ("none", "bpda-eot5-eps0.1-step0.02-it10", "0.000 [0.000, 0.490]",
         "0.000 [0.000, 0.490]", "BPDA + EOT 5"),
    ):  # fmt: skip
        # robust, majority (here the same), final, every draw, attacker, no attack (not run)
        every = robust.split()[0]
        cells = f"{robust} | {robust} | {final} | {every} | {every} |  | 4 | {method} |"
        assert f"| {defence} | digits | {attack_id} | Linf 0.1 | {cells}" in lines
    # Per defence the strongest attack: the adaptive one; bpda-eot5 ties for 'none' and the
    # tie goes to the later attack id.
    assert (
        "Headline (robust accuracy under the strongest attack, per defence): "
        "none 0.000 [0.000, 0.490] n=4 under bpda-eot5-eps0.1-step0.02-it10 (BPDA + EOT 5); "
        f"median-k3 0.500 [0.150, 0.850] n=4 under {ADAPTIVE_ID} (BPDA); "
        f"ride-K10 0.250 [0.046, 0.699] n=4 under {ADAPTIVE_ID} (BPDA + EOT 15); "
        f"smooth 0.250 [0.046, 0.699] n=4 under {ADAPTIVE_ID} (exact gradient + EOT 15)."
    ) in text
    # Per image the worst of the attacks, for the one defence attacked twice.
    assert (
        "Per image, the worst of the attacks (the attacker chooses from its own draws, the "
        "fresh draws score it; gray-box attacks take part only on a deterministic defence): "
        "none 0.000 [0.000, 0.490] n=4, worst of 2 attacks per image."
    ) in text
