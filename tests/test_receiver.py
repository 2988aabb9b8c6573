"""The OTLP/HTTP receiver, end to end: real exporters and real HTTP against a running
daemon, checked in the store."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from google.protobuf import json_format
from google.rpc import status_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic_ai import Agent
from pydantic_ai.capabilities import Instrumentation
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart, ToolReturnPart
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.models.instrumented import InstrumentationSettings
from pydantic_ai.usage import RequestUsage

from sentinel.adapters.otlp import decode_protobuf, encode_protobuf
from sentinel.telemetry import Span, SpanKind, SpanStatus
from tests.harness import RunningDaemon, make_settings, running_daemon

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
FAR = datetime(2200, 1, 1, tzinfo=UTC)  # generated start times reach 2116
PB = {"Content-Type": "application/x-protobuf"}
JS = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def sentinel_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDaemon]:
    tmp = tmp_path_factory.mktemp("receiver")
    with running_daemon(make_settings(tmp, ingest={"max_body_bytes": 256 * 1024})) as d:
        yield d


def stored(d: RunningDaemon, trace_ids: set[str] | None = None) -> list[Span]:
    spans = d.store.spans(EPOCH, FAR)
    return [s for s in spans if trace_ids is None or s.trace_id in trace_ids]


# --- a real pydantic-ai agent, exported by the OpenTelemetry SDK ----------------------


def _scripted(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    """First turn: call both tools. Second turn: answer."""
    returned = sum(1 for m in messages for p in m.parts if isinstance(p, ToolReturnPart))
    if returned == 0:
        return ModelResponse(
            parts=[
                ToolCallPart("lookup_order", {"order_id": "A-17"}),
                ToolCallPart("issue_refund", {"order_id": "A-17", "cents": 1299}),
            ],
            usage=RequestUsage(input_tokens=120, output_tokens=15),
        )
    return ModelResponse(
        parts=[TextPart("Refunded order A-17.")],
        usage=RequestUsage(input_tokens=200, output_tokens=30),
    )


def run_support_agent(
    tp: TracerProvider, agent_name: str, *, model_name: str = "scripted-gpt"
) -> str:
    agent = Agent(
        FunctionModel(_scripted, model_name=model_name),
        name=agent_name,
        capabilities=[Instrumentation(InstrumentationSettings(tracer_provider=tp))],
    )

    @agent.tool_plain
    def lookup_order(order_id: str) -> str:
        return f"order {order_id}: shipped"

    @agent.tool_plain
    def issue_refund(order_id: str, cents: int) -> str:
        return f"refunded {cents} on {order_id}"

    # asyncio.run, not run_sync: run_sync leaves its event loop open as the thread's
    # current loop, and the next asyncio.run drops it, so a later test of the same worker
    # failed on its unclosed sockets (ResourceWarning is an error here).
    return asyncio.run(agent.run("Please refund order A-17")).output


def _provider(service: str) -> TracerProvider:
    return TracerProvider(resource=Resource.create({"service.name": service}))


def _assert_agent_components(spans: list[Span], agent_name: str) -> None:
    by_component: dict[str, list[Span]] = {}
    for s in spans:
        by_component.setdefault(s.component, []).append(s)
    assert set(by_component) == {
        f"agent:{agent_name}",
        "model:scripted-gpt",
        "tool:lookup_order",
        "tool:issue_refund",
    }
    model_spans = sorted(by_component["model:scripted-gpt"], key=lambda s: s.start_ns)
    assert [(s.input_tokens, s.output_tokens) for s in model_spans] == [(120, 15), (200, 30)]
    # The call tree is kept: every tool and model span is a child of the agent run.
    (agent_span,) = by_component[f"agent:{agent_name}"]
    children = [s for s in spans if s is not agent_span]
    assert {s.parent_span_id for s in children} == {agent_span.span_id}
    assert {s.trace_id for s in spans} == {agent_span.trace_id}
    assert all(not s.is_error for s in spans)


@pytest.mark.parametrize("compression", [Compression.NoCompression, Compression.Gzip])
def test_pydantic_ai_agent_through_the_sdk_protobuf_exporter(
    sentinel_daemon: RunningDaemon, compression: Compression
) -> None:
    agent_name = f"support-{uuid.uuid4().hex[:8]}"
    tp = _provider("support-svc")
    exporter = OTLPSpanExporter(
        endpoint=f"{sentinel_daemon.url}/v1/traces", compression=compression, timeout=10
    )
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    assert run_support_agent(tp, agent_name) == "Refunded order A-17."
    tp.shutdown()

    spans = [
        s for s in stored(sentinel_daemon) if s.attributes.get("gen_ai.agent.name") == agent_name
    ]
    _assert_agent_components(spans, agent_name)
    assert {s.service for s in spans} == {"support-svc"}


def _otlp_json(spans: list[ReadableSpan]) -> bytes:
    """OTLP/JSON as the Collector writes it: protobuf's JSON mapping with hex ids."""
    doc = json_format.MessageToDict(encode_spans(spans))
    for rs in doc["resourceSpans"]:
        for ss in rs["scopeSpans"]:
            for s in ss["spans"]:
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in s:
                        s[key] = base64.b64decode(s[key]).hex()
    return json.dumps(doc).encode()


@pytest.mark.parametrize("gzipped", [False, True])
def test_pydantic_ai_agent_through_otlp_json(sentinel_daemon: RunningDaemon, gzipped: bool) -> None:
    agent_name = f"support-{uuid.uuid4().hex[:8]}"
    memory = InMemorySpanExporter()
    tp = _provider("support-svc")
    tp.add_span_processor(SimpleSpanProcessor(memory))
    run_support_agent(tp, agent_name)
    tp.shutdown()
    body = _otlp_json(list(memory.get_finished_spans()))
    headers = dict(JS)
    if gzipped:
        body = gzip.compress(body)
        headers["Content-Encoding"] = "gzip"
    r = httpx.post(f"{sentinel_daemon.url}/v1/traces", content=body, headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {}  # no partial_success: nothing rejected

    spans = [
        s for s in stored(sentinel_daemon) if s.attributes.get("gen_ai.agent.name") == agent_name
    ]
    _assert_agent_components(spans, agent_name)


# --- bad input: the right status, a google.rpc.Status, nothing stored ------------------


def _one_span_request(trace_id: bytes | None = None) -> trace_service_pb2.ExportTraceServiceRequest:
    req = trace_service_pb2.ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    kv = rs.resource.attributes.add()
    kv.key, kv.value.string_value = "service.name", "checkout"
    s = rs.scope_spans.add().spans.add()
    s.trace_id = trace_id or uuid.uuid4().bytes
    s.span_id = os.urandom(8)
    s.name = "GET /cart"
    s.kind = 2
    s.start_time_unix_nano = 1_700_000_000_000_000_000
    s.end_time_unix_nano = 1_700_000_000_050_000_000
    return req


def _bad_json_ids() -> bytes:
    return json.dumps(
        {
            "resourceSpans": [
                {
                    "scopeSpans": [
                        {
                            "spans": [
                                {
                                    # base64 (protobuf's canonical JSON), not OTLP's hex
                                    "traceId": base64.b64encode(os.urandom(16)).decode(),
                                    "spanId": "00f067aa0ba902b7",
                                    "name": "x",
                                    "startTimeUnixNano": "1",
                                    "endTimeUnixNano": "2",
                                }
                            ]
                        }
                    ]
                }
            ]
        }
    ).encode()


BAD_REQUESTS: list[tuple[str, bytes, dict[str, str], int]] = [
    ("garbage bytes", b"\xff\xfe this is not protobuf \x00\x01", PB, 400),
    ("truncated protobuf", _one_span_request().SerializeToString()[:-7], PB, 400),
    ("not json", b'{"resourceSpans": [', JS, 400),
    ("json with base64 ids", _bad_json_ids(), JS, 400),
    ("json with a wrong type", b'{"resourceSpans": {"oops": 1}}', JS, 400),
    ("gzip header, no gzip", b"not gzip", {**PB, "Content-Encoding": "gzip"}, 400),
    (
        "wrong content type",
        _one_span_request().SerializeToString(),
        {"Content-Type": "text/plain"},
        415,
    ),
    (
        "unknown encoding",
        _one_span_request().SerializeToString(),
        {**PB, "Content-Encoding": "br"},
        415,
    ),
    ("oversized body", b"\x0a" + os.urandom(300 * 1024), PB, 413),
    (
        "oversized once decompressed",
        gzip.compress(b"\x00" * (400 * 1024)),
        {**PB, "Content-Encoding": "gzip"},
        413,
    ),
]


@pytest.mark.parametrize(
    ("body", "headers", "code"), [r[1:] for r in BAD_REQUESTS], ids=[r[0] for r in BAD_REQUESTS]
)
def test_bad_input_gets_the_right_status_and_stores_nothing(
    sentinel_daemon: RunningDaemon, body: bytes, headers: dict[str, str], code: int
) -> None:
    before = sentinel_daemon.store.span_count()
    r = httpx.post(f"{sentinel_daemon.url}/v1/traces", content=body, headers=headers)
    assert r.status_code == code, r.text
    if r.headers["content-type"] == "application/json":
        status = r.json()
        assert status["code"] == 3 and status["message"]
    else:
        status_msg = status_pb2.Status.FromString(r.content)
        assert status_msg.code == 3 and status_msg.message
    assert sentinel_daemon.store.span_count() == before


def test_bad_json_ids_are_named_in_the_error(sentinel_daemon: RunningDaemon) -> None:
    r = httpx.post(f"{sentinel_daemon.url}/v1/traces", content=_bad_json_ids(), headers=JS)
    assert r.status_code == 400
    assert "resourceSpans[0].scopeSpans[0].spans[0].traceId" in r.json()["message"]
    assert "hex" in r.json()["message"]


def test_unusable_spans_are_rejected_with_partial_success(sentinel_daemon: RunningDaemon) -> None:
    req = _one_span_request()
    good_trace = req.resource_spans[0].scope_spans[0].spans[0].trace_id.hex()
    bad = req.resource_spans[0].scope_spans[0].spans.add()
    bad.CopyFrom(req.resource_spans[0].scope_spans[0].spans[0])
    bad.trace_id = bytes(16)  # all-zero: invalid per the spec
    r = httpx.post(f"{sentinel_daemon.url}/v1/traces", content=req.SerializeToString(), headers=PB)
    assert r.status_code == 200
    resp = trace_service_pb2.ExportTraceServiceResponse.FromString(r.content)
    assert resp.partial_success.rejected_spans == 1
    assert "all-zero traceId" in resp.partial_success.error_message
    assert len(stored(sentinel_daemon, {good_trace})) == 1


def test_a_retried_export_is_stored_once(sentinel_daemon: RunningDaemon) -> None:
    req = _one_span_request()
    trace = req.resource_spans[0].scope_spans[0].spans[0].trace_id.hex()
    for _ in range(3):
        r = httpx.post(
            f"{sentinel_daemon.url}/v1/traces", content=req.SerializeToString(), headers=PB
        )
        assert r.status_code == 200
    assert len(stored(sentinel_daemon, {trace})) == 1


# --- round trip: what goes in comes out ----------------------------------------------

_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20)
_scalar = st.one_of(
    _text,
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.binary(max_size=16),
)
_value = st.recursive(
    _scalar,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(_text, inner, max_size=3)),
    max_leaves=6,
)
_attrs = st.dictionaries(_text, _value, max_size=6)


@st.composite
def span_batches(draw: st.DrawFn) -> list[dict[str, Any]]:
    n = draw(st.integers(1, 6))
    out = []
    for _ in range(n):
        start = draw(st.integers(1, 2**62))
        out.append(
            {
                "name": draw(_text),
                "kind": draw(st.sampled_from(list(SpanKind))),
                "status": draw(st.sampled_from(list(SpanStatus))),
                "start": start,
                "end": start + draw(st.integers(0, 10**12)),
                "attributes": draw(_attrs),
                "event_attrs": draw(st.lists(_attrs, max_size=2)),
                "child": draw(st.booleans()),
            }
        )
    return out


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batch=span_batches(), service=_text)
def test_span_batches_round_trip(
    sentinel_daemon: RunningDaemon, batch: list[dict[str, Any]], service: str
) -> None:
    trace_id = uuid.uuid4().bytes
    req = trace_service_pb2.ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    kv = rs.resource.attributes.add()
    kv.key, kv.value.string_value = "service.name", service
    ss = rs.scope_spans.add()
    ss.scope.name = "hypothesis"
    sent: dict[str, dict[str, Any]] = {}
    root_id = None
    for spec in batch:
        p = ss.spans.add()
        p.trace_id = trace_id
        p.span_id = uuid.uuid4().bytes[:8]
        if spec["child"] and root_id is not None:
            p.parent_span_id = root_id
        root_id = root_id or p.span_id
        p.name = spec["name"]
        p.kind = int(spec["kind"])  # type: ignore[assignment]
        p.status.code = int(spec["status"])  # type: ignore[assignment]
        p.start_time_unix_nano = spec["start"]
        p.end_time_unix_nano = spec["end"]
        _fill(p.attributes, spec["attributes"])
        for i, ea in enumerate(spec["event_attrs"]):
            e = p.events.add()
            e.name = f"event-{i}"
            e.time_unix_nano = spec["start"]
            _fill(e.attributes, ea)
        sent[p.span_id.hex()] = spec
    body = req.SerializeToString()
    r = httpx.post(f"{sentinel_daemon.url}/v1/traces", content=body, headers=PB)
    assert r.status_code == 200, r.text

    back = {s.span_id: s for s in stored(sentinel_daemon, {trace_id.hex()})}
    assert set(back) == set(sent)
    expected = {s.span_id: s for s in decode_protobuf(body).spans}
    for span_id, spec in sent.items():
        got = back[span_id]
        assert got == expected[span_id]
        assert dict(got.attributes) == spec["attributes"]
        assert [dict(e.attributes) for e in got.events] == spec["event_attrs"]
        assert (got.name, got.kind, got.status) == (spec["name"], spec["kind"], spec["status"])
        assert (got.start_ns, got.end_ns) == (spec["start"], spec["end"])
        # OpenTelemetry's rule: a missing or empty service.name is "unknown_service".
        assert got.service == (service or "unknown_service")
        assert dict(got.resource) == {"service.name": service}
    # And our own encoder writes what the decoder reads back.
    again = decode_protobuf(encode_protobuf(list(back.values()))).spans
    assert {s.span_id: s for s in again} == back


def _fill(out: Any, attrs: dict[str, Any]) -> None:
    for k, v in attrs.items():
        kv = out.add()
        kv.key = k
        _set_any(kv.value, v)


def _set_any(out: Any, v: Any) -> None:
    if isinstance(v, bool):
        out.bool_value = v
    elif isinstance(v, int):
        out.int_value = v
    elif isinstance(v, float):
        out.double_value = v
    elif isinstance(v, bytes):
        out.bytes_value = v
    elif isinstance(v, str):
        out.string_value = v
    elif isinstance(v, list):
        out.array_value.SetInParent()
        for x in v:
            _set_any(out.array_value.values.add(), x)
    else:
        out.kvlist_value.SetInParent()
        _fill(out.kvlist_value.values, v)


# --- health, metrics, auth -------------------------------------------------------------


def test_health_readiness_and_metrics(sentinel_daemon: RunningDaemon) -> None:
    health = httpx.get(f"{sentinel_daemon.url}/healthz").json()
    assert health == {"status": "ok", "role": "leader", "replica": health["replica"]}
    ready = httpx.get(f"{sentinel_daemon.url}/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"accepting": True, "store": True, "store_reachable": True}
    httpx.post(f"{sentinel_daemon.url}/v1/traces", content=b"junk!", headers=PB)
    metrics = httpx.get(f"{sentinel_daemon.url}/metrics").text
    assert 'sentinel_ingest_requests_total{code="400"}' in metrics
    assert "sentinel_ingest_spans_received_total" in metrics
    assert "sentinel_ingest_queue_spans 0.0" in metrics
    assert "sentinel_ingest_queue_capacity_spans" in metrics


def test_bearer_token_auth(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, server={"ingest_auth": True, "api_auth": True})
    settings = settings.model_copy(
        update={
            "secrets": settings.secrets.model_copy(
                update={"ingest_token": _secret("s3cret"), "api_token": _secret("api")}
            )
        }
    )
    body = _one_span_request().SerializeToString()
    with running_daemon(settings) as d:
        url = f"{d.url}/v1/traces"
        assert httpx.post(url, content=body, headers=PB).status_code == 401
        wrong = {**PB, "Authorization": "Bearer nope"}
        assert httpx.post(url, content=body, headers=wrong).status_code == 401
        assert d.store.span_count() == 0
        right = {**PB, "Authorization": "Bearer s3cret"}
        assert httpx.post(url, content=body, headers=right).status_code == 200
        assert d.store.span_count() == 1
        change = {"id": "abc1234", "time": "2026-11-01T10:00:00Z", "component": "prompt:support"}
        assert httpx.post(f"{d.url}/api/changes", json=change).status_code == 401
        ok = httpx.post(
            f"{d.url}/api/changes", json=change, headers={"Authorization": "Bearer api"}
        )
        assert ok.status_code == 200


def _secret(value: str) -> Any:
    from pydantic import SecretStr

    return SecretStr(value)


# --- the change webhook --------------------------------------------------------------


def test_change_webhook_stores_valid_events_and_names_bad_fields(
    sentinel_daemon: RunningDaemon,
) -> None:
    url = f"{sentinel_daemon.url}/api/changes"
    events = [
        {
            "id": "9f1c2ab",
            "time": "2026-11-01T10:31:40Z",
            "component": "prompt:support-agent",
            "affects": ["agent:support-agent"],
            "kind": "prompt",
            "author": "dana",
            "summary": "tighten refund wording",
            "repo": "agent-config",
            "path": "prompts/support.md",
            "version": "v42",
        },
        {
            "id": "d3p10y1",
            "time": "2026-11-01T10:35:00+01:00",
            "component": "service:payments",
            "kind": "deploy",
        },
    ]
    r = httpx.post(url, json=events)
    assert r.status_code == 200 and r.json() == {"received": 2, "stored": 2}
    again = httpx.post(url, json=events[0])
    assert again.json() == {"received": 1, "stored": 0}
    got = sentinel_daemon.store.changes(
        datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 2, tzinfo=UTC)
    )
    by_id = {c.id: c for c in got}
    assert by_id["9f1c2ab"].affects == ("agent:support-agent",)
    assert by_id["9f1c2ab"].model_extra == {"version": "v42"}
    assert by_id["d3p10y1"].time == datetime(2026, 11, 1, 9, 35, tzinfo=UTC)

    bad = httpx.post(url, json={"id": "x", "time": "2026-11-01T10:00:00", "component": "payments"})
    assert bad.status_code == 422
    where = {d["where"] for d in bad.json()["details"]}
    assert any("time" in w for w in where) and any("component" in w for w in where)
