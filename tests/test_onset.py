"""The hindsight onset (``sentinel.onset``) and its lifecycle event: a ramp is dated where
it began once its plateau is in the data, a step stays where detection put it, the onset
moves later only back towards the one the incident opened with or to just after a change
detection dated it before, and an incident is refit once."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from sentinel.cli_remediation import audit_summary
from sentinel.detection import Anomaly, Detector
from sentinel.errors import IllegalTransition
from sentinel.incidents import (
    AnomalyMerged,
    IncidentOpened,
    OnsetRefit,
    TrackedIncident,
    audit_entry,
    refit_due,
    transition,
)
from sentinel.onset import OnsetFit, refit_onset
from sentinel.settings import DetectionSettings
from sentinel.sli import SliKey, SliKind, SliSeries
from sentinel.telemetry import ChangeEvent

T = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)
STEP = timedelta(seconds=30)
FAULT = T + timedelta(minutes=40)


def level_series(shape: str, seed: int = 1) -> SliSeries:
    """Output tokens per request: 450 +- 40 per point of 12 requests, up by 300 from
    FAULT, abruptly (``step``) or along a 5-minute ramp (``ramp``)."""
    rng = random.Random(seed)
    points, counts = [], []
    for i in range(120):
        t = T + i * STEP
        mid = (t + STEP / 2 - FAULT).total_seconds()
        rise = 0.0 if mid <= 0 else 1.0 if shape == "step" else min(1.0, mid / 300)
        points.append((t, 450.0 + 300.0 * rise + rng.gauss(0, 40)))
        counts.append(12)
    return SliSeries(
        SliKey("agent:a", SliKind.OUTPUT_TOKENS_PER_REQUEST), tuple(points), tuple(counts)
    )


def share_series(
    seed: int = 2, *, base: float = 0.01, top: float = 0.4, ramp: float = 300, calls: int = 20
) -> SliSeries:
    """A tool's error rate: ``base`` before FAULT, ramping to ``top`` over ``ramp``
    seconds, ``calls`` calls a step (by default 1 % to 40 % over 5 minutes, 20 calls)."""
    rng = random.Random(seed)
    points, counts = [], []
    for i in range(120):
        t = T + i * STEP
        mid = (t + STEP / 2 - FAULT).total_seconds()
        p = base + (top - base) * (0.0 if mid <= 0 else min(1.0, mid / ramp))
        errors = sum(rng.random() < p for _ in range(calls))
        points.append((t, errors / calls))
        counts.append(calls)
    return SliSeries(SliKey("tool:t", SliKind.ERROR_RATE), tuple(points), tuple(counts))


def anomaly(series: SliSeries, onset: datetime, baseline: float) -> Anomaly:
    return Anomaly(
        component=series.key.component,
        sli=series.key.kind,
        qualifier=series.key.qualifier,
        onset=onset,
        baseline=baseline,
        observed=baseline * 2,
        score=10.0,
        detector=Detector.LEVEL_SHIFT,
    )


def test_a_ramp_is_dated_where_it_began_once_its_plateau_is_in_the_data() -> None:
    tokens, errors = level_series("ramp"), share_series()
    late = FAULT + timedelta(minutes=2, seconds=30)  # where detection dated it
    found = [anomaly(tokens, late, 450.0), anomaly(errors, late, 0.01)]
    opened = late + timedelta(minutes=1)
    slis = {tokens.key: tokens, errors.key: errors}
    fit = refit_onset(found, late, opened, slis, opened + timedelta(minutes=10), STEP)
    assert abs(fit.onset - FAULT) <= timedelta(seconds=60)
    assert fit.how.startswith("moved earlier: 2 series fitted with a step or a ramp of ")


def test_a_step_stays_where_detection_dated_it() -> None:
    tokens = level_series("step")
    found = [anomaly(tokens, FAULT, 450.0)]
    opened = FAULT + timedelta(minutes=1)
    fit = refit_onset(
        found, FAULT, opened, {tokens.key: tokens}, opened + timedelta(minutes=10), STEP
    )
    assert fit.onset == FAULT
    assert fit.how.startswith("kept: 1 series fitted with a step or a ramp of ")


def sparse_ramp(seed: int) -> SliSeries:
    """A tool of 8 calls a step failing 0.3 % of the time, then ramping to 15 % over
    400 s from FAULT: about one failure a step at the top, none for the first minutes."""
    return share_series(seed, base=0.003, top=0.153, ramp=400, calls=8)


def sparse_ramp_fit(
    seed: int, changes: tuple[datetime, ...] = (), change_prior: float = 0.0
) -> OnsetFit:
    """The refit of ``sparse_ramp(seed)``, dated where detection would date it (its first
    failure, at least 3 minutes in), 2 minutes after opening plus the 10 of the wait."""
    errors = sparse_ramp(seed)
    first = next(t for t, v, _ in errors.rows if t >= FAULT and v > 0)
    late = max(first, FAULT + timedelta(minutes=3))
    opened = late + timedelta(minutes=2)
    return refit_onset(
        [anomaly(errors, late, 0.003)],
        late,
        opened,
        {errors.key: errors},
        opened + timedelta(minutes=10),
        STEP,
        changes=changes,
        change_prior=change_prior,
    )


def test_a_sparse_ramp_is_dated_by_the_median_start_not_the_one_best_shape() -> None:
    # The first failures come minutes into the ramp, so a step where they begin fits
    # about as well as the ramp: the one best shape dated 28 of these 60 within 90 s
    # (median +120 s), the median start over all shapes dates 38 (median +60 s).
    offsets = [(sparse_ramp_fit(seed).onset - FAULT).total_seconds() for seed in range(60)]
    assert sum(abs(o) <= 90 for o in offsets) >= 36
    assert 0 <= sorted(offsets)[len(offsets) // 2] <= 60


def test_a_change_just_before_a_sparse_ramp_dates_it() -> None:
    # The sparse ramps above with a deploy 45 s before each: the start's prior puts 0.8
    # of its mass on the points just after the change. The data alone date 38 of the 60
    # within 90 s; with the change, 59 (measured).
    change = (FAULT - timedelta(seconds=45),)
    within = {0.0: 0, 0.8: 0}
    for seed in range(60):
        for prior in within:
            fit = sparse_ramp_fit(seed, change, prior)
            within[prior] += abs(fit.onset - FAULT) <= timedelta(seconds=90)
    assert within[0.0] <= 40
    assert within[0.8] >= 55


def test_a_change_the_data_contradict_does_not_date_the_onset() -> None:
    # A clear step, and a change 1 to 8 minutes before it: the points between sit at the
    # baseline, so the start stays at the step whatever the prior says.
    tokens = level_series("step")
    opened = FAULT + timedelta(minutes=1)
    for minutes in (1, 3, 8):
        fit = refit_onset(
            [anomaly(tokens, FAULT, 450.0)],
            FAULT,
            opened,
            {tokens.key: tokens},
            opened + timedelta(minutes=10),
            STEP,
            changes=[FAULT - timedelta(minutes=minutes)],
            change_prior=0.8,
        )
        assert fit.onset == FAULT
        assert "5 start(s) just after a change weighed up" in fit.how


def test_the_same_counts_under_three_slis_are_fitted_once() -> None:
    # A tool's error rate, failure rate and the share of its one error type are the
    # same points: fitted three times, they would outweigh the start's prior threefold.
    for seed in range(10):
        errors = sparse_ramp(seed)
        late = FAULT + timedelta(minutes=3)
        opened = late + timedelta(minutes=2)
        slis = {
            SliKey("tool:t", kind, q): SliSeries(
                SliKey("tool:t", kind, q), errors.points, errors.counts
            )
            for kind, q in (
                (SliKind.ERROR_RATE, ""),
                (SliKind.TOOL_FAILURE_RATE, ""),
                (SliKind.ERROR_RATE_BY_TYPE, "timeout"),
            )
        }
        found = [anomaly(series, late, 0.003) for series in slis.values()]
        now = opened + timedelta(minutes=10)
        change = [FAULT - timedelta(seconds=45)]
        three = refit_onset(found, late, opened, slis, now, STEP, changes=change, change_prior=0.8)
        one = refit_onset(
            found[:1], late, opened, slis, now, STEP, changes=change, change_prior=0.8
        )
        assert three == one
        assert " 1 series fitted" in three.how


def test_the_fit_never_reads_past_now_nor_moves_the_onset_later() -> None:
    tokens = level_series("ramp")
    late = FAULT + timedelta(minutes=2, seconds=30)
    found = [anomaly(tokens, late, 450.0)]
    opened = late + timedelta(minutes=1)
    full = refit_onset(
        found, late, opened, {tokens.key: tokens}, opened + timedelta(minutes=10), STEP
    )
    # The same data cut at ``now``: what comes after it changes nothing.
    now = opened + timedelta(minutes=10)
    kept_rows = [(t, v, c) for t, v, c in tokens.rows if t + STEP <= now]
    cut = SliSeries(
        tokens.key, tuple((t, v) for t, v, _ in kept_rows), tuple(c for _, _, c in kept_rows)
    )
    assert (
        refit_onset(found, late, opened, {tokens.key: cut}, opened + timedelta(minutes=10), STEP)
        == full
    )
    # Given an onset already earlier than the fit's, it is kept.
    early = FAULT - timedelta(minutes=5)
    kept = refit_onset(
        found, early, opened, {tokens.key: tokens}, opened + timedelta(minutes=10), STEP
    )
    assert kept.onset == early and kept.how.startswith("kept: ")
    # Nothing to fit (no series): kept, and said.
    nothing = refit_onset(found, late, opened, {}, opened + timedelta(minutes=10), STEP)
    assert (nothing.onset, nothing.how) == (late, "kept: no series to fit")


def opened_incident(onset: datetime, at: datetime) -> TrackedIncident:
    tokens = level_series("ramp")
    ev = IncidentOpened(
        incident_id="inc-1", time=at, onset=onset, anomalies=(anomaly(tokens, onset, 450.0),)
    )
    return transition(None, ev)


def test_the_refit_is_due_once_after_the_wait_or_at_resolution() -> None:
    late = FAULT + timedelta(minutes=2, seconds=30)
    opened = late + timedelta(minutes=1)
    state = opened_incident(late, opened)
    tokens = level_series("ramp")
    slis = {tokens.key: tokens}
    s = DetectionSettings()
    nine = opened + timedelta(minutes=9)
    assert refit_due(state, slis, nine, nine, s) is None
    assert refit_due(state, slis, nine, nine, s, resolving=True) is not None
    ten = opened + timedelta(minutes=10)
    ev = refit_due(state, slis, ten, ten, s)
    assert ev is not None and ev.time == ten and ev.onset < late
    after = transition(state, ev)
    assert (after.onset, after.refit_at) == (ev.onset, ten)
    # `sentinel audit` says what the fit found.
    assert f"how: {ev.how}" in audit_summary(audit_entry(ev, "metric-agent"))
    assert refit_due(after, slis, ten + STEP, ten + STEP, s) is None
    with pytest.raises(IllegalTransition, match="refit already"):
        transition(after, ev.model_copy(update={"time": ten + STEP}))
    assert refit_due(state, slis, ten, ten, s.model_copy(update={"onset_refit_minutes": 0})) is None


def test_only_changes_to_the_incidents_components_before_it_opened_weigh() -> None:
    late = FAULT + timedelta(minutes=2, seconds=30)
    opened = late + timedelta(minutes=1)
    state = opened_incident(late, opened)  # one anomaly, on agent:a
    tokens = level_series("ramp")
    ten = opened + timedelta(minutes=10)

    def change(component: str, at: datetime, affects: tuple[str, ...] = ()) -> ChangeEvent:
        return ChangeEvent(id="c1", time=at, component=component, affects=affects)

    def how(*changes: ChangeEvent) -> str:
        ev = refit_due(state, {tokens.key: tokens}, ten, ten, DetectionSettings(), changes=changes)
        assert ev is not None
        return ev.how

    before = FAULT - timedelta(seconds=40)
    assert "weighed up" not in how()
    assert "weighed up" not in how(change("service:other", before))
    assert "weighed up" not in how(change("prompt:a", opened + STEP, affects=("agent:a",)))
    # Between the detected onset and the opening: the onset may have been dated early.
    assert "weighed up" in how(change("prompt:a", late + STEP, affects=("agent:a",)))
    assert "weighed up" in how(change("prompt:a", before, affects=("agent:a",)))
    assert "weighed up" in how(change("agent:a", before))
    off = DetectionSettings(onset_change_prior=0.0)
    ev = refit_due(state, {tokens.key: tokens}, ten, ten, off, changes=[change("agent:a", before)])
    assert ev is not None and "weighed up" not in ev.how


def input_tokens(seed: int) -> SliSeries:
    """``level_series("step", seed)`` as the agent's input tokens: a sibling series."""
    steps = level_series("step", seed)
    key = SliKey("agent:a", SliKind.INPUT_TOKENS_PER_REQUEST)
    return SliSeries(key, steps.points, steps.counts)


def merged_early(state: TrackedIncident, sibling: SliSeries) -> TrackedIncident:
    """``state`` with an anomaly of ``sibling`` merged, dated 3 minutes before FAULT."""
    merged = transition(
        state,
        AnomalyMerged(
            incident_id=state.id,
            time=FAULT + timedelta(minutes=2),
            anomaly=anomaly(sibling, FAULT - timedelta(minutes=3), 450.0),
        ),
    )
    assert merged.onset == FAULT - timedelta(minutes=3)
    return merged


def test_the_state_takes_the_onset_the_refit_gave() -> None:
    # The refit bounds its own moves (the tests above and below); its event is the record
    # of where they ended, and a state rebuilt from the events must land there too.
    state = opened_incident(FAULT, FAULT + timedelta(minutes=1))
    merged = merged_early(state, input_tokens(seed=3))
    bare = merged.model_copy(update={"opened_onset": None})
    for onset in (FAULT - 5 * STEP, FAULT - STEP, FAULT + STEP):
        ev = OnsetRefit(
            incident_id="inc-1", time=FAULT + timedelta(minutes=11), onset=onset, how="x"
        )
        for before in (state, merged, bare):
            after = transition(before, ev)
            assert (after.onset, after.refit_at) == (onset, ev.time)


def test_an_anomaly_merged_after_the_refit_does_not_move_the_onset() -> None:
    # A p95 that only the coarse path finds, 11 minutes into an incident, dated on its
    # 2-minute grid two minutes before the fault: it joins the incident, the joint fit's
    # onset stays (held out: three cases went from 0 s to -120 s this way).
    state = opened_incident(FAULT, FAULT + timedelta(minutes=1))
    refit = OnsetRefit(
        incident_id="inc-1", time=FAULT + timedelta(minutes=11), onset=FAULT, how="kept: x"
    )
    p95 = SliSeries(SliKey("agent:a", SliKind.LATENCY_P95), (), ())
    early = FAULT - timedelta(minutes=2)
    merge = AnomalyMerged(
        incident_id="inc-1", time=refit.time + STEP, anomaly=anomaly(p95, early, 1.0)
    )
    after = transition(transition(state, refit), merge)
    assert after.onset == FAULT and merge.anomaly in after.anomalies
    # Before the refit, the same anomaly dates the incident earlier (the refit then
    # weighs it with the others).
    assert transition(state, merge).onset == early


def early_step_refit(*changes: datetime, onset: datetime | None = None) -> OnsetFit:
    """The refit of a clear step at FAULT (``level_series("step")``) that detection dated
    3 minutes early (or at ``onset``), opened a minute after FAULT, with ``changes`` to
    its component weighed as the Metric Agent weighs them."""
    tokens = level_series("step")
    early = FAULT - timedelta(minutes=3) if onset is None else onset
    opened = FAULT + timedelta(minutes=1)
    return refit_onset(
        [anomaly(tokens, early, 450.0)],
        early,
        opened,
        {tokens.key: tokens},
        opened + timedelta(minutes=10),
        STEP,
        changes=changes,
        change_prior=DetectionSettings().onset_change_prior,
    )


def test_a_fault_dated_before_the_change_that_caused_it_is_dated_after_it() -> None:
    # An evaluator score that wandered below its baseline minutes before a prompt commit
    # dated the incident before the commit (held out: a multi-agent prompt regression at
    # -270 s, its commit at -34 s). The fit, weighing the commit, starts the fault just
    # after it: the change and the data agree, and the onset moves later to the fit.
    commit = FAULT - timedelta(seconds=20)
    fit = early_step_refit(commit)
    assert fit.how.startswith(f"moved later, after the change at {commit.isoformat()}: ")
    assert commit - STEP < fit.onset <= FAULT
    # Without the change the early onset is kept: a fit alone that starts later does not
    # move it (resource exhaustions and rate limits are fitted late with certainty).
    alone = early_step_refit()
    assert (alone.onset, alone.how.split(":")[0]) == (FAULT - timedelta(minutes=3), "kept")
    # A change before the detected onset was weighed already, and gives no reason to move
    # later: the fault may well have begun before the fit can tell.
    before = early_step_refit(FAULT - timedelta(seconds=40), onset=FAULT - STEP)
    assert (before.onset, before.how.split(":")[0]) == (FAULT - STEP, "kept")
    # A change the fit does not start just after does not move it either.
    far = early_step_refit(FAULT - timedelta(minutes=2, seconds=30))
    assert far.onset == FAULT - timedelta(minutes=3) and far.how.startswith("kept: ")


def test_the_agent_dates_a_fault_after_a_change_made_between_its_onset_and_its_opening() -> None:
    tokens = level_series("step")
    early = FAULT - timedelta(minutes=3)
    state = opened_incident(early, FAULT + timedelta(minutes=1))
    ten = state.incident.opened_at + timedelta(minutes=10)
    commit = ChangeEvent(
        id="c1", time=FAULT - timedelta(seconds=20), component="prompt:a", affects=("agent:a",)
    )
    ev = refit_due(state, {tokens.key: tokens}, ten, ten, DetectionSettings(), changes=[commit])
    assert ev is not None and ev.how.startswith("moved later, after the change at ")
    assert transition(state, ev).onset == ev.onset
    assert commit.time - STEP < ev.onset <= FAULT


def test_an_anomaly_merged_with_an_early_onset_is_dated_again_by_the_joint_fit() -> None:
    # One step of output tokens at FAULT, opened on time; a sibling series merged later
    # was dated 3 minutes early (one point before the fault beyond its baseline, say).
    tokens, sibling = level_series("step"), input_tokens(seed=5)
    opened = FAULT + timedelta(minutes=1)
    first = IncidentOpened(
        incident_id="inc-1", time=opened, onset=FAULT, anomalies=(anomaly(tokens, FAULT, 450.0),)
    )
    merged = merged_early(transition(None, first), sibling)
    slis = {tokens.key: tokens, sibling.key: sibling}  # both step at FAULT
    ten = opened + timedelta(minutes=10)
    ev = refit_due(merged, slis, ten, ten, DetectionSettings())
    assert ev is not None and ev.how.startswith("moved later: ")
    assert FAULT - STEP <= ev.onset <= FAULT
    assert transition(merged, ev).onset == ev.onset
    # Not given the opening onset, the fit keeps the early one.
    fit = refit_onset(merged.anomalies, merged.onset, opened, slis, ten, STEP)
    assert fit.onset == merged.onset and fit.how.startswith("kept: ")


def refit_alone(series: SliSeries, onset: datetime, baseline: float) -> OnsetFit:
    """The refit of one anomaly on ``series`` dated ``onset``, opened a step later and
    refit 10 minutes after that."""
    opened = onset + STEP
    return refit_onset(
        [anomaly(series, onset, baseline)],
        onset,
        opened,
        {series.key: series},
        opened + timedelta(minutes=10),
        STEP,
    )


def p50_series(seed: int, outlier_at: datetime | None = None) -> SliSeries:
    """A tool's p50 of 10 calls a step: 0.10 s +- 0.01, then 0.6 s +- 0.06 from FAULT
    (its noise grows with it); with ``outlier_at``, one point of a stalled call at 3 s."""
    rng = random.Random(seed)
    points = []
    for i in range(120):
        t = T + i * STEP
        level = 0.6 if t >= FAULT else 0.1
        value = 3.0 if t == outlier_at else level * (1.0 + rng.gauss(0, 0.1))
        points.append((t, value))
    return SliSeries(
        SliKey("tool:t", SliKind.LATENCY_P50), tuple(points), tuple([10] * len(points))
    )


def test_one_outlier_point_before_a_step_does_not_date_it() -> None:
    # A point hundreds of noise widths off the baseline cost the normal likelihood more
    # than every other point together, so the fit started the fault at it (a refund
    # tool's p50 of 3 s, 150 s before its rate limit: the onset went from 0 to -150 s).
    # Each point's cost is now capped: an outlier under any profile.
    stall = FAULT - 5 * STEP
    for seed in range(5):
        fit = refit_alone(p50_series(seed, outlier_at=stall), FAULT, 0.1)
        assert fit.onset == FAULT, (seed, fit)
    # The cap is on the misfit, not on the data: without the stall the same step is
    # dated where it is, and a fault that does start at the first slow point still
    # moves the onset back to it.
    assert refit_alone(p50_series(0), FAULT + 4 * STEP, 0.1).onset == FAULT


def test_a_share_never_seen_failing_is_not_dated_at_one_stray_error() -> None:
    # A service with no error in its baseline, 5 calls a step, one stray error 3 minutes
    # before it starts failing a third of its calls. At a baseline of exactly 0 that one
    # error cost the fit more than the misfit of the whole 3 minutes, and the onset went
    # back to it (-180 s). The baseline is now at least half an error over the calls seen.
    rng = random.Random(4)
    points, counts = [], []
    for i in range(120):
        t = T + i * STEP
        p = 0.33 if t >= FAULT else 0.0
        errors = sum(rng.random() < p for _ in range(5)) + (t == FAULT - 6 * STEP)
        points.append((t, errors / 5))
        counts.append(5)
    series = SliSeries(SliKey("service:s", SliKind.ERROR_RATE), tuple(points), tuple(counts))
    first = next(t for t, v, _ in series.rows if t >= FAULT and v > 0)
    fit = refit_alone(series, first, 0.0)
    assert abs(fit.onset - FAULT) <= STEP, fit


def test_a_latencys_noise_widens_with_it_on_the_plateau() -> None:
    # A p99 of 1 s +- 25 % steps to 4 s +- 25 %: its plateau wanders by a second where
    # its baseline wandered by a quarter. Read at the baseline's noise, the plateau's
    # wanderings are evidence for starts before the step (52 of these 60 stay exact); at
    # a noise that grows with the level, 56 do.
    exact = 0
    for seed in range(60):
        rng = random.Random(seed)
        points = []
        for i in range(120):
            t = T + i * STEP
            points.append((t, (4.0 if t >= FAULT else 1.0) * (1.0 + rng.gauss(0, 0.25))))
        series = SliSeries(
            SliKey("model:m", SliKind.LATENCY_P99), tuple(points), tuple([10] * len(points))
        )
        exact += refit_alone(series, FAULT, 1.0).onset == FAULT
    assert exact >= 55


def timeouts(seed: int) -> tuple[SliSeries, SliSeries, datetime]:
    """A tool of 10 calls a step that starts failing 8 % of its calls at FAULT, half of
    them timeouts of 3-8 s: its error rate, its p95 (about its slowest call: a timeout
    where a step had one, its usual 0.08 s elsewhere), and the p95's first spike."""
    rng = random.Random(seed)
    rate, p95 = [], []
    for i in range(120):
        t = T + i * STEP
        p = 0.08 if t >= FAULT else 0.003
        failed = [rng.random() < p for _ in range(10)]
        slow = [f and t >= FAULT and rng.random() < 0.5 for f in failed]
        rate.append((t, sum(failed) / 10))
        p95.append((t, rng.uniform(3, 8) if any(slow) else 0.08 * (1 + rng.gauss(0, 0.1))))
    errors = SliSeries(SliKey("tool:t", SliKind.ERROR_RATE), tuple(rate), tuple([10] * 120))
    latency = SliSeries(SliKey("tool:t", SliKind.LATENCY_P95), tuple(p95), tuple([10] * 120))
    first = next(t for t, v in latency.points if v > 1.0)
    return errors, latency, first


def test_a_train_of_timeouts_in_a_p95_does_not_pin_the_start_at_its_first_spike(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A p95 whose points since its onset mostly sit at the baseline is intermittent: each
    # spike costs tens of nats under any profile that does not start before it, so fitted
    # with the error rate it dated the fault at its first spike, whatever the errors said
    # (held-out support tools: +132 s and +97 s instead of +42 and +67 s). It is set aside
    # when a steady series remains, so the error rate alone dates the fault.
    checked = 0
    for seed in range(20):
        errors, latency, first = timeouts(seed)
        if first < FAULT + 3 * STEP:
            continue  # a spike in the first 90 s dates the fault well either way
        checked += 1
        opened = first + 2 * STEP
        found = [anomaly(errors, first, 0.003), anomaly(latency, first, 0.08)]
        slis = {errors.key: errors, latency.key: latency}
        ten = opened + timedelta(minutes=10)
        fit = refit_onset(found, first, opened, slis, ten, STEP)
        alone = refit_onset(found[:1], first, opened, {errors.key: errors}, ten, STEP)
        assert fit.onset == alone.onset, seed
        assert "2 series" not in fit.how and "(1 intermittent set aside)" in fit.how, fit.how
        with monkeypatch.context() as m:
            m.setattr("sentinel.onset.STEADY_SHARE", 0.0)  # every level steady, as before
            pinned = refit_onset(found, first, opened, slis, ten, STEP)
        assert pinned.onset == first and alone.onset < first, seed
    assert checked >= 3


def test_an_intermittent_series_is_still_fitted_when_it_is_all_there_is() -> None:
    _, latency, first = timeouts(1)
    fit = refit_alone(latency, first, 0.08)
    assert fit.how.startswith("kept: 1 series fitted with a step"), fit.how
