"""Tests of the SLI layer (``sli.py``): known answers for every SLI kind from hand-built
spans (decoded from OTLP/JSON the way ingest decodes them) and from a real pydantic-ai
agent's trace; metric SLIs checked against a hand computation on the shared case
public-01, and on synthetic counters with resets and gaps; properties (rates never
negative, shares within [0, 1], a constant-rate counter gives a constant rate, the order
of the input does not matter); the ``[pricing]`` settings.

What must not live here: tests of the OTLP codec, of the convention mapping (they only
build input here), or of what consumes SLIs (detection, root-cause analysis).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from sentinel.adapters.otlp import decode_json_object
from sentinel.cases import Case, FaultKind, read_case
from sentinel.errors import ConfigError
from sentinel.settings import ModelPrice, PricingSettings, load_settings
from sentinel.sim import FaultSpec, Topology, simulate_case
from sentinel.sli import (
    SliKey,
    SliKind,
    SliSeries,
    merge,
    metric_slis,
    span_slis,
    span_slis_by_step,
    step_start,
)
from sentinel.telemetry import Sample, Span
from tests.test_receiver import _otlp_json, run_support_agent

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
T0_NS = int(NOW.timestamp()) * 1_000_000_000
MINUTE = timedelta(minutes=1)
END = NOW + 3 * MINUTE
PUBLIC_01 = Path(__file__).resolve().parents[2] / "shared" / "cases" / "public-01-prompt-regression"

PRICES = PricingSettings(
    models={"gpt-4o": ModelPrice(input_per_million=2.5, output_per_million=10.0)}
)

# --- OTLP/JSON builders (the style of test_store.py) -----------------------------------


def sv(v: str) -> dict[str, Any]:
    return {"stringValue": v}


def iv(v: int) -> dict[str, Any]:
    return {"intValue": str(v)}


def dv(v: float) -> dict[str, Any]:
    return {"doubleValue": v}


def kv(key: str, value: dict[str, Any]) -> dict[str, Any]:
    return {"key": key, "value": value}


def ns(ms: int) -> int:
    return T0_NS + ms * 1_000_000


def otlp_span(
    *,
    span: int,
    name: str,
    at_ms: int,
    dur_ms: int = 100,
    kind: int = 1,
    trace: int = 1,
    parent: int | None = None,
    attributes: list[dict[str, Any]] | None = None,
    events: list[dict[str, Any]] | None = None,
    status: dict[str, Any] | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "traceId": f"{trace:032x}",
        "spanId": f"{span:016x}",
        "name": name,
        "kind": kind,
        "startTimeUnixNano": str(ns(at_ms)),
        "endTimeUnixNano": str(ns(at_ms + dur_ms)),
        "attributes": attributes or [],
        "events": events or [],
    }
    if parent is not None:
        out["parentSpanId"] = f"{parent:016x}"
    if status is not None:
        out["status"] = status
    return out


def otlp_request(service: str, *spans: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": [kv("service.name", sv(service))]},
                "scopeSpans": [{"scope": {"name": "sentinel.tests"}, "spans": list(spans)}],
            }
        ]
    }


def decode(*requests: dict[str, Any]) -> list[Span]:
    spans: list[Span] = []
    for r in requests:
        batch = decode_json_object(r)
        assert batch.rejected == 0, batch.reasons
        spans.extend(batch.spans)
    return spans


def chat(span: int, at_ms: int, *, model: str = "gpt-4o", inp: int, out: int, **kw: Any) -> Any:
    return otlp_span(
        span=span,
        name=f"chat {model}",
        at_ms=at_ms,
        kind=3,
        attributes=[
            kv("gen_ai.operation.name", sv("chat")),
            kv("gen_ai.request.model", sv(model)),
            kv("gen_ai.usage.input_tokens", iv(inp)),
            kv("gen_ai.usage.output_tokens", iv(out)),
        ],
        **kw,
    )


def tool(span: int, at_ms: int, name: str, **kw: Any) -> Any:
    return otlp_span(
        span=span,
        name=f"execute_tool {name}",
        at_ms=at_ms,
        attributes=[
            kv("gen_ai.operation.name", sv("execute_tool")),
            kv("gen_ai.tool.name", sv(name)),
            *kw.pop("attributes", []),
        ],
        **kw,
    )


def agent(span: int, at_ms: int, name: str = "support-agent", **kw: Any) -> Any:
    return otlp_span(
        span=span,
        name=f"invoke_agent {name}",
        at_ms=at_ms,
        attributes=[
            kv("gen_ai.operation.name", sv("invoke_agent")),
            kv("gen_ai.agent.name", sv(name)),
            *kw.pop("attributes", []),
        ],
        **kw,
    )


def evaluation(name: str, score: float) -> dict[str, Any]:
    return {
        "name": "gen_ai.evaluation.result",
        "timeUnixNano": str(ns(5_000)),
        "attributes": [
            kv("gen_ai.evaluation.name", sv(name)),
            kv("gen_ai.evaluation.score.value", dv(score)),
        ],
    }


ERROR = {"code": 2}


def values(series: SliSeries) -> list[float]:
    return [v for _, v in series.points]


def times(series: SliSeries) -> list[datetime]:
    return [t for t, _ in series.points]


# --- known answers from spans ----------------------------------------------------------


def fleet() -> list[Span]:
    """Two agent runs in the first minute, one service request per minute, a quiet third
    minute; see each test for the numbers."""
    run_1 = [
        # invoke_agent -> chat, "running tools" -> two tools, chat (pydantic-ai's nesting)
        agent(0x10, 0, dur_ms=4_000, trace=1),
        chat(
            0x11,
            100,
            inp=1_000,
            out=100,
            trace=1,
            parent=0x10,
            events=[evaluation("faithfulness", 0.8)],
        ),
        otlp_span(span=0x12, name="running tools", at_ms=1_000, trace=1, parent=0x10),
        tool(0x13, 1_100, "crm_lookup", trace=1, parent=0x12),
        tool(
            0x14,
            1_200,
            "refund_api",
            trace=1,
            parent=0x12,
            status=ERROR,
            attributes=[kv("error.type", sv("RateLimitError"))],
        ),
        chat(0x15, 2_000, inp=3_000, out=300, trace=1, parent=0x10),
    ]
    run_2 = [
        # The second run failed with a guardrail error type.
        agent(
            0x20,
            10_000,
            dur_ms=1_000,
            trace=2,
            status=ERROR,
            attributes=[kv("error.type", sv("GuardrailViolation"))],
        ),
        chat(
            0x21,
            10_100,
            inp=500,
            out=50,
            trace=2,
            parent=0x20,
            status=ERROR,
            events=[
                {"name": "gen_ai.guardrail", "timeUnixNano": str(ns(10_200)), "attributes": []}
            ],
        ),
        tool(0x22, 10_300, "crm_lookup", trace=2, parent=0x20, dur_ms=300),
    ]
    gateway = [
        # SERVER spans are the gateway's requests; its CLIENT calls and internal steps are not.
        otlp_span(span=0x30, name="POST /runs", at_ms=20_000, dur_ms=100, kind=2, trace=3),
        otlp_span(span=0x31, name="validate", at_ms=20_010, trace=3, parent=0x30),
        otlp_span(
            span=0x32,
            name="SELECT",
            at_ms=20_020,
            dur_ms=10,
            kind=3,
            trace=3,
            parent=0x30,
            attributes=[kv("peer.service", sv("crm-db"))],
        ),
        otlp_span(span=0x33, name="POST /runs", at_ms=30_000, dur_ms=300, kind=2, trace=4),
        otlp_span(
            span=0x34,
            name="SELECT",
            at_ms=30_020,
            dur_ms=30,
            kind=3,
            trace=4,
            parent=0x33,
            status=ERROR,
            attributes=[kv("peer.service", sv("crm-db")), kv("error.type", sv("timeout"))],
        ),
        otlp_span(span=0x35, name="POST /runs", at_ms=70_000, dur_ms=200, kind=2, trace=5),
        otlp_span(
            span=0x36,
            name="GET /orders",
            at_ms=70_010,
            kind=3,
            trace=5,
            parent=0x35,
            attributes=[kv("peer.service", sv("orders-api"))],
        ),
    ]
    orders = [
        otlp_span(span=0x37, name="GET /orders", at_ms=70_020, kind=2, trace=5, parent=0x36),
    ]
    unknown_model = [chat(0x40, 40_000, model="mystery-1", inp=10, out=1, trace=6)]
    return decode(
        otlp_request("support-svc", *run_1, *run_2, *unknown_model),
        otlp_request("gateway", *gateway),
        otlp_request("orders-api", *orders),
    )


@pytest.fixture(scope="module")
def fleet_slis() -> dict[SliKey, SliSeries]:
    return span_slis(fleet(), NOW, END, MINUTE, PRICES)


def get(slis: dict[SliKey, SliSeries], component: str, kind: SliKind, q: str = "") -> SliSeries:
    key = SliKey(component, kind, q)
    assert key in slis, f"no {key}; have {sorted(k for k in slis if k.component == component)}"
    return slis[key]


def test_request_rate_counts_requests_per_second_and_quiet_steps_are_zero(
    fleet_slis: dict[SliKey, SliSeries],
) -> None:
    gw = get(fleet_slis, "service:gateway", SliKind.REQUEST_RATE)
    # Two SERVER spans in minute 0, one in minute 1, none in minute 2 (a real 0).
    assert times(gw) == [NOW, NOW + MINUTE, NOW + 2 * MINUTE]
    assert values(gw) == pytest.approx([2 / 60, 1 / 60, 0.0])
    assert gw.counts == (2, 1, 0)
    agents = get(fleet_slis, "agent:support-agent", SliKind.REQUEST_RATE)
    assert values(agents) == pytest.approx([2 / 60, 0.0, 0.0])


def test_error_rate_and_error_types_leave_quiet_steps_as_gaps(
    fleet_slis: dict[SliKey, SliSeries],
) -> None:
    err = get(fleet_slis, "agent:support-agent", SliKind.ERROR_RATE)
    assert times(err) == [NOW]  # no runs after minute 0: no point, not a fake 0
    assert values(err) == [0.5]
    assert err.counts == (2,)
    by_type = get(
        fleet_slis, "agent:support-agent", SliKind.ERROR_RATE_BY_TYPE, "GuardrailViolation"
    )
    assert values(by_type) == [0.5]
    rl = get(fleet_slis, "tool:refund_api", SliKind.ERROR_RATE_BY_TYPE, "RateLimitError")
    assert values(rl) == [1.0]
    # The gateway never failed: 0 where it served requests.
    assert values(get(fleet_slis, "service:gateway", SliKind.ERROR_RATE)) == [0.0, 0.0]


def test_latency_quantiles_are_exact_from_durations(fleet_slis: dict[SliKey, SliSeries]) -> None:
    # Minute 0: the gateway served 100 ms and 300 ms; linear interpolation between them.
    p50 = get(fleet_slis, "service:gateway", SliKind.LATENCY_P50)
    p95 = get(fleet_slis, "service:gateway", SliKind.LATENCY_P95)
    p99 = get(fleet_slis, "service:gateway", SliKind.LATENCY_P99)
    assert values(p50) == pytest.approx([0.2, 0.2])
    assert values(p95) == pytest.approx([0.1 + 0.95 * 0.2, 0.2])
    assert values(p99) == pytest.approx([0.1 + 0.99 * 0.2, 0.2])
    assert p99.counts == (2, 1)


def test_tokens_and_cost_per_model_call(fleet_slis: dict[SliKey, SliSeries]) -> None:
    inp = get(fleet_slis, "model:gpt-4o", SliKind.INPUT_TOKENS_PER_REQUEST)
    out = get(fleet_slis, "model:gpt-4o", SliKind.OUTPUT_TOKENS_PER_REQUEST)
    cost = get(fleet_slis, "model:gpt-4o", SliKind.COST_PER_REQUEST)
    assert values(inp) == pytest.approx([(1_000 + 3_000 + 500) / 3])
    assert values(out) == pytest.approx([(100 + 300 + 50) / 3])
    per_call = [(i * 2.5 + o * 10.0) / 1e6 for i, o in [(1_000, 100), (3_000, 300), (500, 50)]]
    assert values(cost) == pytest.approx([sum(per_call) / 3])
    assert cost.counts == (3,)


def test_a_model_without_a_price_has_no_cost_at_all(fleet_slis: dict[SliKey, SliSeries]) -> None:
    assert SliKey("model:mystery-1", SliKind.COST_PER_REQUEST) not in fleet_slis
    assert values(get(fleet_slis, "model:mystery-1", SliKind.INPUT_TOKENS_PER_REQUEST)) == [10.0]


def test_agent_runs_sum_their_model_and_tool_calls(fleet_slis: dict[SliKey, SliSeries]) -> None:
    # Run 1: chat, crm_lookup, refund_api (under "running tools"), chat = 4 steps;
    # run 2: chat, crm_lookup = 2 steps.
    steps = get(fleet_slis, "agent:support-agent", SliKind.STEPS_PER_RUN)
    assert values(steps) == [3.0]
    assert steps.counts == (2,)
    inp = get(fleet_slis, "agent:support-agent", SliKind.INPUT_TOKENS_PER_REQUEST)
    assert values(inp) == pytest.approx([(4_000 + 500) / 2])
    cost = get(fleet_slis, "agent:support-agent", SliKind.COST_PER_REQUEST)
    run_1 = (4_000 * 2.5 + 400 * 10.0) / 1e6
    run_2 = (500 * 2.5 + 50 * 10.0) / 1e6
    assert values(cost) == pytest.approx([(run_1 + run_2) / 2])


def test_an_agent_run_using_an_unpriced_model_has_no_cost() -> None:
    spans = decode(
        otlp_request(
            "svc",
            agent(0x1, 0, trace=9),
            chat(0x2, 10, model="gpt-4o", inp=10, out=1, trace=9, parent=0x1),
            chat(0x3, 20, model="mystery-1", inp=10, out=1, trace=9, parent=0x1),
        )
    )
    slis = span_slis(spans, NOW, END, MINUTE, PRICES)
    assert SliKey("agent:support-agent", SliKind.COST_PER_REQUEST) not in slis
    assert values(get(slis, "agent:support-agent", SliKind.STEPS_PER_RUN)) == [2.0]


def test_tool_failure_rate(fleet_slis: dict[SliKey, SliSeries]) -> None:
    assert values(get(fleet_slis, "tool:refund_api", SliKind.TOOL_FAILURE_RATE)) == [1.0]
    crm = get(fleet_slis, "tool:crm_lookup", SliKind.TOOL_FAILURE_RATE)
    assert values(crm) == [0.0]
    assert crm.counts == (2,)
    assert not any(
        k.kind is SliKind.TOOL_FAILURE_RATE for k in fleet_slis if "tool:" not in k.component
    )


def test_evaluator_scores_go_to_the_span_and_to_its_agent(
    fleet_slis: dict[SliKey, SliSeries],
) -> None:
    model = get(fleet_slis, "model:gpt-4o", SliKind.EVAL_SCORE, "faithfulness")
    agent_score = get(fleet_slis, "agent:support-agent", SliKind.EVAL_SCORE, "faithfulness")
    assert values(model) == [0.8]
    assert values(agent_score) == [0.8]
    assert agent_score.counts == (1,)


def test_guardrail_triggers_from_error_types_and_events(
    fleet_slis: dict[SliKey, SliSeries],
) -> None:
    # Run 2 failed with GuardrailViolation (and its chat span has a gen_ai.guardrail event).
    assert values(get(fleet_slis, "agent:support-agent", SliKind.GUARDRAIL_TRIGGERS)) == [0.5]
    assert values(get(fleet_slis, "model:gpt-4o", SliKind.GUARDRAIL_TRIGGERS)) == pytest.approx(
        [1 / 3]
    )
    assert values(get(fleet_slis, "service:gateway", SliKind.GUARDRAIL_TRIGGERS)) == [0.0, 0.0]


def test_an_uninstrumented_callee_is_seen_through_its_callers(
    fleet_slis: dict[SliKey, SliSeries],
) -> None:
    db = "service:crm-db"
    assert values(get(fleet_slis, db, SliKind.REQUEST_RATE)) == pytest.approx([2 / 60, 0.0, 0.0])
    assert values(get(fleet_slis, db, SliKind.ERROR_RATE)) == [0.5]
    assert values(get(fleet_slis, db, SliKind.ERROR_RATE_BY_TYPE, "timeout")) == [0.5]
    assert values(get(fleet_slis, db, SliKind.LATENCY_P50)) == pytest.approx([0.02])
    # Nothing the callers cannot see.
    assert {k.kind for k in fleet_slis if k.component == db} == {
        SliKind.REQUEST_RATE,
        SliKind.ERROR_RATE,
        SliKind.ERROR_RATE_BY_TYPE,
        SliKind.LATENCY_P50,
        SliKind.LATENCY_P95,
        SliKind.LATENCY_P99,
    }
    # orders-api has spans of its own: those, not its callers' view.
    orders = get(fleet_slis, "service:orders-api", SliKind.REQUEST_RATE)
    assert orders.counts == (0, 1, 0)
    assert values(get(fleet_slis, "service:orders-api", SliKind.LATENCY_P50)) == [0.1]


def test_calls_refused_before_reaching_an_instrumented_callee_count_against_their_caller() -> None:
    """A gateway in front of the scraper answers 429 twice: no span of the scraper saw
    those calls, so they are the fetch_page tool's refused calls, not the scraper's
    errors. A 500 the scraper itself answered is its own error, not a refusal."""

    def get_page(span: int, at_ms: int, parent: int, trace: int, **kw: Any) -> Any:
        http = kw.pop("http", None)
        attributes = [kv("peer.service", sv("scraper"))]
        if http is not None:
            attributes.append(kv("http.response.status_code", iv(http)))
        return otlp_span(
            span=span,
            name="GET",
            at_ms=at_ms,
            dur_ms=20,
            kind=3,
            trace=trace,
            parent=parent,
            attributes=attributes,
            **kw,
        )

    agent_side = [
        tool(0x50, 1_000, "fetch_page", trace=7, dur_ms=3_000),
        get_page(0x51, 1_010, 0x50, 7, http=429, status=ERROR),
        get_page(0x52, 1_500, 0x50, 7, http=429, status=ERROR),
        get_page(0x53, 2_500, 0x50, 7),
        tool(0x60, 5_000, "fetch_page", trace=8, dur_ms=300),
        get_page(0x61, 5_010, 0x60, 8, http=500, status=ERROR),
        # A call whose parent is not among the spans (it started before the read):
        # whose call it was is unknown, so it is not counted at all.
        get_page(0x58, 10_000, 0x99, 7, http=429, status=ERROR),
        # A minute later: one call, answered.
        tool(0x70, 65_000, "fetch_page", trace=9, dur_ms=300),
        get_page(0x71, 65_010, 0x70, 9),
    ]
    scraper = [
        otlp_span(span=0x54, name="GET /page", at_ms=2_505, kind=2, trace=7, parent=0x53),
        otlp_span(
            span=0x62, name="GET /page", at_ms=5_015, kind=2, trace=8, parent=0x61, status=ERROR
        ),
        otlp_span(span=0x72, name="GET /page", at_ms=65_015, kind=2, trace=9, parent=0x71),
    ]
    slis = span_slis(
        decode(otlp_request("agent-svc", *agent_side), otlp_request("scraper", *scraper)),
        NOW,
        END,
        MINUTE,
        PRICES,
    )
    fetch = "tool:fetch_page"
    assert values(get(slis, fetch, SliKind.REFUSED_CALL_RATE)) == [0.5, 0.0]
    assert get(slis, fetch, SliKind.REFUSED_CALL_RATE).counts == (4, 1)
    assert values(get(slis, fetch, SliKind.REFUSED_CALL_RATE, "429")) == [0.5, 0.0]
    assert {(k.component, k.qualifier) for k in slis if k.kind is SliKind.REFUSED_CALL_RATE} == {
        (fetch, ""),
        (fetch, "429"),
    }
    # The scraper's own view: two requests that minute, one failed (the 500 it answered).
    assert values(get(slis, "service:scraper", SliKind.ERROR_RATE)) == [0.5, 0.0]
    assert not any(
        k.component == "service:scraper" and k.kind is SliKind.REFUSED_CALL_RATE for k in slis
    )
    # The tools' own requests did not fail: a retry went through.
    assert values(get(slis, fetch, SliKind.ERROR_RATE)) == [0.0, 0.0]


def test_a_call_to_an_instrumented_callee_is_its_callers_refused_call_rate_of_zero(
    fleet_slis: dict[SliKey, SliSeries],
) -> None:
    refused = get(fleet_slis, "service:gateway", SliKind.REFUSED_CALL_RATE)
    assert values(refused) == [0.0]
    assert refused.counts == (1,)
    # The database has no spans: its callers' calls are its requests, never refusals.
    assert not any(
        k.kind is SliKind.REFUSED_CALL_RATE and k.qualifier == "timeout" for k in fleet_slis
    )


# Kinds only metric samples (container gauges) can give: tested on samples below.
METRIC_ONLY = {SliKind.MEMORY_UTILISATION, SliKind.MEMORY_WORKING_SET, SliKind.CPU_USAGE}


def test_every_kind_has_a_known_answer_above(fleet_slis: dict[SliKey, SliSeries]) -> None:
    assert {k.kind for k in fleet_slis} == set(SliKind) - METRIC_ONLY


def test_spans_outside_the_window_are_ignored() -> None:
    spans = fleet()
    later = span_slis(spans, NOW + MINUTE, END, MINUTE, PRICES)
    assert SliKey("agent:support-agent", SliKind.STEPS_PER_RUN) not in later
    assert values(get(later, "service:gateway", SliKind.REQUEST_RATE)) == pytest.approx(
        [1 / 60, 0.0]
    )


def test_a_last_short_step_divides_by_its_own_length() -> None:
    spans = fleet()
    slis = span_slis(spans, NOW, NOW + timedelta(seconds=90), MINUTE, PRICES)
    gw = get(slis, "service:gateway", SliKind.REQUEST_RATE)
    assert values(gw) == pytest.approx([2 / 60, 1 / 30])


# --- a real pydantic-ai agent -----------------------------------------------------------


def pydantic_ai_spans() -> list[Span]:
    """A real pydantic-ai run (the receiver tests' scripted support agent), as OTLP/JSON."""
    memory = InMemorySpanExporter()
    tp = TracerProvider(resource=Resource.create({"service.name": "support-svc"}))
    tp.add_span_processor(SimpleSpanProcessor(memory))
    run_support_agent(tp, "support-agent", model_name="gpt-4o")
    tp.shutdown()
    return decode(json.loads(_otlp_json(list(memory.get_finished_spans()))))


def test_steps_tokens_and_cost_of_a_real_pydantic_ai_run() -> None:
    spans = pydantic_ai_spans()
    first = min(s.start for s in spans).replace(second=0, microsecond=0)
    slis = span_slis(spans, first, first + 2 * MINUTE, 2 * MINUTE, PRICES)

    a = "agent:support-agent"
    # Two model requests and two tool calls.
    assert values(get(slis, a, SliKind.STEPS_PER_RUN)) == [4.0]
    assert values(get(slis, a, SliKind.INPUT_TOKENS_PER_REQUEST)) == [320.0]
    assert values(get(slis, a, SliKind.OUTPUT_TOKENS_PER_REQUEST)) == [45.0]
    assert values(get(slis, a, SliKind.COST_PER_REQUEST)) == pytest.approx(
        [(320 * 2.5 + 45 * 10.0) / 1e6]
    )
    assert values(get(slis, "model:gpt-4o", SliKind.INPUT_TOKENS_PER_REQUEST)) == [160.0]
    assert values(get(slis, "tool:lookup_order", SliKind.TOOL_FAILURE_RATE)) == [0.0]


# --- metric SLIs on the shared case public-01 ------------------------------------------


@pytest.fixture(scope="module")
def public_01() -> Case:
    if not PUBLIC_01.is_dir():
        pytest.skip(f"shared case not found at {PUBLIC_01}")
    return read_case(PUBLIC_01)


@pytest.fixture(scope="module")
def public_01_slis(public_01: Case) -> dict[SliKey, SliSeries]:
    return metric_slis(public_01.samples, public_01.meta.start, public_01.meta.end, MINUTE)


def _at(case: Case, metric: str, t: datetime, **labels: str) -> list[float]:
    """Values of ``metric`` at instant ``t`` whose labels include ``labels``."""
    return [
        s.value
        for s in case.samples
        if s.metric == metric and s.time == t and labels.items() <= dict(s.labels).items()
    ]


def test_public_01_hand_computed_step(
    public_01: Case, public_01_slis: dict[SliKey, SliSeries]
) -> None:
    b = public_01.meta.start + 10 * MINUTE  # the step [21:10, 21:11)
    e = b + MINUTE
    i = 10
    tool_c = "tool:crm_lookup"

    def increase(metric: str, **labels: str) -> float:
        return sum(_at(public_01, metric, e, **labels)) - sum(_at(public_01, metric, b, **labels))

    requests = increase("component_requests_total", component=tool_c)
    errors = increase("component_errors_total", component=tool_c)
    rate = get(public_01_slis, tool_c, SliKind.REQUEST_RATE)
    assert rate.points[i][0] == b
    assert rate.points[i][1] == pytest.approx(requests / 60)
    assert rate.counts[i] == round(requests)
    err = get(public_01_slis, tool_c, SliKind.ERROR_RATE)
    assert dict(err.points)[b] == pytest.approx(errors / requests)
    assert dict(get(public_01_slis, tool_c, SliKind.TOOL_FAILURE_RATE).points)[b] == pytest.approx(
        errors / requests
    )

    # Summary quantile: the mean of the step's samples (21:10:15 .. 21:11:00).
    p50_samples = [
        v
        for k in range(1, 5)
        for v in _at(
            public_01,
            "component_request_duration_seconds",
            b + timedelta(seconds=15 * k),
            component=tool_c,
            quantile="0.5",
        )
    ]
    assert len(p50_samples) == 4
    p50 = get(public_01_slis, tool_c, SliKind.LATENCY_P50)
    assert dict(p50.points)[b] == pytest.approx(sum(p50_samples) / 4)

    # Tokens per agent run: the agent's input-token counters over its runs.
    a = "agent:customer-care-agent"
    tokens = increase("gen_ai_client_token_usage_total", component=a, gen_ai_token_type="input")
    runs = increase("component_requests_total", component=a)
    inp = get(public_01_slis, a, SliKind.INPUT_TOKENS_PER_REQUEST)
    assert dict(inp.points)[b] == pytest.approx(tokens / runs)

    # Cost per run: the mean spend per hour over the step, per request.
    spend = [
        v
        for k in range(1, 5)
        for v in _at(
            public_01, "agent_cost_usd_per_hour", b + timedelta(seconds=15 * k), component=a
        )
    ]
    cost = get(public_01_slis, a, SliKind.COST_PER_REQUEST)
    assert dict(cost.points)[b] == pytest.approx(sum(spend) / 4 / 3600 / (runs / 60))

    # Evaluator scores keep the evaluator's name.
    assert SliKey(a, SliKind.EVAL_SCORE, "faithfulness") in public_01_slis


def test_public_01_p99_from_histogram_buckets(
    public_01: Case, public_01_slis: dict[SliKey, SliSeries]
) -> None:
    b = public_01.meta.start + 10 * MINUTE
    e = b + MINUTE
    m = "model:gpt-4o"
    bucket = "gen_ai_client_operation_duration_seconds_bucket"
    cumulative: dict[float, float] = {}
    for s in public_01.samples:
        if s.metric == bucket and s.component == m and s.time in (b, e):
            le = float(dict(s.labels)["le"])
            sign = 1.0 if s.time == e else -1.0
            cumulative[le] = cumulative.get(le, 0.0) + sign * s.value
    les = sorted(cumulative)
    rank = 0.99 * cumulative[math.inf]
    j = next(j for j, le in enumerate(les) if cumulative[le] >= rank)
    lower = les[j - 1] if j else 0.0
    below = cumulative[les[j - 1]] if j else 0.0
    expected = lower + (les[j] - lower) * (rank - below) / (cumulative[les[j]] - below)

    p99 = get(public_01_slis, m, SliKind.LATENCY_P99)
    assert dict(p99.points)[b] == pytest.approx(expected)
    # The model's tokens per call come from the agents' token counters naming the model.
    assert SliKey(m, SliKind.INPUT_TOKENS_PER_REQUEST) in public_01_slis


def test_public_01_traces_and_metrics_agree_and_merge(
    public_01: Case, public_01_slis: dict[SliKey, SliSeries]
) -> None:
    spans = span_slis(public_01.spans, public_01.meta.start, public_01.meta.end, MINUTE, PRICES)
    merged = merge(spans, public_01_slis)
    key = SliKey("tool:crm_lookup", SliKind.REQUEST_RATE)
    assert merged[key] is public_01_slis[key]  # metrics see every request
    steps = SliKey("agent:customer-care-agent", SliKind.STEPS_PER_RUN)
    assert merged[steps] is spans[steps]  # only traces show steps
    # The uninstrumented database is only seen through its callers' spans.
    assert SliKey("service:crm-db", SliKind.REQUEST_RATE) in merged
    # Traces are sampled at 10%: the trace rate is about a tenth of the metric rate.
    ratio = sum(values(spans[key])) / sum(values(public_01_slis[key]))
    assert 0.05 < ratio < 0.2
    # Per-request values do not depend on sampling: tokens per call agree within 10%.
    tok = SliKey("model:gpt-4o", SliKind.INPUT_TOKENS_PER_REQUEST)
    assert sum(values(spans[tok])) == pytest.approx(sum(values(public_01_slis[tok])), rel=0.1)


# --- metric SLIs on synthetic counters --------------------------------------------------


def counter(
    points: Sequence[tuple[float, float]], metric: str = "component_requests_total", **labels: str
) -> list[Sample]:
    """Samples of one series at (seconds after NOW, value)."""
    lab = {"component": "service:api", **labels}
    return [
        Sample(
            metric=metric,
            labels=tuple(sorted(lab.items())),
            component=lab["component"],
            time=NOW + timedelta(seconds=t),
            value=v,
        )
        for t, v in points
    ]


def test_a_counter_reset_is_an_increase_not_a_negative_rate() -> None:
    # 1 request/s, the process restarts at 75 s and counts from 0 again.
    before = [(t, float(t)) for t in range(0, 76, 15)]  # 0 .. 75
    after = [(t, float(t - 75)) for t in range(90, 181, 15)]  # restarted at 75: 15 .. 105
    slis = metric_slis(counter(before + after), NOW, END, MINUTE)
    rate = get(slis, "service:api", SliKind.REQUEST_RATE)
    assert values(rate) == pytest.approx([1.0, 1.0, 1.0])
    assert rate.counts == (60, 60, 60)


def test_missing_samples_give_no_spike_and_long_gaps_give_no_point() -> None:
    # 2 requests/s; samples between 15 s and 75 s are missing (a 60 s hole).
    pts = [(t, 2.0 * t) for t in range(0, 181, 15) if not 15 < t < 75]
    slis = metric_slis(counter(pts), NOW, END, MINUTE)
    assert values(get(slis, "service:api", SliKind.REQUEST_RATE)) == pytest.approx([2.0] * 3)

    # A hole longer than max_gap: the step it covers entirely has no point.
    pts = [(t, 2.0 * t) for t in range(0, 181, 15) if not 45 < t < 135]
    slis = metric_slis(counter(pts), NOW, END, MINUTE, max_gap=timedelta(seconds=60))
    rate = get(slis, "service:api", SliKind.REQUEST_RATE)
    assert times(rate) == [NOW, NOW + 2 * MINUTE]
    assert values(rate) == pytest.approx([2.0, 2.0])


def test_a_summary_quantile_held_while_no_request_came_is_not_an_observation() -> None:
    # A slow call, then 45 s without requests (the summary keeps reporting 3.9 s), then
    # five fast calls. Samples every 15 s; the quiet ones repeat the count.
    count = counter(
        [(0, 100), (15, 101), (30, 101), (45, 101), (60, 101), (75, 106), (90, 106)],
        metric="component_request_duration_seconds_count",
    )
    p50 = counter(
        [(0, 0.1), (15, 3.9), (30, 3.9), (45, 3.9), (60, 3.9), (75, 0.07), (90, 0.07)],
        metric="component_request_duration_seconds",
        quantile="0.5",
    )
    half = timedelta(seconds=15)
    slis = metric_slis(count + p50, NOW, NOW + 6 * half, half)
    latency = get(slis, "service:api", SliKind.LATENCY_P50)
    # Only the half-steps with calls have a latency, each its own calls'.
    assert times(latency) == [NOW, NOW + 4 * half]
    assert values(latency) == pytest.approx([3.9, 0.07])
    assert latency.counts == (1, 5)
    # On the 30 s grid the step [60 s, 90 s) is its five fast calls, not the held 3.9 s
    # averaged in; [30 s, 60 s) had no call and has no latency.
    slis = metric_slis(count + p50, NOW, NOW + 6 * half, 2 * half)
    latency = get(slis, "service:api", SliKind.LATENCY_P50)
    assert times(latency) == [NOW, NOW + 4 * half]
    assert values(latency) == pytest.approx([3.9, 0.07])
    assert latency.counts == (1, 5)


def test_a_summary_quantile_is_kept_when_its_count_is_unknown_or_restarted() -> None:
    # No _count series at all: every sample counts. A restart (the count falls) is new
    # requests, not a quiet interval.
    p50 = counter(
        [(0, 0.2), (15, 0.2), (30, 0.2)],
        metric="component_request_duration_seconds",
        quantile="0.5",
    )
    half = timedelta(seconds=15)
    slis = metric_slis(p50, NOW, NOW + 2 * half, half)
    assert values(get(slis, "service:api", SliKind.LATENCY_P50)) == pytest.approx([0.2, 0.2])
    count = counter([(0, 50), (15, 3), (30, 6)], metric="component_request_duration_seconds_count")
    slis = metric_slis(count + p50, NOW, NOW + 2 * half, half)
    latency = get(slis, "service:api", SliKind.LATENCY_P50)
    assert values(latency) == pytest.approx([0.2, 0.2])
    assert latency.counts == (3, 3)


def test_error_rate_has_no_point_without_requests() -> None:
    reqs = counter([(0, 0), (60, 30), (120, 30), (180, 90)])
    errs = counter([(0, 0), (60, 3), (120, 3), (180, 3)], metric="component_errors_total")
    slis = metric_slis(reqs + errs, NOW, END, MINUTE)
    err = get(slis, "service:api", SliKind.ERROR_RATE)
    assert times(err) == [NOW, NOW + 2 * MINUTE]
    assert values(err) == pytest.approx([0.1, 0.0])
    assert values(get(slis, "service:api", SliKind.REQUEST_RATE)) == pytest.approx([0.5, 0.0, 1.0])


def test_tool_calls_by_status_give_failure_shares() -> None:
    tool_c = {"component": "tool:crm"}
    ok = counter([(0, 0), (60, 90)], metric="gen_ai_tool_calls_total", status="ok", **tool_c)
    limited = counter(
        [(0, 0), (60, 10)], metric="gen_ai_tool_calls_total", status="rate_limited", **tool_c
    )
    slis = metric_slis(ok + limited, NOW, NOW + MINUTE, MINUTE)
    limited_share = get(slis, "tool:crm", SliKind.ERROR_RATE_BY_TYPE, "rate_limited")
    assert values(limited_share) == [pytest.approx(0.1)]
    assert values(get(slis, "tool:crm", SliKind.TOOL_FAILURE_RATE)) == [pytest.approx(0.1)]


def test_merge_prefers_metrics_and_one_family_of_error_types() -> None:
    def series(c: str, kind: SliKind, v: float, q: str = "") -> SliSeries:
        return SliSeries(SliKey(c, kind, q), ((NOW, v),), (1,))

    spans = {
        s.key: s
        for s in [
            series("tool:a", SliKind.REQUEST_RATE, 0.1),
            series("tool:a", SliKind.ERROR_RATE_BY_TYPE, 0.5, "RateLimitError"),
            series("tool:a", SliKind.LATENCY_P99, 2.0),
            series("model:m", SliKind.ERROR_RATE_BY_TYPE, 0.5, "RateLimitError"),
        ]
    }
    metrics = {
        s.key: s
        for s in [
            series("tool:a", SliKind.REQUEST_RATE, 1.0),
            series("tool:a", SliKind.ERROR_RATE_BY_TYPE, 0.4, "rate_limited"),
        ]
    }
    merged = merge(spans, metrics)
    assert merged == {
        SliKey("tool:a", SliKind.REQUEST_RATE): metrics[SliKey("tool:a", SliKind.REQUEST_RATE)],
        SliKey("tool:a", SliKind.ERROR_RATE_BY_TYPE, "rate_limited"): metrics[
            SliKey("tool:a", SliKind.ERROR_RATE_BY_TYPE, "rate_limited")
        ],
        SliKey("tool:a", SliKind.LATENCY_P99): spans[SliKey("tool:a", SliKind.LATENCY_P99)],
        SliKey("model:m", SliKind.ERROR_RATE_BY_TYPE, "RateLimitError"): spans[
            SliKey("model:m", SliKind.ERROR_RATE_BY_TYPE, "RateLimitError")
        ],
    }


def test_a_series_rejects_mismatched_or_unordered_points() -> None:
    key = SliKey("service:api", SliKind.REQUEST_RATE)
    with pytest.raises(ValueError, match="counts"):
        SliSeries(key, ((NOW, 1.0),), ())
    with pytest.raises(ValueError, match="time order"):
        SliSeries(key, ((NOW, 1.0), (NOW, 2.0)), (1, 1))
    with pytest.raises(ValueError, match="finite"):
        SliSeries(key, ((NOW, math.nan),), (1,))
    # The checks name the first bad point, wherever it is.
    later = NOW + MINUTE
    with pytest.raises(ValueError, match=re.escape(f"time order at '{NOW.isoformat()}'")):
        SliSeries(key, ((NOW - MINUTE, 1.0), (later, 1.0), (NOW, 2.0)), (1, 1, 1))
    with pytest.raises(ValueError, match=re.escape(f"inf at '{later.isoformat()}'")):
        SliSeries(key, ((NOW, 1.0), (later, math.inf)), (1, 1))
    with pytest.raises(ValueError, match="negative count"):
        SliSeries(key, ((NOW, 1.0), (later, 1.0)), (1, -1))


def test_a_naive_or_empty_window_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone"):
        metric_slis([], NOW.replace(tzinfo=None), END, MINUTE)
    with pytest.raises(ValueError, match="not after"):
        metric_slis([], END, NOW, MINUTE)
    with pytest.raises(ValueError, match="positive"):
        span_slis([], NOW, END, timedelta(0), PRICES)


# --- properties -------------------------------------------------------------------------

counter_values = st.lists(
    st.floats(min_value=0, max_value=1e9, allow_nan=False), min_size=2, max_size=30
)


@settings(max_examples=100, deadline=None)
@given(requests=counter_values, errors=counter_values, step_s=st.sampled_from([15, 30, 60, 90]))
def test_metric_rates_are_never_negative_and_shares_stay_in_0_1(
    requests: list[float], errors: list[float], step_s: int
) -> None:
    """Any counter values at all (resets anywhere): no negative rate, error rate in [0, 1]."""
    samples = counter([(15.0 * k, v) for k, v in enumerate(requests)]) + counter(
        [(15.0 * k, v) for k, v in enumerate(errors)], metric="component_errors_total"
    )
    slis = metric_slis(samples, NOW, NOW + 10 * MINUTE, timedelta(seconds=step_s))
    for key, s in slis.items():
        assert all(v >= 0 for v in values(s)), key
        if key.kind is SliKind.ERROR_RATE:
            assert all(0 <= v <= 1 for v in values(s))


@settings(max_examples=100, deadline=None)
@given(
    per_second=st.floats(min_value=0, max_value=1e4, allow_nan=False),
    kept=st.lists(st.booleans(), min_size=40, max_size=40),
    reset_at=st.integers(min_value=3, max_value=39),
    step_s=st.sampled_from([15, 30, 60, 120]),
)
def test_a_constant_rate_counter_gives_a_constant_rate(
    per_second: float, kept: list[bool], reset_at: int, step_s: int
) -> None:
    """Whatever samples are missing and wherever the counter restarts (the process restarts
    at a sample's instant ``restart``, and the first sample after it is kept: otherwise no
    reader of a counter can tell a restart from a slowdown)."""
    restart = 15.0 * (reset_at - 1)
    pts: list[tuple[float, float]] = []
    for k in range(41):
        t = 15.0 * k
        value = per_second * t if t <= restart else per_second * (t - restart)
        if k in (0, 40, reset_at - 1, reset_at) or kept[k - 1]:
            pts.append((t, value))
    slis = metric_slis(
        counter(pts), NOW, NOW + 10 * MINUTE, timedelta(seconds=step_s), max_gap=timedelta(hours=1)
    )
    rate = get(slis, "service:api", SliKind.REQUEST_RATE)
    assert values(rate) == pytest.approx([per_second] * len(rate.points), rel=1e-9, abs=1e-9)


@settings(max_examples=50, deadline=None)
@given(data=st.data())
def test_span_slis_do_not_depend_on_input_order(data: st.DataObject) -> None:
    spans = fleet()
    shuffled = data.draw(st.permutations(spans))
    assert span_slis(shuffled, NOW, END, MINUTE, PRICES) == span_slis(
        spans, NOW, END, MINUTE, PRICES
    )


def test_one_pass_on_several_grids_gives_each_grids_own_slis() -> None:
    """The Metric Agent reads its spans on three grids in one pass: each must be what
    ``span_slis`` gives on that grid alone (a simulated multi-agent fleet: runs with
    subtrees, evaluator scores, uninstrumented callees, errors)."""
    case = simulate_case(
        FaultSpec(Topology.MULTI_AGENT, FaultKind.TOOL_ERRORS, seed=7, sample_ratio=1.0)
    )
    start = step_start(case.meta.start, 2 * MINUTE) + 2 * MINUTE
    end = start + 40 * MINUTE + timedelta(seconds=50)  # a partial last point on each grid
    steps = [timedelta(seconds=30), timedelta(seconds=15), 2 * MINUTE]
    prices = PricingSettings()
    together = span_slis_by_step(case.spans, start, end, steps, prices)
    assert together == [span_slis(case.spans, start, end, step, prices) for step in steps]
    assert len(together[0]) > 100
    assert span_slis_by_step(case.spans, start, end, [], prices) == []


@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_a_span_delivered_twice_counts_once(data: st.DataObject) -> None:
    """An exporter's retry can deliver a span again."""
    spans = fleet()
    again = data.draw(st.lists(st.sampled_from(spans), min_size=1, max_size=5))
    assert span_slis([*spans, *again], NOW, END, MINUTE, PRICES) == span_slis(
        spans, NOW, END, MINUTE, PRICES
    )


@settings(max_examples=50, deadline=None)
@given(
    flags=st.lists(
        st.tuples(st.integers(0, 179_000), st.booleans(), st.integers(1, 5_000)),
        min_size=1,
        max_size=40,
    )
)
def test_span_error_rates_stay_in_0_1_and_rates_are_not_negative(
    flags: list[tuple[int, bool, int]],
) -> None:
    spans = decode(
        otlp_request(
            "api",
            *(
                otlp_span(
                    span=n + 1,
                    name="GET /",
                    at_ms=at,
                    dur_ms=dur,
                    kind=2,
                    trace=n + 1,
                    status=ERROR if failed else None,
                )
                for n, (at, failed, dur) in enumerate(flags)
            ),
        )
    )
    slis = span_slis(spans, NOW, END, MINUTE, PRICES)
    for key, s in slis.items():
        assert all(v >= 0 for v in values(s)), key
        if key.kind in (SliKind.ERROR_RATE, SliKind.ERROR_RATE_BY_TYPE):
            assert all(0 <= v <= 1 for v in values(s))
    assert sum(get(slis, "service:api", SliKind.REQUEST_RATE).counts) == len(flags)


# --- the [pricing] settings -------------------------------------------------------------


def test_a_pricing_table_loads_from_toml(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        '[pricing.models."gpt-4o"]\ninput_per_million = 2.5\noutput_per_million = 10\n',
        encoding="utf-8",
    )
    s = load_settings(path, env={})
    assert s.pricing.models == {
        "gpt-4o": ModelPrice(input_per_million=2.5, output_per_million=10.0)
    }


@pytest.mark.parametrize(
    "body",
    [
        "input_per_million = -1.0\noutput_per_million = 1.0\n",
        'input_per_million = "2.5"\noutput_per_million = 1.0\n',
        "input_per_million = 2.5\n",
        "input_per_million = 2.5\noutput_per_million = 1.0\ncurrency = 1\n",
    ],
    ids=["negative", "string", "missing", "unknown-key"],
)
def test_a_bad_price_is_refused(tmp_path: Path, body: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(f'[pricing.models."gpt-4o"]\n{body}', encoding="utf-8")
    with pytest.raises(ConfigError, match="pricing"):
        load_settings(path, env={})


def test_default_prices_cover_common_models() -> None:
    models = PricingSettings().models
    assert {"gpt-4o", "gpt-4o-mini"} <= set(models)
    assert all(p.input_per_million >= 0 and p.output_per_million >= 0 for p in models.values())


def test_memory_utilisation_is_the_working_set_over_the_limit_per_service() -> None:
    pod = {"component": "", "service_name": "reranker", "namespace": "rag"}
    other = {**pod, "pod": "reranker-2"}

    def gauge(metric: str, labels: dict[str, str], values: list[float]) -> list[Sample]:
        return [
            Sample(
                metric=metric,
                labels=tuple(sorted((k, v) for k, v in labels.items() if v)),
                component="service:reranker",
                time=NOW + timedelta(seconds=15 * (i + 1)),
                value=v,
            )
            for i, v in enumerate(values)
        ]

    gib = float(2**30)
    samples = [
        *gauge("container_memory_working_set_bytes", pod, [0.5 * gib] * 4 + [0.9 * gib] * 4),
        *gauge("container_spec_memory_limit_bytes", pod, [gib] * 8),
        # a second container: 1 GiB of 4 GiB throughout
        *gauge("container_memory_working_set_bytes", other, [gib] * 8),
        *gauge("container_spec_memory_limit_bytes", other, [4 * gib] * 8),
        # a container without a limit does not count
        *gauge("container_memory_working_set_bytes", {**pod, "pod": "x"}, [9 * gib] * 8),
    ]
    slis = metric_slis(samples, NOW, END, MINUTE)
    mem = get(slis, "service:reranker", SliKind.MEMORY_UTILISATION)
    assert values(mem) == pytest.approx([1.5 / 5, 1.9 / 5])
    assert mem.counts == (8, 8)
    # with a limit known, no byte series besides the utilisation
    assert not any(k.kind is SliKind.MEMORY_WORKING_SET for k in slis)

    # No container of the service has a limit: its working set in bytes, summed.
    unlimited = [
        s
        for s in samples
        if s.metric == "container_memory_working_set_bytes" and dict(s.labels).get("pod") != "x"
    ]
    bytes_ = get(
        metric_slis(unlimited, NOW, END, MINUTE), "service:reranker", SliKind.MEMORY_WORKING_SET
    )
    assert values(bytes_) == pytest.approx([1.5 * gib, 1.9 * gib])


def test_a_held_evaluator_gauge_is_not_a_new_score() -> None:
    # The gauge repeats its last value until a new score comes: 0.9 (held), then 0.5.
    samples = counter(
        [(15, 0.9), (30, 0.9), (45, 0.9), (60, 0.9), (75, 0.9), (90, 0.5), (105, 0.5)],
        "gen_ai_evaluation_score",
        component="agent:a",
        gen_ai_evaluation_name="faithfulness",
    )
    requests = counter([(t, t / 3) for t in range(0, 181, 15)], component="agent:a")
    slis = metric_slis(samples + requests, NOW, END, MINUTE)
    score = get(slis, "agent:a", SliKind.EVAL_SCORE, "faithfulness")
    # minute 0: the first 0.9; minute 1 (60..120 s]: only the fresh 0.5 (75 s is held)
    assert values(score) == pytest.approx([0.9, 0.5])
    # a score gauge rests on the agent's requests of the step, not on its samples
    assert score.counts == (20, 20)


def test_cpu_usage_is_cores_in_use_summed_over_a_services_containers() -> None:
    # Two containers of one service: 0.5 then 2 cores, and 0.25 throughout; the second
    # restarts (its counter drops to 0) at 120 s without a spike.
    a = counter(
        [(t, 0.5 * t) for t in range(0, 61, 15)]
        + [(t, 30 + 2.0 * (t - 60)) for t in range(75, 181, 15)],
        "container_cpu_usage_seconds_total",
        component="service:api",
        pod="api-1",
    )
    b = counter(
        [(t, 0.25 * t) for t in range(0, 106, 15)]
        + [(t, 0.25 * (t - 105)) for t in range(120, 181, 15)],
        "container_cpu_usage_seconds_total",
        component="service:api",
        pod="api-2",
    )
    cpu = get(metric_slis(a + b, NOW, END, MINUTE), "service:api", SliKind.CPU_USAGE)
    assert values(cpu) == pytest.approx([0.75, 2.25, 2.25])
