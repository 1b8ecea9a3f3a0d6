"""Result-row columns shared by the report, card and page tests."""

from __future__ import annotations

from typing import Any


def agreeing(correct: bool, **values: Any) -> dict[str, Any]:
    """The draw columns of a row whose re-check draws (one here) all agree, as a
    deterministic defender's do; ``values`` add or replace columns."""
    return {
        "correct_defended": correct,
        "recheck_draws": 1,
        "recheck_correct": float(correct),
        "recheck_majority": correct,
        "final_correct": float(correct),
        "correct_every_draw": correct,
    } | values
