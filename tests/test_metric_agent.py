"""The Metric Agent over a real store: it finds what the replay finds, persists every
lifecycle event, survives a restart without opening anything twice, and a failing
backend neither kills it nor resolves an incident."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from structlog.testing import capture_logs

from sentinel.adapters.db import METADATA, SqlStore, open_store
from sentinel.adapters.prometheus import FakeMetricSource
from sentinel.agents.metric import MetricAgent, SliWindow, _with_callers
from sentinel.cases import Case, FaultKind, ingest_case
from sentinel.clock import FakeClock, ScaledClock
from sentinel.detection import Anomaly, Detector, detect
from sentinel.errors import MetricSourceUnavailable, StoreError
from sentinel.incidents import (
    AnomalyMerged,
    EventAction,
    IncidentOpened,
    IncidentStatus,
    OnsetRefit,
    case_slis,
    component_edges,
    fold,
    lifecycle_events,
    replay,
    replay_case,
)
from sentinel.observability import SelfMetrics
from sentinel.ports import AuditAction
from sentinel.rca import Hypothesis
from sentinel.settings import DetectionSettings, Settings
from sentinel.sim import FaultSpec, Magnitude, Onset, Topology, plan_fault, simulate_case
from sentinel.sim.live import LiveRun
from sentinel.sli import SliKey, SliKind, SliSeries, span_slis, step_start
from sentinel.telemetry import ChangeEvent, Sample, Series, Span, TopologyEdge
from tests.harness import make_settings, running_daemon
from tests.test_sli import NOW, PRICES, decode, kv, otlp_request, otlp_span, sv
from tests.test_sli import tool as sli_tool

# Every trace kept: the agent then works from spans alone (no metric samples).
SPEC = FaultSpec(
    topology=Topology.SUPPORT, fault=FaultKind.TOOL_LATENCY, seed=255985076, sample_ratio=1.0
)


@pytest.fixture(scope="module")
def case() -> Case:
    # Spans only: the agent reads metric samples the same way, but they make each run
    # (and so the walk) several times slower.
    return dataclasses.replace(simulate_case(SPEC), samples=())


def fault_start(case: Case) -> datetime:
    assert case.truth is not None
    return case.truth.fault_start


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path, case: Case) -> Iterator[SqlStore]:
    url = (
        "sqlite:///" + str(tmp_path / "s.db")
        if request.param == "sqlite"
        else str(request.getfixturevalue("postgres_url"))
    )
    s = open_store(url, FakeClock(case.meta.start))
    ingest_case(s, case)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def sqlite_store(tmp_path: Path, case: Case) -> Iterator[SqlStore]:
    s = open_store("sqlite:///" + str(tmp_path / "s.db"), FakeClock(case.meta.start))
    ingest_case(s, case)
    try:
        yield s
    finally:
        s.close()


def settings(tmp_path: Path, **detection: object) -> Settings:
    # No ingest lag: the case is in the store whole, as the replay sees it.
    return make_settings(tmp_path, detection={"ingest_lag_seconds": 0.0, **detection})


def walk(agent: MetricAgent, clock: FakeClock, until: timedelta) -> None:
    """Run the agent at every interval until the clock reaches ``until`` past its start."""
    step = agent.settings.detection.interval_seconds
    stop = clock.now() + until
    while clock.now() < stop:
        clock.advance(step)
        asyncio.run(agent.run_once())


@pytest.mark.parametrize("divisor", [1, 2])  # the fast path on steps only, and on half-steps
def test_walking_a_case_opens_the_incident_the_replay_finds_and_persists_its_events(
    tmp_path: Path, case: Case, sqlite_store: SqlStore, divisor: int
) -> None:
    store = sqlite_store
    s = settings(tmp_path, fast_step_divisor=divisor)
    # The first run reads the whole baseline: starting shortly before the fault is the
    # same as having run all along. Runs on the step grid, as the daemon places them.
    step = timedelta(seconds=s.detection.step_seconds)
    clock = FakeClock(step_start(fault_start(case) - timedelta(minutes=5), step))
    walked = clock.now() + timedelta(minutes=12)
    # The walk ends before the hindsight onset is due: compare with the replay's as
    # opened (test_the_agent_refits_a_ramps_onset_as_the_replay_does covers the refit),
    # and up to the same time (the coarse path merges a p95 into the replay's later).
    expected = replay_case(
        dataclasses.replace(case, meta=case.meta.model_copy(update={"end": walked})),
        s.detection.model_copy(update={"onset_refit_minutes": 0.0}),
        s.pricing,
    )
    assert len(expected) == 1  # the suite's own check of this spec
    metrics = SelfMetrics()
    agent = MetricAgent(s, store, clock, metrics=metrics)

    walk(agent, clock, walked - clock.now())

    stored = store.incidents()
    assert [i.id for i in stored] == [expected[0].id]
    assert stored[0].status is IncidentStatus.OPEN  # the fault lasts to the case's end
    events = lifecycle_events(store.audit(stored[0].id))
    assert isinstance(events[0], IncidentOpened)
    rebuilt = fold(events)
    assert rebuilt is not None
    assert rebuilt.onset == expected[0].onset
    # ... and at the run the replay opened it at.
    assert stored[0].opened_at == expected[0].incident.opened_at
    assert {a.key for a in rebuilt.anomalies} == {a.key for a in expected[0].anomalies}
    target = plan_fault(SPEC, random.Random(SPEC.seed)).target
    assert target in rebuilt.components
    lifecycle = {a.value for a in EventAction}
    trail = store.audit(stored[0].id)
    assert all(e.actor == "metric-agent" for e in trail if e.action in lifecycle)
    assert {e.action for e in trail} <= {*lifecycle, AuditAction.DIAGNOSED.value}
    assert metrics.metric_agent_runs.labels(outcome="ok")._value.get() > 0
    assert metrics.open_incidents._value.get() == 1


# A config change whose effect ramps up over about 3 minutes: detection dates it where
# the output tokens are clearly up, at the ramp's top (+196 s).
RAMP_SPEC = FaultSpec(
    topology=Topology.SUPPORT,
    fault=FaultKind.CONFIG_CHANGE,
    seed=1360031911,
    magnitude=Magnitude.SUBTLE,
    onset=Onset.RAMPED,
)


def test_the_agent_refits_a_ramps_onset_as_the_replay_does(tmp_path: Path) -> None:
    case = simulate_case(RAMP_SPEC)
    s = settings(tmp_path)
    _, replayed = replay(
        case_slis(case, timedelta(seconds=30), s.pricing),
        component_edges(case.spans, case.topology, case.changes),
        case.meta.start,
        case.meta.end,
        s.detection,
        fine=case_slis(case, timedelta(seconds=15), s.pricing),
        coarse=case_slis(case, timedelta(seconds=120), s.pricing),
        changes=case.changes,
    )
    opened = next(e for e in replayed if isinstance(e, IncidentOpened))
    refit = next(e for e in replayed if isinstance(e, OnsetRefit))
    # The config commit before the ramp weighs in the fit, live as in the replay (the
    # agent reads the changes from the store).
    assert "just after a change weighed up" in refit.how
    truth = fault_start(case)
    # Detection dated it late; the refit, once the ramp is over, near where it began.
    assert opened.onset - truth > timedelta(seconds=90)
    assert abs(refit.onset - truth) <= timedelta(seconds=90)
    assert refit.time == opened.time + timedelta(minutes=s.detection.onset_refit_minutes)
    assert refit.how.startswith("moved earlier: ")

    store = open_store("sqlite:///" + str(tmp_path / "s.db"), FakeClock(case.meta.start))
    try:
        ingest_case(store, case)
        step = timedelta(seconds=s.detection.step_seconds)
        clock = FakeClock(step_start(truth - timedelta(minutes=5), step))
        walk(MetricAgent(s, store, clock), clock, refit.time - clock.now())
        [incident] = store.incidents()
        trail = lifecycle_events(store.audit(incident.id))
        assert [e for e in trail if isinstance(e, OnsetRefit)] == [refit]
        rebuilt = fold(trail)
        assert rebuilt is not None and rebuilt.onset == refit.onset
        # Once: a restarted agent rebuilds the refit onset and does not fit again.
        again = MetricAgent(s, store, clock)
        walk(again, clock, timedelta(minutes=2))
        assert (
            sum(isinstance(e, OnsetRefit) for e in lifecycle_events(store.audit(incident.id))) == 1
        )
        # The earlier onset widens the diagnosis's window: it was diagnosed again.
        diagnosed = [
            e.time for e in store.audit(incident.id) if e.action == AuditAction.DIAGNOSED.value
        ]
        assert max(diagnosed) >= refit.time
    finally:
        store.close()


def test_the_agent_judges_half_steps_as_the_replay_does_and_pages_a_step_sooner(
    tmp_path: Path,
) -> None:
    # A tool ten times slower from mid-step: on half-steps its two points of evidence are
    # there a step before the steps' two are.
    spec = dataclasses.replace(SPEC, seed=12)
    case = dataclasses.replace(simulate_case(spec), samples=())
    s = settings(tmp_path, fast_step_divisor=2)
    expected = replay_case(case, s.detection, s.pricing)
    on_steps = replay_case(case, s.detection.model_copy(update={"fast_step_divisor": 1}), s.pricing)
    assert expected[0].incident.opened_at + timedelta(seconds=30) == on_steps[0].incident.opened_at
    store = open_store("sqlite:///" + str(tmp_path / "s.db"), FakeClock(case.meta.start))
    try:
        ingest_case(store, case)
        step = timedelta(seconds=s.detection.step_seconds)
        clock = FakeClock(step_start(fault_start(case) - timedelta(minutes=2), step))
        agent = MetricAgent(s, store, clock)
        walk(agent, clock, timedelta(minutes=4))
        assert [(i.id, i.opened_at) for i in store.incidents()] == [
            (expected[0].id, expected[0].incident.opened_at)
        ]
    finally:
        store.close()


def test_the_agents_coarse_points_are_the_replays_whole_points(
    tmp_path: Path, case: Case, sqlite_store: SqlStore
) -> None:
    # The coarse path judges 2-minute points. Runs are 30 s apart and re-read only the
    # last minutes, so a read starting mid-point would make a partial point that the
    # next reads never complete: each read starts at a coarse point's start.
    s = settings(tmp_path, coarse_step_multiple=4)  # the default, pinned here
    det = s.detection
    coarse = timedelta(seconds=det.step_seconds * det.coarse_step_multiple)
    # The first run starts 90 s into a coarse point.
    start = step_start(fault_start(case), coarse) + timedelta(seconds=90)
    clock = FakeClock(start)
    agent = MetricAgent(s, sqlite_store, clock)
    assert agent.coarse_window is not None
    walk(agent, clock, timedelta(minutes=7))
    now = clock.now()
    replayed = case_slis(case, coarse, s.pricing)
    live = agent.coarse_window.series()
    # (the replay has every key of the case, error types the window never saw included)
    assert live and set(live) <= set(replayed)
    # Every whole point: the first run's fill (read in 30-minute chunks, whose seams
    # agent runs straddle) and the points the runs' short re-reads made since.
    compared = 0
    for key, series in live.items():
        # (from the case's first point: the window also holds the empty steps before it)
        first = replayed[key].rows[0][0]
        whole = [r for r in series.rows if first <= r[0] and r[0] + coarse <= now]
        assert whole == [r for r in replayed[key].rows if r[0] + coarse <= now]
        compared += len(whole)
    assert compared >= 15 * len(live)


# Subtle errors of a support tool called a few times a minute: no 30 s step shows enough
# of them, 2-minute points do (metric samples too: spans alone do not show it on points
# of either length).
COARSE_SPEC = FaultSpec(
    topology=Topology.SUPPORT,
    fault=FaultKind.TOOL_ERRORS,
    seed=996097414,
    magnitude=Magnitude.SUBTLE,
    onset=Onset.ABRUPT,
)


def test_a_sparse_fault_the_coarse_path_opens_is_opened_live_as_the_replay_does(
    tmp_path: Path,
) -> None:
    spec = COARSE_SPEC
    case = simulate_case(spec)
    s = settings(tmp_path, coarse_step_multiple=4)  # the default, pinned here
    expected = replay_case(case, s.detection, s.pricing)
    steps_only = s.detection.model_copy(update={"coarse_step_multiple": 1})
    # Only the coarse path sees this fault.
    assert replay_case(case, steps_only, s.pricing) == ()
    [incident] = expected
    store = open_store("sqlite:///" + str(tmp_path / "s.db"), FakeClock(case.meta.start))
    try:
        ingest_case(store, case)
        step = timedelta(seconds=s.detection.step_seconds)
        clock = FakeClock(step_start(incident.incident.opened_at - timedelta(minutes=3), step))
        walk(MetricAgent(s, store, clock), clock, timedelta(minutes=4))
        [stored] = store.incidents()
        assert (stored.id, stored.opened_at) == (incident.id, incident.incident.opened_at)
        rebuilt = fold(lifecycle_events(store.audit(stored.id)))
        assert rebuilt is not None
        assert {a.key for a in rebuilt.anomalies} == {a.key for a in incident.anomalies}
        target = plan_fault(spec, random.Random(spec.seed)).target
        assert target in rebuilt.components
    finally:
        store.close()


def test_a_restarted_agent_rebuilds_open_incidents_and_opens_nothing_twice(
    tmp_path: Path, case: Case, store: SqlStore
) -> None:
    s = settings(tmp_path)
    clock = FakeClock(fault_start(case) - timedelta(minutes=5))
    first = MetricAgent(s, store, clock)
    # Run until a few minutes after the fault: the incident is open.
    walk(first, clock, timedelta(minutes=10))
    opened = store.incidents()
    assert len(opened) == 1

    second = MetricAgent(s, store, clock)  # a new process: nothing in memory
    walk(second, clock, timedelta(minutes=5))

    assert [i.id for i in store.incidents()] == [opened[0].id]
    assert [i.id for i in second.open_incidents] == [opened[0].id]
    actions = [e.action for e in store.audit(opened[0].id)]
    assert actions.count(EventAction.INCIDENT_OPENED.value) == 1


def test_a_store_failure_fails_the_run_is_counted_and_the_next_run_recovers(
    tmp_path: Path, case: Case
) -> None:
    store = open_store("sqlite:///" + str(tmp_path / "s.db"), FakeClock(case.meta.start))
    try:
        ingest_case(store, case)
        clock = FakeClock(case.meta.start + timedelta(minutes=45))
        metrics = SelfMetrics()
        agent = MetricAgent(settings(tmp_path), store, clock, metrics=metrics)
        METADATA.drop_all(store.engine)  # the database lost its tables under the agent
        clock.advance(30)
        with pytest.raises(StoreError, match="no such table"):
            asyncio.run(agent.run_once())
        assert metrics.metric_agent_runs.labels(outcome="failed")._value.get() == 1
        METADATA.create_all(store.engine)
        ingest_case(store, case)
        clock.advance(30)
        run = asyncio.run(agent.run_once())
        assert run.judged > 0
        assert metrics.metric_agent_runs.labels(outcome="ok")._value.get() == 1
    finally:
        store.close()


def test_an_incident_the_agent_opens_is_diagnosed_with_the_faulty_component_first(
    tmp_path: Path, case: Case, store: SqlStore
) -> None:
    s = settings(tmp_path)
    clock = FakeClock(fault_start(case) - timedelta(minutes=5))
    metrics = SelfMetrics()
    agent = MetricAgent(s, store, clock, metrics=metrics)

    walk(agent, clock, timedelta(minutes=12))

    (incident,) = store.incidents()
    hypotheses = store.hypotheses(incident.id)
    target = plan_fault(SPEC, random.Random(SPEC.seed)).target
    assert hypotheses[0].component == target
    assert [h.confidence for h in hypotheses] == sorted(
        (h.confidence for h in hypotheses), reverse=True
    )
    # One diagnosis per run that opened the incident or merged anomalies into it, made at
    # that run's time, by the Root Cause agent.
    trail = store.audit(incident.id)
    changed_at = sorted(
        {e.time for e in lifecycle_events(trail) if isinstance(e, IncidentOpened | AnomalyMerged)}
    )
    diagnosed = [e for e in trail if e.action == AuditAction.DIAGNOSED.value]
    assert [e.time for e in diagnosed] == changed_at
    assert {e.actor for e in diagnosed} == {"root-cause-agent"}
    assert diagnosed[-1].detail["top"]["component"] == target
    assert diagnosed[-1].detail["hypotheses"] == len(hypotheses)
    assert metrics.rca_failures.labels(reason="engine")._value.get() == 0


def test_a_metrics_only_system_is_one_incident_and_diagnosed_on_its_inferred_structure(
    tmp_path: Path,
) -> None:
    # No spans and no topology: only the metrics say which services go together.
    spec = FaultSpec(Topology.MICROSERVICES, FaultKind.RESOURCE_EXHAUSTION, seed=103)
    case = simulate_case(spec)
    assert case.truth is not None and not case.spans
    store = open_store("sqlite:///" + str(tmp_path / "s.db"), FakeClock(case.meta.start))
    ingest_case(store, dataclasses.replace(case, topology=()))
    clock = FakeClock(case.truth.fault_start - timedelta(minutes=5))
    agent = MetricAgent(settings(tmp_path), store, clock)
    try:
        walk(agent, clock, timedelta(minutes=12))
        (incident,) = store.incidents()
        assert len(incident.components) > 1  # the saturated service and its callers
        assert store.hypotheses(incident.id)[0].component == case.truth.root_cause
    finally:
        store.close()


def broken_engine(
    anomalies: Sequence[Anomaly],
    spans: Sequence[Span],
    changes: Sequence[ChangeEvent],
    /,
    *,
    topology: Sequence[TopologyEdge] = (),
) -> tuple[Hypothesis, ...]:
    raise RuntimeError(f"ranking bug on {len(anomalies)} anomalies")


def test_a_failing_diagnosis_is_logged_and_counted_and_the_run_keeps_the_incident(
    tmp_path: Path, case: Case, sqlite_store: SqlStore
) -> None:
    store = sqlite_store
    clock = FakeClock(fault_start(case) - timedelta(minutes=5))
    metrics = SelfMetrics()
    agent = MetricAgent(settings(tmp_path), store, clock, metrics=metrics, diagnose=broken_engine)

    with capture_logs() as logs:
        walk(agent, clock, timedelta(minutes=10))

    (incident,) = store.incidents()
    assert incident.status is IncidentStatus.OPEN
    assert [i.id for i in agent.open_incidents] == [incident.id]
    assert store.hypotheses(incident.id) == []
    failed = [e for e in logs if e["event"] == "root-cause diagnosis failed"]
    assert failed
    assert all(e["incident"] == incident.id and e["log_level"] == "error" for e in failed)
    assert "RuntimeError: ranking bug" in failed[0]["error"]
    assert metrics.rca_failures.labels(reason="engine")._value.get() == len(failed)
    # Every run completed; none failed because ranking did.
    assert metrics.metric_agent_runs.labels(outcome="failed")._value.get() == 0
    assert metrics.metric_agent_runs.labels(outcome="ok")._value.get() == 20
    assert AuditAction.DIAGNOSED.value not in {e.action for e in store.audit(incident.id)}


class HypothesesDown:
    """The store, except that writing hypotheses fails while ``down``: the database lost
    between persisting an incident's event and storing its diagnosis."""

    def __init__(self, inner: SqlStore) -> None:
        self.inner = inner
        self.down = True

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def put_hypotheses(
        self, incident_id: str, hypotheses: Sequence[Hypothesis], at: datetime, *, actor: str
    ) -> None:
        if self.down:
            raise StoreError(f"store {self.inner.url}: connection lost")
        self.inner.put_hypotheses(incident_id, hypotheses, at, actor=actor)


def test_a_diagnosis_the_store_could_not_take_is_retried_on_the_next_run(
    tmp_path: Path, case: Case, sqlite_store: SqlStore
) -> None:
    store = HypothesesDown(sqlite_store)
    clock = FakeClock(fault_start(case) - timedelta(minutes=5))
    metrics = SelfMetrics()
    agent = MetricAgent(settings(tmp_path), store, clock, metrics=metrics)  # type: ignore[arg-type]
    walk(agent, clock, timedelta(minutes=10))
    (incident,) = sqlite_store.incidents()
    assert sqlite_store.hypotheses(incident.id) == []
    assert metrics.rca_failures.labels(reason="store")._value.get() > 0

    store.down = False
    walk(agent, clock, timedelta(seconds=30))  # one run, nothing new in it

    target = plan_fault(SPEC, random.Random(SPEC.seed)).target
    assert sqlite_store.hypotheses(incident.id)[0].component == target


def test_a_restarted_agent_diagnoses_an_open_incident_left_without_hypotheses(
    tmp_path: Path, case: Case, sqlite_store: SqlStore
) -> None:
    s = settings(tmp_path)
    clock = FakeClock(fault_start(case) - timedelta(minutes=5))
    walk(MetricAgent(s, sqlite_store, clock, diagnose=broken_engine), clock, timedelta(minutes=10))
    (incident,) = sqlite_store.incidents()
    assert sqlite_store.hypotheses(incident.id) == []

    walk(MetricAgent(s, sqlite_store, clock), clock, timedelta(seconds=30))

    target = plan_fault(SPEC, random.Random(SPEC.seed)).target
    assert sqlite_store.hypotheses(incident.id)[0].component == target


def test_the_sli_window_replaces_refreshed_steps_and_keeps_a_silent_component_at_zero(
    case: Case,
) -> None:
    step = timedelta(seconds=30)
    t0 = case.meta.start
    window = SliWindow(step, keep=timedelta(minutes=5))
    rate = SliKey("service:api", SliKind.REQUEST_RATE)
    p50 = SliKey("service:api", SliKind.LATENCY_P50)

    def series(key: SliKey, values: list[float], start_at: int = 0) -> SliSeries:
        return SliSeries(
            key=key,
            points=tuple((t0 + (start_at + i) * step, v) for i, v in enumerate(values)),
            counts=tuple(10 for _ in values),
        )

    window.refresh({rate: series(rate, [2.0] * 4), p50: series(p50, [0.1] * 4)}, t0, t0 + 4 * step)
    # Later data corrects steps 2-3 and adds 4; the component then goes silent.
    window.refresh(
        {rate: series(rate, [3.0, 3.0, 3.0], 2), p50: series(p50, [0.2, 0.2, 0.2], 2)},
        t0 + 2 * step,
        t0 + 5 * step,
    )
    window.refresh({}, t0 + 5 * step, t0 + 7 * step)
    got = window.series()
    assert [v for _, v in got[rate].points] == [2.0, 2.0, 3.0, 3.0, 3.0, 0.0, 0.0]
    assert got[rate].counts[-2:] == (0, 0)
    assert [v for _, v in got[p50].points] == [0.1, 0.1, 0.2, 0.2, 0.2]  # a gap, not zeros
    # Points older than `keep` are dropped.
    window.refresh({}, t0 + 7 * step, t0 + 14 * step)
    assert min(t for t, _ in window.series()[rate].points) >= t0 + 4 * step


@pytest.mark.parametrize(
    ("errors", "limited"),
    [
        (
            SliKey("tool:order_status", SliKind.ERROR_RATE),
            SliKey("tool:order_status", SliKind.ERROR_RATE_BY_TYPE, "RateLimitError"),
        ),
        # Calls refused before reaching the callee: zeros from all the refused calls.
        (
            SliKey("tool:order_status", SliKind.REFUSED_CALL_RATE),
            SliKey("tool:order_status", SliKind.REFUSED_CALL_RATE, "429"),
        ),
    ],
    ids=["requests", "refused-calls"],
)
def test_a_new_error_type_gets_a_zero_baseline_and_emerges_live(
    case: Case, errors: SliKey, limited: SliKey
) -> None:
    """Live, a refresh reads only recent steps: an error type first seen now must still
    have its zeros before (from the component's error rate), as a replay computing the
    whole window has, or its emergence could never be detected."""
    step = timedelta(seconds=30)
    t0 = case.meta.start
    window = SliWindow(step, keep=timedelta(minutes=60))

    def series(key: SliKey, values: list[float], start_at: int) -> SliSeries:
        return SliSeries(
            key=key,
            points=tuple((t0 + (start_at + i) * step, v) for i, v in enumerate(values)),
            counts=tuple(20 for _ in values),
        )

    for i in range(40):  # 20 minutes without an error, one step per run
        window.refresh({errors: series(errors, [0.0], i)}, t0 + i * step, t0 + (i + 1) * step)
    assert limited not in window.series()
    for i in range(40, 46):  # then 30 % of the calls are refused
        window.refresh(
            {errors: series(errors, [0.3], i), limited: series(limited, [0.3], i)},
            t0 + i * step,
            t0 + (i + 1) * step,
        )
    got = window.series()[limited]
    assert len(got.points) == 46
    assert [v for _, v in got.points[:40]] == [0.0] * 40
    assert got.counts[:40] == (20,) * 40
    found = detect(window.series(), t0 + 46 * step, DetectionSettings())
    emerged = [a for a in found.anomalies if a.key == limited]
    assert [a.detector for a in emerged] == [Detector.EMERGENCE]


def test_the_daemon_runs_the_metric_agent_on_its_interval(tmp_path: Path) -> None:
    # The first run waits for the end of an SLI step: a short step keeps the test short.
    s = make_settings(
        tmp_path,
        detection={"interval_seconds": 0.2, "step_seconds": 1.0, "ingest_lag_seconds": 0.0},
    )
    with running_daemon(s) as d:
        deadline = time.monotonic() + 20
        text = ""
        while time.monotonic() < deadline:
            text = httpx.get(f"{d.url}/metrics").text
            if 'sentinel_metric_agent_runs_total{outcome="ok"} 2.0' in text:
                break
            time.sleep(0.1)
        assert 'sentinel_metric_agent_runs_total{outcome="ok"}' in text
        assert "sentinel_open_incidents 0.0" in text


class SwitchableSource:
    """A metric source that can be taken down: the fake, or a refusal as the real adapter
    raises it when Prometheus is unreachable."""

    def __init__(self, inner: FakeMetricSource) -> None:
        self.inner = inner
        self.down = False

    def _check(self, query: str) -> None:
        if self.down:
            raise MetricSourceUnavailable(
                f"query {query!r}: http://127.0.0.1:9/ connection refused", query=query
            )

    async def instant(self, query: str, at: datetime | None = None) -> list[Series]:
        self._check(query)
        return await self.inner.instant(query, at)

    async def range(
        self, query: str, start: datetime, end: datetime, step: timedelta
    ) -> list[Series]:
        self._check(query)
        return await self.inner.range(query, start, end, step)


def test_a_metric_source_outage_degrades_runs_and_never_resolves_an_incident(
    tmp_path: Path,
) -> None:
    t0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)

    def latency(minute: float) -> float:
        return 0.5 if 45 <= minute < 55 else 0.1  # 10 minutes four times slower

    samples = [
        Sample("api_latency_p50_seconds", (), None, t0 + timedelta(seconds=15 * i), latency(i / 4))
        for i in range(4 * 100)
    ]
    source = SwitchableSource(FakeMetricSource(samples))
    s = make_settings(
        tmp_path,
        detection={"ingest_lag_seconds": 0.0},
        prometheus={
            "url": "http://127.0.0.1:9",
            "slis": [
                {
                    "component": "service:api",
                    "sli": "latency_p50",
                    "query": "api_latency_p50_seconds",
                }
            ],
        },
    )
    store = open_store(s.store_url, FakeClock(t0))
    metrics = SelfMetrics()
    clock = FakeClock(t0 + timedelta(minutes=44))
    agent = MetricAgent(s, store, clock, source=source, metrics=metrics)
    try:
        walk(agent, clock, timedelta(minutes=8))  # to 52 min: the slowdown is an incident
        (incident,) = store.incidents()
        assert incident.components == ("service:api",)
        walk(agent, clock, timedelta(minutes=5))  # to 57 min: back to normal for 2 minutes
        source.down = True
        walk(agent, clock, timedelta(minutes=18))  # to 75 min: longer than resolve_minutes
        assert store.get_incident(incident.id).status is IncidentStatus.OPEN  # type: ignore[union-attr]
        degraded = metrics.metric_agent_runs.labels(outcome="degraded")._value.get()
        assert degraded == 36
        assert metrics.metric_source_failures.labels(source="prometheus")._value.get() == 36
        source.down = False
        clock.advance(30)
        run = asyncio.run(agent.run_once())
        # The outage's points are read back in, and they show ten calm minutes.
        assert [type(e).__name__ for e in run.events] == ["IncidentResolved"]
        assert store.get_incident(incident.id).status is IncidentStatus.RESOLVED  # type: ignore[union-attr]
        actions = [e.action for e in store.audit(incident.id)]
        assert actions[0] == "incident_opened" and actions[-1] == "incident_resolved"
    finally:
        store.close()


def test_live_the_daemon_opens_one_incident_for_a_simulated_fault_soon_after_it_starts(
    tmp_path: Path,
) -> None:
    """End to end: the simulator's live mode exports OTLP to a real daemon whose Metric
    Agent runs on its interval, all on one accelerated clock."""
    speed = 60.0
    clock = ScaledClock(datetime.now(UTC).replace(microsecond=0), speed)
    spec = FaultSpec(
        topology=Topology.SUPPORT,
        fault=FaultKind.MODEL_PROVIDER_ERRORS,
        seed=12,
        minutes=40,
        sample_ratio=1.0,
    )
    with running_daemon(make_settings(tmp_path), clock=clock) as d:
        live = LiveRun(spec, clock, d.url, export_interval=5.0 / speed)
        fault = live.truth.fault_start
        runner = threading.Thread(target=live.run, daemon=True)
        runner.start()
        try:
            incidents = []
            while runner.is_alive() and clock.now() < fault + timedelta(minutes=5):
                incidents = d.store.incidents()
                if incidents:
                    break
                time.sleep(0.1)
        finally:
            live.stop()
            runner.join(30)
    assert len(incidents) == 1, "one incident, none before the fault"
    (incident,) = incidents
    assert fault <= incident.opened_at <= fault + timedelta(minutes=4)
    assert live.target in incident.components


def test_a_declared_request_rate_missing_from_a_refresh_is_a_gap_not_zero_traffic() -> None:
    step = timedelta(seconds=30)
    t0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
    declared = SliKey("service:api", SliKind.REQUEST_RATE)  # from [[prometheus.slis]]
    window = SliWindow(step, keep=timedelta(minutes=5), declared=frozenset({declared}))
    first = SliSeries(
        key=declared,
        points=tuple((t0 + i * step, 5.0) for i in range(4)),
        counts=(150, 150, 150, 150),
    )
    window.refresh({declared: first}, t0, t0 + 4 * step)
    window.refresh({}, t0 + 4 * step, t0 + 6 * step)  # Prometheus did not answer
    assert [v for _, v in window.series()[declared].points] == [5.0] * 4


class CountingLookups:
    """The real store, counting the spans fetched one by one."""

    def __init__(self, inner: SqlStore) -> None:
        self.inner = inner
        self.looked_up: list[tuple[str, str]] = []

    def span(self, trace_id: str, span_id: str) -> Span | None:
        self.looked_up.append((trace_id, span_id))
        return self.inner.span(trace_id, span_id)

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


def test_a_reread_fetches_the_stored_parents_of_its_first_calls_only(tmp_path: Path) -> None:
    # A tool started 5 s before the read calls the scraper 1 s into it: the tool is
    # fetched, so the call counts against it as in a replay. A call 90 s in whose parent
    # was never stored costs no lookup (it is not counted: its caller is unknown).
    def call(span: int, at_ms: int, parent: int, trace: int) -> dict[str, object]:
        return otlp_span(
            span=span,
            name="GET",
            at_ms=at_ms,
            kind=3,
            trace=trace,
            parent=parent,
            attributes=[kv("peer.service", sv("scraper"))],
        )

    def served(span: int, at_ms: int, parent: int, trace: int) -> dict[str, object]:
        return otlp_span(
            span=span, name="GET /page", at_ms=at_ms, kind=2, trace=trace, parent=parent
        )

    spans = decode(
        otlp_request(
            "agent-svc",
            sli_tool(0x50, -5_000, "fetch_page", trace=7, dur_ms=8_000),
            call(0x51, 1_000, 0x50, 7),
            call(0x61, 90_000, 0x60, 8),
        ),
        otlp_request("scraper", served(0x52, 1_005, 0x51, 7), served(0x62, 90_005, 0x61, 8)),
    )
    sql = open_store("sqlite:///" + str(tmp_path / "s.db"), FakeClock(NOW))
    try:
        sql.add_spans(spans)
        store = CountingLookups(sql)
        read = sql.spans(NOW, NOW + timedelta(minutes=3))
        assert {s.span_id[-2:] for s in read} == {"51", "52", "61", "62"}
        got = _with_callers(store, read, NOW)
        assert store.looked_up == [(f"{7:032x}", f"{0x50:016x}")]
        assert {s.span_id[-2:] for s in got} == {"50", "51", "52", "61", "62"}
        slis = span_slis(got, NOW, NOW + timedelta(minutes=3), timedelta(minutes=1), PRICES)
        refused = slis[SliKey("tool:fetch_page", SliKind.REFUSED_CALL_RATE)]
        assert refused.counts == (1,)
    finally:
        sql.close()
