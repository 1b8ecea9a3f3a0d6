"""95% Wilson score intervals of accuracies, and the one way the report and cards write them.

An accuracy here is the mean over n images of a per-image value in [0, 1]: a 0/1 outcome
(``correct_clean``, ``recheck_majority``) or a fraction of R defender draws
(``recheck_correct``, the robust accuracy). For a fraction the interval is the Wilson
interval with p = the mean and n = the number of images. The per-image variance of values in
[0, 1] with mean p is at most the Bernoulli one, p (1 - p) (x^2 <= x there), so that interval
is conservative in spirit: at least as wide as one built from the observed variance would
be, and exactly the binomial interval when every value is 0 or 1 (R = 1). It is still an
approximation (the images are the sampling unit; the draws only reduce each image's noise).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import pandas as pd

Z95 = 1.96
"""z of a two-sided 95% interval."""


def wilson_interval(correct: float | Fraction, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``correct / n`` (95% for ``z = 1.96``).

    ``correct`` is a count, or the sum of n per-image fractions (p = their mean; see the
    module's note). Unlike the normal approximation it stays inside [0, 1] and is not empty
    at 0 or n: 0 of 10 gives (0, 0.278), 10 of 10 (0.722, 1), 5 of 10 (0.237, 0.763).

    >>> [round(v, 4) for v in wilson_interval(1, 10)]
    [0.0179, 0.4042]
    """
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    if not 0 <= correct <= n:
        raise ValueError(f"correct must be in [0, n={n}], got {correct}")
    p = float(correct) / n
    z2 = z * z
    denominator = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    low = 0.0 if correct == 0 else max(0.0, centre - half)
    high = 1.0 if correct == n else min(1.0, centre + half)
    return low, high


def exact_sum(
    values: Sequence[float] | np.ndarray | pd.Series,
    draws: Sequence[int] | np.ndarray | pd.Series | None = None,
) -> Fraction:
    """The exact sum of per-image values in [0, 1], each a fraction of its ``draws`` (one
    per value; None: 0/1 values, one draw each).

    A stored fraction k / R may be rounded (a float32 mean), so k is recovered as
    ``round(value * R)``; a value that is not within 1e-6 of such a fraction counts as its
    exact binary value. Equal sums of fractions thus compare equal, which float sums need
    not (0.1 + 0.2 != 0.3).

    >>> exact_sum([1 / 3, 2 / 3, 0.5], [3, 3, 4])
    Fraction(3, 2)
    """
    v = np.asarray(values, dtype=float)
    r = np.ones(len(v), dtype=np.int64) if draws is None else np.asarray(draws, dtype=np.int64)
    if len(r) != len(v):
        raise ValueError(f"{len(v)} values but {len(r)} draw counts")
    scaled = v * r
    counts = np.rint(scaled)
    on_grid = (r > 0) & (np.abs(scaled - counts) <= 1e-6)
    total = Fraction(0)
    for each in np.unique(r[on_grid]):
        total += Fraction(int(counts[on_grid & (r == each)].sum()), int(each))
    for value in v[~on_grid]:
        total += Fraction(float(value))
    return total


@dataclass(frozen=True)
class Estimate:
    """An accuracy: the mean of n per-image values in [0, 1] and its 95% Wilson interval.

    ``correct`` is the exact sum of the values (a count for 0/1 values); ``mean`` is
    ``correct / n`` correctly rounded, so equal accuracies are equal floats.
    """

    correct: Fraction
    n: int
    mean: float
    low: float
    high: float

    @classmethod
    def of(cls, correct: Fraction, n: int) -> Estimate:
        low, high = wilson_interval(correct, n)
        return cls(correct, n, float(correct / n), low, high)

    def text(self, *, with_n: bool = True, bold: bool = False) -> str:
        """``0.633 [0.507, 0.744] n=60`` (the mean in bold with ``bold``; without ``n=`` for
        a table whose n has a column of its own)."""
        mean = f"**{self.mean:.3f}**" if bold else f"{self.mean:.3f}"
        text = f"{mean} [{self.low:.3f}, {self.high:.3f}]"
        return f"{text} n={self.n}" if with_n else text

    def __str__(self) -> str:
        return self.text()


def estimate(
    values: Sequence[float] | np.ndarray | pd.Series,
    draws: Sequence[int] | np.ndarray | pd.Series | None = None,
) -> Estimate:
    """The :class:`Estimate` of per-image values in [0, 1] (booleans count as 0/1); each is
    a fraction of its ``draws`` when given (see :func:`exact_sum`). At least one value.

    >>> str(estimate([True, True, False, True]))
    '0.750 [0.301, 0.954] n=4'
    """
    v = np.asarray(values, dtype=float)
    if len(v) == 0:
        raise ValueError("an accuracy needs at least one image")
    if np.isnan(v).any() or (v < 0).any() or (v > 1).any():
        raise ValueError("per-image accuracies must lie in [0, 1]")
    return Estimate.of(exact_sum(v, draws), len(v))
