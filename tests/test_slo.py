"""Tests of SLO burn-rate alerts (``sentinel.slo``) and of the ``[[slo]]`` settings: a
sustained burn pages only when both windows of a rule burn, objective SLOs (evaluator
scores, latency) count bad steps against a threshold, incomplete steps and missing data
never page, recovery needs data, the onset lies in the long window.

What must not live here: level-shift detection (test_detection.py), config file loading
(test_settings.py).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from sentinel.detection import Detector
from sentinel.settings import Settings, SloSettings
from sentinel.sli import SliKey, SliKind, SliSeries
from sentinel.slo import burn_rate, evaluate_slos, slo_recovered

T0 = datetime(2026, 11, 1, 0, 0, tzinfo=UTC)
STEP = timedelta(seconds=30)
PER_HOUR = 120  # steps
AGENT = "agent:support-agent"


def slo(sli: str = "error_rate", objective: float = 0.99, **extra: object) -> SloSettings:
    fields = {"name": f"support {sli}", "component": AGENT, "sli": sli, "objective": objective}
    return SloSettings.model_validate_json(json.dumps(fields | extra))


def series(
    kind: SliKind,
    values: Sequence[float],
    counts: Sequence[int] | None = None,
    qualifier: str = "",
) -> SliSeries:
    return SliSeries(
        key=SliKey(AGENT, kind, qualifier),
        points=tuple((T0 + i * STEP, v) for i, v in enumerate(values)),
        counts=tuple(counts if counts is not None else [200] * len(values)),
    )


def errors(values: Sequence[float], counts: Sequence[int] | None = None) -> SliSeries:
    return series(SliKind.ERROR_RATE, values, counts)


def end_of(s: SliSeries) -> datetime:
    """The instant the last point's step completes."""
    return s.points[-1][0] + STEP


def slis(*ss: SliSeries) -> dict[SliKey, SliSeries]:
    return {s.key: s for s in ss}


# --- share SLIs -------------------------------------------------------------------------


def test_a_sustained_error_burn_pages_with_its_onset() -> None:
    # Seven quiet hours at 0.5 % errors, then an hour at 20 % (20x the 1 % budget).
    s = errors([0.005] * 7 * PER_HOUR + [0.2] * PER_HOUR)
    (alert,) = evaluate_slos((slo(),), slis(s), end_of(s), STEP)
    assert alert.detector is Detector.BURN_RATE
    assert alert.slo == "support error_rate"
    assert alert.key == SliKey(AGENT, SliKind.ERROR_RATE)
    assert alert.baseline == pytest.approx(0.01)
    assert alert.observed == pytest.approx(0.2)
    assert alert.score == pytest.approx(20.0)
    assert alert.onset == T0 + 7 * PER_HOUR * STEP


def test_long_window_burning_but_short_window_recovered_does_not_page() -> None:
    # 55 minutes at 20 %, then the last 5 minutes clean: the 1 h window still burns 18x.
    s = errors([0.0] * 6 * PER_HOUR + [0.2] * 110 + [0.0] * 10)
    now = end_of(s)
    assert burn_rate(slo(), s, now - timedelta(hours=1), now, STEP) == pytest.approx(
        0.2 * 110 / 120 / 0.01
    )
    assert evaluate_slos((slo(),), slis(s), now, STEP) == ()


def test_short_window_burning_but_long_window_low_does_not_page() -> None:
    # Only the last 5 minutes at 20 %: a blip, 1.7x over the hour.
    s = errors([0.0] * 7 * PER_HOUR + [0.2] * 10)
    now = end_of(s)
    assert burn_rate(slo(), s, now - timedelta(minutes=5), now, STEP) == pytest.approx(20.0)
    assert evaluate_slos((slo(),), slis(s), now, STEP) == ()
    assert not slo_recovered(slo(), s, now, STEP)


def test_the_slow_rule_pages_a_long_moderate_burn() -> None:
    # 8 % errors (8x) for six hours: below 14.4x, above 6x.
    s = errors([0.0] * PER_HOUR + [0.08] * 6 * PER_HOUR)
    (alert,) = evaluate_slos((slo(),), slis(s), end_of(s), STEP)
    assert alert.score == pytest.approx(8.0)
    assert alert.onset == T0 + PER_HOUR * STEP


def test_requests_weigh_a_share() -> None:
    # Half the steps fail every request, but they are tiny: 10 of 10,010 requests per pair.
    values = [1.0, 0.0] * 60
    counts = [10, 10_000] * 60
    s = errors(values, counts)
    now = end_of(s)
    assert burn_rate(slo(), s, T0, now, STEP) == pytest.approx(10 / 10_010 / 0.01)


def test_the_strongest_firing_rule_is_reported() -> None:
    windows = [
        {"long_minutes": 60.0, "short_minutes": 5.0, "burn_rate": 2.0},
        {"long_minutes": 30.0, "short_minutes": 5.0, "burn_rate": 2.0},
    ]
    # 30 minutes at 10 % (10x): 5x over the hour, 10x over the half hour.
    s = errors([0.0] * PER_HOUR + [0.1] * 60)
    (alert,) = evaluate_slos((slo(windows=windows),), slis(s), end_of(s), STEP)
    assert alert.score == pytest.approx(10.0)
    assert alert.observed == pytest.approx(0.1)


def test_the_onset_steps_over_isolated_good_steps_only() -> None:
    burn = [0.3, 0.3, 0.0, 0.3] * 20  # one clean step in four: still one burn
    s = errors([0.0] * PER_HOUR + [0.3] * 10 + [0.0, 0.0] + burn)
    (alert,) = evaluate_slos((slo(),), slis(s), end_of(s), STEP)
    # Two clean steps in a row end the run: the 10 earlier bad steps are another burst.
    assert alert.onset == T0 + (PER_HOUR + 12) * STEP


def test_a_share_onset_ignores_steps_burning_below_the_rule() -> None:
    # 2 % errors (2x, far below 14.4x) before the burn: not its start.
    s = errors([0.02] * PER_HOUR + [0.6] * 30)
    (alert,) = evaluate_slos((slo(),), slis(s), end_of(s), STEP)
    assert alert.onset == T0 + PER_HOUR * STEP


# --- objective SLOs (threshold) ---------------------------------------------------------


def faithfulness() -> SloSettings:
    return slo("eval_score", 0.95, qualifier="faithfulness", threshold=0.85)


def test_an_objective_slo_pages_when_scores_drop() -> None:
    scores = [0.92] * 6 * PER_HOUR + [0.7] * 90  # 75 % bad steps over the hour: 15x
    s = series(SliKind.EVAL_SCORE, scores, qualifier="faithfulness")
    (alert,) = evaluate_slos((faithfulness(),), slis(s), end_of(s), STEP)
    assert alert.key == SliKey(AGENT, SliKind.EVAL_SCORE, "faithfulness")
    assert alert.baseline == pytest.approx(0.05)
    assert alert.observed == pytest.approx(0.75)
    assert alert.score == pytest.approx(15.0)
    assert alert.onset == T0 + 6 * PER_HOUR * STEP


def test_an_objective_slo_judges_only_its_own_evaluator() -> None:
    scores = [0.92] * 6 * PER_HOUR + [0.7] * 90
    other = series(SliKind.EVAL_SCORE, scores, qualifier="relevance")
    assert evaluate_slos((faithfulness(),), slis(other), end_of(other), STEP) == ()


def test_a_score_at_the_threshold_is_good() -> None:
    s = series(SliKind.EVAL_SCORE, [0.85] * PER_HOUR, qualifier="faithfulness")
    assert burn_rate(faithfulness(), s, T0, end_of(s), STEP) == 0.0


def test_a_latency_slo_pages_on_slow_steps() -> None:
    latency = slo("latency_p95", 0.99, threshold=2.0)
    values = [1.2] * 6 * PER_HOUR + [2.0] * 30 + [3.5] * 30  # at 2.0 is still good
    s = series(SliKind.LATENCY_P95, values)
    (alert,) = evaluate_slos((latency,), slis(s), end_of(s), STEP)
    assert alert.observed == pytest.approx(0.25)
    assert alert.score == pytest.approx(25.0)
    assert alert.onset == T0 + (6 * PER_HOUR + 30) * STEP


def test_latency_steps_without_observations_are_not_events() -> None:
    latency = slo("latency_p95", 0.99, threshold=2.0)
    s = series(SliKind.LATENCY_P95, [5.0, 1.0], [0, 50])
    assert burn_rate(latency, s, T0, end_of(s), STEP) == 0.0


def test_a_traffic_slo_counts_steps_without_requests() -> None:
    # A request rate of 0 is an observation (its count is 0): an outage burns the budget.
    traffic = slo("request_rate", 0.99, threshold=0.5)
    s = series(
        SliKind.REQUEST_RATE, [2.0] * 6 * PER_HOUR + [0.0] * 20, [60] * 6 * PER_HOUR + [0] * 20
    )
    (alert,) = evaluate_slos((traffic,), slis(s), end_of(s), STEP)
    assert alert.observed == pytest.approx(20 / 120)
    assert alert.onset == T0 + 6 * PER_HOUR * STEP


# --- completeness, missing data, recovery -----------------------------------------------


def test_steps_not_complete_at_now_are_ignored() -> None:
    # 55 minutes of burn, 5 clean minutes, then a failing step still in progress.
    values = [0.0] * 6 * PER_HOUR + [0.2] * 110 + [0.0] * 10 + [1.0]
    s = errors(values, [200] * (len(values) - 1) + [100_000])
    during = s.points[-1][0] + STEP / 2
    assert burn_rate(slo(), s, s.points[-1][0], during, STEP) is None
    assert evaluate_slos((slo(),), slis(s), during, STEP) == ()
    # Once that step completes, it counts.
    assert len(evaluate_slos((slo(),), slis(s), end_of(s), STEP)) == 1


def test_no_data_never_pages_and_is_not_recovery() -> None:
    now = T0 + 7 * timedelta(hours=1)
    assert evaluate_slos((slo(),), {}, now, STEP) == ()
    assert not slo_recovered(slo(), None, now, STEP)
    # Old data only: the windows are empty.
    old = errors([0.5] * PER_HOUR)
    assert evaluate_slos((slo(),), slis(old), now, STEP) == ()
    assert not slo_recovered(slo(), old, now, STEP)
    # Points without any request: no event either.
    idle = errors([0.0] * PER_HOUR, [0] * PER_HOUR)
    assert burn_rate(slo(), idle, T0, end_of(idle), STEP) is None
    assert not slo_recovered(slo(), idle, end_of(idle), STEP)


def test_a_short_window_without_data_never_fires() -> None:
    # An hour of burn, then the component went quiet (no points at all) for longer than
    # every short window: both long windows still burn, nothing pages.
    s = errors([0.0] * PER_HOUR + [0.3] * PER_HOUR)
    now = end_of(s) + timedelta(minutes=31)
    assert burn_rate(slo(), s, now - timedelta(hours=1), now, STEP) is not None
    assert evaluate_slos((slo(),), slis(s), now, STEP) == ()
    assert not slo_recovered(slo(), s, now, STEP)


def test_recovery_after_the_burn_stops() -> None:
    s = errors([0.0] * 6 * PER_HOUR + [0.2] * PER_HOUR + [0.0] * 60)
    burn_end = T0 + 7 * PER_HOUR * STEP
    assert len(evaluate_slos((slo(),), slis(s), burn_end, STEP)) == 1
    assert not slo_recovered(slo(), s, burn_end, STEP)
    # 10 minutes later the fast rule has stopped, but the slow rule's 30-minute window
    # still burns 13x (above its 6x): not yet recovered.
    later = burn_end + timedelta(minutes=10)
    assert evaluate_slos((slo(),), slis(s), later, STEP) == ()
    assert not slo_recovered(slo(), s, later, STEP)
    assert slo_recovered(slo(), s, burn_end + timedelta(minutes=30), STEP)


def test_slos_are_reported_by_name_and_those_without_series_skipped() -> None:
    s = errors([0.0] * PER_HOUR + [0.5] * PER_HOUR)
    b = slo(name="b")
    a = slo(name="a", objective=0.995)
    unmeasured = slo(name="0 tools", component="tool:search")
    alerts = evaluate_slos((b, unmeasured, a), slis(s), end_of(s), STEP)
    assert [x.slo for x in alerts] == ["a", "b"]


def test_naive_times_are_rejected() -> None:
    s = errors([0.0] * 10)
    naive = datetime(2026, 11, 1, 1, 0)  # noqa: DTZ001 - the point of the test
    with pytest.raises(ValueError, match="no timezone"):
        evaluate_slos((slo(),), slis(s), naive, STEP)
    with pytest.raises(ValueError, match="no timezone"):
        slo_recovered(slo(), s, naive, STEP)
    with pytest.raises(ValueError, match="no timezone"):
        burn_rate(slo(), s, naive, naive, STEP)


# --- properties -------------------------------------------------------------------------

_FAST = [{"long_minutes": 10.0, "short_minutes": 2.0, "burn_rate": 2.0}]
_KINDS = st.sampled_from(["error_rate", "latency_p95", "eval_score"])


def _prop_slo(sli: str, windows: object) -> SloSettings:
    if sli == "error_rate":
        return slo(sli, 0.9, windows=windows)
    return slo(sli, 0.9, windows=windows, threshold=1.0)


@settings(max_examples=60, deadline=None)
@given(
    sli=_KINDS,
    goodness=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=60),
    counts=st.lists(st.integers(0, 500), min_size=60, max_size=60),
    late=st.integers(0, 30),
)
def test_a_series_without_bad_events_never_pages(
    sli: str, goodness: list[float], counts: list[int], late: int
) -> None:
    kind = SliKind(sli)
    # Every value on the good side: no error, a latency at most 1.0, a score at least 1.0.
    values = {
        SliKind.ERROR_RATE: [0.0] * len(goodness),
        SliKind.LATENCY_P95: goodness,
        SliKind.EVAL_SCORE: [1.0 + g for g in goodness],
    }[kind]
    s = series(kind, values, counts[: len(values)])
    for windows in (_FAST, [{"long_minutes": 60.0, "short_minutes": 5.0, "burn_rate": 1.0}]):
        now = end_of(s) + late * STEP
        assert evaluate_slos((_prop_slo(sli, windows),), slis(s), now, STEP) == ()


@settings(max_examples=100, deadline=None)
@given(
    sli=_KINDS,
    values=st.lists(st.sampled_from([0.0, 0.5, 1.0, 2.0]), min_size=1, max_size=60),
    counts=st.lists(st.integers(0, 50), min_size=60, max_size=60),
    extra=st.integers(0, 3),
)
def test_the_onset_lies_in_the_long_window_before_now(
    sli: str, values: list[float], counts: list[int], extra: int
) -> None:
    kind = SliKind(sli)
    vs = [min(v, 1.0) for v in values] if kind is SliKind.ERROR_RATE else values
    s = series(kind, vs, counts[: len(vs)])
    now = end_of(s) - extra * STEP / 2
    for alert in evaluate_slos((_prop_slo(sli, _FAST),), slis(s), now, STEP):
        assert now - timedelta(minutes=10) <= alert.onset
        assert alert.onset + STEP <= now
        assert alert.score >= 2.0


# --- settings ---------------------------------------------------------------------------


def test_a_latency_slo_needs_a_threshold() -> None:
    with pytest.raises(ValidationError, match="threshold is required"):
        slo("latency_p95")


def test_an_error_rate_slo_takes_no_threshold() -> None:
    with pytest.raises(ValidationError, match="threshold is only for non-share"):
        slo("error_rate", threshold=0.1)


def test_the_short_window_must_be_shorter() -> None:
    windows = [{"long_minutes": 5.0, "short_minutes": 5.0, "burn_rate": 2.0}]
    with pytest.raises(ValidationError, match="short_minutes") as caught:
        slo(windows=windows)
    assert caught.value.errors()[0]["loc"][:2] == ("windows", 0)


def test_the_objective_is_a_share() -> None:
    with pytest.raises(ValidationError) as caught:
        slo(objective=1.0)
    assert caught.value.errors()[0]["loc"] == ("objective",)


def test_slo_names_are_unique() -> None:
    one = {"name": "avail", "component": AGENT, "sli": "error_rate", "objective": 0.99}
    with pytest.raises(ValidationError, match="repeated: 'avail'") as caught:
        Settings.model_validate_json(json.dumps({"slo": [one, one]}))
    assert caught.value.errors()[0]["loc"] == ("slo",)


def test_the_default_windows_are_the_workbook_pair() -> None:
    rules = [(w.long_minutes, w.short_minutes, w.burn_rate) for w in slo().windows]
    assert rules == [(60.0, 5.0, 14.4), (360.0, 30.0, 6.0)]
