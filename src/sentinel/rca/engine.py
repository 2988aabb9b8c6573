"""The Root Cause Agent's deterministic engine on a case: detection finds the incident and
its onset (the case's ``[truth]`` is never read), the causal graph is built from the
case's spans, changes and topology, and the hypotheses are ranked.

``diagnose`` is what ``sentinel rca CASE_DIR`` runs, and what the daemon runs on a live
incident's evidence (``diagnose_incident``).

What must not live here: reading files (``sentinel.cases``), printing, the LLM.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from pydantic import BaseModel, ConfigDict

from sentinel.cases import Case
from sentinel.detection import Anomaly
from sentinel.incidents import TrackedIncident, replay_case
from sentinel.rca.graph import build_graph
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
from sentinel.telemetry import AwareDatetime, ChangeEvent, Span, TopologyEdge

__all__ = ["Diagnosis", "diagnose", "diagnose_incident", "main_incident"]


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
    """Detection, then ranking, on a case's telemetry (never its truth)."""
    incident = main_incident(replay_case(case, detection, pricing, slos))
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
    return Diagnosis(
        case=case.meta.id, onset=incident.onset, hypotheses=hypotheses, incident=incident.id
    )
