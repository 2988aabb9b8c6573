"""The causal graph of an incident as a PNG picture, for its ticket and for people at a
terminal (``sentinel incident ID --graph FILE.png``).

``draw_incident_graph`` draws a graph ``build_graph`` made: callers above callees
(layers of the call edges, cycles kept on one layer), anomalous components coloured,
the root-cause candidates labelled with their rank and confidence, the path from the
top hypothesis to the symptoms it reaches drawn bold, change events as diamonds.
``incident_graph_png`` reads an incident's evidence from the store, over the window the
Root Cause Agent diagnosed it on, and draws it.

It lives in ``rca/`` because it reads the graph's networkx structure: ``rca`` is the
only package that imports networkx (``graph.py`` builds, ``rank.py`` and this module
read). matplotlib is used through its object API on the Agg canvas only, never
pyplot's global state, so drawing is thread-safe and needs no display.

What must not live here: building the graph (``graph.py``), ranking, posting the picture
anywhere (the ticket desk), the clock (``now`` comes in).
"""

from __future__ import annotations

import heapq
import io
import textwrap
from collections.abc import Iterable, Sequence
from datetime import datetime

import networkx as nx
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import FancyArrowPatch

from sentinel.incidents import TrackedIncident
from sentinel.ports import TelemetryStore
from sentinel.rca.graph import EdgeKind, NodeKind, build_graph
from sentinel.rca.rank import Hypothesis, percent
from sentinel.telemetry import TopologyEdge

__all__ = ["MAX_NODES", "draw_incident_graph", "incident_graph_png"]

# Above this many nodes only the top hypotheses' neighbourhoods, the symptoms and the
# path between them are drawn: a picture of 300 services says nothing.
MAX_NODES = 60
LABELLED = 5  # hypotheses labelled with their rank and confidence
NEIGHBOURHOOD_OF = 3  # hypotheses whose neighbours are kept in a big graph
# The picture never exceeds MAX_INCHES at DPI (1600 x 1200 pixels).
MAX_INCHES = (16.0, 12.0)
MIN_INCHES = (8.0, 4.0)  # the legend needs 8 inches across
DPI = 100

_X_GAP = 1.0
_Y_GAP = 1.0
_NODE_SIZE = 420.0  # points², a circle of about 23 points across
_SHRINK = 13.0  # points: arrows stop at the node's edge
_LABEL_CHARS = 28

_COMPONENT = "#dbe4ee"
_ANOMALOUS = "#e8603c"
_CHANGE = "#f2c14e"
_EDGE = "#8a96a3"
_PATH = "#b3261e"
_INK = "#1f2933"


def draw_incident_graph(
    graph: nx.DiGraph,
    hypotheses: Sequence[Hypothesis],
    anomalous: set[str],
    *,
    title: str,
) -> bytes:
    """The PNG of ``graph`` (from ``rca.build_graph``) with ``hypotheses`` (best first)
    labelled and ``anomalous`` components coloured. Deterministic: the same arguments
    give the same bytes. A graph of more than ``MAX_NODES`` nodes is cut down to the top
    hypotheses' neighbourhoods, the symptoms and the path between them, and the title
    says so."""
    top = hypotheses[0] if hypotheses else None
    path_nodes, path_edges = symptom_paths(graph, top, anomalous)
    keep = _bounded(graph, hypotheses, anomalous, path_nodes)
    g = graph.subgraph(keep)
    if len(keep) < graph.number_of_nodes():
        title += (
            f" (showing {len(keep)} of {graph.number_of_nodes()} nodes: the top hypotheses'"
            " neighbourhoods and the symptoms)"
        )
    layers = _layers(g)
    pos = _positions(g, layers)
    ranks = {
        h.component: (n, h.confidence)
        for n, h in reversed(list(enumerate(hypotheses[:LABELLED], start=1)))
        if h.component in g
    }
    return _render(g, pos, ranks, anomalous, path_edges, title)


def incident_graph_png(
    store: TelemetryStore,
    incident: TrackedIncident,
    hypotheses: Sequence[Hypothesis],
    now: datetime,
    *,
    topology: Sequence[TopologyEdge] = (),
) -> bytes:
    """The picture of ``incident``'s causal graph, built from the store's spans and
    changes of the window its diagnosis reads (``agents.root_cause``: spans from
    ``SPAN_LOOKBACK`` before the onset to ``now``, at most ``MAX_SPANS``; changes from
    ``CHANGE_LOOKBACK`` before it). Blocking: call from a worker thread. ``topology``:
    call edges known besides the spans' (a metrics-only system's inferred ones)."""
    # Imported here, not at the top: the agents import ``sentinel.rca``; the window must
    # be the diagnosis' own, so that the picture shows what the ranking saw.
    from sentinel.agents.root_cause import CHANGE_LOOKBACK, MAX_SPANS, SPAN_LOOKBACK

    spans = store.spans(incident.onset - SPAN_LOOKBACK, now, limit=MAX_SPANS)
    changes = store.changes(incident.onset - CHANGE_LOOKBACK, now)
    graph = build_graph(spans, changes, incident.anomalies, topology)
    anomalous = {a.component for a in incident.anomalies}
    return draw_incident_graph(
        graph, hypotheses, anomalous, title=f"{incident.incident.title} · {incident.id}"
    )


# --- what to draw ------------------------------------------------------------------------------


def _change_node(h: Hypothesis) -> str | None:
    return f"change:{h.change}" if h.change else None


def _calls(graph: nx.DiGraph, node: str, *, up: bool) -> list[str]:
    """The callers (``up``) or callees of ``node``, sorted."""
    edges = graph.in_edges(node, data="kind") if up else graph.out_edges(node, data="kind")
    return sorted((u if up else v) for u, v, kind in edges if kind == EdgeKind.CALL)


def _reached(
    graph: nx.DiGraph, starts: dict[str, str | None], anomalous: set[str], *, up: bool
) -> dict[str, str | None]:
    """Every node reached from ``starts`` along the calls (up or down), with the node it
    was reached from: by the fewest hops and, among paths as short, through the most
    anomalous components (a symptom travels through the components it sickens, so a
    slow tool's agent is drawn between it and the gateway, not a healthy agent that also
    calls it). Ties go to the smaller name, so the picture is deterministic."""
    came_from = dict(starts)
    # (hops, healthy nodes on the path, node name): Dijkstra on a lexicographic cost.
    best = {n: (0, 0) for n in starts}
    heap = [(0, 0, n) for n in sorted(starts)]
    done: set[str] = set()
    while heap:
        hops, healthy, current = heapq.heappop(heap)
        if current in done:
            continue
        done.add(current)
        for nxt in _calls(graph, current, up=up):
            cost = (hops + 1, healthy + (nxt not in anomalous))
            if nxt not in best or cost < best[nxt]:
                best[nxt] = cost
                came_from[nxt] = current
                heapq.heappush(heap, (*cost, nxt))
    return came_from


def symptom_paths(
    graph: nx.DiGraph, top: Hypothesis | None, anomalous: set[str]
) -> tuple[set[str], set[tuple[str, str]]]:
    """The nodes and edges of the shortest paths from the top hypothesis to the anomalous
    components it reaches: up the call edges (a slow callee slows its callers) or down
    them (a caller asking more loads its callees), never both on one path; from its
    linked change through the components that change touched."""
    if top is None:
        return set(), set()
    # Each node reached: the node it was reached from, or None for a start.
    starts: dict[str, str | None] = {}
    change = _change_node(top)
    if change is not None and change in graph:
        for _, target in sorted(graph.out_edges(change)):
            starts[target] = change
    if top.component in graph:
        starts.setdefault(top.component, None)
    nodes: set[str] = set()
    edges: set[tuple[str, str]] = set()
    if change is not None and graph.has_edge(change, top.component):
        # The blamed change and what it changed are the start of every path drawn.
        nodes.update((change, top.component))
        edges.add((change, top.component))
    for up in (True, False):
        came_from = _reached(graph, starts, anomalous, up=up)
        # A symptom reached up the calls is not drawn again down them: faults of supply
        # (latency, errors), the most common, travel up.
        for symptom in sorted((anomalous & came_from.keys()) - nodes):
            node = symptom
            nodes.add(node)
            while (prev := came_from.get(node)) is not None:
                # In the graph's own direction: change -> target, caller -> callee.
                edges.add((node, prev) if up and node not in starts else (prev, node))
                nodes.add(prev)
                node = prev
    return nodes, edges


def _bounded(
    graph: nx.DiGraph,
    hypotheses: Sequence[Hypothesis],
    anomalous: set[str],
    path_nodes: set[str],
) -> list[str]:
    """All the nodes of a small graph; of a big one, by priority: the labelled
    hypotheses and their changes, the bold path, the symptoms, then the neighbours of the
    top hypotheses, up to ``MAX_NODES``."""
    if graph.number_of_nodes() <= MAX_NODES:
        return sorted(graph.nodes)
    groups: list[Iterable[str]] = [
        [
            n
            for h in hypotheses[:LABELLED]
            for n in (h.component, _change_node(h))
            if n is not None and n in graph
        ],
        sorted(path_nodes),
        sorted(anomalous & set(graph.nodes)),
    ]
    for h in hypotheses[:NEIGHBOURHOOD_OF]:
        if h.component in graph:
            groups.append(sorted(nx.all_neighbors(graph, h.component)))
    keep: dict[str, None] = {}
    for group in groups:
        for n in group:
            if len(keep) >= MAX_NODES:
                return sorted(keep)
            keep.setdefault(n, None)
    return sorted(keep)


# --- layout ------------------------------------------------------------------------------------


def _layers(g: nx.DiGraph) -> dict[str, int]:
    """Each node's row, 0 at the top: callers above their callees (the longest call path
    from the top, once the edges closing a cycle are set aside); a component outside the
    call graph (a prompt, a config) on the row of what its change touched; a change just
    above the highest component it touched."""
    components = sorted(n for n, kind in g.nodes(data="kind") if kind != NodeKind.CHANGE)
    changes = {n for n, kind in g.nodes(data="kind") if kind == NodeKind.CHANGE}
    calls = nx.DiGraph()
    calls.add_nodes_from(components)
    calls.add_edges_from((u, v) for u, v, kind in g.edges(data="kind") if kind == EdgeKind.CALL)
    dag = _acyclic(calls, {n: int(g.nodes[n].get("spans") or 0) for n in components})
    layer: dict[str, int] = {}
    for n in nx.lexicographical_topological_sort(dag):
        layer[n] = max((layer[p] + 1 for p in dag.predecessors(n)), default=0)
    # A component without any call edge sits with the others its changes touched.
    lone = {n for n in components if calls.degree(n) == 0}
    for n in sorted(lone):
        peers = {
            t for c in g.predecessors(n) if c in changes for t in g.successors(c) if t not in lone
        }
        if peers:
            layer[n] = min(layer[p] for p in peers)
    for c in sorted(changes):
        layer[c] = min((layer[t] for t in g.successors(c) if t in layer), default=1) - 1
    low = min(layer.values(), default=0)
    return {n: row - low for n, row in layer.items()}


def _acyclic(calls: nx.DiGraph, spans: dict[str, int]) -> nx.DiGraph:
    """The call graph without the edges that close a cycle (a tool calling back into the
    gateway that hosts it), found by a depth-first search from the top: groups of
    components that call each other in the order their callers come, and within one,
    from its busiest member (the entry point sees every request)."""
    groups = nx.condensation(calls)
    member_of: dict[str, int] = groups.graph["mapping"]
    order = {
        group: i
        for i, group in enumerate(
            nx.lexicographical_topological_sort(
                groups, key=lambda grp: min(groups.nodes[grp]["members"])
            )
        )
    }
    roots = sorted(calls, key=lambda n: (order[member_of[n]], -spans[n], n))
    dag = nx.DiGraph()
    dag.add_nodes_from(calls)
    on_stack: set[str] = set()
    done: set[str] = set()
    for root in roots:
        if root in done:
            continue
        on_stack.add(root)
        stack = [(root, iter(sorted(calls.successors(root))))]
        while stack:
            node, callees = stack[-1]
            callee = next(callees, None)
            if callee is None:
                stack.pop()
                on_stack.discard(node)
                done.add(node)
            elif callee not in on_stack:  # an edge to a node on the stack closes a cycle
                dag.add_edge(node, callee)
                if callee not in done:
                    on_stack.add(callee)
                    stack.append((callee, iter(sorted(calls.successors(callee)))))
    return dag


def _positions(g: nx.DiGraph, layers: dict[str, int]) -> dict[str, tuple[float, float]]:
    """Rows top to bottom; within a row, nodes ordered by the mean position of the nodes
    above them that link to them (fewer crossings), then by id. Deterministic."""
    rows: dict[int, list[str]] = {}
    for n in sorted(layers):
        rows.setdefault(layers[n], []).append(n)
    x: dict[str, float] = {}
    pos: dict[str, tuple[float, float]] = {}
    for row in sorted(rows):

        def key(n: str) -> tuple[float, str]:
            above = [x[p] for p in nx.all_neighbors(g, n) if p in x]
            return (sum(above) / len(above) if above else 0.0, n)

        members = sorted(rows[row], key=key)
        for i, n in enumerate(members):
            x[n] = (i - (len(members) - 1) / 2) * _X_GAP
            pos[n] = (x[n], -row * _Y_GAP)
    return pos


# --- drawing -----------------------------------------------------------------------------------


def _label(node: str, data: dict[str, object]) -> str:
    if data.get("kind") == NodeKind.CHANGE:
        text = node
        author = data.get("author")
        if author:
            text += f"\nby {author}"
    else:
        text = node
    lines = [
        line if len(line) <= _LABEL_CHARS else line[: _LABEL_CHARS - 1] + "…"
        for line in text.split("\n")
    ]
    return "\n".join(lines)


def _render(
    g: nx.DiGraph,
    pos: dict[str, tuple[float, float]],
    ranks: dict[str, tuple[int, float]],
    anomalous: set[str],
    path_edges: set[tuple[str, str]],
    title: str,
) -> bytes:
    xs = [p[0] for p in pos.values()] or [0.0]
    ys = [p[1] for p in pos.values()] or [0.0]
    columns = (max(xs) - min(xs)) / _X_GAP + 1
    rows = (max(ys) - min(ys)) / _Y_GAP + 1
    width = min(max(1.7 * columns + 1.0, MIN_INCHES[0]), MAX_INCHES[0])
    height = min(max(1.25 * rows + 1.6, MIN_INCHES[1]), MAX_INCHES[1])
    # Labels shrink when the picture hit its bound and the nodes are packed.
    font = 7.0 if width < MAX_INCHES[0] else max(4.5, 7.0 * width / (1.7 * columns + 1.0))

    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.01, 0.07, 0.98, 0.83))
    ax.set_axis_off()
    ax.set_xlim(min(xs) - 0.7 * _X_GAP, max(xs) + 0.7 * _X_GAP)
    ax.set_ylim(min(ys) - 0.55 * _Y_GAP, max(ys) + 0.45 * _Y_GAP)
    fig.suptitle(textwrap.fill(title, width=int(width * 12)), fontsize=10, color=_INK)

    for u, v, kind in sorted(g.edges(data="kind")):
        bold = (u, v) in path_edges
        # An edge going up (a cycle, a change to a lower row) bends, to be told apart.
        bend = 0.25 if pos[v][1] >= pos[u][1] and kind == EdgeKind.CALL else 0.0
        ax.add_patch(
            FancyArrowPatch(
                pos[u],
                pos[v],
                arrowstyle="-|>",
                mutation_scale=10 if bold else 7,
                shrinkA=_SHRINK,
                shrinkB=_SHRINK,
                connectionstyle=f"arc3,rad={bend}",
                color=_PATH if bold else (_CHANGE if kind == EdgeKind.CHANGE else _EDGE),
                linewidth=2.6 if bold else 0.9,
                linestyle="--" if kind == EdgeKind.CHANGE and not bold else "-",
                zorder=3 if bold else 1,
            )
        )

    for node in sorted(g.nodes):
        data = g.nodes[node]
        x, y = pos[node]
        is_change = data.get("kind") == NodeKind.CHANGE
        rank = ranks.get(node)
        ax.scatter(
            [x],
            [y],
            s=_NODE_SIZE * (0.8 if is_change else 1.0),
            marker="D" if is_change else "o",
            c=_CHANGE if is_change else (_ANOMALOUS if node in anomalous else _COMPONENT),
            edgecolors=_INK,
            linewidths=2.4 if rank is not None and rank[0] == 1 else (1.4 if rank else 0.6),
            zorder=4,
        )
        ax.text(
            x,
            y - 0.17 * _Y_GAP,
            _label(node, data),
            ha="center",
            va="top",
            fontsize=font,
            color=_INK,
            zorder=5,
        )
        if rank is not None:
            n, confidence = rank
            ax.text(
                x,
                y + 0.16 * _Y_GAP,
                f"#{n} {percent(confidence)}",
                ha="center",
                va="bottom",
                fontsize=font + 1,
                fontweight="bold",
                color=_PATH if n == 1 else _INK,
                bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": _INK, "lw": 0.5},
                zorder=6,
            )

    handles = [
        Line2D([], [], marker="o", ls="", mfc=_ANOMALOUS, mec=_INK, label="anomalous"),
        Line2D([], [], marker="o", ls="", mfc=_COMPONENT, mec=_INK, label="component"),
        Line2D([], [], marker="D", ls="", mfc=_CHANGE, mec=_INK, label="change"),
        Line2D([], [], color=_PATH, lw=2.6, label="top hypothesis → symptoms"),
        Line2D([], [], color=_EDGE, lw=0.9, label="calls (caller above)"),
    ]
    fig.legend(handles=handles, loc="lower center", ncol=5, fontsize=7, frameon=False)
    buf = io.BytesIO()
    # No "Software" entry: the bytes then depend on the drawing alone.
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()
