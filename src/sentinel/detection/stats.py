"""The statistics detection rests on: the median and MAD baseline of a series' points,
binomial and Poisson tail probabilities, Wilson bounds of a rate, and pooling a share's
points into errors over requests. Points are ``(start, value, observations)``.

What must not live here: what an anomaly is (``model``), judging a series.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime

Point = tuple[datetime, float, int]
_MAD_TO_SIGMA = 1.4826  # MAD of a normal distribution times this is its sigma
MEDIAN_EFFICIENCY = 1.2533  # sd of a sample median / (sigma / sqrt(n)), normal data
# Noise never taken below this share of the baseline level: a flat baseline (MAD 0)
# would otherwise make any wiggle infinitely significant.
_REL_NOISE_FLOOR = 0.02
_ABS_NOISE_FLOOR = 1e-9
_WILSON_Z = 2.0


def median(xs: Sequence[float]) -> float:
    s = sorted(xs)
    n = len(s)
    mid = n // 2
    return s[mid] if n % 2 else (s[mid - 1] + s[mid]) / 2.0


def log10_binomial_tail(k: int, n: int, p: float) -> float:
    """log10 P(X >= k) for X ~ Binomial(n, p), summed in log space (no underflow)."""
    if k <= 0:
        return 0.0
    if k > n:
        return -math.inf
    if p <= 0.0:
        return -math.inf
    if p >= 1.0:
        return 0.0
    lp, lq = math.log(p), math.log1p(-p)
    lgn = math.lgamma(n + 1)
    terms = []
    for j in range(k, n + 1):
        t = lgn - math.lgamma(j + 1) - math.lgamma(n - j + 1) + j * lp + (n - j) * lq
        terms.append(t)
        if j > k and t < terms[0] - 40:  # the rest cannot matter
            break
    top = max(terms)
    return (top + math.log(math.fsum(math.exp(t - top) for t in terms))) / math.log(10)


def log10_poisson_lower(k: int, lam: float) -> float:
    """log10 P(X <= k) for X ~ Poisson(lam)."""
    if lam <= 0:
        return 0.0
    terms = [-lam + j * math.log(lam) - math.lgamma(j + 1) for j in range(k + 1)]
    top = max(terms)
    total = top + math.log(math.fsum(math.exp(t - top) for t in terms))
    return min(total, 0.0) / math.log(10)


def upper_rate(errors: int, n: int) -> float:
    """The upper Wilson score bound (about 97.5 %) of a rate seen as ``errors`` of
    ``n``: about 4/n when no error was seen, close to the rate itself for many."""
    z2 = _WILSON_Z**2
    p = min(max(errors / n, 0.0), 1.0)
    centre = p + z2 / (2 * n)
    spread = _WILSON_Z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return min(1.0, (centre + spread) / (1 + z2 / n))


def lower_rate(errors: int, n: int) -> float:
    """The lower Wilson score bound (about 2.5 %) of a rate seen as ``errors`` of ``n``:
    0 when no error was seen, close to the rate itself for many."""
    z2 = _WILSON_Z**2
    p = min(max(errors / n, 0.0), 1.0)
    centre = p + z2 / (2 * n)
    spread = _WILSON_Z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, (centre - spread) / (1 + z2 / n))


def pool(points: Sequence[Point]) -> tuple[int, int]:
    """(errors, requests) of share points, each weighted by its requests."""
    # Lists, not generators: the same sums in the same order, faster (called on the
    # baseline of every share series at every step).
    errors = sum([v * c for _, v, c in points])
    return round(errors), sum([c for _, _, c in points])


class Baseline:
    """The baseline's points, and their statistics computed when first asked for: the
    full and the fast path judge a series against the same baseline, at every step."""

    __slots__ = ("_level", "_pooled", "points")

    def __init__(self, points: list[Point]) -> None:
        self.points = points
        self._level: tuple[float, float] | None = None
        self._pooled: tuple[int, int] | None = None

    def level(self) -> tuple[float, float]:
        """The median of the values, and the noise around it: the MAD as a sigma, never
        below the floors."""
        if self._level is None:
            values = [v for _, v, _ in self.points]
            m = median(values)
            mad = median([abs(v - m) for v in values])
            sigma = max(_MAD_TO_SIGMA * mad, _REL_NOISE_FLOOR * abs(m), _ABS_NOISE_FLOOR)
            self._level = (m, sigma)
        return self._level

    def pooled(self) -> tuple[int, int]:
        """(errors, requests) of share points (``pool``)."""
        if self._pooled is None:
            self._pooled = pool(self.points)
        return self._pooled
