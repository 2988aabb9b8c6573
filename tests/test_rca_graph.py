"""The Root Cause Agent's causal graph: component nodes with their anomalies and exemplar
traces, call edges equal to correlation's with exact call/error/propagation counts, change
nodes, and suspects that lie downstream only. Simulated cases and the real detector, plus
hand-built traces for exact counts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from sentinel.cases import Case, FaultKind
from sentinel.detection import Anomaly, Detector
from sentinel.incidents import component_edges, replay_case
from sentinel.rca import EdgeKind, NodeKind, build_graph, change_node, suspects
from sentinel.settings import DetectionSettings, PricingSettings
from sentinel.sim import FaultSpec, Topology, simulate_case
from sentinel.telemetry import (
    ChangeEvent,
    ChangeKind,
    SliKind,
    Span,
    SpanKind,
    SpanStatus,
    TopologyEdge,
)

T0 = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)
T0_NS = int(T0.timestamp()) * 1_000_000_000

AGENT = "agent:support-agent"
TOOL = "tool:order_status"
ORDERS = "service:orders-api"


def span(
    span_id: int,
    component: str,
    *,
    parent: int | None = None,
    trace: int = 1,
    error: str | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
    peer: str | None = None,
    at_ms: int = 0,
) -> Span:
    return Span(
        trace_id=f"{trace:032x}",
        span_id=f"{span_id:016x}",
        parent_span_id=None if parent is None else f"{parent:016x}",
        name=component,
        kind=kind,
        start_ns=T0_NS + at_ms * 1_000_000,
        end_ns=T0_NS + (at_ms + 10) * 1_000_000,
        service="support-gateway",
        component=component,
        peer=peer,
        operation=None,
        status=SpanStatus.ERROR if error else SpanStatus.UNSET,
        status_message="",
        error_type=error,
        http_status=None,
        input_tokens=None,
        output_tokens=None,
        evaluations=(),
        attributes={},
        events=(),
        resource={},
    )


def anomaly(component: str, *, minutes: int = 0, score: float = 5.0, **over: object) -> Anomaly:
    fields: dict[str, object] = {
        "component": component,
        "sli": SliKind.ERROR_RATE,
        "onset": T0 + timedelta(minutes=minutes),
        "baseline": 0.01,
        "observed": 0.3,
        "score": score,
    }
    return Anomaly.model_validate(fields | over)


def change(id_: str, component: str, affects: tuple[str, ...] = ()) -> ChangeEvent:
    return ChangeEvent(
        id=id_,
        time=T0,
        component=component,
        affects=affects,
        kind=ChangeKind.DEPLOY,
        author="sofia",
    )


# --- a simulated case, through the real detector ------------------------------------------


@pytest.fixture(scope="module")
def case() -> Case:
    return simulate_case(FaultSpec(Topology.SUPPORT, FaultKind.SERVICE_ERRORS, seed=3, minutes=40))


@pytest.fixture(scope="module")
def anomalies(case: Case) -> tuple[Anomaly, ...]:
    incidents = replay_case(case, DetectionSettings(), PricingSettings())
    return tuple(a for i in incidents for a in i.anomalies)


def test_call_edges_are_exactly_those_correlation_uses(case: Case) -> None:
    graph = build_graph(case.spans, case.changes, (), case.topology)

    calls = {(a, b) for a, b, kind in graph.edges(data="kind") if kind == EdgeKind.CALL}

    assert calls == component_edges(case.spans, case.topology, ())
    # Topology-only edges (an uninstrumented database behind its service) are there too.
    assert ("service:orders-api", "service:orders-db") in calls


def test_the_root_cause_carries_its_anomalies_and_exemplar_traces(
    case: Case, anomalies: tuple[Anomaly, ...]
) -> None:
    assert case.truth is not None
    root = case.truth.root_cause
    graph = build_graph(case.spans, case.changes, anomalies, case.topology, exemplars_per_node=3)

    node = graph.nodes[root]
    own = [a for a in anomalies if a.component == root]
    assert own, "the detector should flag the faulty service"
    assert node["kind"] == NodeKind.COMPONENT
    assert set(node["anomalies"]) == set(own)
    assert [a.onset for a in node["anomalies"]] == sorted(a.onset for a in own)
    assert node["onset"] == min(a.onset for a in own)
    assert node["score"] == max(a.score for a in own)

    failing = sorted(
        (s for s in case.spans if s.component == root and s.is_error), key=lambda s: s.start_ns
    )
    assert 0 < len(node["exemplars"]) <= 3
    assert len(set(node["exemplars"])) == len(node["exemplars"])
    assert set(node["exemplars"]) <= {s.trace_id for s in failing}
    assert node["exemplars"][0] == failing[0].trace_id
    assert node["spans"] == sum(1 for s in case.spans if s.component == root)
    assert node["errors"] == len(failing)


def test_the_agent_calling_the_faulty_service_is_not_among_its_suspects(case: Case) -> None:
    graph = build_graph(case.spans, case.changes, (), case.topology)

    assert suspects(graph, "service:orders-api") == ["service:orders-db"]
    # The faulty service is downstream of its tool, so it is one of the tool's suspects.
    assert "service:orders-api" in suspects(graph, "tool:order_status")


# --- exact counts on hand-built traces -----------------------------------------------------


def test_a_failure_propagated_up_a_trace_is_counted_per_edge() -> None:
    spans = [
        span(1, AGENT),  # the agent recovered: the tool's failure stopped at it
        span(2, TOOL, parent=1, error="HTTPStatusError", at_ms=1),
        span(3, ORDERS, parent=2, error="500", kind=SpanKind.SERVER, at_ms=2),
    ]

    graph = build_graph(spans, (), ())

    tool_call = graph.edges[AGENT, TOOL]
    assert (tool_call["calls"], tool_call["errors"], tool_call["propagated"]) == (1, 1, 0)
    service_call = graph.edges[TOOL, ORDERS]
    assert (service_call["calls"], service_call["errors"], service_call["propagated"]) == (1, 1, 1)
    assert service_call["kind"] == EdgeKind.CALL
    assert graph.nodes[ORDERS]["exemplars"] == (f"{1:032x}",)
    assert (graph.nodes[AGENT]["spans"], graph.nodes[AGENT]["errors"]) == (1, 0)
    assert graph.nodes[AGENT]["exemplars"] == ()


def test_counts_add_up_over_traces_and_topology_only_edges_have_none() -> None:
    spans = [
        span(1, AGENT, trace=1),
        span(2, TOOL, parent=1, trace=1, at_ms=1),
        span(3, AGENT, trace=2, error="ToolError", at_ms=5),
        span(4, TOOL, parent=3, trace=2, error="ToolError", at_ms=6),
        span(5, TOOL, parent=3, trace=2, at_ms=7),  # a retry that worked
        span(6, TOOL, parent=5, trace=2, at_ms=8),  # same component: no edge
    ]
    catalog = [TopologyEdge(caller=ORDERS, callee="service:orders-db")]

    graph = build_graph(spans, (), (), catalog)

    edge = graph.edges[AGENT, TOOL]
    assert (edge["calls"], edge["errors"], edge["propagated"]) == (3, 1, 1)
    known = graph.edges[ORDERS, "service:orders-db"]
    assert (known["kind"], known["calls"], known["errors"], known["propagated"]) == (
        EdgeKind.CALL,
        0,
        0,
        0,
    )
    assert not graph.has_edge(TOOL, TOOL)
    assert graph.nodes["service:orders-db"]["spans"] == 0


def test_a_call_to_an_uninstrumented_peer_is_counted_once() -> None:
    spans = [
        span(1, ORDERS, kind=SpanKind.SERVER, error="500"),
        # No span of the database itself: the client span is the only record of the call.
        span(2, ORDERS, parent=1, kind=SpanKind.CLIENT, peer="orders-db", error="Timeout"),
        span(3, ORDERS, parent=1, kind=SpanKind.CLIENT, peer="service:orders-db", at_ms=1),
        # An instrumented peer answers with its own span: that span is the call.
        span(4, ORDERS, parent=1, kind=SpanKind.CLIENT, peer="service:ledger", at_ms=2),
        span(5, "service:ledger", parent=4, kind=SpanKind.SERVER, error="503", at_ms=3),
    ]

    graph = build_graph(spans, (), ())

    db = graph.edges[ORDERS, "service:orders-db"]
    assert (db["calls"], db["errors"], db["propagated"]) == (2, 1, 1)
    ledger = graph.edges[ORDERS, "service:ledger"]
    assert (ledger["calls"], ledger["errors"], ledger["propagated"]) == (1, 1, 0)
    assert {(a, b) for a, b in graph.edges} == component_edges(spans, (), ())


def test_exemplars_are_distinct_traces_earliest_failure_first_up_to_the_limit() -> None:
    spans = [span(10 + t, ORDERS, trace=t, error="500", at_ms=100 - t) for t in range(1, 8)] + [
        span(30, ORDERS, trace=7, error="500", at_ms=0)
    ]

    graph = build_graph(spans, (), (), exemplars_per_node=3)

    assert graph.nodes[ORDERS]["exemplars"] == (f"{7:032x}", f"{6:032x}", f"{5:032x}")
    assert build_graph(spans, (), (), exemplars_per_node=0).nodes[ORDERS]["exemplars"] == ()


# --- anomalies, changes, suspects ------------------------------------------------------------


def test_a_metrics_only_anomaly_makes_its_component_a_node() -> None:
    first = anomaly("service:payments", minutes=5, score=4.0)
    later = anomaly("service:payments", minutes=9, score=7.5, sli=SliKind.LATENCY_P95)
    emerged = anomaly(
        "service:payments",
        minutes=7,
        score=6.0,
        sli=SliKind.ERROR_RATE_BY_TYPE,
        qualifier="PoolExhausted",
        detector=Detector.EMERGENCE,
    )

    graph = build_graph((), (), [later, emerged, first])

    node = graph.nodes["service:payments"]
    assert node["kind"] == NodeKind.COMPONENT
    assert node["anomalies"] == (first, emerged, later)
    assert node["onset"] == first.onset
    assert node["score"] == 7.5
    assert node["new_error_types"] == ("PoolExhausted",)
    assert (node["spans"], node["errors"], node["exemplars"]) == (0, 0, ())


def test_a_component_without_anomalies_scores_zero() -> None:
    graph = build_graph([span(1, AGENT)], (), ())

    node = graph.nodes[AGENT]
    assert (node["anomalies"], node["onset"], node["score"], node["new_error_types"]) == (
        (),
        None,
        0.0,
        (),
    )


def test_a_change_points_at_what_it_changed_and_what_it_affects() -> None:
    spans = [span(1, AGENT), span(2, TOOL, parent=1, at_ms=1)]
    prompt = change("781f9c5", "prompt:support-agent", affects=(AGENT,))
    deploy = change("b797038", ORDERS, affects=(ORDERS, "service:orders-db"))

    graph = build_graph(spans, [prompt, deploy], ())

    node = graph.nodes[change_node(prompt)]
    assert change_node(prompt) == "change:781f9c5"
    assert (node["kind"], node["change"], node["time"], node["author"]) == (
        NodeKind.CHANGE,
        prompt,
        T0,
        "sofia",
    )
    assert set(graph.successors("change:781f9c5")) == {"prompt:support-agent", AGENT}
    assert set(graph.successors("change:b797038")) == {ORDERS, "service:orders-db"}
    for source, target in [
        ("change:781f9c5", "prompt:support-agent"),
        ("change:781f9c5", AGENT),
        ("change:b797038", ORDERS),
        ("change:b797038", "service:orders-db"),
    ]:
        assert graph.edges[source, target]["kind"] == EdgeKind.CHANGE
    # Components a change touches that sent no span are nodes all the same.
    for component in ("prompt:support-agent", ORDERS, "service:orders-db"):
        assert graph.nodes[component]["kind"] == NodeKind.COMPONENT
        assert graph.nodes[component]["spans"] == 0
    # A change is no call: it neither adds call edges nor becomes a suspect.
    assert not graph.has_edge("prompt:support-agent", AGENT)
    assert suspects(graph, AGENT) == [TOOL]


def test_suspects_go_downstream_transitively_nearest_first() -> None:
    spans = [
        span(1, AGENT),
        span(2, "model:gpt-4o", parent=1, at_ms=1),
        span(3, TOOL, parent=1, at_ms=2),
        span(4, ORDERS, parent=3, kind=SpanKind.SERVER, at_ms=3),
    ]
    catalog = [TopologyEdge(caller=ORDERS, callee="service:orders-db")]

    graph = build_graph(spans, (), (), catalog)

    assert suspects(graph, AGENT) == ["model:gpt-4o", TOOL, ORDERS, "service:orders-db"]
    assert suspects(graph, ORDERS) == ["service:orders-db"]
    assert suspects(graph, "service:orders-db") == []
    with pytest.raises(KeyError, match="service:nowhere"):
        suspects(graph, "service:nowhere")
