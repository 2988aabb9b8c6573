"""Root-cause analysis: from an incident's evidence (spans, changes, anomalies, topology)
to the components and changes that could explain it.

Modules: ``graph`` (``build_graph``: the causal graph of components, call edges with
their call, error and propagated-error counts, and change events; ``suspects``: what lies
downstream of a component). Import from ``sentinel.rca``, not from the modules.

What must not live here: I/O, the clock, detection (``sentinel.detection``) and the
component-edge rules (``sentinel.incidents.component_edges``).
"""

from sentinel.rca.graph import (
    DEFAULT_EXEMPLARS,
    EdgeKind,
    NodeKind,
    build_graph,
    change_node,
    suspects,
)

__all__ = [
    "DEFAULT_EXEMPLARS",
    "EdgeKind",
    "NodeKind",
    "build_graph",
    "change_node",
    "suspects",
]
