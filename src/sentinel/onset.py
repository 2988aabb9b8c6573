"""Hindsight onset: when an incident has been open a while, date its start again from the
data that came since.

Detection dates an anomaly when it pages, from the points it has then. A fault that ramps
up over minutes is only beyond the noise part-way up its ramp, so its onset comes out
late (a ramp of 4-8 minutes on a tool called a few times a minute: 2-4 minutes late).
Minutes later the ramp and its plateau are in the data. The incident's anomalies are one
fault seen on several series, so they are fitted together with one time profile: each
series at its baseline until ``t0``, then a straight line to its own plateau at ``t1``
(``t1 == t0``: a step). The ramp needs one more parameter than the step, so it is
preferred only when it fits better by a BIC-like margin. The onset moves earlier when the
fit starts before it, never later: the detected onset already saw that much.

Pure: a function of the incident, its SLIs and the time; the caller (replay and the
Metric Agent, alike) decides when to refit and records the result as an event.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sentinel.detection import Anomaly, is_share
from sentinel.sli import SliKey, SliSeries

# How far before an anomaly's detected onset the fit looks, and how many points before
# that estimate a level series' noise (in steps).
FIT_STEPS_BEFORE = 20
NOISE_STEPS = 20
# The longest ramp fitted, in steps (the simulator's slowest ramps take 8 minutes).
MAX_RAMP_STEPS = 16
# The ramp's extra parameter must buy this many times log(n)/2 of log-likelihood (1 is
# BIC). Chosen on the bench's suite (seed 2026) and checked on another (seed 7): 0.5-1
# gave the same on-time count, 2 and more gave up on ramps that were real.
RAMP_PENALTY = 1.0
# The median of a chi-square with one degree of freedom: a level's noise from the median
# of squared deviations (robust to the baseline's own spikes).
_CHI2_MEDIAN = 0.455


@dataclass(frozen=True, slots=True)
class OnsetFit:
    """The refit's answer: the onset it gives (never later than the one it was given),
    and how it was found, in words for the audit trail."""

    onset: datetime
    how: str


@dataclass(frozen=True, slots=True)
class _Series:
    rows: tuple[tuple[float, float, int], ...]  # (seconds from the origin, value, count)
    base: float
    share: bool
    noise: float  # a level's variance of one observation; unused for shares


def _profile(mid: float, t0: float, t1: float) -> float:
    """The fault's share of its full effect at ``mid``: 0 before t0, 1 from t1."""
    if mid <= t0:
        return 0.0
    if t1 <= t0 or mid >= t1:
        return 1.0
    return (mid - t0) / (t1 - t0)


def _share_cost(rows: Sequence[tuple[float, float, int]], base: float, g: Sequence[float]) -> float:
    """Negative log-likelihood of a share's errors as ``base + (p - base) * g`` at each
    point, at the plateau ``p`` that fits best (Newton from the least-squares value: the
    likelihood is concave in p)."""

    def clip(q: float) -> float:
        return min(max(q, 1e-6), 1.0 - 1e-6)

    num = math.fsum((v * c - c * base) * gi for (_, v, c), gi in zip(rows, g, strict=True))
    den = math.fsum(c * gi * gi for (_, _, c), gi in zip(rows, g, strict=True))
    p = clip(base + num / den) if den > 0 else clip(base)
    for _ in range(6):
        d1 = d2 = 0.0
        for (_, v, c), gi in zip(rows, g, strict=True):
            if gi == 0.0:
                continue
            q = clip(base + (p - base) * gi)
            e = v * c
            d1 += gi * (e / q - (c - e) / (1.0 - q))
            d2 += gi * gi * (e / (q * q) + (c - e) / ((1.0 - q) ** 2))
        if d2 <= 0:
            break
        p = clip(p + d1 / d2)
    total = 0.0
    for (_, v, c), gi in zip(rows, g, strict=True):
        q = clip(base + (p - base) * gi)
        e = v * c
        total -= e * math.log(q) + (c - e) * math.log1p(-q)
    return total


def _level_cost(s: _Series, g: Sequence[float]) -> float:
    """Negative log-likelihood (up to a constant) of a level series as ``base + d * g``,
    each point's variance the noise over its count, at the ``d`` that fits best."""
    num = math.fsum(c * gi * (v - s.base) for (_, v, c), gi in zip(s.rows, g, strict=True))
    den = math.fsum(c * gi * gi for (_, _, c), gi in zip(s.rows, g, strict=True))
    d = num / den if den > 0 else 0.0
    sq = math.fsum(c * (v - s.base - d * gi) ** 2 for (_, v, c), gi in zip(s.rows, g, strict=True))
    return sq / (2.0 * s.noise)


def _cost(series: Sequence[_Series], t0: float, t1: float, half_step: float) -> float:
    total = 0.0
    for s in series:
        g = [_profile(t + half_step, t0, t1) for t, _, _ in s.rows]
        total += _share_cost(s.rows, s.base, g) if s.share else _level_cost(s, g)
    return total


def _series(
    anomaly: Anomaly, series: SliSeries, now: datetime, origin: datetime, step: timedelta
) -> _Series | None:
    """The anomaly's points from FIT_STEPS_BEFORE steps before its onset to the last
    complete step before ``now`` (points without observations left out), in seconds from
    ``origin``; None when there is nothing to fit or no noise to measure."""
    complete = [r for r in series.rows if r[0] + step <= now]
    before = [i for i, r in enumerate(complete) if r[0] <= anomaly.onset]
    if not before:
        return None
    i_on = before[-1]
    start = max(0, i_on - FIT_STEPS_BEFORE)
    rows = tuple(((t - origin).total_seconds(), v, c) for t, v, c in complete[start:] if c > 0)
    share = is_share(anomaly.sli)
    noise = 1.0
    if not share:
        quiet = [
            c * (v - anomaly.baseline) ** 2
            for _, v, c in complete[max(0, start - NOISE_STEPS) : start]
            if c > 0
        ]
        if not quiet:
            return None
        noise = max(statistics.median(quiet) / _CHI2_MEDIAN, 1e-12)
    if len(rows) < 3:
        return None
    return _Series(rows=rows, base=anomaly.baseline, share=share, noise=noise)


def refit_onset(
    anomalies: Sequence[Anomaly],
    onset: datetime,
    opened_at: datetime,
    slis: Mapping[SliKey, SliSeries],
    now: datetime,
    step: timedelta,
) -> OnsetFit:
    """The onset of an incident opened at ``opened_at`` with ``anomalies`` and ``onset``,
    fitted again on its SLIs up to ``now``: the fitted start when it is earlier (a ramp,
    or a step the detection dated late), else ``onset`` unchanged."""
    origin = opened_at
    series = [
        s
        for a in anomalies
        if (found := slis.get(a.key)) is not None
        and (s := _series(a, found, now, origin, step)) is not None
    ]
    if not series:
        return OnsetFit(onset=onset, how="kept: no series to fit")
    step_s = step.total_seconds()
    half = step_s / 2.0
    lowest = -FIT_STEPS_BEFORE * step_s
    starts = sorted({t for s in series for t, _, _ in s.rows if lowest <= t <= 0.0})
    if not starts:
        return OnsetFit(onset=onset, how="kept: no points before the incident opened")
    best_step = min((_cost(series, t0, t0, half), t0) for t0 in starts)
    best_ramp = min(
        (_cost(series, t0, t0 + k * step_s, half), t0, k)
        for t0 in starts
        for k in range(1, MAX_RAMP_STEPS + 1)
    )
    n = sum(len(s.rows) for s in series)
    if best_ramp[0] + RAMP_PENALTY * math.log(max(n, 2)) / 2.0 < best_step[0]:
        t0, shape = best_ramp[1], f"a ramp of {best_ramp[2] * step_s:g} s"
    else:
        t0, shape = best_step[1], "a step"
    fitted = origin + timedelta(seconds=t0)
    where = f"{len(series)} series fitted as {shape} from {fitted.isoformat()}"
    if fitted < onset:
        return OnsetFit(onset=fitted, how=f"moved earlier: {where}")
    return OnsetFit(onset=onset, how=f"kept: {where}")
