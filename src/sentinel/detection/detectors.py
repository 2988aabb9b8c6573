"""The detectors of one series against its baseline: a level shift of a continuous SLI
(robust z of the tail's median), a share's shift or an error type's emergence (binomial
tail of the pooled errors), and a drop of traffic (Poisson count). Each takes the
bars to judge by (the full path's, the fast path's) and returns the anomaly with its
onset placed (``changepoint``), or None.

What must not live here: which points and which bars a series is judged on (``judge``).
"""

from __future__ import annotations

import math

from sentinel.detection.changepoint import ONSET_LOG10_P, ONSET_Z, located
from sentinel.detection.model import (
    Anomaly,
    Detector,
    Direction,
    big_enough,
    direction_of,
    is_error_type,
)
from sentinel.detection.stats import (
    MEDIAN_EFFICIENCY,
    Baseline,
    Point,
    log10_binomial_tail,
    log10_poisson_lower,
    median,
    pool,
    upper_rate,
)
from sentinel.settings import DetectionSettings
from sentinel.sli import SliKey

# A point whose errors are this unlikely under the minimum effect contradicts the shift.
_CONSISTENT = 0.01
_SPIKE_ONLY = 0.01


def detect_level(
    key: SliKey, base: Baseline, recent: list[Point], s: DetectionSettings
) -> Anomaly | None:
    kind = key.kind
    sign = 1.0 if direction_of(kind) is Direction.UP else -1.0
    m, sigma = base.level()
    if not all(big_enough(kind, m, v, s) for _, v, _ in recent[-s.persistence_points :]):
        return None  # not (or no longer) beyond the minimum effect: nothing persists
    # A point resting on fewer observations than the baseline's typical point is noisier
    # (a p50 of 4 calls against one of 20): its deviation is scaled down by the square
    # root of the ratio, never up (a busy point is not trusted more than the baseline).
    c_ref = median([float(c) for _, _, c in base.points])
    devs = [sign * (v - m) / (sigma * max(1.0, math.sqrt(c_ref / max(c, 1)))) for _, v, c in recent]
    valid: list[int] = []
    best: tuple[float, int, float] | None = None
    for k in range(len(recent) - s.persistence_points + 1):
        tail = [v for _, v, _ in recent[k:]]
        observed = median(tail)
        if not big_enough(kind, m, observed, s):
            continue
        z = median(devs[k:]) * math.sqrt(len(tail)) / MEDIAN_EFFICIENCY
        if z >= s.min_z:
            valid.append(k)
            if best is None or z > best[0]:
                best = (z, k, observed)
    if best is None:
        return None
    return located(
        key,
        recent,
        valid,
        before=m,
        baseline=m,
        score=best[0],
        beyond=lambda v, _c: sign * (v - m) > ONSET_Z * sigma,
    )


def detect_traffic_drop(
    key: SliKey, base: Baseline, recent: list[Point], s: DetectionSettings
) -> Anomaly | None:
    """A drop of the request rate: the requests since the split against a Poisson count
    at the baseline's median rate (so a quiet component's natural lulls do not page)."""
    kind = key.kind
    # Calls come in bursts (an agent run makes several), so counts vary more than a
    # Poisson count: the tail must also stand out of the baseline's own spread (sigma).
    m, sigma = base.level()
    if m <= 0:
        return None
    if not all(big_enough(kind, m, v, s) for _, v, _ in recent[-s.persistence_points :]):
        return None
    step = s.step_seconds
    valid: list[int] = []
    best: tuple[float, int, float] | None = None
    for k in range(len(recent) - s.persistence_points + 1):
        tail = recent[k:]
        seen = sum(c for _, _, c in tail)
        observed = median([v for _, v, _ in tail])
        if not big_enough(kind, m, observed, s):
            continue
        score = -log10_poisson_lower(seen, m * step * len(tail))
        z = (m - observed) / (MEDIAN_EFFICIENCY * sigma / math.sqrt(len(tail)))
        significant = score >= -math.log10(s.max_p_value) and z >= s.min_z
        if significant:
            valid.append(k)
            if best is None or score > best[0]:
                best = (score, k, observed)
    if best is None:
        return None
    return located(
        key,
        recent,
        valid,
        before=m,
        baseline=m,
        score=best[0],
        beyond=lambda v, _c: m - v > ONSET_Z * sigma,
    )


def detect_share(
    key: SliKey, base: Baseline, recent: list[Point], s: DetectionSettings
) -> Anomaly | None:
    kind = key.kind
    # No error in the last points is no shift whatever the baseline: checked first, as
    # most share series at most steps have none.
    last = recent[-s.persistence_points :]
    l_err, l_n = pool(last)
    if l_n == 0 or l_err == 0:
        return None
    b_err, b_n = base.pooled()
    if b_n <= 0:
        return None
    p0 = b_err / b_n
    # The baseline rate is an estimate: it is tested at its upper confidence bound, so a
    # baseline that saw no error by chance (a quiet component) does not make a few
    # errors look impossible.
    p_null = upper_rate(b_err, b_n)
    emerging = b_err == 0 and is_error_type(key)
    if not emerging:
        if not big_enough(kind, p0, l_err / l_n, s):
            return None
        # Every one of the last points must be beyond the minimum effect, or too small
        # (few requests) to say it is not: a point of 5 requests without an error does
        # not end a 30 % error rate, one of 2,000 requests does.
        p_effect = min(1.0, max(p0 + s.error_rate_min_increase, p0 * s.error_rate_min_ratio))
        for _, v, c in last:
            if big_enough(kind, p0, v, s):
                continue
            below = 1.0 - 10 ** log10_binomial_tail(round(v * c) + 1, c, p_effect)
            if below < _CONSISTENT:
                return None
        # Nor may one point carry the shift alone: without its most erroneous point, the
        # others together must still be consistent with the minimum effect (one spike of
        # 8 errors then three clean points of 50 requests is a spike, not a shift).
        rest = sorted(last, key=lambda p: p[1] * p[2])[:-1]
        r_err, r_n = pool(rest)
        if r_n and 1.0 - 10 ** log10_binomial_tail(r_err + 1, r_n, p_effect) < _SPIKE_ONLY:
            return None
    valid: list[int] = []
    best: tuple[float, int, float] | None = None
    # What pool sums for each point, built once for all the splits (summing slices of
    # these in the same order gives exactly pool's numbers).
    errors = [v * c for _, v, c in recent]
    counts = [c for _, _, c in recent]
    for k in range(len(recent) - s.persistence_points + 1):
        err, n = round(sum(errors[k:])), sum(counts[k:])
        if n == 0:
            continue
        observed = err / n
        if emerging:
            if err < s.emergence_min_errors:
                continue
        elif not big_enough(kind, p0, observed, s):
            continue
        score = -log10_binomial_tail(err, n, p_null)
        if score >= -math.log10(s.max_p_value):
            valid.append(k)
            if best is None or score > best[0]:
                best = (score, k, observed)
    if best is None:
        return None
    found = located(
        key,
        recent,
        valid,
        before=p_null,
        baseline=p0,
        score=min(best[0], 1e6),
        beyond=lambda v, c: v > p0 and log10_binomial_tail(round(v * c), c, p_null) < ONSET_LOG10_P,
        pooled=True,
        detector=Detector.EMERGENCE if emerging else Detector.LEVEL_SHIFT,
    )
    # The errors may sit in the last points only, after a quiet start of the persistence
    # window: the shift dated there has not held the persistence yet.
    if found.onset > recent[-s.persistence_points][0]:
        return None
    return found
