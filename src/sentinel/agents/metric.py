"""The Metric Agent: run every ``detection.interval_seconds`` by the daemon, it brings the
SLIs up to date, runs the detectors and the SLO burn-rate rules, and opens, merges and
resolves incidents, persisting every lifecycle event with the incident it changes.

How a run goes (``MetricAgent.run_once``):

1. SLIs: the steps of the last ``LATE_DATA`` (where late spans still land) are
   recomputed from the store's spans and samples and from the declared PromQL SLIs;
   older steps are kept from earlier runs (``SliWindow``), so a run reads minutes of
   telemetry, not the whole baseline. The first run fills the window in chunks.
2. Detection at ``now - ingest_lag_seconds`` (only steps complete by then), as
   ``sentinel detect`` replays it: the same pure functions.
3. Correlation with the open incidents, whose state is rebuilt from their persisted
   lifecycle events when the agent starts (a restart forgets nothing, opens nothing
   twice).
4. Resolution, only on a run where every source answered: stale SLIs are not recovery.
5. Diagnosis: each open incident that was opened or gained anomalies is (re)diagnosed by
   the Root Cause engine and its hypotheses stored (``agents/root_cause.py``), off the
   event loop. A failed diagnosis is logged and counted there, never fails the run.

Failures: a store failure fails the run (``StoreError``; the daemon logs and counts it,
and the next interval retries); a failing metric source makes the run *degraded*: logged,
counted, judged on what is known, and no incident resolved.

What must not live here: the detectors, correlation rules or SLI definitions (stages),
SQL or HTTP (adapters), scheduling (``daemon.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol

import structlog

from sentinel.agents.promql import fetch_promql_slis
from sentinel.agents.root_cause import DiagnoseFn, DiagnosisOutcome, diagnose_stored
from sentinel.clock import Clock
from sentinel.detection import Anomaly, detect, is_error_type
from sentinel.errors import IllegalTransition, SentinelError
from sentinel.incidents import (
    AnomalyMerged,
    Edge,
    IncidentOpened,
    IncidentResolved,
    IncidentStatus,
    LifecycleEvent,
    OnsetRefit,
    TrackedIncident,
    audit_entry,
    component_edges,
    correlate,
    fold,
    lifecycle_events,
    recovered,
    refit_due,
    transition,
)
from sentinel.observability import SelfMetrics
from sentinel.onset import refit_reach
from sentinel.ports import IncidentStore, MetricSource, TelemetryStore
from sentinel.rca import diagnose_incident
from sentinel.rca.infer import infer_topology
from sentinel.settings import Settings
from sentinel.sli import (
    SliKey,
    SliKind,
    SliSeries,
    merge,
    metric_slis,
    promql_key,
    span_slis_by_step,
    step_start,
)
from sentinel.slo import evaluate_slos
from sentinel.telemetry import Span, SpanKind, TopologyEdge

log = structlog.get_logger(__name__)

ACTOR = "metric-agent"
# The first run reads the window in chunks of this much telemetry (memory stays bounded).
_FILL_CHUNK = timedelta(minutes=30)
# Each run recomputes the steps of this last stretch: a span is counted in the step it
# started in but reaches the store once it ends (plus the exporter's batching), so a
# request is counted if it ended within about this long of its start. Longer ones are
# not (they would cost every run a re-read of more telemetry).
LATE_DATA = timedelta(minutes=3)
# A re-read fetches the parents of calls made this soon after its start (``_with_callers``).
_CALLER_REACH = timedelta(minutes=1)


class AgentStore(TelemetryStore, IncidentStore, Protocol):
    """What the Metric Agent needs of the store."""


def _with_callers(store: TelemetryStore, spans: list[Span], since: datetime) -> list[Span]:
    """The spans read (from ``since``), with the stored parents of their calls to
    instrumented services that started before the read. Whose call a CLIENT span is
    (``refused_call_rate``) is its parent's component: a re-read of the last minutes
    would otherwise not count the calls of its first step's parents from before it,
    while a replay, reading the whole window, counts them. Parents are fetched one by
    one, and only for calls made within ``_CALLER_REACH`` of ``since``: a call's parent
    is a tool or request span of seconds, and a parent never stored (a service whose
    inner spans are dropped) must not cost a lookup per call and run."""
    held = {(s.trace_id, s.span_id) for s in spans}
    components = {s.component for s in spans}
    reach = since + _CALLER_REACH
    missing = sorted(
        {
            (s.trace_id, s.parent_span_id)
            for s in spans
            if s.kind is SpanKind.CLIENT
            and s.peer in components
            and s.parent_span_id is not None
            and (s.trace_id, s.parent_span_id) not in held
            and s.start < reach
        }
    )
    parents = [p for t, sid in missing if (p := store.span(t, sid)) is not None]
    return [*spans, *parents] if parents else spans


class SliWindow:
    """The SLI points of the last ``keep``, one (value, count) per step and key. A refresh
    replaces every point from ``since`` on (late data corrects what it touches; a key
    the refresh did not see loses its points there, except the request rate of a known
    component, which is 0: no request is an observation, and a component that stopped
    answering must show as a drop, not as a gap)."""

    def __init__(
        self, step: timedelta, keep: timedelta, declared: frozenset[SliKey] = frozenset()
    ) -> None:
        """``declared``: SLIs read from a metric source. Their absence is a failed or
        empty query, never zero traffic, so they are not zero-filled."""
        self.step = step
        self.keep = keep
        self.declared = declared
        self._points: dict[SliKey, dict[datetime, tuple[float, int]]] = {}

    def refresh(self, fresh: Mapping[SliKey, SliSeries], since: datetime, end: datetime) -> None:
        for key, by_time in self._points.items():
            for t in [t for t in by_time if t >= since]:
                del by_time[t]
            if key.kind is SliKind.REQUEST_RATE and key not in fresh and key not in self.declared:
                t = since
                while t < end:
                    by_time[t] = (0.0, 0)
                    t += self.step
        for key, series in fresh.items():
            by_time = self._points.setdefault(key, {})
            for (t, v), c in zip(series.points, series.counts, strict=True):
                if t >= since:
                    by_time[t] = (v, c)
        self._fill_error_types()
        horizon = end - self.keep
        for key in list(self._points):
            by_time = self._points[key]
            for t in [t for t in by_time if t < horizon]:
                del by_time[t]
            if not by_time:
                del self._points[key]

    def _fill_error_types(self) -> None:
        """An error type's share is 0 at every step its component answered without it.
        A refresh reads only recent steps, so a type first seen now would have no points
        before (no baseline: its emergence could never be detected live, while a replay,
        computing the whole window at once, has the zeros): they are filled in from the
        component's error rate, which counts the same requests (a type of refused calls:
        from all its refused calls, which count the same calls)."""
        for key, by_time in self._points.items():
            if not is_error_type(key) or key in self.declared:
                continue
            total = self._points.get(
                SliKey(key.component, SliKind.ERROR_RATE)
                if key.kind is SliKind.ERROR_RATE_BY_TYPE
                else SliKey(key.component, key.kind)
            )
            if total is None:
                continue
            for t, (_, count) in total.items():
                if t not in by_time and count > 0:
                    by_time[t] = (0.0, count)

    def series(self) -> dict[SliKey, SliSeries]:
        out: dict[SliKey, SliSeries] = {}
        for key in sorted(self._points):
            items = sorted(self._points[key].items())
            out[key] = SliSeries(
                key=key,
                points=tuple((t, v) for t, (v, _) in items),
                counts=tuple(c for _, (_, c) in items),
            )
        return out


@dataclass(slots=True)
class _Read:
    """One read's SLIs on each grid, and the metric sources that failed."""

    fresh: dict[SliKey, SliSeries]
    fine: dict[SliKey, SliSeries]
    coarse: dict[SliKey, SliSeries]
    failures: tuple[SentinelError, ...] = ()


class RunOutcome(StrEnum):
    OK = "ok"
    DEGRADED = "degraded"  # a metric source failed: stale SLIs, no resolution
    FAILED = "failed"  # the store failed: nothing judged


@dataclass(frozen=True, slots=True)
class MetricRun:
    """What one run did."""

    at: datetime
    judged_at: datetime
    anomalies: tuple[Anomaly, ...]
    events: tuple[LifecycleEvent, ...]
    failures: tuple[SentinelError, ...]  # metric sources that did not answer
    judged: int
    not_enough_data: int


class MetricAgent:
    def __init__(
        self,
        settings: Settings,
        store: AgentStore,
        clock: Clock,
        *,
        source: MetricSource | None = None,
        metrics: SelfMetrics | None = None,
        diagnose: DiagnoseFn = diagnose_incident,
        moved_off: Callable[[str], frozenset[str]] = lambda incident_id: frozenset(),
    ) -> None:
        """``diagnose``: the Root Cause engine run on the incidents a run changed.
        ``moved_off``: the components a verified fix of an incident took out of the
        users' path, whose SLIs its resolution does not wait for (``recovered``)."""
        self.moved_off = moved_off
        self.settings = settings
        self.store = store
        self.clock = clock
        self.source = source
        self.metrics = metrics
        det = settings.detection
        self.step = timedelta(seconds=det.step_seconds)
        longest_slo = max(
            (w.long_minutes for slo in settings.slo for w in slo.windows), default=0.0
        )
        # The hindsight refit, due onset_refit_minutes after opening, reads its series from
        # refit_reach before an anomaly's onset, which is at most the longest recent
        # window before the opening: the window must still hold those points then.
        refit = (
            timedelta(minutes=det.onset_refit_minutes + det.longest_recent_minutes)
            + refit_reach(self.step)
            if det.onset_refit_minutes > 0
            else timedelta(0)
        )
        self.keep = (
            max(
                timedelta(minutes=max(det.reach_minutes, longest_slo, det.resolve_minutes)),
                refit,
            )
            + 2 * self.step
        )
        self.window = SliWindow(
            self.step, self.keep, frozenset(promql_key(d) for d in settings.prometheus.slis)
        )
        # The fast path's shorter grid (``fast_step_divisor``): the same span and metric
        # SLIs, not the declared PromQL ones (those keep the step path's fast path).
        self.fine_window = (
            SliWindow(self.step / det.fast_step_divisor, self.keep)
            if det.fast_step_divisor > 1
            else None
        )
        # The coarse path's longer grid (``coarse_step_multiple``), the same SLIs. Each run
        # recomputes from the start of a coarse point (``_since``), so that no coarse point
        # is ever made of a partial read.
        self.coarse_window = (
            SliWindow(self.step * det.coarse_step_multiple, self.keep)
            if det.coarse_step_multiple > 1
            else None
        )
        self._filled_to: datetime | None = None
        self._edges: set[Edge] = set()
        # No span has shown a call yet: a metrics-only system, whose structure is
        # inferred from its load metrics on every run (``rca.infer``).
        self._calls_seen = False
        self._inferred: tuple[TopologyEdge, ...] = ()
        self._open: dict[str, TrackedIncident] | None = None
        self.diagnose = diagnose
        # Open incidents whose stored hypotheses do not reflect their anomalies yet.
        self._undiagnosed: set[str] = set()

    # --- state ------------------------------------------------------------------------

    def _load_open(self) -> dict[str, TrackedIncident]:
        """The open incidents, rebuilt from their lifecycle events in the audit log."""
        out: dict[str, TrackedIncident] = {}
        for incident in self.store.incidents(open_only=True):
            try:
                state = fold(lifecycle_events(self.store.audit(incident.id)))
            except (IllegalTransition, ValueError) as e:
                # One damaged trail must not stop detection for everything else.
                log.error("cannot rebuild incident, skipped", incident=incident.id, error=str(e))
                continue
            if state is not None and state.incident.status is not IncidentStatus.RESOLVED:
                out[state.id] = state
                # A crash between an event and its diagnosis left none: diagnose it now.
                if not self.store.hypotheses(state.id):
                    self._undiagnosed.add(state.id)
        return out

    def _persist(self, event: LifecycleEvent, open_: dict[str, TrackedIncident]) -> LifecycleEvent:
        if isinstance(event, IncidentOpened):
            event = self._unique_id(event)
        state = transition(open_.get(event.incident_id), event)
        entry = audit_entry(event, ACTOR)
        self.store.put_incident(state.incident, [entry])
        moved = isinstance(event, OnsetRefit) and state.onset != open_[state.id].onset
        if isinstance(event, IncidentOpened | AnomalyMerged) or moved:
            # A moved onset moves the window of changes the diagnosis weighs (earlier:
            # wider; later, back towards the opening onset: narrower).
            self._undiagnosed.add(state.id)
        if state.incident.status is IncidentStatus.RESOLVED:
            open_.pop(state.id, None)
        else:
            open_[state.id] = state
        if self.metrics is not None:
            self.metrics.incident_events.labels(action=entry.action).inc()
        log.info(
            "incident event",
            incident=event.incident_id,
            action=entry.action,
            components=list(state.components),
        )
        return event

    def _unique_id(self, event: IncidentOpened) -> IncidentOpened:
        # Ids are derived from the onset; a new incident must never overwrite an old one
        # that happened to start at the same second.
        base, n = event.incident_id, 1
        while self.store.get_incident(event.incident_id) is not None:
            n += 1
            event = event.model_copy(update={"incident_id": f"{base}-{n}"})
        return event

    # --- one run ----------------------------------------------------------------------

    async def _read(self, since: datetime, end: datetime, now: datetime) -> _Read:
        """The SLIs from ``since`` to ``end`` on the step grid, the fast path's shorter one
        and the coarse path's longer one (empty without them), and the metric sources
        that failed. ``since`` is on every grid (``_since``)."""
        s = self.settings
        step = self.step
        longest = self.coarse_window.step if self.coarse_window is not None else step
        # An agent run is counted in the step its root span started in, with every span
        # of its trace: a read that ends before ``now`` (a chunk of the first run's fill)
        # also reads the spans that started up to LATE_DATA after it, or the runs that
        # straddle its end would lose their later steps, tokens and cost.
        spans = await asyncio.to_thread(self.store.spans, since, min(now, end + LATE_DATA))
        spans = await asyncio.to_thread(_with_callers, self.store, spans, since)
        # Counters need the sample before a step to give its rate: read a little earlier.
        samples = await asyncio.to_thread(self.store.samples, since - 2 * longest, end)
        calls = component_edges(spans)
        self._edges |= calls
        self._calls_seen = self._calls_seen or bool(calls)

        # Every grid's span SLIs from one pass over the spans (runs and costs once).
        windows = [w for w in (self.fine_window, self.coarse_window) if w is not None]
        grids = [step, *(w.step for w in windows)]
        from_spans = dict(
            zip(grids, span_slis_by_step(spans, since, end, grids, s.pricing), strict=True)
        )

        def on_grid(grid: timedelta) -> dict[SliKey, SliSeries]:
            return merge(from_spans[grid], metric_slis(samples, since - 2 * grid, end, grid))

        read = _Read(
            fresh=on_grid(step),
            fine={} if self.fine_window is None else on_grid(self.fine_window.step),
            coarse={} if self.coarse_window is None else on_grid(self.coarse_window.step),
        )
        if s.prometheus.slis and self.source is not None:
            fetched = await fetch_promql_slis(self.source, s.prometheus.slis, since, end, step)
            read.fresh.update(fetched.slis)  # declared SLIs win over computed ones
            read.failures = fetched.failures
        return read

    def _since(self, oldest: datetime, recent: datetime) -> datetime:
        """Where this run's read starts: from ``recent`` (the steps late data may still
        change), or all since the last complete run after an outage, or from ``oldest``
        (the whole window) on the first run; from the start of the coarse point holding
        that instant."""
        since = oldest if self._filled_to is None else max(oldest, min(recent, self._filled_to))
        if self.coarse_window is not None:
            # The coarse grid is the step grid's every n-th point (both from the epoch).
            since = step_start(since, self.coarse_window.step)
        return since

    async def run_once(self) -> MetricRun:
        s = self.settings
        det = s.detection
        now = self.clock.now()
        judged_at = now - timedelta(seconds=det.ingest_lag_seconds)
        end = now
        oldest = step_start(now - self.keep, self.step)
        recent = step_start(now - LATE_DATA, self.step)
        since = self._since(oldest, recent)
        failures: list[SentinelError] = []
        try:
            if self._open is None:
                self._open = await asyncio.to_thread(self._load_open)
            chunk_start = since
            while chunk_start < end:
                chunk_end = min(end, chunk_start + _FILL_CHUNK) if chunk_start < recent else end
                read = await self._read(chunk_start, chunk_end, end)
                self.window.refresh(read.fresh, chunk_start, chunk_end)
                if self.fine_window is not None:
                    self.fine_window.refresh(read.fine, chunk_start, chunk_end)
                if self.coarse_window is not None:
                    self.coarse_window.refresh(read.coarse, chunk_start, chunk_end)
                failures.extend(read.failures)
                chunk_start = chunk_end
            changes = await asyncio.to_thread(self.store.changes, oldest, end)
        except SentinelError:
            self._count(RunOutcome.FAILED)
            raise
        if not failures:
            # After an outage, the next complete run re-reads everything since the last
            # complete one: the source's points of the outage are filled in, not gaps.
            self._filled_to = end
        self._edges |= component_edges(changes=changes)
        for f in failures:
            log.error("metric source failed; its SLIs are stale this run", error=str(f))
            if self.metrics is not None:
                self.metrics.metric_source_failures.labels(source="prometheus").inc()

        slis = self.window.series()
        fine_slis = None if self.fine_window is None else self.fine_window.series()
        coarse_slis = None if self.coarse_window is None else self.coarse_window.series()
        result = detect(slis, judged_at, det, fine_slis, coarse_slis)
        anomalies = (*result.anomalies, *evaluate_slos(s.slo, slis, judged_at, self.step))
        open_ = self._open
        self._inferred = () if self._calls_seen else infer_topology(slis)
        edges = self._edges | {(e.caller, e.callee) for e in self._inferred}
        found = correlate(anomalies, edges, list(open_.values()), now, det)
        events: list[LifecycleEvent] = []
        try:
            for ev in found:
                events.append(await asyncio.to_thread(self._persist, ev, open_))
            if not failures:
                for state in list(open_.values()):
                    off = await asyncio.to_thread(self.moved_off, state.id)
                    done = recovered(state, slis, judged_at, det, s.slo, off)
                    refit = refit_due(
                        state, slis, judged_at, now, det, resolving=done, changes=changes
                    )
                    if refit is not None:
                        events.append(await asyncio.to_thread(self._persist, refit, open_))
                    if done:
                        ev = IncidentResolved(incident_id=state.id, time=now)
                        events.append(await asyncio.to_thread(self._persist, ev, open_))
        except SentinelError:
            self._count(RunOutcome.FAILED)
            # What was not persisted is not known to have happened: reload next run.
            self._open = None
            raise
        await self._diagnose_changed(open_, now)
        self._count(RunOutcome.DEGRADED if failures else RunOutcome.OK)
        if self.metrics is not None:
            self.metrics.open_incidents.set(len(open_))
            self.metrics.slis_tracked.labels(verdict="judged").set(result.checked)
            self.metrics.slis_tracked.labels(verdict="not_enough_data").set(
                len(result.not_enough_data)
            )
        return MetricRun(
            at=now,
            judged_at=judged_at,
            anomalies=tuple(anomalies),
            events=tuple(events),
            failures=tuple(failures),
            judged=result.checked,
            not_enough_data=len(result.not_enough_data),
        )

    async def _diagnose_changed(self, open_: dict[str, TrackedIncident], now: datetime) -> None:
        for incident_id in sorted(self._undiagnosed):
            state = open_.get(incident_id)
            if state is None:  # resolved: its last diagnosis stands
                self._undiagnosed.discard(incident_id)
                continue
            outcome = await asyncio.to_thread(
                diagnose_stored,
                self.store,
                state,
                now,
                diagnose=self.diagnose,
                metrics=self.metrics,
                topology=self._inferred,
            )
            # A store failure is retried next run; an engine failure waits for new
            # anomalies (the same evidence would fail the same way).
            if outcome is not DiagnosisOutcome.STORE_FAILED:
                self._undiagnosed.discard(incident_id)

    def _count(self, outcome: RunOutcome) -> None:
        if self.metrics is not None:
            self.metrics.metric_agent_runs.labels(outcome=outcome.value).inc()

    @property
    def open_incidents(self) -> Sequence[TrackedIncident]:
        return tuple((self._open or {}).values())
