"""Accuracies and their 95% Wilson intervals: known values, the interval of a mean of per-image
fractions (p = the mean, n = the images), exact sums of fractions and the one text format
of the report, "0.633 [0.507, 0.744] n=60"."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from scipy import stats

import analysis.cards
from analysis.intervals import (
    Estimate,
    estimate,
    exact_sum,
    paired_difference,
    wilson_interval,
)

# Hand-computed: p = c/n, z = 1.96, z^2 = 3.8416;
# (p + z^2/2n) / (1 + z^2/n) -+ z / (1 + z^2/n) * sqrt(p(1-p)/n + z^2/4n^2).
KNOWN = [
    (0, 10, 0.0, 0.27754),  # centre 0.13877, half 0.13877
    (10, 10, 0.72246, 1.0),
    (5, 10, 0.23659, 0.76341),  # centre 0.5, half 0.26341
    (1, 10, 0.01788, 0.40415),  # centre 0.21102, half 0.19314
    (95, 100, 0.88825, 0.97846),  # centre 0.93336, half 0.04510
    (38, 60, 0.50678, 0.74376),  # the README's RIDE under PGD: centre 0.62527, half 0.11849
]


@pytest.mark.parametrize(("correct", "n", "low", "high"), KNOWN)
def test_wilson_interval_known_values(correct: int, n: int, low: float, high: float) -> None:
    got = wilson_interval(correct, n)
    assert got == pytest.approx((low, high), abs=1e-4)


def test_wilson_interval_is_exact_at_the_ends_symmetric_and_narrows_with_n() -> None:
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
    low, high = wilson_interval(3, 17)
    assert (1 - high, 1 - low) == pytest.approx(wilson_interval(14, 17))
    assert low < 3 / 17 < high
    wide, narrow = wilson_interval(5, 10), wilson_interval(500, 1000)
    assert narrow[1] - narrow[0] < wide[1] - wide[0]
    assert wilson_interval(5, 10, z=2.576)[0] < wilson_interval(5, 10)[0]  # 99% is wider
    for bad in ((1, 0), (-1, 10), (11, 10), (10.5, 10)):
        with pytest.raises(ValueError):
            wilson_interval(*bad)


def test_cards_still_exports_the_interval() -> None:
    assert analysis.cards.wilson_interval is wilson_interval


def test_a_mean_of_fractions_gets_the_wilson_interval_of_its_mean_over_the_images() -> None:
    # 4 images, 4 draws each: 4/4, 2/4, 1/4, 1/4 correct -> mean 0.5 over n = 4 images.
    found = estimate([1.0, 0.5, 0.25, 0.25], [4, 4, 4, 4])
    assert (found.mean, found.n, found.correct) == (0.5, 4, Fraction(2))
    assert (found.low, found.high) == wilson_interval(2, 4)
    # Conservative in spirit: the values' own spread (here none) would give a narrower
    # interval; Wilson uses the Bernoulli variance p (1 - p), the largest one possible.
    same = estimate([0.5, 0.5, 0.5, 0.5], [4, 4, 4, 4])
    assert (same.low, same.high) == (found.low, found.high)
    spread = np.std([1.0, 0.5, 0.25, 0.25]) / math.sqrt(4)
    assert found.high - found.low > 2 * 1.96 * spread


def test_sums_of_fractions_are_exact_even_from_float32_means() -> None:
    thirds = [float(np.float32(1 / 3)), float(np.float32(2 / 3)), 1.0]
    assert exact_sum(thirds, [3, 3, 3]) == Fraction(2)
    assert estimate(thirds, [3, 3, 3]).mean == estimate([True, True, False]).mean
    assert exact_sum([True, False, True]) == 2  # booleans: one draw each
    assert exact_sum([0.1234]) == Fraction(0.1234)  # not a fraction of its draws: as it is
    with pytest.raises(ValueError):
        estimate([])
    with pytest.raises(ValueError):
        estimate([1.5])


def test_one_text_format_with_n_interval_and_bold() -> None:
    ride = Estimate.of(Fraction(38), 60)
    assert ride.text() == str(ride) == "0.633 [0.507, 0.744] n=60"
    assert ride.text(with_n=False) == "0.633 [0.507, 0.744]"
    assert ride.text(bold=True) == "**0.633** [0.507, 0.744] n=60"
    assert str(estimate([False] * 10)) == "0.000 [0.000, 0.278] n=10"


def test_paired_difference_known_value() -> None:
    # d = (0, 0.25, 0.25, 0.5): mean 0.25, s = sqrt(0.125 / 3) = 0.20412, s / sqrt(4) = 0.10206,
    # t(0.975, 3) = 3.18245: half width 0.32480.
    got = paired_difference([1.0, 0.5, 0.75, 1.0], [1.0, 0.25, 0.5, 0.5])
    assert (got.mean, got.n) == (0.25, 4)
    assert got.low == pytest.approx(0.25 - 0.32480, abs=1e-5)
    assert got.high == pytest.approx(0.25 + 0.32480, abs=1e-5)
    assert got.text() == "+0.250 [-0.075, +0.575] n=4"
    assert not got.resolved


def test_paired_difference_is_the_one_sample_t_interval_of_the_differences() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 5, 30) / 4, rng.integers(0, 5, 30) / 4
    got = paired_difference(a, b)
    want = stats.ttest_1samp(a - b, 0.0).confidence_interval()
    assert (got.low, got.high) == pytest.approx((want.low, want.high))
    # swapping the two flips the sign
    swapped = paired_difference(b, a)
    assert (swapped.mean, swapped.low, swapped.high) == pytest.approx(
        (-got.mean, -got.high, -got.low)
    )


def test_pairing_resolves_a_shared_drop_that_two_wilson_intervals_do_not() -> None:
    # 30 images: the second attack costs exactly a quarter of a draw on 12 of them.
    first = np.array([1.0] * 15 + [0.5] * 15)
    second = first - np.array([0.25] * 12 + [0.0] * 18)
    a, b = estimate(first, [4] * 30), estimate(second, [4] * 30)
    assert a.low < b.high  # the two intervals overlap
    got = paired_difference(second, first)
    assert got.mean == pytest.approx(-0.1)
    assert got.resolved and got.high < 0


def test_identical_values_give_a_point_interval() -> None:
    got = paired_difference([0.5, 1.0, 0.0], [0.5, 1.0, 0.0])
    assert (got.mean, got.low, got.high) == (0.0, 0.0, 0.0)
    assert not got.resolved


@pytest.mark.parametrize(
    ("first", "second", "message"),
    [
        ([1.0, 0.0], [1.0], "equal 1-D shapes"),
        ([1.0], [0.0], "at least two images"),
        ([1.0, float("nan")], [1.0, 0.0], "NaN"),
    ],
)
def test_paired_difference_refuses_bad_input(
    first: list[float], second: list[float], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        paired_difference(first, second)
