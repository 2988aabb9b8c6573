"""Incidents and the audit trail: the records, their states, the pure state machine that
moves an incident from open to resolved, and the correlation of anomalies into incidents.

- ``component_edges``: the component graph (call edges seen in spans, topology edges of a
  service catalog, and change -> affected component edges);
- ``correlate``: anomalies close in time (``correlation_minutes``) and close in that
  graph (``correlation_max_hops``) become ONE incident; later ones merge into the open
  incident they belong to. It returns lifecycle events, never mutates;
- ``transition``: applies one lifecycle event (``IncidentOpened``, ``AnomalyMerged``,
  ``OnsetRefit``, ``IncidentResolved``) to an incident's state, rejecting illegal ones;
  the events double as the audit trail;
- ``recovered``: whether an incident's SLIs stayed back within baseline long enough;
- ``refit_due``: the hindsight onset (``sentinel.onset``) of incidents open long enough;
- ``replay``: detection and correlation walked step by step over a window, as live.

What must not live here: storage (``adapters/db/``), the detectors, notification.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, assert_never

from pydantic import BaseModel, ConfigDict, Field

from sentinel.cases import Case
from sentinel.detection import Anomaly, CoarseMemo, Detector, detect, within_baseline
from sentinel.errors import IllegalTransition
from sentinel.onset import refit_onset
from sentinel.settings import DetectionSettings, PricingSettings, SloSettings
from sentinel.sli import SliKey, SliSeries, merge, metric_slis, span_slis, step_start
from sentinel.slo import evaluate_slos, slo_recovered
from sentinel.telemetry import AwareDatetime, ChangeEvent, Span, SpanKind, TopologyEdge


class IncidentStatus(StrEnum):
    OPEN = "open"
    MITIGATING = "mitigating"
    RESOLVED = "resolved"


class Incident(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1)
    title: str
    status: IncidentStatus = IncidentStatus.OPEN
    opened_at: AwareDatetime
    updated_at: AwareDatetime
    resolved_at: AwareDatetime | None = None
    components: tuple[str, ...] = ()


class AuditEntry(BaseModel):
    """One decision or fact in the audit log: who, what, about which incident, and the
    details (hypothesis, confidence, evidence, ...)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    time: AwareDatetime
    actor: str = Field(min_length=1)
    action: str = Field(min_length=1)
    incident_id: str | None = None
    detail: dict[str, Any] = Field(default_factory=dict)


# --- lifecycle events and state -----------------------------------------------------------


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    incident_id: str = Field(min_length=1)
    time: AwareDatetime


class IncidentOpened(_Event):
    onset: AwareDatetime
    anomalies: tuple[Anomaly, ...] = Field(min_length=1)


class AnomalyMerged(_Event):
    anomaly: Anomaly


class OnsetRefit(_Event):
    """The incident's onset dated again in hindsight (``sentinel.onset``), once, when it
    has been open ``onset_refit_minutes`` (or at its resolution, if sooner). ``onset``
    is later than the one it replaces only back towards the onset the incident opened
    with, when a merged anomaly had dated it earlier, or to just after a change made after
    it (``refit_onset``); ``how`` says what the fit found."""

    onset: AwareDatetime
    how: str


class IncidentResolved(_Event):
    pass


LifecycleEvent = IncidentOpened | AnomalyMerged | OnsetRefit | IncidentResolved


class EventAction(StrEnum):
    """The audit-log action of each lifecycle event."""

    INCIDENT_OPENED = "incident_opened"
    ANOMALY_MERGED = "anomaly_merged"
    ONSET_REFIT = "onset_refit"
    INCIDENT_RESOLVED = "incident_resolved"


_ACTION_OF: dict[type[LifecycleEvent], EventAction] = {
    IncidentOpened: EventAction.INCIDENT_OPENED,
    AnomalyMerged: EventAction.ANOMALY_MERGED,
    OnsetRefit: EventAction.ONSET_REFIT,
    IncidentResolved: EventAction.INCIDENT_RESOLVED,
}
_EVENT_OF = {action.value: cls for cls, action in _ACTION_OF.items()}


def audit_entry(event: LifecycleEvent, actor: str) -> AuditEntry:
    """The audit-log record of a lifecycle event (its whole content, as JSON)."""
    return AuditEntry(
        time=event.time,
        actor=actor,
        action=_ACTION_OF[type(event)].value,
        incident_id=event.incident_id,
        detail=event.model_dump(mode="json"),
    )


def lifecycle_events(entries: Iterable[AuditEntry]) -> list[LifecycleEvent]:
    """The lifecycle events among audit entries, in their order (others are skipped)."""
    out: list[LifecycleEvent] = []
    for e in entries:
        cls = _EVENT_OF.get(e.action)
        if cls is not None:
            out.append(cls.model_validate(e.detail))
    return out


def fold(events: Iterable[LifecycleEvent]) -> TrackedIncident | None:
    """An incident's state rebuilt from its lifecycle events (the store keeps the events
    as its audit trail; this is how the Metric Agent recovers its state on restart)."""
    state: TrackedIncident | None = None
    for ev in events:
        state = transition(state, ev)
    return state


class TrackedIncident(BaseModel):
    """An incident as detection sees it: the store's record plus its onset and anomalies."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    incident: Incident
    onset: AwareDatetime
    anomalies: tuple[Anomaly, ...]
    # When the onset was dated again in hindsight (``OnsetRefit``); None until then.
    refit_at: AwareDatetime | None = None
    # The onset the incident opened with (None: not known, an incident rebuilt from its
    # record alone): the refit may date the start later than anomalies merged since
    # did, up to this (later only just after a change, ``refit_onset``).
    opened_onset: AwareDatetime | None = None

    @property
    def id(self) -> str:
        return self.incident.id

    @property
    def last_onset(self) -> datetime:
        return max(a.onset for a in self.anomalies)

    @property
    def components(self) -> tuple[str, ...]:
        return self.incident.components


def _title(anomalies: Sequence[Anomaly]) -> str:
    first = min(anomalies, key=lambda a: (a.onset, a.component, a.sli))
    more = len({a.component for a in anomalies}) - 1
    return f"{first.sli.value} of {first.component}" + (f" (+{more} components)" if more else "")


def _components(anomalies: Iterable[Anomaly]) -> tuple[str, ...]:
    return tuple(sorted({a.component for a in anomalies}))


def transition(state: TrackedIncident | None, event: LifecycleEvent) -> TrackedIncident:
    """The state after ``event``. Opening needs no state; merging and resolving need an
    open (or mitigating) incident with the event's id; a resolved incident takes no
    event; an anomaly already in the incident cannot merge twice."""
    match event:
        case IncidentOpened():
            if state is not None:
                raise IllegalTransition(f"incident {state.id!r} is already open: {event!r}")
            return TrackedIncident(
                incident=Incident(
                    id=event.incident_id,
                    title=_title(event.anomalies),
                    opened_at=event.time,
                    updated_at=event.time,
                    components=_components(event.anomalies),
                ),
                onset=event.onset,
                anomalies=event.anomalies,
                opened_onset=event.onset,
            )
        case AnomalyMerged():
            live = _require_live(state, event)
            if event.anomaly.key in {a.key for a in live.anomalies}:
                raise IllegalTransition(
                    f"anomaly {event.anomaly.key!r} is already in incident {live.id!r}"
                )
            anomalies = (*live.anomalies, event.anomaly)
            return live.model_copy(
                update={
                    "incident": live.incident.model_copy(
                        update={"updated_at": event.time, "components": _components(anomalies)}
                    ),
                    "anomalies": anomalies,
                    # Once refit, the onset is the joint fit's: a symptom found more
                    # than ten minutes into an incident is dated on its own series
                    # (often on the coarse path's 2-minute grid) and less surely.
                    "onset": (
                        live.onset
                        if live.refit_at is not None
                        else min(live.onset, event.anomaly.onset)
                    ),
                }
            )
        case OnsetRefit():
            live = _require_live(state, event)
            if live.refit_at is not None:
                raise IllegalTransition(f"incident {live.id!r}'s onset was refit already")
            return live.model_copy(
                update={
                    "incident": live.incident.model_copy(update={"updated_at": event.time}),
                    # The refit bounds its own moves (``refit_onset``); the event says
                    # where they ended.
                    "onset": event.onset,
                    "refit_at": event.time,
                }
            )
        case IncidentResolved():
            live = _require_live(state, event)
            return live.model_copy(
                update={
                    "incident": live.incident.model_copy(
                        update={
                            "status": IncidentStatus.RESOLVED,
                            "updated_at": event.time,
                            "resolved_at": event.time,
                        }
                    )
                }
            )
        case _:
            assert_never(event)


def _require_live(state: TrackedIncident | None, event: LifecycleEvent) -> TrackedIncident:
    if state is None:
        raise IllegalTransition(f"no incident {event.incident_id!r} to apply {event!r} to")
    if state.id != event.incident_id:
        raise IllegalTransition(f"event for {event.incident_id!r} applied to {state.id!r}")
    if state.incident.status is IncidentStatus.RESOLVED:
        raise IllegalTransition(f"incident {state.id!r} is resolved: {event!r}")
    if event.time < state.incident.updated_at:
        raise IllegalTransition(
            f"event at {event.time.isoformat()!r} is before incident {state.id!r}'s last "
            f"update at {state.incident.updated_at.isoformat()!r}"
        )
    return state


# --- the component graph -------------------------------------------------------------------


Edge = tuple[str, str]  # (caller, callee), or (change component, affected component)


def call_peer(span: Span) -> str | None:
    """The component a CLIENT span calls (a bare peer name is a service), or None."""
    if span.kind is not SpanKind.CLIENT or not span.peer:
        return None
    return span.peer if ":" in span.peer else f"service:{span.peer}"


def component_edges(
    spans: Iterable[Span] = (),
    topology: Iterable[TopologyEdge] = (),
    changes: Iterable[ChangeEvent] = (),
) -> frozenset[Edge]:
    """Call edges between different components: parent span -> child span, a CLIENT span
    -> its peer; the topology's caller -> callee; a change's component -> each affected."""
    spans = list(spans)
    by_id = {(s.trace_id, s.span_id): s.component for s in spans}
    edges: set[Edge] = set()
    for s in spans:
        if s.parent_span_id is not None:
            parent = by_id.get((s.trace_id, s.parent_span_id))
            if parent is not None and parent != s.component:
                edges.add((parent, s.component))
        peer = call_peer(s)
        if peer is not None and peer != s.component:
            edges.add((s.component, peer))
    edges.update((e.caller, e.callee) for e in topology if e.caller != e.callee)
    for c in changes:
        edges.update((c.component, a) for a in c.affects if a != c.component)
    return frozenset(edges)


def _neighbours(edges: Iterable[Edge]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for a, b in edges:
        out.setdefault(a, set()).add(b)
        out.setdefault(b, set()).add(a)
    return out


def _within(graph: Mapping[str, set[str]], sources: Iterable[str], hops: int) -> set[str]:
    """Components at most ``hops`` edges (either direction) from any of ``sources``."""
    seen = set(sources)
    frontier = deque((c, 0) for c in seen)
    while frontier:
        c, d = frontier.popleft()
        if d == hops:
            continue
        for n in graph.get(c, ()):
            if n not in seen:
                seen.add(n)
                frontier.append((n, d + 1))
    return seen


# --- correlation -----------------------------------------------------------------------------


def incident_id(onset: datetime, component: str) -> str:
    """A deterministic id: the same anomalies give the same incident on every replay."""
    return f"inc-{onset.strftime('%Y%m%dT%H%M%SZ')}-{component}"


def correlate(
    anomalies: Sequence[Anomaly],
    graph_edges: Iterable[Edge],
    open_incidents: Sequence[TrackedIncident],
    now: datetime,
    settings: DetectionSettings,
) -> tuple[LifecycleEvent, ...]:
    """Lifecycle events for new ``anomalies`` at ``now``.

    An anomaly whose SLI is already in an open incident is the same problem, not news. One
    close in time (its onset within ``correlation_minutes`` of an incident's anomalies)
    and in the graph (within ``correlation_max_hops`` of its components) merges into that
    incident (the earliest such). The rest are grouped the same way among themselves,
    earliest onset first, and each group opens one incident.
    """
    graph = _neighbours(graph_edges)
    window = timedelta(minutes=settings.correlation_minutes)
    hops = settings.correlation_max_hops
    live = [i for i in open_incidents if i.incident.status is not IncidentStatus.RESOLVED]
    known = {a.key for i in live for a in i.anomalies}
    fresh = sorted(
        (a for a in anomalies if a.key not in known),
        key=lambda a: (a.onset, a.component, a.sli, a.qualifier),
    )

    # Groups: existing incidents first (so merging wins over opening), then new ones.
    groups: list[tuple[str | None, list[Anomaly]]] = [(i.id, list(i.anomalies)) for i in live]
    added: dict[int, list[Anomaly]] = {}
    seen_keys: set[SliKey] = set()
    for a in fresh:
        if a.key in seen_keys:
            continue
        seen_keys.add(a.key)
        home = None
        for gi, (_, members) in enumerate(groups):
            close_in_time = any(abs(a.onset - m.onset) <= window for m in members)
            if close_in_time and a.component in _within(
                graph, (m.component for m in members), hops
            ):
                home = gi
                break
        if home is None:
            groups.append((None, [a]))
            home = len(groups) - 1
        else:
            groups[home][1].append(a)
        added.setdefault(home, []).append(a)

    events: list[LifecycleEvent] = []
    for gi, new in sorted(added.items()):
        gid, members = groups[gi]
        if gid is not None:
            events.extend(AnomalyMerged(incident_id=gid, time=now, anomaly=a) for a in new)
        else:
            first = min(members, key=lambda m: (m.onset, m.component, m.sli, m.qualifier))
            events.append(
                IncidentOpened(
                    incident_id=incident_id(first.onset, first.component),
                    time=now,
                    onset=first.onset,
                    anomalies=tuple(members),
                )
            )
    return tuple(events)


# --- resolution --------------------------------------------------------------------------------


def recovered(
    incident: TrackedIncident,
    slis: Mapping[SliKey, SliSeries],
    now: datetime,
    settings: DetectionSettings,
    slos: Sequence[SloSettings] = (),
    moved_off: frozenset[str] = frozenset(),
) -> bool:
    """Whether every SLI of the incident has points in the last ``resolve_minutes`` and
    all of them are back within the anomaly's baseline, and every SLO alert of it has
    stopped burning (``recovery_gap`` says what is missing when not)."""
    return recovery_gap(incident, slis, now, settings, slos, moved_off) is None


def recovery_gap(
    incident: TrackedIncident,
    slis: Mapping[SliKey, SliSeries],
    now: datetime,
    settings: DetectionSettings,
    slos: Sequence[SloSettings] = (),
    moved_off: frozenset[str] = frozenset(),
) -> str | None:
    """Why the incident has not recovered at ``now`` (the first SLI that says so, for
    people), or None when it has. Missing data is not recovery; nor is an SLO no longer
    configured.

    ``moved_off``: components a fix took out of the users' path (a model failed over
    from, a version in shadow): their anomalies are not judged, since the first gets no
    traffic and the second stays as bad as it was, by design. When every anomaly is on
    them, nothing can be judged and the incident has not recovered."""
    since = now - timedelta(minutes=settings.resolve_minutes)
    step = timedelta(seconds=settings.step_seconds)
    by_name = {slo.name: slo for slo in slos}
    judged = [a for a in incident.anomalies if a.component not in moved_off]
    if not judged:
        return "every anomaly is on a component the fix moved traffic off: nothing to judge"
    for a in judged:
        what = f"{a.sli.value} of {a.component}"
        series = slis.get(a.key)
        if a.detector is Detector.BURN_RATE:
            slo = by_name.get(a.slo)
            if slo is None:
                return f"the SLO {a.slo!r} is no longer configured"
            if not slo_recovered(slo, series, now, step):
                return f"the SLO {a.slo!r} is still burning its error budget"
            continue
        if series is None:
            return f"no data for {what}"
        window = [(t, v) for t, v in series.points if t >= since and t + step <= now]
        if len(window) < settings.persistence_points:
            return (
                f"{what} has {len(window)} point(s) since {since:%H:%M:%S}, "
                f"{settings.persistence_points} needed"
            )
        for t, v in window:
            if not within_baseline(a.sli, a.baseline, v, settings):
                return f"{what} was {v:.3g} at {t:%H:%M:%S} (baseline {a.baseline:.3g})"
    return None


# --- hindsight onset ----------------------------------------------------------------------------


def refit_due(
    incident: TrackedIncident,
    slis: Mapping[SliKey, SliSeries],
    judged_at: datetime,
    now: datetime,
    settings: DetectionSettings,
    *,
    resolving: bool = False,
    changes: Sequence[ChangeEvent] = (),
) -> OnsetRefit | None:
    """The incident's ``OnsetRefit`` when it is due: once, when the incident has been
    open ``onset_refit_minutes``, or when it is ``resolving`` before that. The fit reads
    the SLIs up to ``judged_at``; the event is stamped ``now``. SLO burn-rate anomalies
    are left out of the fit (their series' shape is the objective's, not the fault's).
    ``changes``: the change events known; those on the incident's components before it
    opened weigh the fit's start towards them (``onset_change_prior``), and one made
    after the onset detection gave may date the fault later (``refit_onset``)."""
    wait = settings.onset_refit_minutes
    if wait <= 0 or incident.refit_at is not None:
        return None
    if not resolving and now - incident.incident.opened_at < timedelta(minutes=wait):
        return None
    fitted = [a for a in incident.anomalies if a.detector is not Detector.BURN_RATE]
    components = {a.component for a in fitted}
    fit = refit_onset(
        fitted,
        incident.onset,
        incident.incident.opened_at,
        slis,
        judged_at,
        timedelta(seconds=settings.step_seconds),
        # A change after the incident opened did not start its fault; one between the
        # detected onset and the opening may have (the onset was dated early on noise).
        changes=[
            c.time
            for c in changes
            if c.time < incident.incident.opened_at and components & {c.component, *c.affects}
        ],
        change_prior=settings.onset_change_prior,
        latest=incident.opened_onset,
    )
    return OnsetRefit(incident_id=incident.id, time=now, onset=fit.onset, how=fit.how)


# --- replay ----------------------------------------------------------------------------------


def replay(
    slis: Mapping[SliKey, SliSeries],
    graph_edges: Iterable[Edge],
    start: datetime,
    end: datetime,
    settings: DetectionSettings,
    slos: Sequence[SloSettings] = (),
    *,
    fine: Mapping[SliKey, SliSeries] | None = None,
    coarse: Mapping[SliKey, SliSeries] | None = None,
    changes: Sequence[ChangeEvent] = (),
) -> tuple[tuple[TrackedIncident, ...], tuple[LifecycleEvent, ...]]:
    """Detection (and the ``slos``' burn-rate rules) and correlation at every step from
    ``start`` to ``end``, as the Metric Agent runs them live: the incidents (in opening
    order) and every event. ``fine``, ``coarse``: the SLIs on the fast path's shorter grid
    and the coarse path's longer one (``detect``). ``changes``: the change events, for the
    onset refit (which reads only those before an incident's onset, so none it could not
    know live)."""
    edges = frozenset(graph_edges)
    step = timedelta(seconds=settings.step_seconds)
    incidents: dict[str, TrackedIncident] = {}
    events: list[LifecycleEvent] = []

    def apply(ev: LifecycleEvent) -> None:
        incidents[ev.incident_id] = transition(incidents.get(ev.incident_id), ev)
        events.append(ev)

    def live() -> list[TrackedIncident]:
        return [i for i in incidents.values() if i.incident.status is not IncidentStatus.RESOLVED]

    memo: CoarseMemo = {}
    now = start + step
    while now <= end:
        found = (
            *detect(slis, now, settings, fine, coarse, memo).anomalies,
            *evaluate_slos(slos, slis, now, step),
        )
        for ev in correlate(found, edges, live(), now, settings):
            apply(ev)
        for i in live():
            done = recovered(i, slis, now, settings, slos)
            refit = refit_due(i, slis, now, now, settings, resolving=done, changes=changes)
            if refit is not None:
                apply(refit)
            if done:
                apply(IncidentResolved(incident_id=i.id, time=now))
        now += step
    # The window ends: incidents still open and not refit yet are refit on what it has
    # (live, the daemon refits them later, on more data).
    for i in live():
        refit = refit_due(
            i, slis, now - step, now - step, settings, resolving=True, changes=changes
        )
        if refit is not None:
            apply(refit)
    return tuple(incidents.values()), tuple(events)


def case_slis(case: Case, step: timedelta, pricing: PricingSettings) -> dict[SliKey, SliSeries]:
    """A case's SLIs on its window: spans and metric samples merged (metrics win where
    both measure an SLI). The grid is the daemon's, aligned on the epoch: a window
    starting mid-step gets a partial first step, not a grid of its own (the phase of a
    fault against the grid changes how soon it is seen, so a replay must keep it)."""
    start, end = step_start(case.meta.start, step), case.meta.end
    return merge(
        span_slis(case.spans, start, end, step, pricing),
        metric_slis(case.samples, start, end, step),
    )


def replay_case(
    case: Case,
    detection: DetectionSettings,
    pricing: PricingSettings,
    slos: Sequence[SloSettings] = (),
    *,
    slis: Mapping[SliKey, SliSeries] | None = None,
    fine: Mapping[SliKey, SliSeries] | None = None,
    coarse: Mapping[SliKey, SliSeries] | None = None,
) -> tuple[TrackedIncident, ...]:
    """A case's telemetry (never its truth) through SLIs, detection and correlation, as
    live: the incidents ``sentinel detect`` reports. The graph is every edge the case
    shows. ``slis``: the case's ``case_slis`` at the detection step, when the caller
    has them already (they are most of a replay's cost); ``fine``, ``coarse``: the same on
    the fast path's shorter grid and the coarse path's longer one (computed here when
    ``fast_step_divisor`` and ``coarse_step_multiple`` ask for them)."""
    step = timedelta(seconds=detection.step_seconds)
    if slis is None:
        slis = case_slis(case, step, pricing)
    if fine is None and detection.fast_step_divisor > 1:
        fine = case_slis(case, step / detection.fast_step_divisor, pricing)
    if coarse is None and detection.coarse_step_multiple > 1:
        coarse = case_slis(case, step * detection.coarse_step_multiple, pricing)
    edges = component_edges(case.spans, case.topology, case.changes)
    start = step_start(case.meta.start, step)
    incidents, _ = replay(
        slis,
        edges,
        start,
        case.meta.end,
        detection,
        slos,
        fine=fine,
        coarse=coarse,
        changes=case.changes,
    )
    return incidents
