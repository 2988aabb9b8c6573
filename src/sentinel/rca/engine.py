"""The Root Cause Agent's deterministic engine on a case: detection finds the incident and
its onset (the case's ``[truth]`` is never read), the causal graph is built from the
case's spans, changes and topology, and the hypotheses are ranked.

``diagnose`` is what ``sentinel rca CASE_DIR`` runs, and what the daemon runs on a live
incident's evidence (``diagnose_incident``).

What must not live here: reading files (``sentinel.cases``), printing, the LLM.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from datetime import timedelta

from pydantic import BaseModel, ConfigDict

from sentinel.cases import Case
from sentinel.detection import Anomaly
from sentinel.incidents import TrackedIncident, case_slis, replay_case
from sentinel.rca.graph import build_graph
from sentinel.rca.infer import infer_topology
from sentinel.rca.rank import (
    DEFAULT_CALIBRATION,
    DEFAULT_WEIGHTS,
    Calibration,
    Hypothesis,
    Weights,
    anomaly_weight,
    rank,
)
from sentinel.settings import DetectionSettings, PricingSettings, SloSettings
from sentinel.sli import SliKey, SliSeries
from sentinel.telemetry import AwareDatetime, ChangeEvent, Span, TopologyEdge

__all__ = [
    "Diagnosis",
    "diagnose",
    "diagnose_incident",
    "main_incident",
    "sensitive",
    "with_inferred_topology",
]

# Said of every hypothesis found only on the second, more sensitive pass.
BELOW_PAGING = "below the paging thresholds: found with the minimum effect sizes relaxed"


class Diagnosis(BaseModel):
    """What an engine returns for a case (CASE_FORMAT.md): the onset it found and the
    hypotheses, best first. No incident found: no onset and no hypotheses."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    case: str
    onset: AwareDatetime | None
    hypotheses: tuple[Hypothesis, ...] = ()
    incident: str | None = None  # the incident diagnosed, when detection found several


def main_incident(incidents: Sequence[TrackedIncident]) -> TrackedIncident | None:
    """The incident to diagnose when a window holds several: the one with the most
    evidence (sum of its anomalies' scores, log-scaled), earliest on a tie."""
    if not incidents:
        return None

    def weight(i: TrackedIncident) -> float:
        return math.fsum(anomaly_weight(a) for a in i.anomalies)

    return max(incidents, key=lambda i: (weight(i), -i.onset.timestamp()))


def diagnose_incident(
    anomalies: Sequence[Anomaly],
    spans: Sequence[Span],
    changes: Sequence[ChangeEvent],
    topology: Sequence[TopologyEdge] = (),
    *,
    priors: Mapping[str, float] | None = None,
    weights: Weights = DEFAULT_WEIGHTS,
    calibration: Calibration = DEFAULT_CALIBRATION,
) -> tuple[Hypothesis, ...]:
    """The ranked hypotheses of one incident's anomalies, from its evidence."""
    graph = build_graph(spans, changes, anomalies, topology)
    return rank(graph, priors=priors, weights=weights, calibration=calibration)


def with_inferred_topology(case: Case, slis: Mapping[SliKey, SliSeries]) -> Case:
    """The case, with call edges inferred from its SLIs (``sentinel.rca.infer``) when
    neither its spans nor a topology show any: a metrics-only system without a service
    catalog. ``slis``: the case's ``case_slis``, which the replay then reuses."""
    if case.spans or case.topology:
        return case
    return dataclasses.replace(case, topology=infer_topology(slis))


def sensitive(s: DetectionSettings) -> DetectionSettings:
    """The detection bar for a window known to hold a fault: statistical significance is
    kept (noise must still not count), the minimum effect sizes, which exist so that
    small real shifts do not page anyone, are dropped or lowered, and half the baseline
    will do (a case that begins only some 10 minutes before its fault)."""
    return s.model_copy(
        update={
            "min_baseline_points": max(10, s.min_baseline_points // 2),
            "latency_min_increase_seconds": 0.0,
            "cpu_min_increase_cores": 0.0,
            "error_rate_min_increase": s.error_rate_min_increase / 5,
            "memory_min_increase": s.memory_min_increase / 2,
            "eval_score_min_drop": s.eval_score_min_drop / 2,
        }
    )


def diagnose(
    case: Case,
    detection: DetectionSettings,
    pricing: PricingSettings,
    slos: Sequence[SloSettings] = (),
    *,
    priors: Mapping[str, float] | None = None,
    weights: Weights = DEFAULT_WEIGHTS,
    calibration: Calibration = DEFAULT_CALIBRATION,
) -> Diagnosis:
    """Detection, then ranking, on a case's telemetry (never its truth).

    A case is a window someone chose because something went wrong: when nothing there
    crosses the paging bar, detection runs again with ``sensitive`` settings, and the
    hypotheses say so. A metrics-only case without a topology gets one inferred from its
    metrics (``with_inferred_topology``)."""
    # One set of SLIs serves the inference and both passes (``sensitive`` keeps the step).
    step = timedelta(seconds=detection.step_seconds)
    slis = case_slis(case, step, pricing)
    divisor = detection.fast_step_divisor
    fine = case_slis(case, step / divisor, pricing) if divisor > 1 else None
    multiple = detection.coarse_step_multiple
    coarse = case_slis(case, step * multiple, pricing) if multiple > 1 else None
    case = with_inferred_topology(case, slis)
    note: tuple[str, ...] = ()
    incident = main_incident(
        replay_case(case, detection, pricing, slos, slis=slis, fine=fine, coarse=coarse)
    )
    if incident is None:
        bar = sensitive(detection)
        incident = main_incident(
            replay_case(case, bar, pricing, slos, slis=slis, fine=fine, coarse=coarse)
        )
        note = (BELOW_PAGING,)
    if incident is None:
        return Diagnosis(case=case.meta.id, onset=None)
    hypotheses = diagnose_incident(
        incident.anomalies,
        case.spans,
        case.changes,
        case.topology,
        priors=priors,
        weights=weights,
        calibration=calibration,
    )
    if note:
        hypotheses = tuple(
            h.model_copy(update={"evidence": (*h.evidence, *note)}) for h in hypotheses
        )
    return Diagnosis(
        case=case.meta.id, onset=incident.onset, hypotheses=hypotheses, incident=incident.id
    )
