"""Paired comparisons of two accuracies on the same images, corrected for how many are made.

Per-image differences of robust accuracies are coarse (steps of 1/R) and few (tens of
images), so no normal or t approximation is assumed:

- the test is the sign-flip permutation test of the mean difference (Fisher's randomisation
  test for paired data): under "no difference" each image's difference is as likely
  negated, so the p-value is the share of the 2^n sign patterns whose mean is at least as
  far from 0 as the observed one; exact up to 2^16 patterns, else 20,000 seeded random
  patterns, counting the observed one (:func:`sign_flip_p`);
- the interval is the 95% percentile bootstrap over images, seeded (:func:`bootstrap_interval`);
- m comparisons made together are corrected by Holm's step-down method (:func:`holm`), which
  controls the chance of any false "resolved" at 5% and is uniformly more powerful than
  Bonferroni's.

Every comparison is against a reference chosen before the results are seen (a preset lists
the paper's attack first), never against the lowest of the set.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

EXACT_LIMIT = 16
"""Up to this many non-zero differences the sign-flip test enumerates every pattern."""

RANDOM_PATTERNS = 20_000
"""Sign patterns drawn (seeded) above :data:`EXACT_LIMIT`."""

BOOTSTRAP_RESAMPLES = 10_000
ALPHA = 0.05


def _differences(
    first: Sequence[float] | np.ndarray | pd.Series,
    second: Sequence[float] | np.ndarray | pd.Series,
) -> np.ndarray:
    a, b = np.asarray(first, dtype=float), np.asarray(second, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired values need equal 1-D shapes, got {a.shape} and {b.shape}")
    if len(a) < 2:
        raise ValueError("a paired comparison needs at least two images")
    if np.isnan(a).any() or np.isnan(b).any():
        raise ValueError("paired values must not be NaN")
    return a - b


def sign_flip_p(differences: Sequence[float] | np.ndarray, seed: int = 0) -> float:
    """Two-sided p-value of the sign-flip permutation test that the mean of the paired
    ``differences`` is 0. Zeros are left out (a flip does not change them).

    >>> sign_flip_p([1.0, 1.0, 1.0, 1.0, 1.0])  # 2 of the 32 patterns are as extreme
    0.0625
    >>> sign_flip_p([0.0, 0.0, 0.0])
    1.0
    """
    d = np.asarray(differences, dtype=float)
    d = d[d != 0.0]
    if len(d) == 0:
        return 1.0
    observed = abs(d.sum()) - 1e-12 * max(1.0, float(np.abs(d).sum()))  # float ties count
    if len(d) <= EXACT_LIMIT:
        bits = (np.arange(2 ** len(d))[:, None] >> np.arange(len(d))) & 1  # (2^n, n)
        signs = 1.0 - 2.0 * bits
        return float((np.abs(signs @ d) >= observed).mean())
    rng = np.random.default_rng(seed)
    signs = rng.choice((1.0, -1.0), size=(RANDOM_PATTERNS, len(d)))  # (M, n)
    extreme = int((np.abs(signs @ d) >= observed).sum())
    return (1 + extreme) / (1 + RANDOM_PATTERNS)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the given order: the i-th smallest of m is
    multiplied by m - i + 1 (i from 1), made non-decreasing, capped at 1.

    >>> holm([0.01, 0.04, 0.03])
    [0.03, 0.06, 0.06]
    """
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * float(p_values[i])))
        adjusted[i] = round(running, 12)
    return adjusted


def bootstrap_interval(
    differences: Sequence[float] | np.ndarray, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """The percentile bootstrap interval of the mean of ``differences`` (resampling images,
    :data:`BOOTSTRAP_RESAMPLES` seeded resamples)."""
    d = np.asarray(differences, dtype=float)
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), size=(BOOTSTRAP_RESAMPLES, len(d)))].mean(axis=1)
    tail = (1.0 - level) / 2.0
    return float(np.quantile(means, tail)), float(np.quantile(means, 1.0 - tail))


@dataclass(frozen=True)
class Comparison:
    """One accuracy minus a reference on the same n images: the mean difference, its 95%
    bootstrap interval, the sign-flip p-value and the p-value after Holm's correction over
    the ``family`` comparisons made together."""

    mean: float
    n: int
    low: float
    high: float
    p: float
    p_holm: float
    family: int

    @property
    def resolved(self) -> bool:
        """Does the difference survive the correction (Holm-adjusted p < 0.05)?"""
        return self.p_holm < ALPHA

    def text(self) -> str:
        """``-0.083 [-0.150, -0.017] n=30, p = 0.031, Holm (3) p = 0.093``."""
        return (
            f"{self.mean:+.3f} [{self.low:+.3f}, {self.high:+.3f}] n={self.n}, "
            f"p = {self.p:.3f}, Holm ({self.family}) p = {self.p_holm:.3f}"
        )


def compare_to_reference(
    per_image: pd.DataFrame, reference: str, seed: int = 0
) -> dict[str, Comparison]:
    """Each column of ``per_image`` (images x accuracies, no NaN) but ``reference`` minus
    ``reference``, tested together (Holm over the columns compared)."""
    if reference not in per_image:
        raise ValueError(f"the reference {reference!r} is not among {list(per_image)}")
    others = [c for c in per_image.columns if c != reference]
    diffs = {c: _differences(per_image[c], per_image[reference]) for c in others}
    p = [sign_flip_p(diffs[c], seed) for c in others]
    adjusted = holm(p)
    out: dict[str, Comparison] = {}
    for column, p_raw, p_adj in zip(others, p, adjusted, strict=True):
        d = diffs[column]
        low, high = bootstrap_interval(d, seed)
        out[str(column)] = Comparison(float(d.mean()), len(d), low, high, p_raw, p_adj, len(others))
    return out
