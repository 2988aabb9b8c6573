"""Detection: robust baselines, level-shift/drift detectors with a change-point onset,
and the emergence of new error types, over SLI series (``sentinel.sli``).

Everything here is pure: ``detect`` takes the SLIs, the instant ``now`` and the settings,
and returns the anomalies and the series it could not judge. Calling it at each
interval with a later ``now`` is what the Metric Agent (and ``sentinel detect``) do.

How one series is judged at ``now`` (only steps complete at ``now`` are used):

- the *recent* window (``recent_minutes`` before now) is searched for a change point;
  the *baseline* is the ``baseline_minutes`` before it (so a shift in progress does not
  pollute its own baseline): its median, and its MAD as the noise scale;
- points resting on fewer than ``min_point_count`` observations are dropped (a p95 of
  two requests is noise), except for the request rate, whose 0 is a real value;
- every split of the recent window is a candidate onset; the tail after it must hold
  ``persistence_points`` points, exceed the minimum effect of its SLI kind (relative and
  absolute, in the direction that is bad for that kind), stay beyond it over the last
  ``persistence_points`` points, and be significant: a robust z of the tail's median for
  continuous SLIs, a binomial tail probability of the pooled errors for shares (error
  rates weigh each point by its requests; a continuous point resting on fewer
  observations than the baseline's typical point counts as noisier). The onset is the
  best two-level fit among the splits from the earliest significant one on (least
  absolute deviations, or the binomial likelihood for shares), moved back over the
  points just before it that are already clearly beyond the baseline (so a ramp is dated
  from its start, not its middle);
- a shift that has not held ``persistence_points`` yet is still an anomaly when its
  evidence and effect are overwhelming (the fast path: ``fast_persistence_points``, each
  resting on ``fast_min_point_count`` observations (evaluator scores:
  ``fast_min_score_count`` scored runs), with ``min_z`` and the minimum
  effects times ``fast_evidence_factor``, ratios and ``max_p_value`` to that power), so
  a hard failure pages on its first complete step; a drop of traffic always needs the
  full persistence;
- the fast path is also judged on the same SLI at ``step_seconds / fast_step_divisor``
  when the caller passes it (``fine``): the same detector and bars over its own
  baseline, so two points of a hard failure take half a step each. A share's short
  point needs only its share of the step's observations, and its baseline's runs count
  at their lower confidence bound (one error in three calls is not a burst); the onset
  found is put on the step grid;
- a share's baseline rate is tested at its upper confidence bound: a quiet component
  that showed no error in its baseline by chance does not page on a few errors;
- a component whose baseline shows short bursts must beat its worst burst of as many
  points by the minimum effect (the fast path's, on the fast path; shares on the full
  path too), so the next burst of a bursty provider is not a page;
- a share's shift must not rest on one point: without its most erroneous point the rest
  of the persistence window must still be consistent with the minimum effect, and the
  onset found must leave the persistence behind it (a spike after quiet points is not
  a shift that held);
- an error type with no error in the whole baseline that shows ``emergence_min_errors``
  recent errors is an emergence, whatever its baseline share;
- too few baseline or recent points, a gap at the end, zero traffic or too few
  observations give a typed ``NotEnoughData``, never a guess.

What must not live here: I/O, the clock, reading config (settings come in), incidents.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from operator import attrgetter, itemgetter

from pydantic import BaseModel, ConfigDict

from sentinel.settings import DetectionSettings
from sentinel.sli import SliKey, SliKind, SliSeries
from sentinel.telemetry import AwareDatetime

__all__ = [
    "Anomaly",
    "DetectionResult",
    "Detector",
    "Direction",
    "NotEnoughData",
    "NotEnoughDataReason",
    "detect",
    "detect_series",
    "direction_of",
    "is_share",
    "within_baseline",
]


class Direction(StrEnum):
    UP = "up"  # a rise is bad
    DOWN = "down"  # a drop is bad


class Detector(StrEnum):
    LEVEL_SHIFT = "level_shift"  # a step or a drift away from the baseline
    EMERGENCE = "emergence"  # an error type the baseline never showed
    BURN_RATE = "burn_rate"  # an SLO's error budget burning too fast (sentinel.slo)


class NotEnoughDataReason(StrEnum):
    TOO_FEW_BASELINE_POINTS = "too_few_baseline_points"
    TOO_FEW_RECENT_POINTS = "too_few_recent_points"
    GAP = "gap"  # no recent point at the end of the window
    ZERO_TRAFFIC = "zero_traffic"  # recent points, but no request behind them
    TOO_FEW_OBSERVATIONS = "too_few_observations"  # points, each resting on too little


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Anomaly(_Record):
    """A persistent shift of one SLI: its onset (change point), the baseline median, the
    value observed since the onset (median, or pooled share), and the evidence (robust z,
    or -log10 of the binomial tail probability)."""

    component: str
    sli: SliKind
    qualifier: str = ""
    onset: AwareDatetime
    baseline: float
    observed: float
    score: float
    detector: Detector = Detector.LEVEL_SHIFT
    slo: str = ""  # the SLO's name when detector is burn_rate

    @property
    def key(self) -> SliKey:
        return SliKey(self.component, self.sli, self.qualifier)


class NotEnoughData(_Record):
    component: str
    sli: SliKind
    qualifier: str = ""
    reason: NotEnoughDataReason


class DetectionResult(_Record):
    at: AwareDatetime
    anomalies: tuple[Anomaly, ...] = ()
    not_enough_data: tuple[NotEnoughData, ...] = ()
    checked: int = 0  # series judged (with enough data), anomalous or not


_SHARES = frozenset(k for k in SliKind if k.share)
_LATENCIES = frozenset({SliKind.LATENCY_P50, SliKind.LATENCY_P95, SliKind.LATENCY_P99})
_USAGE = frozenset(
    {
        SliKind.INPUT_TOKENS_PER_REQUEST,
        SliKind.OUTPUT_TOKENS_PER_REQUEST,
        SliKind.COST_PER_REQUEST,
    }
)
# Resource gauges: each sample measures the whole process, not one request.
_GAUGES = frozenset({SliKind.MEMORY_UTILISATION, SliKind.MEMORY_WORKING_SET, SliKind.CPU_USAGE})
_QUANTILE_MIN_COUNT = {SliKind.LATENCY_P95: 20, SliKind.LATENCY_P99: 100}
# A point whose errors are this unlikely under the minimum effect contradicts the shift.
_CONSISTENT = 0.01
_SPIKE_ONLY = 0.01
_MAD_TO_SIGMA = 1.4826  # MAD of a normal distribution times this is its sigma
_MEDIAN_EFFICIENCY = 1.2533  # sd of a sample median / (sigma / sqrt(n)), normal data
# Noise never taken below this share of the baseline level: a flat baseline (MAD 0)
# would otherwise make any wiggle infinitely significant.
_REL_NOISE_FLOOR = 0.02
# A point before the change point this far beyond the baseline (robust z, or binomial
# tail probability for shares) already belongs to the shift: it is where a ramp starts.
_ONSET_Z = 3.0
_ONSET_LOG10_P = -2.0
_ABS_NOISE_FLOOR = 1e-9


def direction_of(kind: SliKind) -> Direction:
    """Which way is bad: a lower evaluator score, a drop of traffic; a rise otherwise."""
    if kind in (SliKind.EVAL_SCORE, SliKind.REQUEST_RATE):
        return Direction.DOWN
    return Direction.UP


def is_share(kind: SliKind) -> bool:
    """Shares of requests in [0, 1], judged by pooling their observations."""
    return kind in _SHARES


def _big_enough(kind: SliKind, baseline: float, observed: float, s: DetectionSettings) -> bool:
    """Whether the shift from ``baseline`` to ``observed`` reaches the minimum effect of
    ``kind``, in its bad direction."""
    if kind in _SHARES:
        return (
            observed - baseline >= s.error_rate_min_increase
            and observed >= baseline * s.error_rate_min_ratio
        )
    if kind in _LATENCIES:
        return (
            observed >= baseline * s.latency_min_ratio
            and observed - baseline >= s.latency_min_increase_seconds
        )
    if kind in _USAGE:
        return observed > baseline and observed >= baseline * s.usage_min_ratio
    if kind is SliKind.STEPS_PER_RUN:
        return (
            observed - baseline >= s.steps_min_increase and observed >= baseline * s.usage_min_ratio
        )
    if kind is SliKind.EVAL_SCORE:
        return baseline - observed >= s.eval_score_min_drop
    if kind is SliKind.REQUEST_RATE:
        return baseline > 0 and observed <= baseline * (1.0 - s.request_rate_min_drop)
    if kind is SliKind.MEMORY_UTILISATION:
        return observed - baseline >= s.memory_min_increase
    if kind is SliKind.MEMORY_WORKING_SET:
        return observed >= baseline * s.memory_min_ratio
    if kind is SliKind.CPU_USAGE:
        return (
            observed >= baseline * s.cpu_min_ratio
            and observed - baseline >= s.cpu_min_increase_cores
        )
    return False  # a kind without a declared minimum effect never pages


def within_baseline(kind: SliKind, baseline: float, value: float, s: DetectionSettings) -> bool:
    """Whether ``value`` is back within the baseline: short of the minimum effect."""
    return not _big_enough(kind, baseline, value, s)


def _median(xs: Sequence[float]) -> float:
    s = sorted(xs)
    n = len(s)
    mid = n // 2
    return s[mid] if n % 2 else (s[mid - 1] + s[mid]) / 2.0


def _log10_binomial_tail(k: int, n: int, p: float) -> float:
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


_Point = tuple[datetime, float, int]
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
        )


def _split_points(series: SliSeries, at: _At) -> tuple[tuple[_Point, ...], tuple[_Point, ...]]:
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


class _Baseline:
    """The baseline's points, and their statistics computed when first asked for: the
    full and the fast path judge a series against the same baseline, at every step."""

    __slots__ = ("_level", "_pooled", "points")

    def __init__(self, points: list[_Point]) -> None:
        self.points = points
        self._level: tuple[float, float] | None = None
        self._pooled: tuple[int, int] | None = None

    def level(self) -> tuple[float, float]:
        """The median of the values, and the noise around it: the MAD as a sigma, never
        below the floors."""
        if self._level is None:
            values = [v for _, v, _ in self.points]
            m = _median(values)
            mad = _median([abs(v - m) for v in values])
            sigma = max(_MAD_TO_SIGMA * mad, _REL_NOISE_FLOOR * abs(m), _ABS_NOISE_FLOOR)
            self._level = (m, sigma)
        return self._level

    def pooled(self) -> tuple[int, int]:
        """(errors, requests) of share points (``_pool``)."""
        if self._pooled is None:
            self._pooled = _pool(self.points)
        return self._pooled


def detect_series(
    series: SliSeries,
    now: datetime,
    settings: DetectionSettings,
    fine: SliSeries | None = None,
) -> Anomaly | NotEnoughData | None:
    """Judge one series at ``now``: an anomaly, not enough data, or None (normal).
    ``fine``: the same SLI at ``step_seconds / fast_step_divisor``, for the fast path."""
    return _judge(series, _At.of(now, settings), fine)


def _judge(
    series: SliSeries, at: _At, fine: SliSeries | None = None
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
    share = kind in _SHARES
    keep_zero = kind is SliKind.REQUEST_RATE
    min_count = 0 if keep_zero else (1 if share or kind in _GAUGES else s.min_point_count)
    # A quantile q needs 1/(1-q) observations to be more than the maximum of a few.
    min_count = max(min_count, _QUANTILE_MIN_COUNT.get(kind, 0))
    base = _Baseline([p for p in raw_base if p[2] >= min_count])
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
        return _detect_traffic_drop(key, base, recent, slow)
    detector = _detect_share if share else _detect_level
    found = detector(key, base, recent, s) if len(recent) >= s.persistence_points else None
    # Judged only once a shift is found: most series at most steps have none.
    if found is not None and share and not _beats_bursts(kind, base.points, recent, s):
        found = None
    if found is None and s.fast_persistence_points < s.persistence_points:
        # The fast path trusts only points resting on many observations: a p50 of three
        # calls, two of them timeouts, is a spike of noise however far it lands.
        fast_min = _fast_floor(s, min_count, kind)
        fast = at.fast
        if all(c >= fast_min for _, _, c in recent[-s.fast_persistence_points :]):
            found = detector(key, base, recent, fast)
            if found is not None and not _beats_bursts(kind, base.points, recent, fast):
                found = None
    if found is None and fine is not None and at.fine is not None:
        found = _judge_fine(fine, at.fine, min_count, series.rows[0][0], at.step)
    return found


def _fast_floor(s: DetectionSettings, min_count: int, kind: SliKind) -> int:
    """The observations each of the fast path's points rests on (step path and fine path
    alike): ``fast_min_point_count``, or ``fast_min_score_count`` for evaluator scores,
    never below the series' own minimum.

    Why scores differ: the floor guards against the heavy tails of a few requests (a p50
    of four calls, two of them timeouts). A score is a mean of values bounded in [0, 1],
    with no such tail, and evaluators score a sample of runs, so a score's point rests on
    fewer observations than its agent's requests: the requests' floor kept the fast path
    from scores a prompt regression drops by 0.3 (2-6 scored runs per 15 s point)."""
    floor = s.fast_min_score_count if kind is SliKind.EVAL_SCORE else s.fast_min_point_count
    return max(min_count, s.min_point_count, floor)


def _judge_fine(
    series: SliSeries, at: _At, min_count: int, origin: datetime, step: timedelta
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
    base = _Baseline([p for p in raw_base if p[2] >= min_count])
    if len(base.points) < s.min_baseline_points:
        return None
    recent = [p for p in raw_recent if p[2] >= min_count]
    n = s.fast_persistence_points
    if len(recent) < n:
        return None
    # The last n fine steps, all there and each resting on the fast path's observations.
    if recent[-n][0] <= at.complete_until - n * at.step:
        return None
    fast_min = _fast_floor(s, min_count, kind)
    # A p50 of three calls is noise however short its point, so levels keep the step's
    # floor (scores, means of bounded values, their own). A share's requests are pooled
    # and weighed by the binomial test, so its short point needs only its share of a
    # step's minimum (the same calls a second).
    if kind in _SHARES:
        fast_min = max(min_count, math.ceil(fast_min * (at.step / step)))
    if any(c < fast_min for _, _, c in recent[-n:]):
        return None
    detector = _detect_share if kind in _SHARES else _detect_level
    found = detector(series.key, base, recent, at.fast)
    # A run of two 15 s points of a quiet component with one error in three requests is
    # a 33 % "burst": on points this short, a run's rate counts at its lower confidence
    # bound (a busy component's real bursts stay near their rate).
    if found is None or not _beats_bursts(kind, base.points, recent, at.fast, confident=True):
        return None
    onset = origin + ((found.onset - origin) // step) * step
    return found if onset == found.onset else found.model_copy(update={"onset": onset})


def _beats_bursts(
    kind: SliKind,
    base: list[_Point],
    recent: list[_Point],
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

    def level(points: Sequence[_Point]) -> float:
        if kind in _SHARES:
            err, req = _pool(points)
            return err / req if req else 0.0
        values = [v for _, v, _ in points]
        # the run's least bad point: a run is as bad as it stays throughout
        return min(values) if direction_of(kind) is Direction.UP else max(values)

    def run_level(points: Sequence[_Point]) -> float:
        if confident and kind in _SHARES:
            err, req = _pool(points)
            return _lower_rate(err, req) if req else 0.0
        return level(points)

    runs = [run_level(base[i : i + n]) for i in range(len(base) - n + 1)]
    up = direction_of(kind) is Direction.UP
    worst = max(runs) if up else min(runs)
    typical = level(base) if kind in _SHARES else _median([v for _, v, _ in base])
    if (worst <= typical) if up else (worst >= typical):
        return True  # no burst (an error type the baseline never showed, say)
    return _big_enough(kind, worst, level(recent[-n:]), s)


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


def _detect_level(
    key: SliKey, base: _Baseline, recent: list[_Point], s: DetectionSettings
) -> Anomaly | None:
    kind = key.kind
    sign = 1.0 if direction_of(kind) is Direction.UP else -1.0
    m, sigma = base.level()
    if not all(_big_enough(kind, m, v, s) for _, v, _ in recent[-s.persistence_points :]):
        return None  # not (or no longer) beyond the minimum effect: nothing persists
    # A point resting on fewer observations than the baseline's typical point is noisier
    # (a p50 of 4 calls against one of 20): its deviation is scaled down by the square
    # root of the ratio, never up (a busy point is not trusted more than the baseline).
    c_ref = _median([float(c) for _, _, c in base.points])
    devs = [sign * (v - m) / (sigma * max(1.0, math.sqrt(c_ref / max(c, 1)))) for _, v, c in recent]
    valid: list[int] = []
    best: tuple[float, int, float] | None = None
    for k in range(len(recent) - s.persistence_points + 1):
        tail = [v for _, v, _ in recent[k:]]
        observed = _median(tail)
        if not _big_enough(kind, m, observed, s):
            continue
        z = _median(devs[k:]) * math.sqrt(len(tail)) / _MEDIAN_EFFICIENCY
        if z >= s.min_z:
            valid.append(k)
            if best is None or z > best[0]:
                best = (z, k, observed)
    if best is None:
        return None
    return _located(
        key,
        recent,
        valid,
        before=m,
        baseline=m,
        score=best[0],
        beyond=lambda v, _c: sign * (v - m) > _ONSET_Z * sigma,
    )


def _log10_poisson_lower(k: int, lam: float) -> float:
    """log10 P(X <= k) for X ~ Poisson(lam)."""
    if lam <= 0:
        return 0.0
    terms = [-lam + j * math.log(lam) - math.lgamma(j + 1) for j in range(k + 1)]
    top = max(terms)
    total = top + math.log(math.fsum(math.exp(t - top) for t in terms))
    return min(total, 0.0) / math.log(10)


def _detect_traffic_drop(
    key: SliKey, base: _Baseline, recent: list[_Point], s: DetectionSettings
) -> Anomaly | None:
    """A drop of the request rate: the requests since the split against a Poisson count
    at the baseline's median rate (so a quiet component's natural lulls do not page)."""
    kind = key.kind
    # Calls come in bursts (an agent run makes several), so counts vary more than a
    # Poisson count: the tail must also stand out of the baseline's own spread (sigma).
    m, sigma = base.level()
    if m <= 0:
        return None
    if not all(_big_enough(kind, m, v, s) for _, v, _ in recent[-s.persistence_points :]):
        return None
    step = s.step_seconds
    valid: list[int] = []
    best: tuple[float, int, float] | None = None
    for k in range(len(recent) - s.persistence_points + 1):
        tail = recent[k:]
        seen = sum(c for _, _, c in tail)
        observed = _median([v for _, v, _ in tail])
        if not _big_enough(kind, m, observed, s):
            continue
        score = -_log10_poisson_lower(seen, m * step * len(tail))
        z = (m - observed) / (_MEDIAN_EFFICIENCY * sigma / math.sqrt(len(tail)))
        significant = score >= -math.log10(s.max_p_value) and z >= s.min_z
        if significant:
            valid.append(k)
            if best is None or score > best[0]:
                best = (score, k, observed)
    if best is None:
        return None
    return _located(
        key,
        recent,
        valid,
        before=m,
        baseline=m,
        score=best[0],
        beyond=lambda v, _c: m - v > _ONSET_Z * sigma,
    )


def _located(
    key: SliKey,
    recent: list[_Point],
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
    split = _change_point(recent, valid, before, weighted=pooled)
    k = _shift_start(recent, split, beyond)
    if pooled:
        err, n = _pool(recent[split:])
        level = err / n
    else:
        level = _median([v for _, v, _ in recent[split:]])
    k = _ramp_start(recent, k, split, baseline, level, weighted=pooled)
    if pooled:
        err, n = _pool(recent[k:])
        observed = err / n
    else:
        observed = _median([v for _, v, _ in recent[k:]])
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


def _change_point(
    recent: Sequence[_Point], valid: Sequence[int], before: float, *, weighted: bool
) -> int:
    """The split of ``valid`` that best fits the recent points as two levels: the
    baseline's before it, the tail's own after it (least absolute deviations, each point
    weighted by its observations for shares). The split of the strongest evidence would
    be biased early: a median stays high with almost half the tail from before."""

    def cost(k: int) -> float:
        tail = recent[k:]
        if weighted:
            return _binomial_cost(recent, k, before)
        level = _median([v for _, v, _ in tail])
        return math.fsum(
            abs(v - (before if i < k else level)) for i, (_, v, _) in enumerate(recent)
        )

    # Any split from the earliest significant one on: the tail after the onset may be
    # shorter than the persistence (the last points of a share can be too small to
    # contradict a shift they do not show yet), and the fit alone places it.
    return min(range(min(valid), len(recent)), key=lambda k: (cost(k), k))


_WILSON_Z = 2.0


def _upper_rate(errors: int, n: int) -> float:
    """The upper Wilson score bound (about 97.5 %) of a rate seen as ``errors`` of
    ``n``: about 4/n when no error was seen, close to the rate itself for many."""
    z2 = _WILSON_Z**2
    p = min(max(errors / n, 0.0), 1.0)
    centre = p + z2 / (2 * n)
    spread = _WILSON_Z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return min(1.0, (centre + spread) / (1 + z2 / n))


def _lower_rate(errors: int, n: int) -> float:
    """The lower Wilson score bound (about 2.5 %) of a rate seen as ``errors`` of ``n``:
    0 when no error was seen, close to the rate itself for many."""
    z2 = _WILSON_Z**2
    p = min(max(errors / n, 0.0), 1.0)
    centre = p + z2 / (2 * n)
    spread = _WILSON_Z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, (centre - spread) / (1 + z2 / n))


def _binomial_cost(recent: Sequence[_Point], k: int, before: float) -> float:
    """Negative log-likelihood of the shares' errors as two binomial levels: ``before``
    up to split ``k``, the tail's pooled rate after it (the maximum-likelihood change
    point of counts; rates kept off 0 and 1 so that one error does not cost infinity)."""
    err, n = _pool(recent[k:])
    after = err / n if n else before

    def nll(points: Sequence[_Point], p: float) -> float:
        p = min(max(p, 1e-6), 1.0 - 1e-6)
        lp, lq = math.log(p), math.log1p(-p)
        return -math.fsum(v * c * lp + (c - v * c) * lq for _, v, c in points)

    return nll(recent[:k], before) + nll(recent[k:], after)


def _shift_start(recent: Sequence[_Point], k: int, beyond: Callable[[float, int], bool]) -> int:
    """The first point of the shift that ends at split ``k``: the two-level fit puts a
    ramp's onset mid-ramp (where its level is half-way), so the split moves back over the
    points just before it that are already clearly beyond the baseline's noise (a
    CUSUM-like start: where the excursion that led to the shift began)."""
    while k > 0 and beyond(recent[k - 1][1], recent[k - 1][2]):
        k -= 1
    return k


def _ramp_start(
    recent: Sequence[_Point],
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


def _pool(points: Sequence[_Point]) -> tuple[int, int]:
    """(errors, requests) of share points, each weighted by its requests."""
    # Lists, not generators: the same sums in the same order, faster (called on the
    # baseline of every share series at every step).
    errors = sum([v * c for _, v, c in points])
    return round(errors), sum([c for _, _, c in points])


def _detect_share(
    key: SliKey, base: _Baseline, recent: list[_Point], s: DetectionSettings
) -> Anomaly | None:
    kind = key.kind
    # No error in the last points is no shift whatever the baseline: checked first, as
    # most share series at most steps have none.
    last = recent[-s.persistence_points :]
    l_err, l_n = _pool(last)
    if l_n == 0 or l_err == 0:
        return None
    b_err, b_n = base.pooled()
    if b_n <= 0:
        return None
    p0 = b_err / b_n
    # The baseline rate is an estimate: it is tested at its upper confidence bound, so a
    # baseline that saw no error by chance (a quiet component) does not make a few
    # errors look impossible.
    p_null = _upper_rate(b_err, b_n)
    emerging = kind is SliKind.ERROR_RATE_BY_TYPE and b_err == 0
    if not emerging:
        if not _big_enough(kind, p0, l_err / l_n, s):
            return None
        # Every one of the last points must be beyond the minimum effect, or too small
        # (few requests) to say it is not: a point of 5 requests without an error does
        # not end a 30 % error rate, one of 2,000 requests does.
        p_effect = min(1.0, max(p0 + s.error_rate_min_increase, p0 * s.error_rate_min_ratio))
        for _, v, c in last:
            if _big_enough(kind, p0, v, s):
                continue
            below = 1.0 - 10 ** _log10_binomial_tail(round(v * c) + 1, c, p_effect)
            if below < _CONSISTENT:
                return None
        # Nor may one point carry the shift alone: without its most erroneous point, the
        # others together must still be consistent with the minimum effect (one spike of
        # 8 errors then three clean points of 50 requests is a spike, not a shift).
        rest = sorted(last, key=lambda p: p[1] * p[2])[:-1]
        r_err, r_n = _pool(rest)
        if r_n and 1.0 - 10 ** _log10_binomial_tail(r_err + 1, r_n, p_effect) < _SPIKE_ONLY:
            return None
    valid: list[int] = []
    best: tuple[float, int, float] | None = None
    # What _pool sums for each point, built once for all the splits (summing slices of
    # these in the same order gives exactly _pool's numbers).
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
        elif not _big_enough(kind, p0, observed, s):
            continue
        score = -_log10_binomial_tail(err, n, p_null)
        if score >= -math.log10(s.max_p_value):
            valid.append(k)
            if best is None or score > best[0]:
                best = (score, k, observed)
    if best is None:
        return None
    found = _located(
        key,
        recent,
        valid,
        before=p_null,
        baseline=p0,
        score=min(best[0], 1e6),
        beyond=lambda v, c: (
            v > p0 and _log10_binomial_tail(round(v * c), c, p_null) < _ONSET_LOG10_P
        ),
        pooled=True,
        detector=Detector.EMERGENCE if emerging else Detector.LEVEL_SHIFT,
    )
    # The errors may sit in the last points only, after a quiet start of the persistence
    # window: the shift dated there has not held the persistence yet.
    if found.onset > recent[-s.persistence_points][0]:
        return None
    return found


def detect(
    slis: Mapping[SliKey, SliSeries],
    now: datetime,
    settings: DetectionSettings,
    fine: Mapping[SliKey, SliSeries] | None = None,
) -> DetectionResult:
    """Every series judged at ``now``: anomalies and not-enough-data, in key order.
    ``fine``: the SLIs at ``step_seconds / fast_step_divisor``, which the fast path also
    judges when the divisor is above 1 (without them it sees the steps' points only)."""
    if now.tzinfo is None:
        raise ValueError(f"now {now.isoformat()!r} has no timezone")
    anomalies: list[Anomaly] = []
    missing: list[NotEnoughData] = []
    checked = 0
    at = _At.of(now, settings)
    # Key order, with the keys' fields compared in C (SliKey's own comparison runs in
    # Python, and a replay sorts at every step).
    for key in sorted(slis, key=_fields):
        verdict = _judge(slis[key], at, None if fine is None else fine.get(key))
        if isinstance(verdict, NotEnoughData):
            missing.append(verdict)
            continue
        checked += 1
        if verdict is not None:
            anomalies.append(verdict)
    return DetectionResult(
        at=now, anomalies=tuple(anomalies), not_enough_data=tuple(missing), checked=checked
    )
