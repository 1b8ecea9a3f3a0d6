"""Accuracies and their 95% Wilson intervals: known values, the interval of a mean of per-image
fractions (p = the mean, n = the images), exact sums of fractions and the one text format
of the report, "0.633 [0.507, 0.744] n=60"."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

import analysis.cards
from analysis.intervals import (
    Estimate,
    estimate,
    exact_sum,
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
