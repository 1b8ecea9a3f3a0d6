"""Paired comparisons against a reference: the sign-flip test, Holm's correction, the
bootstrap interval, and the family they make together."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from analysis.intervals import estimate
from analysis.paired import (
    EXACT_LIMIT,
    bootstrap_interval,
    compare_to_reference,
    holm,
    sign_flip_p,
)


def test_sign_flip_p_known_values() -> None:
    assert sign_flip_p([1.0] * 5) == pytest.approx(2 / 32)  # only all + and all -
    assert sign_flip_p([1.0, -1.0]) == 1.0  # every pattern is as far from 0
    assert sign_flip_p([0.0, 0.0, 0.5]) == 1.0  # one non-zero: both patterns as extreme
    assert sign_flip_p([]) == 1.0
    # 0.25 x 3 and -0.25: |sum| >= 0.5 for 10 of the 16 patterns
    assert sign_flip_p([0.25, 0.25, 0.25, -0.25]) == pytest.approx(10 / 16)


def test_sign_flip_p_is_symmetric_and_ignores_zeros() -> None:
    d = np.array([0.25, 0.5, -0.25, 0.75, 0.0, 0.5, 0.0])
    assert sign_flip_p(d) == sign_flip_p(-d) == sign_flip_p(d[d != 0])


def test_the_random_patterns_agree_with_the_exact_enumeration() -> None:
    """Just above the exact limit the seeded random patterns estimate the exact p."""
    d = np.array([0.25] * 11 + [-0.25] * (EXACT_LIMIT + 1 - 11))
    signs = np.array(list(itertools.product((1.0, -1.0), repeat=len(d))))
    exact = float((np.abs(signs @ d) >= abs(d.sum()) - 1e-12).mean())
    assert 0.05 < exact < 0.5
    assert sign_flip_p(d) == pytest.approx(exact, abs=0.01)
    assert sign_flip_p(d, seed=1) != sign_flip_p(d, seed=2)  # random, but seeded
    assert sign_flip_p(d, seed=1) == sign_flip_p(d, seed=1)


def test_holm_known_values_and_invariants() -> None:
    assert holm([0.01, 0.04, 0.03]) == [0.03, 0.06, 0.06]
    assert holm([0.5]) == [0.5]
    assert holm([0.4, 0.5]) == [0.8, 0.8]
    assert holm([0.9, 0.8, 0.7]) == [1.0, 1.0, 1.0]  # capped at 1
    p = list(np.random.default_rng(0).uniform(size=7))
    adjusted = holm(p)
    assert all(a >= raw for a, raw in zip(adjusted, p, strict=True))
    assert adjusted[int(np.argmin(p))] == pytest.approx(7 * min(p))  # Bonferroni's for the least
    order = np.argsort(p)
    assert all(np.diff(np.asarray(adjusted)[order]) >= 0)  # keeps the order of the raw p


def test_bootstrap_interval_holds_the_mean_and_is_seeded() -> None:
    d = np.array([0.25, 0.0, 0.5, -0.25, 0.25, 0.75, 0.0, 0.25])
    low, high = bootstrap_interval(d)
    assert low < d.mean() < high
    assert bootstrap_interval(d) == (low, high)
    assert bootstrap_interval([0.25, 0.25, 0.25]) == (0.25, 0.25)


def test_compare_to_reference_tests_every_other_column_together() -> None:
    per_image = pd.DataFrame(
        {
            "paper": [1.0, 1.0, 0.75, 1.0, 0.5, 1.0, 1.0, 0.75],
            "same": [1.0, 1.0, 0.75, 1.0, 0.5, 1.0, 1.0, 0.75],
            "lower": [0.0, 0.25, 0.0, 0.5, 0.0, 0.25, 0.5, 0.0],
        }
    )
    got = compare_to_reference(per_image, "paper")
    assert list(got) == ["same", "lower"]
    same, lower = got["same"], got["lower"]
    assert same.mean == 0.0 and same.p == 1.0 and not same.resolved
    assert lower.mean == pytest.approx(-0.6875) and lower.n == 8 and lower.family == 2
    assert lower.p == pytest.approx(2 / 256)  # 8 negative differences
    assert lower.p_holm == pytest.approx(2 * 2 / 256) and lower.resolved
    assert lower.high < 0
    assert lower.text().startswith("-0.688 [")
    assert lower.text().endswith("n=8, p = 0.008, Holm (2) p = 0.016")


def test_compare_to_reference_refuses_bad_input() -> None:
    frame = pd.DataFrame({"a": [1.0, 0.0], "b": [0.5, np.nan]})
    with pytest.raises(ValueError, match="reference 'c' is not among"):
        compare_to_reference(frame, "c")
    with pytest.raises(ValueError, match="must not be NaN"):
        compare_to_reference(frame, "a")
    with pytest.raises(ValueError, match="at least two images"):
        compare_to_reference(pd.DataFrame({"a": [1.0], "b": [0.0]}), "a")


def test_under_no_difference_holm_keeps_false_resolutions_rare() -> None:
    """Five attacks no different from the reference, 300 times over 14 images: a family
    with any comparison resolved (Holm p < 0.05 of the exact sign-flip p) stays below 5%,
    and below the uncorrected rate."""
    rng = np.random.default_rng(7)
    corrected = uncorrected = 0
    for _ in range(300):
        p = [sign_flip_p(rng.choice([-0.25, 0.25], size=14)) for _ in range(5)]
        corrected += min(holm(p)) < 0.05
        uncorrected += min(p) < 0.05
    assert corrected / 300 <= 0.05 and corrected < uncorrected


def test_pairing_resolves_a_shared_drop_that_two_wilson_intervals_do_not() -> None:
    """30 images: the second attack costs exactly a quarter of a draw on 12 of them."""
    first = np.array([1.0] * 15 + [0.5] * 15)
    second = first - np.array([0.25] * 12 + [0.0] * 18)
    a, b = estimate(first, [4] * 30), estimate(second, [4] * 30)
    assert a.low < b.high  # the two intervals overlap
    got = compare_to_reference(pd.DataFrame({"first": first, "second": second}), "first")
    assert got["second"].mean == pytest.approx(-0.1)
    assert got["second"].p == pytest.approx(2 / 2**12) and got["second"].resolved
