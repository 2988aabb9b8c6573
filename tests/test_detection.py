"""Tests of detection (``sentinel.detection``) and of incident correlation and lifecycle
(``sentinel.incidents``): no detector fires on constant series or on noise below the
minimum effects, real shifts are found with their onset, simulated faults are detected at
the right component, too little data is said so, connected anomalies make one incident.

What must not live here: the ``sentinel detect`` command (test_detect_cli.py).
"""

from __future__ import annotations

import dataclasses
import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sentinel.cases import Case, FaultKind
from sentinel.detection import (
    Anomaly,
    Detector,
    NotEnoughData,
    NotEnoughDataReason,
    detect,
    detect_series,
)
from sentinel.incidents import (
    AnomalyMerged,
    IllegalTransition,
    IncidentOpened,
    IncidentResolved,
    IncidentStatus,
    LifecycleEvent,
    TrackedIncident,
    correlate,
    recovered,
    replay_case,
    transition,
)
from sentinel.settings import DetectionSettings, PricingSettings
from sentinel.sim import FaultSpec, Topology, plan_fault, simulate_case
from sentinel.sim.faults import Magnitude
from sentinel.sli import SliKey, SliKind, SliSeries

T0 = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)
S = DetectionSettings()
STEP = timedelta(seconds=S.step_seconds)
N = 90  # 45 minutes of points


def series(kind: SliKind, values: list[float], counts: list[int] | None = None) -> SliSeries:
    return SliSeries(
        key=SliKey("tool:lookup", kind),
        points=tuple((T0 + i * STEP, v) for i, v in enumerate(values)),
        counts=tuple(counts if counts is not None else [200] * len(values)),
    )


# The fast path also judged on half-steps.
HALF = S.model_copy(update={"fast_step_divisor": 2})
FINE = STEP / 2


def fine_series(kind: SliKind, values: list[float], counts: list[int]) -> SliSeries:
    """The same SLI on the half-step grid (2N points over the same window)."""
    return SliSeries(
        key=SliKey("tool:lookup", kind),
        points=tuple((T0 + i * FINE, v) for i, v in enumerate(values)),
        counts=tuple(counts),
    )


def at_end(n: int = N) -> datetime:
    return T0 + n * STEP


# Per kind: a value range within which no shift can reach the minimum effect.
QUIET = {
    SliKind.REQUEST_RATE: (1.0, 1.8),
    SliKind.ERROR_RATE: (0.0, 0.04),
    SliKind.ERROR_RATE_BY_TYPE: (0.01, 0.04),
    SliKind.LATENCY_P50: (0.9, 1.1),
    SliKind.LATENCY_P95: (0.9, 1.1),
    SliKind.LATENCY_P99: (0.9, 1.1),
    SliKind.INPUT_TOKENS_PER_REQUEST: (1000.0, 1200.0),
    SliKind.OUTPUT_TOKENS_PER_REQUEST: (300.0, 360.0),
    SliKind.COST_PER_REQUEST: (0.01, 0.012),
    SliKind.TOOL_FAILURE_RATE: (0.0, 0.04),
    SliKind.STEPS_PER_RUN: (5.0, 5.9),
    SliKind.EVAL_SCORE: (0.81, 0.835),
    SliKind.GUARDRAIL_TRIGGERS: (0.0, 0.04),
    SliKind.REFUSED_CALL_RATE: (0.0, 0.04),
    SliKind.MEMORY_UTILISATION: (0.40, 0.48),
    SliKind.MEMORY_WORKING_SET: (1.0e9, 1.15e9),
    SliKind.CPU_USAGE: (0.40, 0.55),
}


@given(
    kind=st.sampled_from(list(SliKind)),
    value=st.floats(min_value=0.0, max_value=1e6, allow_nan=False),
    count=st.integers(min_value=0, max_value=10_000),
    length=st.integers(min_value=0, max_value=N),
)
@settings(max_examples=300, deadline=None)
def test_no_detector_fires_on_a_constant_series(
    kind: SliKind, value: float, count: int, length: int
) -> None:
    if kind.share:
        value = min(value, 1.0)
    s = series(kind, [value] * length, [count] * length)
    f = fine_series(kind, [value] * (2 * length), [count] * (2 * length))
    for n in (length // 2, length, length + 3):
        assert not isinstance(detect_series(s, at_end(n), S), Anomaly)
        assert not isinstance(detect_series(s, at_end(n), HALF, f), Anomaly)


@given(kind=st.sampled_from(list(SliKind)), seed=st.integers(0, 2**32 - 1))
@settings(max_examples=150, deadline=None)
def test_no_detector_fires_on_noise_below_the_minimum_effect(kind: SliKind, seed: int) -> None:
    rng = random.Random(seed)
    lo, hi = QUIET[kind]
    values = [rng.uniform(lo, hi) for _ in range(N)]
    counts = [rng.randint(S.min_point_count, 5000) for _ in range(N)]
    result = detect({SliKey("tool:lookup", kind): series(kind, values, counts)}, at_end(), S)
    assert result.anomalies == ()


def step_change(before: float, after: float, at: int, noise: float, seed: int = 1) -> list[float]:
    rng = random.Random(seed)
    return [(before if i < at else after) * (1 + rng.uniform(-noise, noise)) for i in range(N)]


@pytest.mark.parametrize(
    ("kind", "before", "after"),
    [
        (SliKind.LATENCY_P50, 0.2, 0.6),
        (SliKind.ERROR_RATE, 0.01, 0.2),
        (SliKind.EVAL_SCORE, 0.9, 0.7),
        (SliKind.REQUEST_RATE, 5.0, 1.0),
        (SliKind.OUTPUT_TOKENS_PER_REQUEST, 300.0, 700.0),
        (SliKind.STEPS_PER_RUN, 4.0, 9.0),
    ],
)
def test_a_level_shift_in_the_bad_direction_is_found_with_its_onset(
    kind: SliKind, before: float, after: float
) -> None:
    at = N - 8

    def make(values: list[float]) -> SliSeries:
        if kind is SliKind.REQUEST_RATE:  # a rate's count is its requests per step
            return series(kind, values, [round(v * S.step_seconds) for v in values])
        return series(kind, values)

    s = make(step_change(before, after, at, 0.05))
    found = detect_series(s, at_end(), S)
    assert isinstance(found, Anomaly)
    assert found.onset == T0 + at * STEP
    assert found.baseline == pytest.approx(before, rel=0.1)
    assert found.observed == pytest.approx(after, rel=0.1)
    # The same shift in the harmless direction is no anomaly.
    harmless = before * 1.5 if kind in (SliKind.EVAL_SCORE, SliKind.REQUEST_RATE) else before / 2
    reverse = make(step_change(before, harmless, at, 0.05))
    assert not isinstance(detect_series(reverse, at_end(), S), Anomaly)


def test_a_fast_service_twice_as_slow_pages_but_a_sub_millisecond_rise_does_not() -> None:
    # The microservices suite's subtle service latency: a 4 ms currency service at
    # 8.6 ms, 100 calls a point. Under 0.02 s of absolute rise (the floor before session
    # 25) it paged nothing, however certain.
    at = N - 8
    found = detect_series(
        series(SliKind.LATENCY_P50, step_change(0.004, 0.0086, at, 0.05)), at_end(), S
    )
    assert isinstance(found, Anomaly)
    assert found.onset == T0 + at * STEP
    # The same doubling of a 0.8 ms call is under the floor: not a fault.
    tiny = series(SliKind.LATENCY_P50, step_change(0.0008, 0.0017, at, 0.05))
    assert not isinstance(detect_series(tiny, at_end(), S), Anomaly)
    relaxed = S.model_copy(update={"latency_min_increase_seconds": 0.0})
    assert isinstance(detect_series(tiny, at_end(), relaxed), Anomaly)


def test_a_ramp_is_dated_from_its_first_point_not_its_middle() -> None:
    at, ramp = N - 12, 8  # 0.2 s rising to 0.8 s over 8 points, then held
    rng = random.Random(3)
    values = []
    for i in range(N):
        level = 0.2 + 0.6 * min(1.0, max(0, i - at + 1) / ramp)
        values.append(level * (1 + rng.uniform(-0.02, 0.02)))
    found = detect_series(series(SliKind.LATENCY_P50, values), at_end(), S)
    assert isinstance(found, Anomaly)
    assert found.onset == T0 + at * STEP


def test_the_fast_path_ignores_points_resting_on_few_observations() -> None:
    fast = S.fast_persistence_points
    values = [0.2] * (N - fast) + [2.0] * fast  # ten times slower, for the last points
    few = [20] * (N - fast) + [S.min_point_count] * fast  # ... each from three calls
    assert detect_series(series(SliKind.LATENCY_P50, values, few), at_end(), S) is None
    many = [20] * N
    assert isinstance(
        detect_series(series(SliKind.LATENCY_P50, values, many), at_end(), S), Anomaly
    )


def test_the_fast_paths_observation_floor_does_not_follow_the_evidence_factor() -> None:
    # Until session 11 the floor was min_point_count times the factor: 1.5 gave 4 calls.
    fast = S.fast_persistence_points
    values = [0.2] * (N - fast) + [2.0] * fast
    four = [20] * (N - fast) + [4] * fast  # the last points: a p50 of four calls each
    lower = S.model_copy(update={"fast_evidence_factor": 1.5})
    assert detect_series(series(SliKind.LATENCY_P50, values, four), at_end(), lower) is None
    floor4 = lower.model_copy(update={"fast_min_point_count": 4})
    found = detect_series(series(SliKind.LATENCY_P50, values, four), at_end(), floor4)
    assert isinstance(found, Anomaly)
    assert found.onset == T0 + (N - fast) * STEP


def slow_p50_with_its_p99(
    counts: int, timeouts: int, *, fine: bool = False
) -> tuple[dict[SliKey, SliSeries], dict[SliKey, SliSeries]]:
    """A tool's p50 (0.2 s) ten times slower on its last two points (step points, or
    half-steps with ``fine``) of ``counts`` calls each, and its p99 on steps (0.3 s), of
    whose baseline points ``timeouts`` held a 6.5 s call: (step SLIs, half-step SLIs)."""
    fast = S.fast_persistence_points
    p99 = [0.3] * (N - 1) + [2.5]
    for i in range(timeouts):  # in the baseline: the 30 minutes before the recent 10
        p99[N - 25 - 5 * i] = 6.5
    if fine:
        steps = [0.2] * (N - 1) + [2.0]  # on steps: one slow point, not the fast path's two
        calls = [40] * N
    else:
        steps = [0.2] * (N - fast) + [2.0] * fast
        calls = [20] * (N - fast) + [counts] * fast
    slis = {
        x.key: x
        for x in (
            series(SliKind.LATENCY_P50, steps, calls),
            series(SliKind.LATENCY_P99, p99, calls),
        )
    }
    if not fine:
        return slis, {}
    half = fine_series(
        SliKind.LATENCY_P50,
        [0.2] * (2 * N - fast) + [2.0] * fast,
        [20] * (2 * N - fast) + [counts] * fast,
    )
    return slis, {half.key: half}


def p50_found(slis: dict[SliKey, SliSeries], fine: dict[SliKey, SliSeries]) -> bool:
    result = detect(slis, at_end(), HALF, fine or None)
    return any(a.sli is SliKind.LATENCY_P50 for a in result.anomalies)


def test_a_p50_of_few_calls_beyond_every_call_of_its_baseline_takes_the_fast_path() -> None:
    # Four calls a point, under the floor of 6: without its p99 the p50 waits (it could
    # be a heavy tail); with a baseline whose every call was under 0.3 s it is none.
    slis, _ = slow_p50_with_its_p99(4, timeouts=0)
    p50 = slis[SliKey("tool:lookup", SliKind.LATENCY_P50)]
    assert detect_series(p50, at_end(), HALF) is None
    assert p50_found(slis, {})
    p99 = slis[SliKey("tool:lookup", SliKind.LATENCY_P99)]
    assert isinstance(detect_series(p50, at_end(), HALF, p99=p99), Anomaly)
    # Two timeouts in 30 minutes are outliers; a third makes the tail a real one.
    assert p50_found(*slow_p50_with_its_p99(4, timeouts=2))
    assert not p50_found(*slow_p50_with_its_p99(4, timeouts=3))
    # Fewer calls than min_point_count are no point at all.
    assert not p50_found(*slow_p50_with_its_p99(S.min_point_count - 1, timeouts=0))


def test_half_steps_of_few_calls_beyond_every_call_of_the_baseline_page_a_step_sooner() -> None:
    slis, fine = slow_p50_with_its_p99(5, timeouts=0, fine=True)
    found = detect(slis, at_end(), HALF, fine).anomalies
    assert [(a.sli, a.onset) for a in found] == [(SliKind.LATENCY_P50, T0 + (N - 1) * STEP)]
    assert p50_found(*slow_p50_with_its_p99(5, timeouts=2, fine=True))
    assert not p50_found(*slow_p50_with_its_p99(5, timeouts=3, fine=True))


def test_the_fast_path_takes_evaluator_scores_on_fewer_scored_runs_than_requests() -> None:
    # A prompt regression's scores drop 0.4 on points of 4 scored runs: below the
    # requests' floor of 6, above the scores' floor of 3. A p50 of 4 calls still waits.
    fast = S.fast_persistence_points
    rng = random.Random(5)
    scores = [0.85 + rng.uniform(-0.01, 0.01) for _ in range(N - fast)] + [0.45] * fast
    four = [12] * (N - fast) + [4] * fast
    found = detect_series(series(SliKind.EVAL_SCORE, scores, four), at_end(), S)
    assert isinstance(found, Anomaly)
    assert found.onset == T0 + (N - fast) * STEP
    strict = S.model_copy(update={"fast_min_score_count": S.fast_min_point_count})
    assert detect_series(series(SliKind.EVAL_SCORE, scores, four), at_end(), strict) is None
    slow = [0.2] * (N - fast) + [2.0] * fast
    assert detect_series(series(SliKind.LATENCY_P50, slow, four), at_end(), S) is None
    # Fewer scored runs than min_point_count are no point at all, whatever the floor.
    two = [12] * (N - fast) + [2] * fast
    loose = S.model_copy(update={"fast_min_score_count": 1})
    assert not isinstance(
        detect_series(series(SliKind.EVAL_SCORE, scores, two), at_end(), loose), Anomaly
    )


def test_an_error_rate_step_is_dated_from_its_first_point_even_when_found_early() -> None:
    # Errors start in the last 3 points only; before, few requests and no error: the
    # onset is where the errors start, not persistence_points before now.
    counts = [20] * (N - 3) + [20, 20, 20]
    values = [0.0] * (N - 3) + [0.5, 0.5, 0.5]
    counts[N - 4] = 2  # a tiny point just before: too small to say it had no shift
    found = detect_series(series(SliKind.ERROR_RATE, values, counts), at_end(), S)
    assert isinstance(found, Anomaly)
    assert found.onset == T0 + (N - 3) * STEP


def test_a_few_errors_after_a_clean_but_small_baseline_do_not_page() -> None:
    # 5 requests a step and no error in the baseline (a quiet component, whose true rate
    # may well be 1 %), then one error in each of the last 6 steps of 16 requests.
    counts = [5] * (N - 6) + [16] * 6
    values = [0.0] * (N - 6) + [1 / 16] * 6
    found = detect_series(series(SliKind.ERROR_RATE, values, counts), at_end(), S)
    assert not isinstance(found, Anomaly)
    # The same share over many more requests is evidence, and pages.
    many = detect_series(series(SliKind.ERROR_RATE, values, [5] * (N - 6) + [400] * 6), at_end(), S)
    assert isinstance(many, Anomaly)


@pytest.mark.parametrize(("after", "pages"), [(0.75, True), (0.52, False)])
def test_memory_utilisation_pages_on_a_rise_of_the_minimum_share_of_the_limit(
    after: float, pages: bool
) -> None:
    # Gauges: two samples a step are enough (each measures the whole process).
    values = step_change(0.45, after, N - 8, 0.01)
    found = detect_series(series(SliKind.MEMORY_UTILISATION, values, [2] * N), at_end(), S)
    assert isinstance(found, Anomaly) is pages
    if pages:
        assert isinstance(found, Anomaly)
        assert found.onset == T0 + (N - 8) * STEP


@pytest.mark.parametrize(
    ("kind", "before", "after", "pages"),
    [
        (SliKind.CPU_USAGE, 0.3, 0.9, True),
        (SliKind.CPU_USAGE, 0.3, 0.4, False),  # 1.33x: under the ratio
        (SliKind.CPU_USAGE, 0.02, 0.08, False),  # 4x, but 0.06 cores
        (SliKind.MEMORY_WORKING_SET, 1e9, 1.5e9, True),  # no limit: bytes, by ratio
        (SliKind.MEMORY_WORKING_SET, 1e9, 1.1e9, False),
    ],
)
def test_cpu_and_unlimited_memory_page_past_their_minimum_effect(
    kind: SliKind, before: float, after: float, pages: bool
) -> None:
    values = step_change(before, after, N - 8, 0.01)
    found = detect_series(series(kind, values, [2] * N), at_end(), S)
    assert isinstance(found, Anomaly) is pages


def test_a_blip_that_ended_does_not_page_however_strong() -> None:
    values = [0.2] * N
    for i in range(N - S.persistence_points, N - 1):
        values[i] = 2.0  # three points ten times slower, then back to normal
    assert detect_series(series(SliKind.LATENCY_P50, values), at_end(), S) is None


def test_a_shift_shorter_than_the_persistence_pages_only_on_overwhelming_evidence() -> None:
    no_fast_path = S.model_copy(update={"fast_persistence_points": S.persistence_points})
    fast = S.fast_persistence_points
    assert fast < S.persistence_points
    values = [0.2] * (N - fast) + [2.0] * fast  # the latest points, ten times slower
    assert detect_series(series(SliKind.LATENCY_P50, values), at_end(), no_fast_path) is None
    found = detect_series(series(SliKind.LATENCY_P50, values), at_end(), S)
    assert isinstance(found, Anomaly)
    assert found.onset == T0 + (N - fast) * STEP
    # Barely beyond the minimum effect against a noisy baseline: the fast path's bar
    # (min_z times fast_evidence_factor) is not met by one point.
    rng = random.Random(3)
    noisy = [0.2 + rng.gauss(0, 0.03) for _ in range(N - fast)] + [0.33] * fast
    assert detect_series(series(SliKind.LATENCY_P50, noisy), at_end(), S) is None


def test_a_component_that_bursts_must_beat_its_own_bursts() -> None:
    # Errors of a busy service: 0.1 % with a 2-point burst of 10 % in its baseline (as a
    # provider's hiccup every quarter hour), then the latest two points at 20 %.
    values = [0.001] * N
    values[N - 40], values[N - 39] = 0.10, 0.10
    values[-2:] = [0.20, 0.20]
    bursty = series(SliKind.ERROR_RATE, values, [1000] * N)
    # 20 % is twice the baseline's burst: the fast path (4x its effects) waits for the
    # persistence, which a 2-point burst never reaches.
    assert detect_series(bursty, at_end(), S) is None
    # The same two points against a baseline without the burst are a hard failure.
    values[N - 40], values[N - 39] = 0.001, 0.001
    assert isinstance(
        detect_series(series(SliKind.ERROR_RATE, values, [1000] * N), at_end(), S), Anomaly
    )
    # A burst of the persistence's length in the baseline: the same again is not news, a
    # shift well beyond it is.
    values = [0.001] * N
    values[N - 40 : N - 36] = [0.08] * 4
    values[-4:] = [0.09] * 4
    assert detect_series(series(SliKind.ERROR_RATE, values, [1000] * N), at_end(), S) is None
    values[-4:] = [0.25] * 4
    found = detect_series(series(SliKind.ERROR_RATE, values, [1000] * N), at_end(), S)
    assert isinstance(found, Anomaly)
    assert found.onset == T0 + (N - 4) * STEP


# --- the fast path on half-steps (fast_step_divisor) ----------------------------------------


def test_a_hard_failure_pages_on_two_half_steps_with_its_onset_on_the_step_grid() -> None:
    # p50 0.2 s, ten times slower from the second half of the step before last: the last
    # three half-steps are slow, the steps show one slow point after a mixed one.
    rng = random.Random(5)
    fine = [0.2 * (1 + rng.uniform(-0.05, 0.05)) for _ in range(2 * N - 3)] + [2.0] * 3
    steps = [0.2 * (1 + rng.uniform(-0.05, 0.05)) for _ in range(N - 2)] + [0.25, 2.0]
    s = series(SliKind.LATENCY_P50, steps, [20] * N)
    f = fine_series(SliKind.LATENCY_P50, fine, [10] * (2 * N))
    # On steps, one slow point is not the fast path's two: no anomaly yet.
    assert detect_series(s, at_end(), HALF) is None
    # With a divisor of 1 the half-steps are not looked at.
    steps_only = S.model_copy(update={"fast_step_divisor": 1})
    assert detect_series(s, at_end(), steps_only, f) is None
    found = detect_series(s, at_end(), HALF, f)
    assert isinstance(found, Anomaly)
    # The change is at half-step 2N-3, inside step N-2: dated at that step's start.
    assert found.onset == T0 + (N - 2) * STEP
    result = detect({s.key: s}, at_end(), HALF, {f.key: f})
    assert [a.onset for a in result.anomalies] == [found.onset]


def test_half_steps_of_few_observations_do_not_take_the_fast_path() -> None:
    fine = [0.2] * (2 * N - 2) + [2.0] * 2
    few = [S.min_point_count] * (2 * N)  # a p50 of three calls, ten times slower
    s = series(SliKind.LATENCY_P50, [0.2] * (N - 1) + [2.0], [2 * S.min_point_count] * N)
    f = fine_series(SliKind.LATENCY_P50, fine, few)
    assert detect_series(s, at_end(), HALF, f) is None
    # A half-step missing at the end is no evidence either.
    gap = fine_series(SliKind.LATENCY_P50, fine[:-1], [20] * (2 * N - 1))
    assert detect_series(s, at_end(), HALF, gap) is None


def test_a_half_step_without_a_call_does_not_hold_back_the_fast_path() -> None:
    # Evaluator scores of an agent whose evaluators score a few runs a minute: they fall
    # 0.3 in the last three half-steps, and the middle one happens to hold no scored run.
    rng = random.Random(7)
    scores = [0.88 + rng.uniform(-0.015, 0.015) for _ in range(2 * N - 3)] + [0.55] * 3

    def without(values: list[float], empty: set[int]) -> SliSeries:
        """``fine_series`` of 4 scored runs a half-step, the ``empty`` half-steps absent."""
        kept = [(T0 + i * FINE, v) for i, v in enumerate(values) if i not in empty]
        return SliSeries(
            key=SliKey("tool:lookup", SliKind.EVAL_SCORE),
            points=tuple(kept),
            counts=tuple([4] * len(kept)),
        )

    f = without(scores, {2 * N - 2})
    steps = [0.88] * (N - 1) + [0.55]  # on steps: one low point, not the fast path's two
    s = series(SliKind.EVAL_SCORE, steps, [8] * N)
    consecutive = HALF.model_copy(update={"fast_gap_points": 0})
    assert detect_series(s, at_end(), consecutive, f) is None
    found = detect_series(s, at_end(), HALF, f)
    assert isinstance(found, Anomaly)
    assert found.onset == T0 + (N - 2) * STEP
    # Two low points spread over more half-steps than the gap allows are not the fast
    # path's: the fall from half-step 2N-4, with 2N-3 and 2N-2 holding no scored run.
    low = [*scores[: 2 * N - 4], 0.55, 0.55, 0.55, 0.55]
    sparse = without(low, {2 * N - 3, 2 * N - 2})
    assert detect_series(s, at_end(), HALF, sparse) is None
    wider = HALF.model_copy(update={"fast_gap_points": 2})
    assert isinstance(detect_series(s, at_end(), wider, sparse), Anomaly)


def test_a_half_step_of_one_scored_run_counts_towards_the_scores_floor_together() -> None:
    # A prompt regression's first 30 s on half-steps of an agent whose evaluators score
    # about 4 runs each: 3 scored runs 0.3 down, then 1. Each point alone is under the
    # floor the fast path used to ask of each; together they hold it.
    rng = random.Random(11)
    base = [0.88 + rng.gauss(0, 0.012) for _ in range(2 * N - 2)]

    def halves(last: list[tuple[float, int]]) -> SliSeries:
        values = base + [v for v, _ in last]
        return fine_series(SliKind.EVAL_SCORE, values, [4] * (2 * N - 2) + [c for _, c in last])

    s = series(SliKind.EVAL_SCORE, [0.88] * (N - 1) + [0.57], [8] * (N - 1) + [4])
    found = detect_series(s, at_end(), HALF, halves([(0.58, 3), (0.55, 1)]))
    assert isinstance(found, Anomaly)
    assert found.onset == T0 + (N - 1) * STEP
    # Fewer runs together than the floor are not the fast path's, however low.
    two = halves([(0.3, 1), (0.3, 1)])
    assert detect_series(s, at_end(), HALF, two) is None
    floor_of_one = HALF.model_copy(update={"min_point_count": 1, "fast_min_score_count": 1})
    assert isinstance(detect_series(s, at_end(), floor_of_one, two), Anomaly)
    # A drop under the fast path's minimum effect is none, whatever the runs.
    assert detect_series(s, at_end(), HALF, halves([(0.86, 3), (0.85, 1)])) is None
    # Requests keep the floor on each point: a p50 of one call is no point.
    p50 = series(SliKind.LATENCY_P50, [0.2] * (N - 1) + [2.0], [20] * N)
    slow = fine_series(
        SliKind.LATENCY_P50, [0.2] * (2 * N - 2) + [2.0, 2.0], [20] * (2 * N - 2) + [8, 1]
    )
    assert detect_series(p50, at_end(), HALF, slow) is None


def test_a_quiet_component_pages_on_half_steps_unless_its_baseline_burst_as_much() -> None:
    # A model called about 8 times a step: a lone error in its baseline (in a run of two
    # half-steps of two calls), then 12 errors in 16 calls over the last two half-steps
    # (a provider failing three calls in four).
    counts = [4] * (2 * N - 2) + [5, 11]
    values = [0.0] * (2 * N - 2) + [4 / 5, 8 / 11]
    values[40], counts[40], counts[41] = 1 / 2, 2, 2

    def on_steps(values: list[float], counts: list[int]) -> SliSeries:
        errors = [v * c for v, c in zip(values, counts, strict=True)]
        per_step = [counts[2 * i] + counts[2 * i + 1] for i in range(N)]
        return series(
            SliKind.ERROR_RATE,
            [(errors[2 * i] + errors[2 * i + 1]) / per_step[i] for i in range(N)],
            per_step,
        )

    s = on_steps(values, counts)
    f = fine_series(SliKind.ERROR_RATE, values, counts)
    # On steps, the errors sit in the last point only: not a shift that held.
    assert detect_series(s, at_end(), HALF) is None
    # On half-steps they hold two points. The baseline's run of one error in four calls
    # is not a 25 % burst the failure would have to beat by four times.
    found = detect_series(s, at_end(), HALF, f)
    assert isinstance(found, Anomaly)
    assert found.onset == T0 + (N - 1) * STEP
    # Three errors in four calls are a burst: the same failure is then the component's
    # usual weather, not a page.
    values[100], counts[100], values[101], counts[101] = 1.0, 2, 1 / 2, 2
    bursty = fine_series(SliKind.ERROR_RATE, values, counts)
    assert detect_series(on_steps(values, counts), at_end(), HALF, bursty) is None


def test_one_spike_of_errors_is_not_a_persistent_shift() -> None:
    # Eight errors in one point, then clean points: pooled over the persistence window it
    # is above 5 %, but no point after the spike carries the shift.
    counts = [40] * N
    values = [0.0] * N
    values[N - 30] = 1 / 40  # the baseline's rare error
    values[N - 3] = 8 / 50
    counts[N - 3] = 50
    values[N - 2] = 1 / 30
    counts[N - 2] = 30
    counts[N - 1] = 50
    assert detect_series(series(SliKind.ERROR_RATE, values, counts), at_end(), S) is None
    # The same errors spread over the last four points are a shift.
    values[-4:] = [3 / 40, 3 / 40, 3 / 50, 3 / 30]
    counts[-4:] = [40, 40, 50, 30]
    assert isinstance(
        detect_series(series(SliKind.ERROR_RATE, values, counts), at_end(), S), Anomaly
    )


def test_an_error_type_never_seen_in_the_baseline_emerges() -> None:
    values = [0.0] * (N - 6) + [0.02] * 6
    s = SliSeries(
        key=SliKey("tool:lookup", SliKind.ERROR_RATE_BY_TYPE, "rate_limited"),
        points=tuple((T0 + i * STEP, v) for i, v in enumerate(values)),
        counts=(100,) * N,
    )
    found = detect_series(s, at_end(), S)
    assert isinstance(found, Anomaly)
    assert found.detector is Detector.EMERGENCE
    assert found.qualifier == "rate_limited"


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (
            lambda: series(SliKind.LATENCY_P50, [0.2] * 10),
            NotEnoughDataReason.TOO_FEW_BASELINE_POINTS,
        ),
        (
            lambda: series(SliKind.LATENCY_P50, [0.2] * N, [1] * N),
            NotEnoughDataReason.TOO_FEW_OBSERVATIONS,
        ),
        (
            lambda: series(SliKind.LATENCY_P50, [0.2] * (N - 10)),
            NotEnoughDataReason.GAP,
        ),
        (
            lambda: series(SliKind.ERROR_RATE, [0.0] * N, [50] * (N - 6) + [0] * 6),
            NotEnoughDataReason.ZERO_TRAFFIC,
        ),
    ],
)
def test_too_little_data_is_said_not_guessed(make: object, reason: NotEnoughDataReason) -> None:
    assert callable(make)
    found = detect_series(make(), at_end(), S)
    assert isinstance(found, NotEnoughData)
    assert found.reason is reason


def test_detect_reports_not_enough_data_and_counts_what_it_judged() -> None:
    good = series(SliKind.LATENCY_P50, [0.2] * N)
    short = SliSeries(SliKey("tool:other", SliKind.LATENCY_P50), good.points[:5], good.counts[:5])
    result = detect({good.key: good, short.key: short}, at_end(), S)
    assert result.checked == 1
    assert [m.component for m in result.not_enough_data] == ["tool:other"]


def test_detect_rejects_a_naive_now() -> None:
    with pytest.raises(ValueError, match="timezone"):
        detect({}, datetime(2026, 1, 1), S)  # noqa: DTZ001  (the point of the test)


# --- simulated faults ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("topology", "fault", "seed"),
    [
        (Topology.SUPPORT, FaultKind.TOOL_LATENCY, 255985076),
        (Topology.MULTI_AGENT, FaultKind.MODEL_VERSION_CHANGE, 1800188482),
        (Topology.SUPPORT, FaultKind.SERVICE_LATENCY, 1033639716),
        (Topology.MULTI_AGENT, FaultKind.MODEL_PROVIDER_ERRORS, 1796035739),
    ],
)
def test_a_simulated_fault_opens_one_incident_at_its_component_near_its_start(
    topology: Topology, fault: FaultKind, seed: int
) -> None:
    spec = FaultSpec(topology=topology, fault=fault, seed=seed)
    case = simulate_case(spec)
    target = plan_fault(spec, random.Random(spec.seed)).target
    assert case.truth is not None
    incidents = replay_case(case, S, PricingSettings())
    assert len(incidents) == 1
    assert target in {a.component for a in incidents[0].anomalies}
    assert abs((incidents[0].onset - case.truth.fault_start).total_seconds()) <= 90


def rate_limit_behind_retries() -> Case:
    """Full traces and no metrics (a daemon without Prometheus): a gateway in front of
    the instrumented search service answers 429 to a quarter of the tool's calls, and the
    tool's retries mostly go through, so its own errors hardly move."""
    spec = FaultSpec(
        Topology.MULTI_AGENT,
        FaultKind.TOOL_RATE_LIMIT,
        seed=2100080514,
        magnitude=Magnitude.SUBTLE,
        sample_ratio=1.0,
    )
    return dataclasses.replace(simulate_case(spec), samples=())


def test_a_rate_limit_behind_retries_pages_on_the_tools_refused_calls() -> None:
    # Before the refused calls were an SLI (session 26) this case opened no incident.
    case = rate_limit_behind_retries()
    assert case.truth is not None
    [incident] = replay_case(case, S, PricingSettings())
    tool = case.truth.root_cause
    assert abs((incident.onset - case.truth.fault_start).total_seconds()) <= 90
    found = {(a.component, a.sli, a.qualifier, a.detector) for a in incident.anomalies}
    assert (tool, SliKind.REFUSED_CALL_RATE, "429", Detector.EMERGENCE) in found
    assert (tool, SliKind.ERROR_RATE, "", Detector.LEVEL_SHIFT) not in found


# --- correlation and lifecycle ---------------------------------------------------------------


def anomaly(component: str, minute: float, kind: SliKind = SliKind.LATENCY_P50) -> Anomaly:
    return Anomaly(
        component=component,
        sli=kind,
        onset=T0 + timedelta(minutes=minute),
        baseline=0.1,
        observed=0.5,
        score=10.0,
    )


EDGES = frozenset(
    {
        ("service:gateway", "agent:support"),
        ("agent:support", "tool:lookup"),
        ("tool:lookup", "service:crm"),
        ("service:billing", "service:ledger"),  # another island
    }
)


def apply(events: tuple[LifecycleEvent, ...], state: dict[str, TrackedIncident]) -> None:
    for ev in events:
        state[ev.incident_id] = transition(state.get(ev.incident_id), ev)


def test_connected_anomalies_close_in_time_make_one_incident_and_later_ones_merge() -> None:
    now = T0 + timedelta(minutes=32)
    first = correlate([anomaly("service:crm", 30), anomaly("agent:support", 31)], EDGES, [], now, S)
    assert len(first) == 1 and isinstance(first[0], IncidentOpened)
    state: dict[str, TrackedIncident] = {}
    apply(first, state)
    (inc,) = state.values()
    assert inc.onset == T0 + timedelta(minutes=30)
    later = correlate(
        [anomaly("service:gateway", 34), anomaly("service:crm", 30)],
        EDGES,
        list(state.values()),
        now + timedelta(minutes=3),
        S,
    )
    assert [type(e) for e in later] == [AnomalyMerged]  # crm's SLI is not news
    apply(later, state)
    assert state[inc.id].incident.components == (
        "agent:support",
        "service:crm",
        "service:gateway",
    )


def test_unconnected_or_distant_anomalies_stay_apart() -> None:
    now = T0 + timedelta(minutes=90)
    events = correlate(
        [
            anomaly("service:crm", 30),
            anomaly("service:ledger", 31),  # same time, no path to crm
            anomaly("agent:support", 80),  # connected, but 50 minutes later
        ],
        EDGES,
        [],
        now,
        S,
    )
    assert [type(e) for e in events] == [IncidentOpened] * 3


def test_recovery_needs_the_sli_back_within_baseline_for_the_configured_time() -> None:
    opened = IncidentOpened(
        incident_id="inc-1",
        time=at_end(40),
        onset=at_end(36),
        anomalies=(anomaly("tool:lookup", 18),),
    )
    inc = transition(None, opened)
    bad = [0.1] * 36 + [0.5] * 20
    good = bad + [0.1] * 30
    slis_bad = {inc.anomalies[0].key: series(SliKind.LATENCY_P50, bad)}
    slis_good = {inc.anomalies[0].key: series(SliKind.LATENCY_P50, good)}
    assert not recovered(inc, slis_bad, at_end(56), S)
    assert not recovered(inc, slis_good, at_end(60), S)  # back, but not for long enough
    assert recovered(inc, slis_good, at_end(86), S)
    assert not recovered(inc, {}, at_end(86), S)  # no data is not recovery


EVENT_KINDS = st.sampled_from(["open", "merge", "resolve"])


@given(script=st.lists(EVENT_KINDS, min_size=1, max_size=8))
@settings(max_examples=200, deadline=None)
def test_only_legal_transitions_are_accepted(script: list[str]) -> None:
    state: TrackedIncident | None = None
    for step, what in enumerate(script):
        now = T0 + timedelta(minutes=step)
        ev: LifecycleEvent
        if what == "open":
            ev = IncidentOpened(
                incident_id="inc-1", time=now, onset=now, anomalies=(anomaly("svc:a", step),)
            )
        elif what == "merge":
            ev = AnomalyMerged(incident_id="inc-1", time=now, anomaly=anomaly(f"svc:b{step}", step))
        else:
            ev = IncidentResolved(incident_id="inc-1", time=now)
        legal = (what == "open" and state is None) or (
            what != "open"
            and state is not None
            and state.incident.status is not IncidentStatus.RESOLVED
        )
        if legal:
            state = transition(state, ev)
        else:
            with pytest.raises(IllegalTransition):
                transition(state, ev)
    if state is not None and "resolve" in script:
        resolved_at = script.index("resolve")
        opened_at = script.index("open")
        if resolved_at > opened_at:
            assert state.incident.status is IncidentStatus.RESOLVED


def test_an_anomaly_cannot_merge_twice_or_into_another_incident() -> None:
    a = anomaly("svc:a", 0)
    inc = transition(None, IncidentOpened(incident_id="inc-1", time=T0, onset=T0, anomalies=(a,)))
    with pytest.raises(IllegalTransition):
        transition(inc, AnomalyMerged(incident_id="inc-1", time=T0, anomaly=a))
    with pytest.raises(IllegalTransition):
        transition(inc, AnomalyMerged(incident_id="inc-2", time=T0, anomaly=anomaly("svc:b", 1)))
    with pytest.raises(IllegalTransition):
        transition(inc, IncidentResolved(incident_id="inc-1", time=T0 - timedelta(minutes=1)))


# --- the coarse path on longer points (coarse_step_multiple) --------------------------------

ON = S.model_copy(update={"coarse_step_multiple": 4})  # the default, pinned here
COARSE = STEP * ON.coarse_step_multiple
STEPS_ONLY = S.model_copy(update={"coarse_step_multiple": 1})  # the coarse path off


def coarse_of(steps: SliSeries) -> SliSeries:
    """The same SLI on the coarse grid, pooled from the steps as the SLIs pool a longer
    point's observations (shares: errors over requests; levels: the values, here equal
    within a coarse point)."""
    m = ON.coarse_step_multiple
    points, counts = [], []
    for i in range(0, len(steps.points) - m + 1, m):
        group = list(zip(steps.points[i : i + m], steps.counts[i : i + m], strict=True))
        n = sum(c for _, c in group)
        value = sum(v * c for (_, v), c in group) / n if n else 0.0
        points.append((group[0][0][0], value))
        counts.append(n)
    return SliSeries(key=steps.key, points=tuple(points), counts=tuple(counts))


def test_a_sparse_tools_slowdown_the_steps_cannot_judge_is_found_on_coarse_points() -> None:
    # A tool called 4 times a minute: 2 calls a step, under the point minimum, so the
    # steps have not enough data. Three times slower for the last 10 minutes.
    n = 88  # 44 minutes: 22 coarse points of 2 minutes
    rng = random.Random(3)
    values = [0.2 * (1 + rng.uniform(-0.05, 0.05)) for _ in range(n - 20)] + [0.6] * 20
    steps = series(SliKind.LATENCY_P50, values, [2] * n)
    coarse = coarse_of(steps)
    assert coarse.counts[0] == 2 * ON.coarse_step_multiple
    now = at_end(n)
    result = detect({steps.key: steps}, now, ON, coarse={steps.key: coarse})
    [found] = result.anomalies
    assert found.key == steps.key and found.observed == pytest.approx(0.6)
    # Dated at a coarse point's start, the one where the slowdown began.
    assert found.onset == T0 + (n - 20) * STEP
    assert (found.onset - T0) % COARSE == timedelta(0)
    assert result.not_enough_data == ()
    # Begun mid-way through a coarse point, it is dated at the step it began in: the
    # coarse point alone would date it up to a coarse point early.
    values = values[: n - 20] + [0.2] * 2 + [0.6] * 18
    mid = series(SliKind.LATENCY_P50, values, [2] * n)
    [found] = detect({mid.key: mid}, now, ON, coarse={mid.key: coarse_of(mid)}).anomalies
    assert found.onset == T0 + (n - 18) * STEP
    # Without the coarse points (or with the coarse path off) the steps say so.
    for verdict in (
        detect({steps.key: steps}, now, ON),
        detect({steps.key: steps}, now, STEPS_ONLY, coarse={steps.key: coarse}),
    ):
        assert verdict.anomalies == ()
        assert [m.reason for m in verdict.not_enough_data] == [
            NotEnoughDataReason.TOO_FEW_OBSERVATIONS
        ]


def test_sparse_errors_that_skip_the_last_steps_are_a_shift_on_coarse_points() -> None:
    # A tool of 4 calls a step, never failing, then one failure in every step for 8
    # minutes (25 %), and, by chance, none in the last 2 minutes: the steps' last points
    # show no error, which on the step path is no shift.
    n = 88
    values = [0.0] * (n - 20) + [0.25] * 16 + [0.0] * 4
    steps = series(SliKind.ERROR_RATE, values, [4] * n)
    now = at_end(n)
    assert detect({steps.key: steps}, now, ON).anomalies == ()
    found = detect({steps.key: steps}, now, ON, coarse={steps.key: coarse_of(steps)}).anomalies
    assert [(a.key, a.onset) for a in found] == [(steps.key, T0 + (n - 20) * STEP)]
    # The coarse bars are the full path's: one failure every other step for 8 minutes
    # (12.5 %) and one in the last 2 minutes is 9 failures in 80 calls against a baseline
    # of 208 clean calls (tested at its upper bound, 1.9 %): p ~ 2e-5, and the bar is 1e-6.
    weak_values = [0.0] * (n - 20) + [0.25, 0.0] * 8 + [0.0, 0.0, 0.0, 0.25]
    weak = series(SliKind.ERROR_RATE, weak_values, [4] * n)
    assert detect({weak.key: weak}, now, ON, coarse={weak.key: coarse_of(weak)}).anomalies == ()


def test_the_coarse_path_searches_a_longer_window_where_a_subtle_faults_evidence_grows() -> None:
    # A tool of 4 calls a step, never failing, then failing one call in every other step
    # (12.5 %) for the last 16 minutes. Over the step path's 10 minutes that is the weak
    # case above (10 failures in 80 calls: short of the bar); over the coarse path's 16
    # it is 16 in 128, and it pages, dated where it began.
    n = 100
    values = [0.0] * (n - 32) + [0.25, 0.0] * 16
    steps = series(SliKind.ERROR_RATE, values, [4] * n)
    now = at_end(n)
    assert ON.coarse_recent_minutes == 16.0  # the default
    coarse = {steps.key: coarse_of(steps)}
    found = detect({steps.key: steps}, now, ON, coarse=coarse).anomalies
    assert [(a.key, a.onset) for a in found] == [(steps.key, T0 + (n - 32) * STEP)]
    ten = ON.model_copy(update={"coarse_recent_minutes": ON.recent_minutes})
    assert detect({steps.key: steps}, now, ten, coarse=coarse).anomalies == ()
    # The longer window is the coarse path's alone: the step path still searches 10
    # minutes, and its bars do not let these steps through.
    assert detect({steps.key: steps}, now, ON).anomalies == ()
