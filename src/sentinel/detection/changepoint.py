"""Where a shift found by a detector starts: the best two-level split of the recent
points, moved back over the points already beyond the baseline, and a ramp's line
extended back to where it leaves the baseline (``located``).

What must not live here: deciding whether there is a shift (``detectors``), the
hindsight refit of an incident's onset (``sentinel.onset``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import datetime

from sentinel.detection.model import Anomaly, Detector
from sentinel.detection.stats import Point, median, pool
from sentinel.sli import SliKey

# A point before the change point this far beyond the baseline (robust z, or binomial
# tail probability for shares) already belongs to the shift: it is where a ramp starts.
ONSET_Z = 3.0
ONSET_LOG10_P = -2.0


def located(
    key: SliKey,
    recent: list[Point],
    valid: Sequence[int],
    *,
    before: float,
    baseline: float,
    score: float,
    beyond: Callable[[float, int], bool],
    pooled: bool = False,
    detector: Detector = Detector.LEVEL_SHIFT,
) -> Anomaly:
    """The anomaly a detector found, with its onset placed: the best two-level split
    among ``valid``, moved back to where the shift starts (the points ``beyond`` the
    baseline just before it), and the level observed since. ``pooled``: a share, whose
    level is errors over requests of the whole tail (and whose split is weighted)."""
    split = change_point(recent, valid, before, weighted=pooled)
    k = shift_start(recent, split, beyond)
    if pooled:
        err, n = pool(recent[split:])
        level = err / n
    else:
        level = median([v for _, v, _ in recent[split:]])
    k = ramp_start(recent, k, split, baseline, level, weighted=pooled)
    if pooled:
        err, n = pool(recent[k:])
        observed = err / n
    else:
        observed = median([v for _, v, _ in recent[k:]])
    return Anomaly(
        component=key.component,
        sli=key.kind,
        qualifier=key.qualifier,
        onset=recent[k][0],
        baseline=baseline,
        observed=observed,
        score=round(score, 3),
        detector=detector,
    )


def change_point(
    recent: Sequence[Point], valid: Sequence[int], before: float, *, weighted: bool
) -> int:
    """The split of ``valid`` that best fits the recent points as two levels: the
    baseline's before it, the tail's own after it (least absolute deviations, each point
    weighted by its observations for shares). The split of the strongest evidence would
    be biased early: a median stays high with almost half the tail from before."""

    def cost(k: int) -> float:
        tail = recent[k:]
        if weighted:
            return binomial_cost(recent, k, before)
        level = median([v for _, v, _ in tail])
        return math.fsum(
            abs(v - (before if i < k else level)) for i, (_, v, _) in enumerate(recent)
        )

    # Any split from the earliest significant one on: the tail after the onset may be
    # shorter than the persistence (the last points of a share can be too small to
    # contradict a shift they do not show yet), and the fit alone places it.
    return min(range(min(valid), len(recent)), key=lambda k: (cost(k), k))


def binomial_cost(recent: Sequence[Point], k: int, before: float) -> float:
    """Negative log-likelihood of the shares' errors as two binomial levels: ``before``
    up to split ``k``, the tail's pooled rate after it (the maximum-likelihood change
    point of counts; rates kept off 0 and 1 so that one error does not cost infinity)."""
    err, n = pool(recent[k:])
    after = err / n if n else before

    def nll(points: Sequence[Point], p: float) -> float:
        p = min(max(p, 1e-6), 1.0 - 1e-6)
        lp, lq = math.log(p), math.log1p(-p)
        return -math.fsum(v * c * lp + (c - v * c) * lq for _, v, c in points)

    return nll(recent[:k], before) + nll(recent[k:], after)


def shift_start(recent: Sequence[Point], k: int, beyond: Callable[[float, int], bool]) -> int:
    """The first point of the shift that ends at split ``k``: the two-level fit puts a
    ramp's onset mid-ramp (where its level is half-way), so the split moves back over the
    points just before it that are already clearly beyond the baseline's noise (a
    CUSUM-like start: where the excursion that led to the shift began)."""
    while k > 0 and beyond(recent[k - 1][1], recent[k - 1][2]):
        k -= 1
    return k


def ramp_start(
    recent: Sequence[Point],
    start: int,
    split: int,
    baseline: float,
    level: float,
    *,
    weighted: bool,
) -> int:
    """Where a ramp leaves the baseline. The first point clearly beyond the noise is
    already part-way up a slow ramp (a third of the way, for a shift of nine noise
    widths): the points from there until the tail's level is reached are fitted with a
    line (least squares, weighted by observations for shares), extended back to the
    baseline. The extension never goes further back than the ramp's visible length,
    and an abrupt step (no ramp points) stays where it is."""
    up = level > baseline
    # The ramp ends where it is nine tenths of the way (the plateau's noise would bend
    # the line).
    top = baseline + 0.9 * (level - baseline)
    end = split
    while end < len(recent) - 1 and (recent[end][1] < top if up else recent[end][1] > top):
        end += 1
    idx = list(range(start, end + 1))
    if len(idx) < 3:
        return start
    w = [float(recent[i][2]) if weighted else 1.0 for i in idx]
    ys = [recent[i][1] for i in idx]
    sw = math.fsum(w)
    if sw <= 0:
        return start
    mx = math.fsum(wi * x for wi, x in zip(w, idx, strict=True)) / sw
    my = math.fsum(wi * y for wi, y in zip(w, ys, strict=True)) / sw
    sxx = math.fsum(wi * (x - mx) ** 2 for wi, x in zip(w, idx, strict=True))
    sxy = math.fsum(wi * (x - mx) * (y - my) for wi, x, y in zip(w, idx, ys, strict=True))
    if sxx <= 0 or sxy == 0 or (sxy > 0) != up:
        return start  # no rise (or fall) toward the level: nothing to extend
    slope = sxy / sxx
    at_baseline = mx + (baseline - my) / slope
    earliest = max(0, start - (end - start))
    # The first point the ramp has lifted by a quarter of its rise per point: a point on
    # the crossing itself still sits at the baseline.
    return max(earliest, min(start, math.ceil(at_baseline + 0.25)))


def within_point(
    found: Anomaly, steps: Sequence[Point], start: datetime, end: datetime, *, share: bool
) -> datetime:
    """Where, inside the longer point ``[start, end)`` that a coarse anomaly was dated at,
    the step points put its onset: the step start that best splits them into the
    baseline before and the level observed after (the binomial likelihood for shares,
    least absolute deviations for levels; the earliest of equals, ``start`` when no step
    point there has observations). The coarse point alone would date an onset up to a
    coarse point early, before the steps the fault has not reached yet."""
    inside = [p for p in steps if start <= p[0] < end and p[2] > 0]

    def loss(v: float, c: int, level: float) -> float:
        if not share:
            return abs(v - level)
        q = min(max(level, 1e-6), 1.0 - 1e-6)
        e = v * c
        return -(e * math.log(q) + (c - e) * math.log1p(-q))

    def cost(at: datetime) -> float:
        return math.fsum(
            loss(v, c, found.baseline if t < at else found.observed) for t, v, c in inside
        )

    candidates = [start, *(t for t, _, _ in inside if t > start)]
    return min(candidates, key=lambda at: (cost(at), at))
