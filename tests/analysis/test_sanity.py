"""The sanity checks of a white-box verdict: convergence from the step rows, the attack's own
success, and gradient masking (an attack that ignores the defence's gradient doing better)."""

from __future__ import annotations

import pandas as pd

from analysis.report import accuracy_report
from analysis.sanity import (
    FAILED,
    best_so_far,
    convergence_rows,
    masking_lines,
    sanity_section,
    success_lines,
)

WHITE, GRAY = "bpda-a", "pgd-a"


def steps(
    curves: dict[int, list[float]], attack: str = WHITE, defender: str = "ride-x"
) -> pd.DataFrame:
    """Step rows: per image index, the attacker's accuracy at iterates 0, 1, ..."""
    return pd.DataFrame(
        [
            {"attack_id": attack, "defender_id": defender, "index": i, "iteration": k,
             "attacker_correct": value}
            for i, curve in curves.items()
            for k, value in enumerate(curve)
        ]
    )  # fmt: skip


def results(per_attack: dict[str, list[float]], defender: str = "ride-x") -> pd.DataFrame:
    rows = []
    for attack_id, values in per_attack.items():
        white = attack_id == WHITE
        for i, value in enumerate(values):
            rows.append(
                {"attack_id": attack_id, "defender_id": defender, "index": i, "status": "ok",
                 "recheck_correct": value, "attacker_correct": value if white else None,
                 "correct_adv": i % 2 == 0}
            )  # fmt: skip
    return pd.DataFrame(rows)


def test_best_so_far_is_the_mean_of_each_images_running_minimum() -> None:
    curve = best_so_far(steps({0: [1.0, 0.0, 1.0], 1: [1.0, 1.0, 0.5]}))
    assert curve.tolist() == [1.0, 0.5, 0.25]


def test_a_curve_still_falling_over_its_last_half_is_not_converged() -> None:
    falling = steps({i: [1.0, 1.0, 1.0, 1.0, 0.0 if i < 2 else 1.0] for i in range(4)})
    (row,) = convergence_rows(falling)
    assert row.curve == {0: 1.0, 1: 1.0, 2: 1.0, 4: 0.5} and row.n == 4
    assert row.fall == 0.5 and not row.converged
    flat = steps({i: [1.0, 0.0 if i < 2 else 1.0, 1.0, 1.0, 1.0] for i in range(4)})
    assert convergence_rows(flat)[0].converged
    one_image = steps({i: [1.0, 1.0, 1.0, 1.0, 0.0 if i == 0 else 1.0] for i in range(4)})
    assert convergence_rows(one_image)[0].converged  # one image's worth (1/n) is noise


def test_the_section_flags_what_fails_and_is_empty_without_a_white_box_attack() -> None:
    frame = results({WHITE: [1.0] * 4})
    falling = steps({i: [1.0, 1.0, 1.0, 1.0, 0.0 if i < 2 else 1.0] for i in range(4)})
    text = "\n".join(sanity_section(frame, falling))
    assert "## Sanity checks" in text
    assert f"- {FAILED} (not converged: an upper bound): ride-x under {WHITE} (n=4)" in text
    assert "0: 1.000, 1: 1.000, 2: 1.000, 4: 0.500; fell 0.500 over the last half" in text
    assert sanity_section(results({GRAY: [1.0] * 4}), None) == []


def test_the_attacks_own_success_is_the_undefended_classifier_on_its_images() -> None:
    (line,) = success_lines(results({WHITE: [1.0, 0.5, 0.0, 0.5], GRAY: [0.0] * 4}))
    assert line == (
        f"- ride-x under {WHITE}: the undefended classifier gets 0.500 of the submitted "
        "images right, the defence 0.500 (n=4)"
    )


def test_a_transfer_attack_resolved_below_the_white_box_one_flags_gradient_masking() -> None:
    masked = results({WHITE: [1.0] * 10, GRAY: [0.0] * 10})
    (line,) = masking_lines(masked)
    assert line.startswith(f"- {FAILED} (gradient masking suspected): ride-x, {GRAY}")
    assert f"minus the white-box {WHITE}: -1.000 [" in line
    honest = results({WHITE: [0.0] * 5 + [1.0] * 5, GRAY: [1.0] * 10})
    (line,) = masking_lines(honest)
    assert line.startswith(f"- ok: ride-x, {GRAY}")
    assert masking_lines(results({WHITE: [1.0] * 4})) == []  # nothing to compare with


def test_the_report_carries_the_checks_when_given_the_steps() -> None:
    from tests.analysis.test_tables_adaptive import adaptive_frame

    frame = adaptive_frame()
    frame["correct_adv"] = False
    flat = steps(
        {i: [1.0] * 11 for i in range(4)}, "adaptive-eot15-eps0.1-step0.02-it10", "ride-K10"
    )
    text = accuracy_report(frame, flat)
    assert "## Sanity checks" in text and FAILED not in text
    assert "- ok: ride-K10 under adaptive-eot15-eps0.1-step0.02-it10 (n=4): 0: 1.000" in text
