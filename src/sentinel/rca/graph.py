"""The causal graph the Root Cause Agent reasons over: what calls what, how often the calls
failed, which changes touched which component, and which components are anomalous.

``build_graph`` turns spans, change events, anomalies and a service catalog's topology
into a ``networkx.DiGraph``:

- component nodes (keyed by component id): their anomalies, onset, score, never-seen
  error types, span and error counts, and exemplar trace ids of failing spans;
- call edges caller -> callee, exactly ``sentinel.incidents.component_edges``' edges of
  the spans and topology, with call, error and propagated-error counts;
- change nodes (``change:<id>``) with an edge to the changed component and to every
  component the change affects.

``suspects`` lists what could explain a component's symptoms: its callees, transitively.

What must not live here: I/O, the clock, detection, ranking hypotheses or confidence
(the agent does that from this graph), and any copy of the call-edge rules
(``component_edges`` owns them).
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable
from enum import StrEnum

import networkx as nx

from sentinel.detection import Anomaly, Detector
from sentinel.incidents import Edge, call_peer, component_edges
from sentinel.telemetry import ChangeEvent, Span, TopologyEdge

DEFAULT_EXEMPLARS = 5


class NodeKind(StrEnum):
    COMPONENT = "component"
    CHANGE = "change"


class EdgeKind(StrEnum):
    CALL = "call"  # caller -> callee
    CHANGE = "change"  # change node -> a component it changed or affects


def change_node(change: ChangeEvent) -> str:
    """The node id of a change; ``change`` is no component kind, so ids never collide."""
    return f"change:{change.id}"


def build_graph(
    spans: Iterable[Span],
    changes: Iterable[ChangeEvent],
    anomalies: Iterable[Anomaly],
    topology: Iterable[TopologyEdge] = (),
    *,
    exemplars_per_node: int = DEFAULT_EXEMPLARS,
) -> nx.DiGraph:
    """The causal graph of one incident's evidence (see the module docstring)."""
    if exemplars_per_node < 0:
        raise ValueError(f"exemplars_per_node must be >= 0, got {exemplars_per_node!r}")
    spans = list(spans)
    changes = list(changes)
    topology = list(topology)
    by_component: dict[str, list[Anomaly]] = {}
    for a in anomalies:
        by_component.setdefault(a.component, []).append(a)

    calls, errors, propagated = _edge_counts(spans)
    # The counted calls are exactly ``component_edges``' edges of the spans (a CLIENT
    # span's peer that answered is counted through its own span, the same edge): one
    # pass over the spans, not two. The topology's edges are added as that function does.
    edges = set(calls) | component_edges((), topology, ())
    span_counts = Counter(s.component for s in spans)
    error_counts = Counter(s.component for s in spans if s.is_error)
    exemplars = _exemplars(spans, exemplars_per_node)

    components = set(span_counts) | set(by_component)
    components.update(c for edge in edges for c in edge)
    for ch in changes:
        components.add(ch.component)
        components.update(ch.affects)

    graph = nx.DiGraph()
    # Sorted so that two builds of the same evidence iterate alike.
    for c in sorted(components):
        found = sorted(
            by_component.get(c, ()), key=lambda a: (a.onset, a.sli, a.qualifier, a.detector)
        )
        graph.add_node(
            c,
            kind=NodeKind.COMPONENT,
            anomalies=tuple(found),
            onset=found[0].onset if found else None,
            score=max((a.score for a in found), default=0.0),
            new_error_types=tuple(
                dict.fromkeys(a.qualifier for a in found if a.detector is Detector.EMERGENCE)
            ),
            exemplars=exemplars.get(c, ()),
            spans=span_counts[c],
            errors=error_counts[c],
        )
    for edge in sorted(edges):
        graph.add_edge(
            *edge,
            kind=EdgeKind.CALL,
            calls=calls[edge],
            errors=errors[edge],
            propagated=propagated[edge],
        )
    for ch in sorted(changes, key=lambda ch: (ch.time, ch.id)):
        node = change_node(ch)
        graph.add_node(node, kind=NodeKind.CHANGE, change=ch, time=ch.time, author=ch.author)
        for target in (ch.component, *ch.affects):
            graph.add_edge(node, target, kind=EdgeKind.CHANGE)
    return graph


def _edge_counts(spans: list[Span]) -> tuple[Counter[Edge], Counter[Edge], Counter[Edge]]:
    """Calls, failed calls and failed calls whose caller span failed too, per edge.

    A call is a callee's span under a caller's span. A CLIENT span whose callee left no
    span of its own (an uninstrumented database, say) is the only record of that call:
    it counts as the call, and its failure is both the callee's error and the caller's,
    so it counts as propagated.
    """
    by_id = {(s.trace_id, s.span_id): s for s in spans}
    answered = {
        (s.trace_id, s.parent_span_id, s.component) for s in spans if s.parent_span_id is not None
    }
    calls: Counter[Edge] = Counter()
    errors: Counter[Edge] = Counter()
    propagated: Counter[Edge] = Counter()

    def count(edge: Edge, failed: bool, caller_failed: bool) -> None:
        calls[edge] += 1
        if failed:
            errors[edge] += 1
            if caller_failed:
                propagated[edge] += 1

    for s in spans:
        parent = by_id.get((s.trace_id, s.parent_span_id)) if s.parent_span_id else None
        if parent is not None and parent.component != s.component:
            count((parent.component, s.component), s.is_error, parent.is_error)
        callee = call_peer(s)
        if (
            callee is not None
            and callee != s.component
            and (s.trace_id, s.span_id, callee) not in answered
        ):
            count((s.component, callee), s.is_error, s.is_error)
    return calls, errors, propagated


def _exemplars(spans: list[Span], limit: int) -> dict[str, tuple[str, ...]]:
    """Up to ``limit`` distinct trace ids of each component's failing spans, earliest
    failure first: the traces a person or the agent should open."""
    failing = sorted(
        (s for s in spans if s.is_error), key=lambda s: (s.start_ns, s.trace_id, s.span_id)
    )
    found: dict[str, dict[str, None]] = {}
    for s in failing:
        traces = found.setdefault(s.component, {})
        if len(traces) < limit:
            traces[s.trace_id] = None
    return {c: tuple(traces) for c, traces in found.items() if traces}


def suspects(graph: nx.DiGraph, component: str) -> list[str]:
    """The components downstream of ``component`` along call edges, nearest first (BFS,
    ties by id), without ``component`` itself: what could explain its symptoms. A slow
    service explains a slow tool, which explains a slow agent; never the reverse."""
    if component not in graph:
        raise KeyError(f"component {component!r} is not in the graph")
    seen = {component}
    order: list[str] = []
    frontier = deque([component])
    while frontier:
        current = frontier.popleft()
        callees = sorted(
            callee
            for _, callee, kind in graph.out_edges(current, data="kind")
            if kind == EdgeKind.CALL and callee not in seen
        )
        for callee in callees:
            seen.add(callee)
            order.append(callee)
            frontier.append(callee)
    return order
