"""The Root Cause Agent as the daemon runs it: an open incident whose anomalies changed is
diagnosed by the deterministic engine (``sentinel.rca.diagnose_incident``) on the store's
evidence of its window, and the ranked hypotheses are stored with it
(``IncidentStore.put_hypotheses``, which also writes the "diagnosed" audit entry).

The Metric Agent calls ``diagnose_stored`` (from a worker thread) after it has persisted
the lifecycle events of a run. A diagnosis that fails is logged with the incident id and
counted (``sentinel_rca_failures_total{reason}``), never raised: the incident is already
stored, and detection must not stop because ranking did.

What must not live here: the graph or the ranking (``sentinel.rca``), SQL (adapters),
scheduling (``daemon.py``), the LLM.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol

import structlog

from sentinel.detection import Anomaly
from sentinel.errors import StoreError, UnknownIncident
from sentinel.incidents import TrackedIncident
from sentinel.learning.priors import LearnedState
from sentinel.observability import SelfMetrics
from sentinel.ports import DIAGNOSIS_ACTOR, IncidentStore, TelemetryStore
from sentinel.rca import Hypothesis, diagnose_incident
from sentinel.telemetry import ChangeEvent, Span, TopologyEdge

log = structlog.get_logger(__name__)

ACTOR = DIAGNOSIS_ACTOR
# Spans from this long before the incident's onset: the calls as they were before the
# fault, so the graph has every caller and callee even of a component that went silent.
SPAN_LOOKBACK = timedelta(minutes=10)
# Changes from this long before the onset: as far back as the ranking credits a change
# to a component (``rca.rank.CHANGE_WINDOW``).
CHANGE_LOOKBACK = timedelta(minutes=60)
# At most this many spans per diagnosis, the oldest of the window (around the onset,
# where the cause shows): an incident open for hours must not stall the agent reading
# and ranking all of them. About 1.3 s of reading and ranking on SQLite, mostly decoding.
MAX_SPANS = 20_000


class DiagnoseFn(Protocol):
    """What ranks an incident's hypotheses (``sentinel.rca.diagnose_incident``; tests pass
    another)."""

    def __call__(
        self,
        anomalies: Sequence[Anomaly],
        spans: Sequence[Span],
        changes: Sequence[ChangeEvent],
        /,
        *,
        topology: Sequence[TopologyEdge] = (),
    ) -> Sequence[Hypothesis]: ...


class RootCauseStore(TelemetryStore, IncidentStore, Protocol):
    """What a diagnosis reads (spans, changes) and writes (hypotheses)."""


class DiagnosisOutcome(StrEnum):
    DIAGNOSED = "diagnosed"
    ENGINE_FAILED = "engine"  # the engine raised: not retried until the incident changes
    STORE_FAILED = "store"  # reading the evidence or writing the result failed: retryable
    GONE = "gone"  # the store no longer holds the incident


def evidence_window(
    store: TelemetryStore, onset: datetime, now: datetime, *, max_spans: int = MAX_SPANS
) -> tuple[list[Span], list[ChangeEvent]]:
    """What a diagnosis of an incident with this onset reads: its spans from
    ``SPAN_LOOKBACK`` before the onset to ``now`` (at most ``max_spans``, the oldest) and
    its changes since ``CHANGE_LOOKBACK`` before it. Blocking; raises ``StoreError``."""
    spans = store.spans(onset - SPAN_LOOKBACK, now, limit=max_spans)
    return spans, store.changes(onset - CHANGE_LOOKBACK, now)


def diagnose_stored(
    store: RootCauseStore,
    state: TrackedIncident,
    now: datetime,
    *,
    diagnose: DiagnoseFn = diagnose_incident,
    metrics: SelfMetrics | None = None,
    max_spans: int = MAX_SPANS,
    topology: Sequence[TopologyEdge] = (),
) -> DiagnosisOutcome:
    """Diagnose the incident ``state`` on the store's spans from ``SPAN_LOOKBACK`` before
    its onset to ``now`` (at most ``max_spans``) and its changes since ``CHANGE_LOOKBACK``
    before it, and store the hypotheses. Blocking: call from a worker thread. Never
    raises; what went wrong is logged, counted and returned. ``topology``: call edges
    known besides the spans' (inferred from metrics, for a metrics-only system)."""
    incident = state.id
    try:
        spans, changes = evidence_window(store, state.onset, now, max_spans=max_spans)
    except StoreError as e:
        return _failed(DiagnosisOutcome.STORE_FAILED, incident, e, metrics)
    if len(spans) >= max_spans:
        log.warning(
            "diagnosis reads only the first spans of the incident's window",
            incident=incident,
            spans=len(spans),
            until=spans[-1].start.isoformat(),
        )
    try:
        hypotheses = tuple(diagnose(state.anomalies, spans, changes, topology=topology))
    except Exception as e:  # a bug in ranking must not stop detection: catch all
        log.error(
            "root-cause diagnosis failed",
            incident=incident,
            error=f"{type(e).__name__}: {e}",
            exc_info=True,
        )
        if metrics is not None:
            metrics.rca_failures.labels(reason=DiagnosisOutcome.ENGINE_FAILED.value).inc()
        return DiagnosisOutcome.ENGINE_FAILED
    try:
        store.put_hypotheses(incident, hypotheses, now, actor=ACTOR)
    except UnknownIncident as e:
        return _failed(DiagnosisOutcome.GONE, incident, e, metrics)
    except StoreError as e:
        return _failed(DiagnosisOutcome.STORE_FAILED, incident, e, metrics)
    top = hypotheses[0] if hypotheses else None
    log.info(
        "incident diagnosed",
        incident=incident,
        spans=len(spans),
        changes=len(changes),
        hypotheses=len(hypotheses),
        top=None if top is None else top.component,
        fault=None if top is None else top.fault,
        confidence=None if top is None else round(top.confidence, 3),
    )
    return DiagnosisOutcome.DIAGNOSED


def _failed(
    outcome: DiagnosisOutcome, incident: str, error: Exception, metrics: SelfMetrics | None
) -> DiagnosisOutcome:
    log.error(
        "root-cause diagnosis failed", incident=incident, reason=outcome.value, error=str(error)
    )
    if metrics is not None:
        metrics.rca_failures.labels(reason=outcome.value).inc()
    return outcome


class LearnedSource(Protocol):
    """Where the latest learned state is read (``adapters.db.SqlStore``)."""

    def learned(self) -> LearnedState: ...


def learned_diagnosis(store: LearnedSource) -> DiagnoseFn:
    """The Root Cause engine with what was learned: the store's latest learned state
    (component priors, calibration), read at every diagnosis so that a `sentinel learn`
    or a reset applies without a restart."""

    def diagnose(
        anomalies: Sequence[Anomaly],
        spans: Sequence[Span],
        changes: Sequence[ChangeEvent],
        /,
        *,
        topology: Sequence[TopologyEdge] = (),
    ) -> Sequence[Hypothesis]:
        learned = store.learned()
        return diagnose_incident(
            anomalies,
            spans,
            changes,
            topology,
            priors=learned.component_priors or None,
            calibration=learned.calibration(),
        )

    return diagnose
