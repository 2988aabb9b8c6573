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
moves earlier when the fit starts before it. It moves later back towards the onset the
incident opened with, when an anomaly merged since dated it earlier: each anomaly is
dated on its own series, back over the points before it already beyond the baseline,
and on a noisy p95 one such point before the fault drags the incident minutes early,
where the joint fit of all its series does not (since session 22: five suites, 6 more
onsets within 90 s, none lost). Otherwise never later than the opening onset (but for a
change, below): the detection had seen the fault from there, and a long ramp (a memory
leak over 20 minutes, longer than the fit's longest) is fitted late.

A change to one of the incident's components (a deploy, a prompt or config commit) is
evidence of when the fault began: most faults follow a change within minutes. The start
prior gives a share of its mass (``change_prior``) to the points within ``CHANGE_LAG``
after such a change, and spreads the rest over every start as before. The data still
decide: a change long before data that sat at the baseline does not move the onset, and
a red-herring change only matters where the fit could not tell the start anyway.

A change is also the one reason to date a fault later than the detection saw it. An
evaluator score or a p50 that wandered beyond its baseline a few minutes before a prompt
commit dates the incident before the commit; when the fit, weighing the commit, starts
the fault just after it, the onset is the fitted start: the change and the data agree,
and what came before the change was noise (since session 28; recorded refits of 600
cases, onsets within 90 s: +0 on the five development suites, +3 on the six held out,
+1 on suites 11 12 13, none lost). Without a change, a fit that starts later than the
detection does not move the onset: resource exhaustions and rate limits are fitted late
with certainty (session 27).

The likelihood is the normal one for levels and the binomial one for shares, with three
guards against what real series do to it (since session 24; five suites, 186 -> 193
onsets within 90 s): one level point costs at most what a point 10 noise widths off
costs (``OUTLIER_COST``: a stalled call held in a p50 must not date the fault); the noise
of durations, tokens, cost and steps grows with their level on the plateau;
and a share's baseline is at least half an error over the calls the fit saw before the
onset, so that one seen at 0 does not make a stray error impossible.

A level whose points since its anomaly's onset mostly sit within the baseline's noise is
set aside when the incident has a steadier series to fit (``STEADY_SHARE``; since
session 27). A p95 of a dozen calls is their slowest call: a tool that times out now and
then gives a train of spikes, not a level that moved, and its first spike weighs tens of
nats against every start before it, so the joint fit put the start there with certainty
and the shares' own evidence (errors from the first minute) did not count.

Pure: a function of the incident, its SLIs and the time; the caller (replay and the
Metric Agent, alike) decides when to refit and records the result as an event.
"""

from __future__ import annotations

import math
import statistics
from bisect import bisect_left, bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sentinel.detection import Anomaly, Direction, direction_of, is_multiplicative, is_share
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
# How soon after a change its fault shows: the start prior's extra mass lies on the points
# from the one holding the change to this long after it (a rollout, then the first
# affected calls).
CHANGE_LAG = timedelta(minutes=2)
# The median of a chi-square with one degree of freedom: a level's noise from the median
# of squared deviations (robust to the baseline's own spikes).
_CHI2_MEDIAN = 0.455
# What one level point costs at most: what a point 10 noise widths off the profile costs
# (z^2 / 2). A stalled call held in a p50, or two timeouts in a p95, sit hundreds of
# widths off a quiet baseline; under the normal likelihood alone such a point outweighs
# every other, and the fit puts the start at it (the start then explains it as the
# plateau's first point). Capped, it is an outlier under any profile and the other points
# decide. Five suites (214 cases, every refit recorded and scored again offline), onsets
# within 90 s at a cap of 3 widths: 190, 5: 191, 6: 192, 7 to 12: 193, 16: 191, 32: 189;
# uncapped (with the two guards below): 181.
OUTLIER_COST = 50.0
# A level series is steady when at least this share of its points since its anomaly's
# onset are beyond the baseline by ``BEYOND_WIDTHS`` noise widths (in its bad direction);
# the others are set aside when a steady one remains. Recorded refits of 600 cases (the
# five suites, the six held out, suites 11 12 13), onsets within 90 s against none set
# aside: at 0.3 and 0.4, +0/+2/+0; at 0.5, +1/+3/+0; at 0.6, +0/+3/-1; at 0.7, +0/+0/+0.
STEADY_SHARE = 0.5
BEYOND_WIDTHS = 3.0


@dataclass(frozen=True, slots=True)
class OnsetFit:
    """The refit's answer: the onset it gives (never later than the one it was given,
    or than ``latest`` when that is later, but for a start just after a change), and
    how it was found, in words for the audit trail."""

    onset: datetime
    how: str


@dataclass(frozen=True, slots=True)
class _Series:
    rows: tuple[tuple[float, float, int], ...]  # (seconds from the origin, value, count)
    base: float
    share: bool
    noise: float  # a level's variance of one observation; unused for shares
    # A level whose noise grows with it (``is_multiplicative``: durations, tokens, cost,
    # steps; a p95 of 3 s wanders by seconds where its 0.3 s baseline wandered by
    # tenths). On the plateau its noise is the baseline's times plateau / baseline, so a
    # slow provider's wider p99 is not read as evidence against its start.
    scaled: bool = False
    # Whether the series moved and stayed (``STEADY_SHARE``); shares always count as such.
    steady: bool = True


class _Sums:
    """A series' points as running sums, so that a profile's cost reads the points before
    its start as one difference (the refit weighs hundreds of profiles: a loop over every
    point made it most of a replay). A share's plateau is one difference too; a level's
    plateau is summed point by point, each point's cost capped (``OUTLIER_COST``): a
    median refit of 64 ms instead of 36. ``mids``: each point's middle, in time order."""

    __slots__ = ("base", "c", "capped", "cum", "e", "mids", "noise", "r", "scaled", "share")

    def __init__(self, s: _Series, half_step: float) -> None:
        self.base, self.share, self.noise = s.base, s.share, s.noise
        self.scaled = s.scaled and s.base > 0
        self.mids = [t + half_step for t, _, _ in s.rows]
        self.e = [v * c for _, v, c in s.rows]  # errors (shares)
        self.c = [float(c) for _, _, c in s.rows]
        self.r = [v - s.base for _, v, _ in s.rows]  # deviation from the baseline (levels)
        # Running sums from the first point: errors, non-errors, counts, c*r.
        self.cum = [(0.0, 0.0, 0.0, 0.0)]
        for e, c, r in zip(self.e, self.c, self.r, strict=True):
            a = self.cum[-1]
            self.cum.append((a[0] + e, a[1] + c - e, a[2] + c, a[3] + c * r))
        # A level's running sum of each point's cost at the baseline, capped.
        self.capped = [0.0]
        if not s.share:
            for c, r in zip(self.c, self.r, strict=True):
                cost = min(c * r * r / (2.0 * s.noise), OUTLIER_COST)
                self.capped.append(self.capped[-1] + cost)

    def between(self, i: int, j: int) -> tuple[float, ...]:
        """The running sums over points i..j-1."""
        a, b = self.cum[i], self.cum[j]
        return tuple(y - x for x, y in zip(a, b, strict=True))

    def cost(self, t0: float, t1: float) -> float:
        """Negative log-likelihood of the points under the profile from t0 to t1 (a step
        when t1 <= t0), at the plateau that fits best."""
        i = bisect_right(self.mids, t0)  # the first point past the start
        j = i if t1 <= t0 else max(i, bisect_left(self.mids, t1))  # the first on the plateau
        ramp = [(k, (self.mids[k] - t0) / (t1 - t0)) for k in range(i, j)]
        top = self.between(j, len(self.mids))
        if self.share:
            return self._share(self.between(0, i), top, ramp)
        return self._level(i, j, top, ramp)

    def _share(
        self, pre: tuple[float, ...], top: tuple[float, ...], ramp: list[tuple[int, float]]
    ) -> float:
        """A share's errors as ``base + (p - base) * g`` at each point, at the ``p`` that
        fits best (Newton from the least-squares value: the likelihood is concave in p)."""
        base = self.base
        num = (
            top[0] - top[2] * base + math.fsum((self.e[k] - self.c[k] * base) * g for k, g in ramp)
        )
        den = top[2] + math.fsum(self.c[k] * g * g for k, g in ramp)
        p = _clip(base + num / den) if den > 0 else _clip(base)
        for _ in range(6):
            d1 = top[0] / p - top[1] / (1.0 - p)
            d2 = top[0] / (p * p) + top[1] / ((1.0 - p) ** 2)
            for k, g in ramp:
                q = _clip(base + (p - base) * g)
                e, f = self.e[k], self.c[k] - self.e[k]
                d1 += g * (e / q - f / (1.0 - q))
                d2 += g * g * (e / (q * q) + f / ((1.0 - q) ** 2))
            if d2 <= 0:
                break
            p = _clip(p + d1 / d2)
        q0 = _clip(base)
        total = -(pre[0] * math.log(q0) + pre[1] * math.log1p(-q0))
        total -= top[0] * math.log(p) + top[1] * math.log1p(-p)
        for k, g in ramp:
            q = _clip(base + (p - base) * g)
            total -= self.e[k] * math.log(q) + (self.c[k] - self.e[k]) * math.log1p(-q)
        return total

    def _level(
        self, i: int, j: int, top: tuple[float, ...], ramp: list[tuple[int, float]]
    ) -> float:
        """A level as ``base + d * g``, each point's variance the noise over its count
        (times the profile's level over the baseline, squared, for a scaled level), at the
        ``d`` that fits best by least squares; each point's cost capped at
        ``OUTLIER_COST`` (up to a constant). Points ``i..j-1`` are on the ramp, from ``j``
        on the plateau."""
        c, r, cap = self.c, self.r, OUTLIER_COST
        num = top[3] + math.fsum(c[k] * g * r[k] for k, g in ramp)
        den = top[2] + math.fsum(c[k] * g * g for k, g in ramp)
        d = num / den if den > 0 else 0.0
        cost = self.capped[i]  # the points before the start, at the baseline
        for k, g in ramp:
            scale = self._scale(d * g)
            cost += min(c[k] * (r[k] - d * g) ** 2 / (2.0 * self.noise * scale * scale), cap)
            cost += math.log(scale)
        scale = self._scale(d)
        inv = 1.0 / (2.0 * self.noise * scale * scale)
        cost += math.fsum(min(c[k] * (r[k] - d) ** 2 * inv, cap) for k in range(j, len(r)))
        return cost + (len(r) - j) * math.log(scale)

    def _scale(self, rise: float) -> float:
        """How much wider than the baseline's the noise is ``rise`` above it: the level
        over the baseline for a scaled level (never under a twentieth), else 1."""
        if not self.scaled:
            return 1.0
        return max(self.base + rise, 0.05 * self.base) / self.base


def _clip(q: float) -> float:
    return min(max(q, 1e-6), 1.0 - 1e-6)


def _cost(series: Sequence[_Sums], t0: float, t1: float) -> float:
    return math.fsum(s.cost(t0, t1) for s in series)


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
    base = anomaly.baseline
    if share:
        # A share its baseline saw at 0 is not impossible. At 0 the likelihood puts one
        # stray error before the fault at 1e-6 (14 nats, minutes of misfit), and the
        # start is dragged back to it. So the baseline is at least half an error over
        # the calls the fit sees before the onset (Jeffreys' estimate of a rate never
        # seen); it also lifts a rate under that, from a longer baseline, a little.
        seen = sum(c for t, _, c in complete[start:] if t < anomaly.onset)
        base = max(base, 0.5 / max(seen, 1))
    return _Series(
        rows=rows,
        base=base,
        share=share,
        noise=noise,
        scaled=is_multiplicative(anomaly.sli),
        steady=share or _steady(anomaly, complete, noise),
    )


def _steady(anomaly: Anomaly, rows: Sequence[tuple[datetime, float, int]], noise: float) -> bool:
    """Whether at least ``STEADY_SHARE`` of the level's points (with observations) since
    its anomaly's onset are ``BEYOND_WIDTHS`` noise widths beyond the baseline, in the
    direction that is bad for its kind (a point of ``c`` observations is ``noise / c``
    wide). None since the onset: steady (nothing says otherwise)."""
    sign = 1.0 if direction_of(anomaly.sli) is Direction.UP else -1.0
    since = [
        sign * (v - anomaly.baseline) > BEYOND_WIDTHS * math.sqrt(noise / c)
        for t, v, c in rows
        if t >= anomaly.onset and c > 0
    ]
    return not since or sum(since) >= STEADY_SHARE * len(since)


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


def _just_after(t: float, change: float, step_s: float) -> bool:
    """Whether a start ``t`` lies from the point holding ``change`` to ``CHANGE_LAG``
    after it (seconds from the same origin)."""
    return change - step_s < t <= change + CHANGE_LAG.total_seconds()


def _start_priors(
    starts: Sequence[float], changes: Sequence[float], share: float, step_s: float
) -> list[float]:
    """Each start's negative log prior, up to a constant (0 everywhere when no change is
    near): ``share`` of the mass on the starts from the point holding a change to
    ``CHANGE_LAG`` after it, the rest spread over all ``starts``."""
    near = {t for t in starts for c in changes if _just_after(t, c, step_s)}
    if not near or share <= 0.0:
        return [0.0] * len(starts)
    flat = (1.0 - share) / len(starts)
    mass = [flat + (share / len(near) if t in near else 0.0) for t in starts]
    return [-math.log(m * len(starts)) for m in mass]


def refit_onset(
    anomalies: Sequence[Anomaly],
    onset: datetime,
    opened_at: datetime,
    slis: Mapping[SliKey, SliSeries],
    now: datetime,
    step: timedelta,
    changes: Sequence[datetime] = (),
    change_prior: float = 0.0,
    latest: datetime | None = None,
) -> OnsetFit:
    """The onset of an incident opened at ``opened_at`` with ``anomalies`` and ``onset``,
    fitted again on its SLIs up to ``now``: the fitted start when it is earlier (a ramp,
    or a step the detection dated late), else ``onset`` unchanged. ``changes``: when the
    incident's components were changed; ``change_prior`` of the start's prior mass lies
    just after them, and a fitted start just after one made at or after ``onset`` is the
    onset, however late. ``latest``: the onset the incident opened with, when an anomaly
    merged since dated it earlier: the fitted start, if later, up to that."""
    origin = opened_at
    series = [
        s
        for a in anomalies
        if (found := slis.get(a.key)) is not None
        and (s := _series(a, found, now, origin, step)) is not None
    ]
    # One set of counts is one piece of evidence, however many SLIs show it: a tool's
    # error rate, failure rate and the share of its one error type are the same points.
    series = list({(s.rows, s.share): s for s in series}.values())
    if not series:
        return OnsetFit(onset=onset, how="kept: no series to fit")
    steady = [s for s in series if s.steady]
    aside = len(series) - len(steady) if steady else 0
    series = steady or series
    step_s = step.total_seconds()
    lowest = -FIT_STEPS_BEFORE * step_s
    starts = sorted({t for s in series for t, _, _ in s.rows if lowest <= t <= 0.0})
    if not starts:
        return OnsetFit(onset=onset, how="kept: no points before the incident opened")
    sums = [_Sums(s, step_s / 2.0) for s in series]
    # Negative log posterior of each (start, shape), up to a constant.
    ramp_prior = -math.log((1.0 - STEP_PRIOR) / MAX_RAMP_STEPS)
    at = [(c - origin).total_seconds() for c in changes]
    start_prior = _start_priors(starts, at, change_prior, step_s)
    cells = [
        (_cost(sums, t0, t0) - math.log(STEP_PRIOR) + p, t0)
        for t0, p in zip(starts, start_prior, strict=True)
    ]
    cells += [
        (_cost(sums, t0, t0 + k * step_s) + ramp_prior + p, t0)
        for t0, p in zip(starts, start_prior, strict=True)
        for k in range(1, MAX_RAMP_STEPS + 1)
    ]
    median = _median_start(cells)
    fitted = origin + timedelta(seconds=median)
    near = sum(p < 0.0 for p in start_prior)
    weighed = f", {near} start(s) just after a change weighed up" if near else ""
    spiky = f" ({aside} intermittent set aside)" if aside else ""
    where = (
        f"{len(series)} series fitted{spiky} with a step or a ramp of up to "
        f"{MAX_RAMP_STEPS * step_s:g} s{weighed}, median start {fitted.isoformat()}"
    )
    if fitted < onset:
        return OnsetFit(onset=fitted, how=f"moved earlier: {where}")
    cause = [
        c for c, s in zip(changes, at, strict=True) if c >= onset and _just_after(median, s, step_s)
    ]
    if fitted > onset and cause:
        return OnsetFit(
            onset=fitted,
            how=f"moved later, after the change at {max(cause).isoformat()}: {where}",
        )
    if latest is not None and onset < latest and fitted > onset:
        return OnsetFit(onset=min(fitted, latest), how=f"moved later: {where}")
    return OnsetFit(onset=onset, how=f"kept: {where}")
