"""Root-cause analysis: from an incident's evidence (spans, changes, anomalies, topology)
to ranked, calibrated hypotheses of what caused it.

Modules: ``graph`` (``build_graph``: the causal graph of components, call edges with
their call, error and propagated-error counts, and change events; ``suspects``: what lies
downstream of a component), ``rank`` (``rank``: hypotheses scored by strength, coverage
of the anomalies they explain, symptoms explained by others, precedence and changes;
softmax confidences fitted by ``bench/rca.py --fit-seed``), ``engine`` (``diagnose``: a
case through detection, graph and ranking, what ``sentinel rca`` runs). Import from
``sentinel.rca``, not from the modules.

What must not live here: I/O, the clock, detection (``sentinel.detection``), the
component-edge rules (``sentinel.incidents.component_edges``) and the LLM.
"""

from sentinel.rca.engine import Diagnosis, diagnose, diagnose_incident, main_incident
from sentinel.rca.graph import (
    DEFAULT_EXEMPLARS,
    EdgeKind,
    NodeKind,
    build_graph,
    change_node,
    suspects,
)
from sentinel.rca.rank import (
    DEFAULT_CALIBRATION,
    DEFAULT_WEIGHTS,
    Calibration,
    Hypothesis,
    Weights,
    percent,
    rank,
)

__all__ = [
    "DEFAULT_CALIBRATION",
    "DEFAULT_EXEMPLARS",
    "DEFAULT_WEIGHTS",
    "Calibration",
    "Diagnosis",
    "EdgeKind",
    "Hypothesis",
    "NodeKind",
    "Weights",
    "build_graph",
    "change_node",
    "diagnose",
    "diagnose_incident",
    "main_incident",
    "percent",
    "rank",
    "suspects",
]
