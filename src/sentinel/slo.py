"""Service level objectives: multi-window burn-rate alerts over SLI series
(``sentinel.sli``), for the SLOs declared as ``[[slo]]`` (``SloSettings``).

An SLO counts good and bad events. For a share SLI (error_rate, error_rate_by_type,
tool_failure_rate, guardrail_triggers) the events are requests: a point of value ``v``
resting on ``c`` requests holds ``v*c`` bad ones. For every other SLI the events are the
steps of the SLI grid that have data (a point with observations; every request-rate point,
whose 0 is a real value), and a step is bad when its value is on the wrong side of the
SLO's threshold: below it for evaluator scores and the request rate, above it otherwise.

The error budget is ``1 - objective``; the burn rate over a window is its bad ratio
divided by the budget (1 spends the budget exactly over the SLO's period). A rule
(``BurnWindow``) fires at ``now`` when the burn rate over both its long and its short
window, each ending at ``now``, reaches its ``burn_rate``; an SLO alerts when any rule
fires. Only steps complete at ``now`` count (a point at ``t`` with ``t + step <= now``).
A window without any event has no burn rate: it never fires and never shows recovery
(too little data is not a verdict either way).

Everything here is pure: the SLIs, ``now`` and the settings come in as arguments.
What must not live here: I/O, the clock, reading config (settings come in), incidents.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

from sentinel.detection import Anomaly, Detector, Direction, direction_of
from sentinel.settings import BurnWindow, SloSettings
from sentinel.sli import SliKey, SliKind, SliSeries

__all__ = ["burn_rate", "evaluate_slos", "slo_recovered"]

_Point = tuple[datetime, float, int]


def _aware(name: str, t: datetime) -> None:
    if t.tzinfo is None:
        raise ValueError(f"{name} {t.isoformat()!r} has no timezone")


def _budget(slo: SloSettings) -> float:
    return 1.0 - slo.objective


def _events(
    slo: SloSettings, series: SliSeries, start: datetime, end: datetime, step: timedelta
) -> list[_Point]:
    """The points with events in ``[start, end)`` whose step is complete at ``end``."""
    if step <= timedelta(0):
        raise ValueError(f"step must be positive, got {step!r}")
    # A request-rate point with no request is an observed rate of 0 (sentinel.sli), the
    # very thing a traffic SLO is about; other points without observations are gaps.
    keep_empty = slo.sli is SliKind.REQUEST_RATE
    return [
        (t, v, c)
        for (t, v), c in zip(series.points, series.counts, strict=True)
        if start <= t and t + step <= end and (c > 0 or keep_empty)
    ]


def _bad_step(slo: SloSettings, value: float) -> bool:
    """Whether a step of a non-share SLI misses the threshold (meeting it is good)."""
    assert slo.threshold is not None  # SloSettings requires it for non-share SLIs
    if direction_of(slo.sli) is Direction.DOWN:
        return value < slo.threshold
    return value > slo.threshold


def _bad_ratio(slo: SloSettings, points: Sequence[_Point]) -> float | None:
    """Bad events / events of the points, or None when they hold no event."""
    if slo.sli.share:
        requests = sum(c for _, _, c in points)
        if requests == 0:
            return None
        return sum(v * c for _, v, c in points) / requests
    if not points:
        return None
    return sum(1 for _, v, _ in points if _bad_step(slo, v)) / len(points)


def burn_rate(
    slo: SloSettings, series: SliSeries, start: datetime, end: datetime, step: timedelta
) -> float | None:
    """How many times too fast the error budget burns over the steps of ``series`` with
    ``start <= t`` and ``t + step <= end``; None when they hold no event."""
    _aware("start", start)
    _aware("end", end)
    ratio = _bad_ratio(slo, _events(slo, series, start, end, step))
    return None if ratio is None else ratio / _budget(slo)


def _window_burn(
    slo: SloSettings, series: SliSeries, now: datetime, minutes: float, step: timedelta
) -> float | None:
    return burn_rate(slo, series, now - timedelta(minutes=minutes), now, step)


def _onset(slo: SloSettings, rule: BurnWindow, points: Sequence[_Point]) -> datetime:
    """When the burn that fired ``rule`` started, from the long window's ``points``.

    A point is bad when it misses the threshold (non-share SLIs), or when it alone burns
    the budget at least at the rule's rate (shares: a step of 1 failure in 1,000 requests
    is not the start of a 14.4x burn). From the last bad point, the run is followed back
    over bad points, stepping over isolated good ones (a burst of errors rarely fails
    every step); two good points in a row end it. Points without events are skipped: a
    gap says nothing either way. The onset is the start of the run's first point."""
    budget = _budget(slo)

    def bad(v: float) -> bool:
        return v / budget >= rule.burn_rate if slo.sli.share else _bad_step(slo, v)

    flags = [bad(v) for _, v, _ in points]
    bad_at = [i for i, f in enumerate(flags) if f]
    if not bad_at:
        # Only reachable through float rounding: the pooled ratio reaches the rule's rate,
        # so some point does too. The whole window is the safe answer.
        return points[0][0]
    first = i = bad_at[-1]
    while i > 0:
        if flags[i - 1]:
            i -= 1
        elif i > 1 and flags[i - 2]:
            i -= 2
        else:
            break
        first = i
    return points[first][0]


def _alert(slo: SloSettings, series: SliSeries, now: datetime, step: timedelta) -> Anomaly | None:
    """The SLO's alert at ``now``, from its strongest firing rule; None if none fires."""
    # (long-window burn, -rule index, rule): the highest burn wins, then the first rule.
    best: tuple[float, int, BurnWindow] | None = None
    for i, rule in enumerate(slo.windows):
        long = _window_burn(slo, series, now, rule.long_minutes, step)
        short = _window_burn(slo, series, now, rule.short_minutes, step)
        if long is None or short is None or long < rule.burn_rate or short < rule.burn_rate:
            continue
        if best is None or (long, -i) > best[:2]:
            best = (long, -i, rule)
    if best is None:
        return None
    long_burn, _, rule = best
    points = _events(slo, series, now - timedelta(minutes=rule.long_minutes), now, step)
    ratio = _bad_ratio(slo, points)
    assert ratio is not None  # the long window fired, so it holds events
    return Anomaly(
        component=slo.component,
        sli=slo.sli,
        qualifier=slo.qualifier,
        onset=_onset(slo, rule, points),
        baseline=_budget(slo),
        observed=ratio,
        score=round(long_burn, 3),
        detector=Detector.BURN_RATE,
        slo=slo.name,
    )


def _key(slo: SloSettings) -> SliKey:
    return SliKey(slo.component, slo.sli, slo.qualifier)


def evaluate_slos(
    slos: Sequence[SloSettings],
    slis: Mapping[SliKey, SliSeries],
    now: datetime,
    step: timedelta,
) -> tuple[Anomaly, ...]:
    """One ``Anomaly`` (detector ``burn_rate``) per SLO alerting at ``now``, by SLO name.

    ``baseline`` is the error budget (1 - objective); ``observed`` the bad ratio over the
    long window of the strongest firing rule (the highest long-window burn rate, the
    first such rule on a tie); ``score`` that burn rate; ``onset`` the start of the last
    run of bad steps in that window, isolated good steps allowed inside the run (for
    shares a bad step is one that alone burns at the rule's rate; see ``_onset``). The
    onset thus lies in the long window, before ``now``. An SLO without its series is
    skipped: nothing measured it, which is no alert (``slo_recovered`` says False)."""
    _aware("now", now)
    alerts: list[Anomaly] = []
    for slo in sorted(slos, key=lambda s: s.name):
        series = slis.get(_key(slo))
        if series is None:
            continue
        alert = _alert(slo, series, now, step)
        if alert is not None:
            alerts.append(alert)
    return tuple(alerts)


def slo_recovered(
    slo: SloSettings, series: SliSeries | None, now: datetime, step: timedelta
) -> bool:
    """Whether the SLO's alert would have stopped at ``now``: the short window of every
    rule holds events and burns below that rule's rate. Missing data is not recovery."""
    _aware("now", now)
    if series is None:
        return False
    for rule in slo.windows:
        short = _window_burn(slo, series, now, rule.short_minutes, step)
        if short is None or short >= rule.burn_rate:
            return False
    return True
