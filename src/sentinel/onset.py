"""Hindsight onset: when an incident has been open a while, date its start again from the
data that came since.

Detection dates an anomaly when it pages, from the points it has then. A fault that ramps
up over minutes is only beyond the noise part-way up its ramp, so its onset comes out
late (a ramp of 4-8 minutes on a tool called a few times a minute: 2-4 minutes late).
Minutes later the ramp and its plateau are in the data. The incident's anomalies are one
fault seen on several series, so they are fitted together with one time profile: each
series at its baseline until ``t0``, then a straight line to its own plateau at ``t1``
(``t1 == t0``: a step). Every start and shape is weighed by how well it fits (its
likelihood, each series at its best plateau) times its prior (half on a step, half spread
over the ramps), and the onset is the median of the start over all of them. Picking the
one best shape instead dates a ramp late: its first minutes barely leave the baseline, so
a step at its middle fits about as well, and one shape always wins outright. The onset
moves earlier when the fit starts before it, never later: the detected onset already saw
that much.

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
# that estimate a level series' noise (in steps). 40 (20 minutes) since session 16: a
# subtle ramp can page 10-14 minutes after it began, out of reach of the 20 before.
FIT_STEPS_BEFORE = 40
NOISE_STEPS = 20
# The longest ramp fitted, in steps (the simulator's slowest ramps take 8 minutes).
MAX_RAMP_STEPS = 16
# The prior weight of a step among the shapes; the ramps share the rest equally.
STEP_PRIOR = 0.5
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


def _median_start(cells: Sequence[tuple[float, float]]) -> float:
    """The median of the start under the posterior that ``cells`` give as (negative log
    posterior, start) pairs: the start that is as likely to be late as early."""
    lowest = min(c for c, _ in cells)
    mass: dict[float, float] = {}
    for c, t0 in cells:
        mass[t0] = mass.get(t0, 0.0) + math.exp(lowest - c)
    half = math.fsum(mass.values()) / 2.0
    acc = 0.0
    for t0 in sorted(mass):
        acc += mass[t0]
        if acc >= half:
            return t0
    return max(mass)  # not reached: the masses add up to twice half


def refit_reach(step: timedelta) -> timedelta:
    """How far before an anomaly's detected onset the refit reads its series (the fit's
    points and the noise's before them): what a live window must keep."""
    return (FIT_STEPS_BEFORE + NOISE_STEPS) * step


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
    # Negative log posterior of each (start, shape), up to a constant.
    ramp_prior = -math.log((1.0 - STEP_PRIOR) / MAX_RAMP_STEPS)
    cells = [(_cost(series, t0, t0, half) - math.log(STEP_PRIOR), t0) for t0 in starts]
    cells += [
        (_cost(series, t0, t0 + k * step_s, half) + ramp_prior, t0)
        for t0 in starts
        for k in range(1, MAX_RAMP_STEPS + 1)
    ]
    fitted = origin + timedelta(seconds=_median_start(cells))
    where = (
        f"{len(series)} series fitted with a step or a ramp of up to "
        f"{MAX_RAMP_STEPS * step_s:g} s, median start {fitted.isoformat()}"
    )
    if fitted < onset:
        return OnsetFit(onset=fitted, how=f"moved earlier: {where}")
    return OnsetFit(onset=onset, how=f"kept: {where}")
