"""Judging series at one instant (``detect``, ``detect_series``): which points are
complete, the baseline and recent windows, the full path, the fast path on the step and
on the shorter grid, the coarse path on the longer grid, and the burst check. The package
docstring (``sentinel.detection``) says how one series is judged.

What must not live here: the detectors' statistics (``detectors``), I/O, the clock.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from operator import attrgetter, itemgetter
from typing import TypeAlias

from sentinel.detection.changepoint import within_point
from sentinel.detection.detectors import detect_level, detect_share, detect_traffic_drop
from sentinel.detection.model import (
    GAUGES,
    QUANTILE_MIN_COUNT,
    SHARES,
    Anomaly,
    DetectionResult,
    Direction,
    NotEnoughData,
    NotEnoughDataReason,
    big_enough,
    direction_of,
)
from sentinel.detection.stats import Baseline, Point, lower_rate, median, pool
from sentinel.settings import DetectionSettings
from sentinel.sli import SliKey, SliKind, SliSeries

_time = itemgetter(0)  # of a point (a C function: bisection calls it for every probe)
_fields = attrgetter("component", "kind", "qualifier")  # an SliKey's, in its sort order


@dataclass(frozen=True, slots=True)
class _At:
    """What judging at one ``now`` needs that is the same for every series: the bounds
    of the windows, and the settings of each path (``detect`` builds it once per call,
    not once per series)."""

    # The last start of a step complete at now: t + step <= now is t <= now - step (time
    # arithmetic on aware datetimes is exact).
    complete_until: datetime
    recent_from: datetime
    baseline_from: datetime
    fresh_from: datetime
    step: timedelta
    full: DetectionSettings
    fast: DetectionSettings
    slow: DetectionSettings
    # The same on the fast path's shorter grid (``fast_step_divisor``), if it has one.
    fine: _At | None
    # The same on the coarse path's longer grid (``coarse_step_multiple``), if it has one.
    coarse: _At | None

    @classmethod
    def of(cls, now: datetime, s: DetectionSettings) -> _At:
        step = timedelta(seconds=s.step_seconds)
        recent_from = now - timedelta(minutes=s.recent_minutes)
        fine = None
        if s.fast_step_divisor > 1 and s.fast_persistence_points < s.persistence_points:
            fine = cls.of(
                now,
                s.model_copy(
                    update={
                        "step_seconds": s.step_seconds / s.fast_step_divisor,
                        "fast_step_divisor": 1,
                    }
                ),
            )
        coarse = None
        if s.coarse_step_multiple > 1:
            coarse = cls.of(now, _coarse(s))
        return cls(
            complete_until=now - step,
            recent_from=recent_from,
            baseline_from=recent_from - timedelta(minutes=s.baseline_minutes),
            fresh_from=now - step * (s.persistence_points + 1),
            step=step,
            full=s,
            fast=_fast(s),
            slow=_slow(s),
            fine=fine,
            coarse=coarse,
        )


def _split_points(series: SliSeries, at: _At) -> tuple[tuple[Point, ...], tuple[Point, ...]]:
    """The baseline's and the recent window's points, among those complete at ``now``
    (a live run would not have the rest)."""
    rows = series.rows
    # Points are in time order (SliSeries checks it), so the windows are found by
    # bisection: a replay judges every series at every step, and a scan from the first
    # point made each judgement cost the whole series.
    end = bisect_right(rows, at.complete_until, key=_time)
    mid = bisect_left(rows, at.recent_from, hi=end, key=_time)
    lo = bisect_left(rows, at.baseline_from, hi=mid, key=_time)
    return rows[lo:mid], rows[mid:end]


def detect_series(
    series: SliSeries,
    now: datetime,
    settings: DetectionSettings,
    fine: SliSeries | None = None,
    p99: SliSeries | None = None,
) -> Anomaly | NotEnoughData | None:
    """Judge one series at ``now``: an anomaly, not enough data, or None (normal).
    ``fine``: the same SLI at ``step_seconds / fast_step_divisor``, for the fast path.
    ``p99``: for a p50, the same component's p99 on the step grid (``_slowest_call``)."""
    at = _At.of(now, settings)
    slowest = _slowest_call(p99, at) if series.key.kind is SliKind.LATENCY_P50 else None
    return _judge(series, at, fine, slowest)


# The baseline's slowest points set aside as outliers: a tool that timed out twice in
# 30 minutes (2 of its ~700 calls) is not slow, and a p50 of a few calls beyond all the
# rest is still beyond the tail. With 0 or 1, the tool-latency case of
# `bench/live_detect.py` waits a step on its baseline's two timeouts in 2 of its 5
# replayed phases (median of the 40 runs 65.0 s with 1, 62.5 s with 2); 3 gains nothing.
_OUTLIERS = 2


def _slowest_call(p99: SliSeries | None, at: _At) -> float | None:
    """About the slowest call the baseline saw, its ``_OUTLIERS`` slowest points aside:
    a p99 point of the baseline window (a point of a few calls has its slowest call as
    its p99), whatever its count. None without a p99, or with fewer baseline points
    than ``min_baseline_points``.

    Why: the fast path's floor of observations per point keeps a p50 of a few calls from
    paging on a heavy tail (a p50 of four calls, two of them timeouts). A p50 above every
    call of the baseline is no tail: half of its calls are slower than any of the
    hundreds the baseline saw, which its heavy tail, if it has one, would have shown."""
    if p99 is None:
        return None
    base, _ = _split_points(p99, at)
    values = sorted(v for _, v, c in base if c > 0)
    if len(values) < at.full.min_baseline_points:
        return None
    return values[-1 - _OUTLIERS]


def _trusted(point: Point, floor: int, min_count: int, slowest: float | None) -> bool:
    """Whether the fast path may rest on ``point``: it holds ``floor`` observations, or,
    for a p50 (``slowest`` given), at least ``min_count`` calls and a value above the
    slowest call of the baseline (``_slowest_call``)."""
    _, v, c = point
    return c >= floor or (slowest is not None and c >= min_count and v > slowest)


def _judge(
    series: SliSeries,
    at: _At,
    fine: SliSeries | None = None,
    slowest: float | None = None,
) -> Anomaly | NotEnoughData | None:
    s = at.full
    key = series.key
    kind = key.kind

    def short(reason: NotEnoughDataReason) -> NotEnoughData:
        return NotEnoughData(
            component=key.component, sli=kind, qualifier=key.qualifier, reason=reason
        )

    raw_base, raw_recent = _split_points(series, at)
    if len(raw_base) < s.min_baseline_points:
        # Fewer points than needed, whatever their counts (the common verdict in the
        # first steps of a replay): said before any filtering.
        return short(NotEnoughDataReason.TOO_FEW_BASELINE_POINTS)
    share = kind in SHARES
    keep_zero = kind is SliKind.REQUEST_RATE
    min_count = 0 if keep_zero else (1 if share or kind in GAUGES else s.min_point_count)
    # A quantile q needs 1/(1-q) observations to be more than the maximum of a few.
    min_count = max(min_count, QUANTILE_MIN_COUNT.get(kind, 0))
    base = Baseline([p for p in raw_base if p[2] >= min_count])
    recent = [p for p in raw_recent if p[2] >= min_count]
    if len(base.points) < s.min_baseline_points:
        if len(raw_base) >= s.min_baseline_points:
            return short(NotEnoughDataReason.TOO_FEW_OBSERVATIONS)
        return short(NotEnoughDataReason.TOO_FEW_BASELINE_POINTS)
    fresh_from = at.fresh_from
    if not recent or recent[-1][0] < fresh_from:
        if any(t >= fresh_from for t, _, _ in raw_recent):
            if all(c == 0 for t, _, c in raw_recent if t >= fresh_from):
                return short(NotEnoughDataReason.ZERO_TRAFFIC)
            return short(NotEnoughDataReason.TOO_FEW_OBSERVATIONS)
        return short(NotEnoughDataReason.GAP)
    if len(recent) < min(s.persistence_points, s.fast_persistence_points):
        return short(NotEnoughDataReason.TOO_FEW_RECENT_POINTS)
    if keep_zero:
        # Lulls of traffic are common (an upstream that calls a service only for some
        # runs halves its rate for minutes): a drop must hold twice the persistence, and
        # never takes the fast path.
        slow = at.slow
        if len(recent) < slow.persistence_points:
            return short(NotEnoughDataReason.TOO_FEW_RECENT_POINTS)
        return detect_traffic_drop(key, base, recent, slow)
    detector = detect_share if share else detect_level
    found = detector(key, base, recent, s) if len(recent) >= s.persistence_points else None
    # Judged only once a shift is found: most series at most steps have none.
    if found is not None and share and not _beats_bursts(kind, base.points, recent, s):
        found = None
    if found is None and s.fast_persistence_points < s.persistence_points:
        # The fast path trusts only points resting on many observations: a p50 of three
        # calls, two of them timeouts, is a spike of noise however far it lands.
        fast_min = _fast_floor(s, min_count, kind)
        fast = at.fast
        n_fast = s.fast_persistence_points
        if all(_trusted(p, fast_min, min_count, slowest) for p in recent[-n_fast:]):
            found = detector(key, base, recent, fast)
            if found is not None and not _beats_bursts(kind, base.points, recent, fast):
                found = None
    if found is None and fine is not None and at.fine is not None:
        found = _judge_fine(fine, at.fine, min_count, series.rows[0][0], at.step, slowest)
    return found


def _fast_floor(s: DetectionSettings, min_count: int, kind: SliKind) -> int:
    """The observations each of the fast path's points rests on (step path and fine path
    alike): ``fast_min_point_count``, or ``fast_min_score_count`` for evaluator scores,
    never below the series' own minimum. (On the fine path a score's points hold it
    together, ``_judge_fine``.)

    Why scores differ: the floor guards against the heavy tails of a few requests (a p50
    of four calls, two of them timeouts). A score is a mean of values bounded in [0, 1],
    with no such tail, and evaluators score a sample of runs, so a score's point rests on
    fewer observations than its agent's requests: the requests' floor kept the fast path
    from scores a prompt regression drops by 0.3 (2-6 scored runs per 15 s point)."""
    floor = s.fast_min_score_count if kind is SliKind.EVAL_SCORE else s.fast_min_point_count
    return max(min_count, s.min_point_count, floor)


def _judge_fine(
    series: SliSeries,
    at: _At,
    min_count: int,
    origin: datetime,
    step: timedelta,
    slowest: float | None = None,
) -> Anomaly | None:
    """The fast path on the shorter grid: the same detector, bars and burst check on
    the fine series' own baseline, over its last ``fast_persistence_points`` points.

    Why: a step's worth of evidence is the grain of the step path, so two points of
    30 s need 60 s of a fault, plus the part of the step it started in, before the fast
    path can page. On 15 s points the same bars are met after 30 s of a hard failure,
    and a point's noise is measured on points as short (the fine baseline's own MAD),
    so a shorter point does not make a noisy series look calmer. It only ever adds an
    anomaly the step path has not found, and its onset is put on the step grid (the
    start of the step holding it, on the grid of ``origin`` and ``step``), where
    incidents and the step path date everything else."""
    s = at.full
    kind = series.key.kind
    raw_base, raw_recent = _split_points(series, at)
    base = Baseline([p for p in raw_base if p[2] >= min_count])
    if len(base.points) < s.min_baseline_points:
        return None
    # An evaluator score's short point counts from one scored run (its floor is for the
    # fast path's points together, below).
    scores = kind is SliKind.EVAL_SCORE
    recent = [p for p in raw_recent if p[2] >= (1 if scores else min_count)]
    n = s.fast_persistence_points
    if len(recent) < n:
        return None
    # The last n fine points, within the last n + fast_gap_points fine steps (a step with
    # no call is no evidence either way), resting on the fast path's observations.
    if recent[-n][0] <= at.complete_until - (n + s.fast_gap_points) * at.step:
        return None
    fast_min = _fast_floor(s, min_count, kind)
    # A p50 of three calls is noise however short its point, so levels keep the step's
    # floor on each point. A share's requests are pooled and weighed by the binomial
    # test, so its short point needs only its share of a step's minimum (the same calls
    # a second). An evaluator score's floor is for the points together: a mean of values
    # bounded in [0, 1] has no heavy tail, ``detect_level`` already weighs a point of few
    # scored runs down by its count, and evaluators score a sample of runs, so a 15 s
    # point of one run is common (a prompt regression's first 30 s: 3 scored runs, then
    # 1, all three evaluators 0.3 down; since session 23).
    if kind in SHARES:
        fast_min = max(min_count, math.ceil(fast_min * (at.step / step)))
    if scores:
        if sum(c for _, _, c in recent[-n:]) < fast_min:
            return None
    elif not all(_trusted(p, fast_min, min_count, slowest) for p in recent[-n:]):
        return None
    detector = detect_share if kind in SHARES else detect_level
    found = detector(series.key, base, recent, at.fast)
    # A run of two 15 s points of a quiet component with one error in three requests is
    # a 33 % "burst": on points this short, a run's rate counts at its lower confidence
    # bound (a busy component's real bursts stay near their rate).
    if found is None or not _beats_bursts(kind, base.points, recent, at.fast, confident=True):
        return None
    onset = origin + ((found.onset - origin) // step) * step
    return found if onset == found.onset else found.model_copy(update={"onset": onset})


# A coarse verdict by (key, and the bounds of the windows it was judged on).
CoarseMemo: TypeAlias = dict[tuple[SliKey, int, int, int, int], Anomaly | NotEnoughData | None]


def _judge_coarse(
    series: SliSeries, at: _At, memo: CoarseMemo | None
) -> Anomaly | NotEnoughData | None:
    """The coarse path's verdict on ``series``. A judgement reads the series only through
    which of its points fall in each window (the instant itself is used nowhere else),
    and those change once per coarse point, so a replay judging every step asks the same
    question four times in a row: the memo answers the repeats."""
    if memo is None:
        return _judge(series, at)
    rows = series.rows
    end = bisect_right(rows, at.complete_until, key=_time)
    k = (
        series.key,
        bisect_left(rows, at.baseline_from, hi=end, key=_time),
        bisect_left(rows, at.recent_from, hi=end, key=_time),
        bisect_left(rows, at.fresh_from, key=_time),
        end,
    )
    if k not in memo:
        memo[k] = _judge(series, at)
    return memo[k]


def _on_steps(found: Anomaly, steps: SliSeries, at: _At) -> Anomaly:
    """A coarse anomaly with its onset put on the step grid: the step, inside the coarse
    point it was dated at, where the step points (those complete at ``now``) say the
    shift began (``within_point``)."""
    assert at.coarse is not None
    complete = [p for p in steps.rows if p[0] <= at.complete_until]
    onset = within_point(
        found, complete, found.onset, found.onset + at.coarse.step, share=found.sli in SHARES
    )
    return found if onset == found.onset else found.model_copy(update={"onset": onset})


def _beats_bursts(
    kind: SliKind,
    base: list[Point],
    recent: list[Point],
    s: DetectionSettings,
    *,
    confident: bool = False,
) -> bool:
    """Whether the last ``s.persistence_points`` points beat, by ``s``' minimum effect,
    the worst run of as many points the baseline itself showed. A component whose
    baseline has short bursts (a provider's minute of 10 % errors every quarter hour)
    does not page on the next burst (``s`` is the fast path's bar, or the full one).
    ``confident``: a share's baseline runs count at their lower confidence bound."""
    n = s.persistence_points
    if len(base) < n:
        return True

    def level(points: Sequence[Point]) -> float:
        if kind in SHARES:
            err, req = pool(points)
            return err / req if req else 0.0
        values = [v for _, v, _ in points]
        # the run's least bad point: a run is as bad as it stays throughout
        return min(values) if direction_of(kind) is Direction.UP else max(values)

    def run_level(points: Sequence[Point]) -> float:
        if confident and kind in SHARES:
            err, req = pool(points)
            return lower_rate(err, req) if req else 0.0
        return level(points)

    runs = [run_level(base[i : i + n]) for i in range(len(base) - n + 1)]
    up = direction_of(kind) is Direction.UP
    worst = max(runs) if up else min(runs)
    typical = level(base) if kind in SHARES else median([v for _, v, _ in base])
    if (worst <= typical) if up else (worst >= typical):
        return True  # no burst (an error type the baseline never showed, say)
    return big_enough(kind, worst, level(recent[-n:]), s)


def _coarse(s: DetectionSettings) -> DetectionSettings:
    """The coarse path's settings: the full path's bars on points ``coarse_step_multiple``
    steps long, its own persistence, baseline minimum and recent window, and no fast
    path or coarser grid of its own."""
    return s.model_copy(
        update={
            "step_seconds": s.step_seconds * s.coarse_step_multiple,
            "recent_minutes": s.coarse_recent_minutes,
            "persistence_points": s.coarse_persistence_points,
            "fast_persistence_points": s.coarse_persistence_points,
            "fast_step_divisor": 1,
            "coarse_step_multiple": 1,
            "min_baseline_points": s.coarse_min_baseline_points,
        }
    )


def _slow(s: DetectionSettings) -> DetectionSettings:
    """The bar of a traffic drop: twice the persistence."""
    return s.model_copy(update={"persistence_points": 2 * s.persistence_points})


def _fast(s: DetectionSettings) -> DetectionSettings:
    """The bar of the fast path: fewer points, much stronger evidence, and a bigger
    effect (a 1.5x latency spike of two minutes is common noise; a 2x one is not)."""
    f = s.fast_evidence_factor
    return s.model_copy(
        update={
            "persistence_points": s.fast_persistence_points,
            "min_z": s.min_z * f,
            "max_p_value": s.max_p_value**f,
            "error_rate_min_increase": min(1.0, s.error_rate_min_increase * f),
            "error_rate_min_ratio": s.error_rate_min_ratio * f,
            "latency_min_ratio": s.latency_min_ratio**f,
            "latency_min_increase_seconds": s.latency_min_increase_seconds * f,
            "usage_min_ratio": s.usage_min_ratio**f,
            "steps_min_increase": s.steps_min_increase * f,
            "eval_score_min_drop": s.eval_score_min_drop * f,
            "memory_min_increase": min(1.0, s.memory_min_increase * f),
            "memory_min_ratio": s.memory_min_ratio**f,
            "cpu_min_ratio": s.cpu_min_ratio**f,
            "cpu_min_increase_cores": s.cpu_min_increase_cores * f,
        }
    )


def detect(
    slis: Mapping[SliKey, SliSeries],
    now: datetime,
    settings: DetectionSettings,
    fine: Mapping[SliKey, SliSeries] | None = None,
    coarse: Mapping[SliKey, SliSeries] | None = None,
    memo: CoarseMemo | None = None,
) -> DetectionResult:
    """Every series judged at ``now``: anomalies and not-enough-data, in key order.
    ``fine``: the SLIs at ``step_seconds / fast_step_divisor``, which the fast path also
    judges when the divisor is above 1 (without them it sees the steps' points only).
    ``coarse``: the SLIs at ``step_seconds * coarse_step_multiple``, which the coarse path
    judges where the step's paths found no anomaly: the full path's bars, on points long
    enough to hold a sparse component's few errors or slow calls (a series the step
    found no anomaly in, or not enough data, is an anomaly if the coarse path finds one).
    ``memo``: the coarse verdicts of earlier calls on the same ``coarse`` SLIs (a replay
    passes one to every step; ``CoarseMemo``)."""
    if now.tzinfo is None:
        raise ValueError(f"now {now.isoformat()!r} has no timezone")
    anomalies: list[Anomaly] = []
    missing: list[NotEnoughData] = []
    checked = 0
    at = _At.of(now, settings)
    # Key order, with the keys' fields compared in C (SliKey's own comparison runs in
    # Python, and a replay sorts at every step).
    for key in sorted(slis, key=_fields):
        slowest = None
        if key.kind is SliKind.LATENCY_P50:
            p99 = slis.get(SliKey(key.component, SliKind.LATENCY_P99, key.qualifier))
            slowest = _slowest_call(p99, at)
        verdict = _judge(slis[key], at, None if fine is None else fine.get(key), slowest)
        if coarse is not None and at.coarse is not None and not isinstance(verdict, Anomaly):
            longer = coarse.get(key)
            found = None if longer is None else _judge_coarse(longer, at.coarse, memo)
            if isinstance(found, Anomaly):
                verdict = _on_steps(found, slis[key], at)
        if isinstance(verdict, NotEnoughData):
            missing.append(verdict)
            continue
        checked += 1
        if verdict is not None:
            anomalies.append(verdict)
    return DetectionResult(
        at=now, anomalies=tuple(anomalies), not_enough_data=tuple(missing), checked=checked
    )
