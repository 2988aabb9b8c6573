"""Tests of the semantic-convention mapping (``telemetry.classify_span``) and of the OTLP
decoders that feed it (``adapters.otlp.decode_json_object`` / ``decode_protobuf``).

What must not live here: storage of spans, the HTTP receiver, case files.
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from sentinel.adapters.otlp import (
    decode_json_object,
    decode_protobuf,
    encode_protobuf,
)
from sentinel.errors import OTLPDecodeError
from sentinel.telemetry import (
    VECTOR_DB_SYSTEMS,
    Evaluation,
    GenAIOperation,
    SpanEvent,
    SpanFacts,
    SpanKind,
    SpanStatus,
    classify_span,
)

SERVICE = "support-gateway"
T0 = 1_764_000_000_000_000_000  # some nanosecond timestamp in 2025


def facts(
    attributes: Mapping[str, Any],
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    status: SpanStatus = SpanStatus.UNSET,
    events: Sequence[SpanEvent] = (),
    name: str = "span",
    service: str = SERVICE,
) -> SpanFacts:
    return classify_span(name, kind, service, attributes, status, events)


def exception_event(exc_type: str | None = "TimeoutError") -> SpanEvent:
    attrs = {"exception.message": "boom"}
    if exc_type is not None:
        attrs["exception.type"] = exc_type
    return SpanEvent("exception", T0, attrs)


def evaluation_event(attributes: Mapping[str, Any], time_ns: int = T0) -> SpanEvent:
    return SpanEvent("gen_ai.evaluation.result", time_ns, dict(attributes))


# --- components: agents ----------------------------------------------------------------


@pytest.mark.parametrize("operation", ["invoke_agent", "create_agent"])
def test_agent_operations_map_to_the_agent_name(operation: str) -> None:
    f = facts({"gen_ai.operation.name": operation, "gen_ai.agent.name": "customer-care-agent"})
    assert f.component == "agent:customer-care-agent"
    assert f.operation == GenAIOperation(operation)
    assert f.peer is None


@pytest.mark.parametrize("operation", ["invoke_agent", "create_agent"])
def test_an_agent_span_without_a_name_is_the_service_agent(operation: str) -> None:
    f = facts({"gen_ai.operation.name": operation})
    assert f.component == f"agent:{SERVICE}"


def test_an_empty_agent_name_falls_back_to_the_service() -> None:
    f = facts({"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": ""})
    assert f.component == f"agent:{SERVICE}"


def test_an_agent_client_span_has_no_peer() -> None:
    # A remote agent called over HTTP: the span measures the agent, not a service.
    f = facts(
        {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": "billing-agent",
            "server.address": "agents.internal",
        },
        kind=SpanKind.CLIENT,
    )
    assert f.component == "agent:billing-agent"
    assert f.peer is None


def test_legacy_pydantic_ai_agent_run_span_is_an_agent() -> None:
    f = facts({"agent_name": "support-agent"}, name="agent run")
    assert f.component == "agent:support-agent"
    assert f.operation is GenAIOperation.INVOKE_AGENT


def test_legacy_agent_run_span_with_a_quoted_name_is_an_agent() -> None:
    # The span name is matched by substring: a prefixed "agent run" name still counts.
    f = facts({"agent_name": "support-agent"}, name="support-agent agent run")
    assert f.component == "agent:support-agent"


def test_agent_run_without_agent_name_stays_a_service_span() -> None:
    f = facts({}, name="agent run")
    assert f.component == f"service:{SERVICE}"
    assert f.operation is None


def test_agent_name_alone_does_not_make_an_agent_span() -> None:
    f = facts({"agent_name": "support-agent"}, name="GET /orders")
    assert f.component == f"service:{SERVICE}"
    assert f.operation is None


def test_agent_operation_alias() -> None:
    f = facts({"gen_ai.operation.name": "agent", "gen_ai.agent.name": "a"})
    assert f.operation is GenAIOperation.INVOKE_AGENT
    assert f.component == "agent:a"


# --- components: models ------------------------------------------------------------------


@pytest.mark.parametrize(
    "operation",
    ["chat", "text_completion", "generate_content", "embeddings", "completion", "embedding"],
)
def test_model_operations_map_to_the_requested_model(operation: str) -> None:
    f = facts({"gen_ai.operation.name": operation, "gen_ai.request.model": "gpt-4o"})
    assert f.component == "model:gpt-4o"


@pytest.mark.parametrize(
    ("alias", "operation"),
    [
        ("completion", GenAIOperation.TEXT_COMPLETION),
        ("embedding", GenAIOperation.EMBEDDINGS),
        ("tool", GenAIOperation.EXECUTE_TOOL),
    ],
)
def test_older_operation_names_are_aliases(alias: str, operation: GenAIOperation) -> None:
    assert facts({"gen_ai.operation.name": alias}).operation is operation


def test_the_request_model_wins_over_the_response_model() -> None:
    f = facts(
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.response.model": "gpt-4o-2024-08-06",
        }
    )
    assert f.component == "model:gpt-4o"


def test_the_response_model_is_the_fallback() -> None:
    f = facts({"gen_ai.operation.name": "chat", "gen_ai.response.model": "gpt-4o-2024-08-06"})
    assert f.component == "model:gpt-4o-2024-08-06"


def test_an_empty_request_model_falls_back_to_the_response_model() -> None:
    f = facts(
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": "",
            "gen_ai.response.model": "claude-x",
        }
    )
    assert f.component == "model:claude-x"


def test_a_model_span_without_a_model_is_the_service() -> None:
    f = facts({"gen_ai.operation.name": "chat"})
    assert f.component == f"service:{SERVICE}"
    assert f.operation is GenAIOperation.CHAT


def test_a_model_client_span_has_no_service_peer() -> None:
    # The provider endpoint is where the model lives, not a service of ours.
    f = facts(
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": "gpt-4o",
            "server.address": "api.openai.com",
        },
        kind=SpanKind.CLIENT,
    )
    assert f.component == "model:gpt-4o"
    assert f.peer is None


def test_an_unknown_operation_is_no_operation() -> None:
    f = facts({"gen_ai.operation.name": "dance", "gen_ai.request.model": "gpt-4o"})
    assert f.operation is None
    assert f.component == f"service:{SERVICE}"


# --- components: tools and indexes -------------------------------------------------------


def test_execute_tool_maps_to_the_tool_name() -> None:
    f = facts(
        {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "crm_lookup"},
        kind=SpanKind.CLIENT,
    )
    assert f.component == "tool:crm_lookup"
    assert f.operation is GenAIOperation.EXECUTE_TOOL
    assert f.peer is None


def test_execute_tool_without_a_tool_name_is_the_service() -> None:
    assert facts({"gen_ai.operation.name": "execute_tool"}).component == f"service:{SERVICE}"


def test_retrieval_operation_maps_to_the_collection() -> None:
    f = facts({"gen_ai.operation.name": "retrieval", "db.collection.name": "help-center"})
    assert f.component == "index:help-center"
    assert f.operation is GenAIOperation.RETRIEVAL


def test_retrieval_operation_uses_the_data_source_id() -> None:
    f = facts({"gen_ai.operation.name": "retrieval", "gen_ai.data_source.id": "policy-docs"})
    assert f.component == "index:policy-docs"


@pytest.mark.parametrize("system_key", ["db.system.name", "db.system"])
@pytest.mark.parametrize("system", sorted(VECTOR_DB_SYSTEMS))
def test_vector_db_client_spans_map_to_the_collection(system_key: str, system: str) -> None:
    f = facts({system_key: system, "db.collection.name": "faq"}, kind=SpanKind.CLIENT)
    assert f.component == "index:faq"


def test_vector_db_system_names_are_matched_case_insensitively() -> None:
    f = facts({"db.system.name": "Qdrant", "db.collection.name": "faq"}, kind=SpanKind.CLIENT)
    assert f.component == "index:faq"


def test_the_newer_db_system_name_wins_over_the_older_one() -> None:
    attrs = {"db.system.name": "postgresql", "db.system": "qdrant", "db.collection.name": "faq"}
    assert facts(attrs, kind=SpanKind.CLIENT).component == f"service:{SERVICE}"
    attrs = {"db.system.name": "qdrant", "db.system": "postgresql", "db.collection.name": "faq"}
    assert facts(attrs, kind=SpanKind.CLIENT).component == "index:faq"


def test_a_vector_db_span_without_a_collection_is_the_service() -> None:
    f = facts({"db.system.name": "qdrant"}, kind=SpanKind.CLIENT)
    assert f.component == f"service:{SERVICE}"


def test_a_vector_db_span_that_is_not_a_client_span_is_the_service() -> None:
    # The vector store's own server span measures the store's service.
    f = facts({"db.system.name": "qdrant", "db.collection.name": "faq"}, kind=SpanKind.SERVER)
    assert f.component == f"service:{SERVICE}"


# --- components: services and peers ------------------------------------------------------


def test_a_postgres_client_span_is_the_callers_service_with_the_peer_service() -> None:
    f = facts(
        {
            "db.system.name": "postgresql",
            "db.collection.name": "customers",
            "peer.service": "crm-db",
            "server.address": "10.0.0.7",
        },
        kind=SpanKind.CLIENT,
        service="crm-api",
    )
    assert f.component == "service:crm-api"
    assert f.peer == "service:crm-db"
    assert f.operation is None


def test_a_client_span_without_peer_service_uses_server_address() -> None:
    f = facts({"server.address": "payments.internal"}, kind=SpanKind.CLIENT)
    assert f.component == f"service:{SERVICE}"
    assert f.peer == "service:payments.internal"


def test_a_client_span_uses_the_older_net_peer_name() -> None:
    f = facts({"net.peer.name": "ledger"}, kind=SpanKind.CLIENT)
    assert f.peer == "service:ledger"


def test_server_address_wins_over_net_peer_name() -> None:
    f = facts({"net.peer.name": "old", "server.address": "new"}, kind=SpanKind.CLIENT)
    assert f.peer == "service:new"


@pytest.mark.parametrize("kind", [SpanKind.SERVER, SpanKind.INTERNAL, SpanKind.PRODUCER])
def test_only_client_spans_have_a_peer(kind: SpanKind) -> None:
    assert facts({"peer.service": "crm-db"}, kind=kind).peer is None


def test_a_client_span_calling_its_own_service_has_no_peer() -> None:
    assert facts({"peer.service": SERVICE}, kind=SpanKind.CLIENT).peer is None


def test_a_client_span_without_any_peer_attribute_has_no_peer() -> None:
    assert facts({"http.request.method": "GET"}, kind=SpanKind.CLIENT).peer is None


# --- tokens --------------------------------------------------------------------------------


def test_newer_token_attribute_names() -> None:
    f = facts({"gen_ai.usage.input_tokens": 120, "gen_ai.usage.output_tokens": 30})
    assert (f.input_tokens, f.output_tokens) == (120, 30)


def test_older_token_attribute_names() -> None:
    f = facts({"gen_ai.usage.prompt_tokens": 120, "gen_ai.usage.completion_tokens": 30})
    assert (f.input_tokens, f.output_tokens) == (120, 30)


def test_newer_token_names_win_over_older_ones() -> None:
    f = facts(
        {
            "gen_ai.usage.input_tokens": 1,
            "gen_ai.usage.prompt_tokens": 2,
            "gen_ai.usage.output_tokens": 3,
            "gen_ai.usage.completion_tokens": 4,
        }
    )
    assert (f.input_tokens, f.output_tokens) == (1, 3)


def test_no_token_attributes_is_none() -> None:
    f = facts({})
    assert (f.input_tokens, f.output_tokens) == (None, None)


@pytest.mark.parametrize(
    "value",
    [
        "many",  # not a number
        "",  # empty
        "12.5",  # not an integer
        12.5,  # a float that is not an integer
        math.nan,
        math.inf,
        True,  # a bool is not a count
        2**63,  # does not fit a 64-bit column
        -(2**63) - 1,
        str(2**63),
        [1, 2],
        {"n": 1},
        b"12",
    ],
)
def test_token_values_that_are_not_64_bit_integers_are_none(value: Any) -> None:
    f = facts({"gen_ai.usage.input_tokens": value, "gen_ai.usage.output_tokens": value})
    assert (f.input_tokens, f.output_tokens) == (None, None)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (12.0, 12),  # a whole float (JSON numbers, some SDKs)
        ("12", 12),  # an integer as text (OTLP/JSON int64, older instrumentations)
        (2**63 - 1, 2**63 - 1),
        (-(2**63), -(2**63)),
        (0, 0),
    ],
)
def test_token_values_that_are_integers_in_disguise_are_read(value: Any, expected: int) -> None:
    assert facts({"gen_ai.usage.input_tokens": value}).input_tokens == expected


# --- HTTP status ----------------------------------------------------------------------------


def test_newer_http_status_name() -> None:
    assert facts({"http.response.status_code": 201}).http_status == 201


def test_older_http_status_name() -> None:
    assert facts({"http.status_code": 201}).http_status == 201


def test_newer_http_status_name_wins() -> None:
    f = facts({"http.response.status_code": 200, "http.status_code": 500}, kind=SpanKind.SERVER)
    assert f.http_status == 200
    assert f.error_type is None


def test_http_status_as_text_is_read() -> None:
    assert facts({"http.response.status_code": "503"}).http_status == 503


# --- errors ---------------------------------------------------------------------------------


def test_a_plain_span_is_not_an_error() -> None:
    assert facts({}).error_type is None


def test_error_type_attribute_wins_over_everything_but_status_ok() -> None:
    f = facts(
        {"error.type": "rate_limited", "http.response.status_code": 500},
        kind=SpanKind.SERVER,
        status=SpanStatus.ERROR,
        events=[exception_event("ValueError")],
    )
    assert f.error_type == "rate_limited"


def test_error_type_attribute_alone_makes_an_error() -> None:
    assert facts({"error.type": "timeout"}).error_type == "timeout"


def test_an_empty_error_type_attribute_is_ignored() -> None:
    assert facts({"error.type": ""}).error_type is None
    assert facts({"error.type": ""}, status=SpanStatus.ERROR).error_type == "_OTHER"


def test_exception_event_type_names_an_error_span() -> None:
    f = facts({}, status=SpanStatus.ERROR, events=[exception_event("TimeoutError")])
    assert f.error_type == "TimeoutError"


def test_exception_event_without_a_type_is_exception() -> None:
    f = facts({}, status=SpanStatus.ERROR, events=[exception_event(None)])
    assert f.error_type == "exception"


def test_the_first_exception_event_names_the_error() -> None:
    events = [
        SpanEvent("log", T0, {"message": "retrying"}),
        exception_event("ConnectionError"),
        exception_event("TimeoutError"),
    ]
    assert facts({}, status=SpanStatus.ERROR, events=events).error_type == "ConnectionError"


def test_a_recorded_exception_on_an_unset_span_is_not_an_error() -> None:
    # A handled exception (retried, caught): the instrumentation did not fail the span.
    assert facts({}, events=[exception_event("KeyError")]).error_type is None


def test_exception_event_with_a_failed_http_status_names_the_error() -> None:
    f = facts(
        {"http.response.status_code": 502},
        kind=SpanKind.SERVER,
        events=[exception_event("BadGateway")],
    )
    assert f.error_type == "BadGateway"


@pytest.mark.parametrize("code", [500, 502, 503, 599])
@pytest.mark.parametrize("kind", [SpanKind.SERVER, SpanKind.CLIENT, SpanKind.INTERNAL])
def test_http_5xx_is_an_error_on_any_side(code: int, kind: SpanKind) -> None:
    assert facts({"http.response.status_code": code}, kind=kind).error_type == str(code)


@pytest.mark.parametrize("code", [400, 404, 429, 499])
def test_http_4xx_is_an_error_on_client_spans(code: int) -> None:
    f = facts({"http.response.status_code": code}, kind=SpanKind.CLIENT)
    assert f.error_type == str(code)


@pytest.mark.parametrize("code", [400, 404, 429, 499])
def test_http_4xx_is_not_an_error_on_server_spans(code: int) -> None:
    # The client's mistake, not the server's (OTel HTTP conventions).
    f = facts({"http.response.status_code": code}, kind=SpanKind.SERVER)
    assert f.error_type is None
    assert f.http_status == code


@pytest.mark.parametrize("code", [200, 204, 301, 304, 399])
@pytest.mark.parametrize("kind", [SpanKind.SERVER, SpanKind.CLIENT])
def test_http_below_400_is_not_an_error(code: int, kind: SpanKind) -> None:
    assert facts({"http.response.status_code": code}, kind=kind).error_type is None


def test_old_http_status_name_also_fails_a_span() -> None:
    assert facts({"http.status_code": 503}, kind=SpanKind.SERVER).error_type == "503"


def test_server_4xx_with_status_error_is_an_error() -> None:
    # The instrumentation decided it failed: the span status is respected.
    f = facts({"http.response.status_code": 404}, kind=SpanKind.SERVER, status=SpanStatus.ERROR)
    assert f.error_type == "_OTHER"


def test_status_error_alone_is_other() -> None:
    assert facts({}, status=SpanStatus.ERROR).error_type == "_OTHER"


@pytest.mark.parametrize(
    ("attributes", "events", "kind"),
    [
        ({"error.type": "timeout"}, (), SpanKind.INTERNAL),
        ({"http.response.status_code": 503}, (), SpanKind.SERVER),
        ({"http.response.status_code": 404}, (), SpanKind.CLIENT),
        ({}, (exception_event("ValueError"),), SpanKind.INTERNAL),
        (
            {"error.type": "x", "http.response.status_code": 500},
            (exception_event("ValueError"),),
            SpanKind.CLIENT,
        ),
    ],
)
def test_status_ok_overrides_every_error_signal(
    attributes: dict[str, Any], events: tuple[SpanEvent, ...], kind: SpanKind
) -> None:
    f = facts(attributes, kind=kind, status=SpanStatus.OK, events=events)
    assert f.error_type is None


# --- evaluator events -----------------------------------------------------------------------


def test_evaluation_result_events_become_evaluations() -> None:
    events = [
        evaluation_event(
            {
                "gen_ai.evaluation.name": "relevance",
                "gen_ai.evaluation.score.value": 0.82,
                "gen_ai.evaluation.score.label": "relevant",
            },
            time_ns=T0 + 5,
        ),
        SpanEvent("exception", T0, {"exception.type": "X"}),  # not an evaluation
        evaluation_event(
            {"gen_ai.evaluation.name": "toxicity", "gen_ai.evaluation.score.value": 0}
        ),
    ]
    f = facts({}, events=events)
    assert f.evaluations == (
        Evaluation(name="relevance", score=0.82, label="relevant", time_ns=T0 + 5),
        Evaluation(name="toxicity", score=0.0, label=None, time_ns=T0),
    )


def test_the_older_score_key_is_read() -> None:
    attrs = {"gen_ai.evaluation.name": "groundedness", "gen_ai.evaluation.score": 0.4}
    f = facts({}, events=[evaluation_event(attrs)])
    assert [(e.name, e.score) for e in f.evaluations] == [("groundedness", 0.4)]


def test_the_newer_score_key_wins() -> None:
    attrs = {
        "gen_ai.evaluation.name": "g",
        "gen_ai.evaluation.score.value": 0.9,
        "gen_ai.evaluation.score": 0.1,
    }
    assert facts({}, events=[evaluation_event(attrs)]).evaluations[0].score == 0.9


def test_a_score_given_as_text_is_read() -> None:
    attrs = {"gen_ai.evaluation.name": "g", "gen_ai.evaluation.score.value": "0.75"}
    assert facts({}, events=[evaluation_event(attrs)]).evaluations[0].score == 0.75


def test_a_label_only_evaluation_has_no_score() -> None:
    attrs = {"gen_ai.evaluation.name": "tone", "gen_ai.evaluation.score.label": "polite"}
    (ev,) = facts({}, events=[evaluation_event(attrs)]).evaluations
    assert (ev.score, ev.label) == (None, "polite")


def test_a_score_that_is_not_a_number_is_none() -> None:
    attrs = {"gen_ai.evaluation.name": "g", "gen_ai.evaluation.score.value": "high"}
    assert facts({}, events=[evaluation_event(attrs)]).evaluations[0].score is None


def test_an_evaluation_event_without_a_name_is_skipped() -> None:
    events = [evaluation_event({"gen_ai.evaluation.score.value": 0.5})]
    assert facts({}, events=events).evaluations == ()


def test_evaluations_do_not_make_an_error() -> None:
    attrs = {"gen_ai.evaluation.name": "g", "gen_ai.evaluation.score.value": 0.0}
    assert facts({}, events=[evaluation_event(attrs)]).error_type is None


# --- the property: total, and always a component ----------------------------------------------

_COMPONENT_PREFIX = re.compile(r"^(agent|model|tool|service|index):")

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.binary(max_size=8),
)
_any_values = st.recursive(
    _scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(st.text(max_size=6), children, max_size=3),
    ),
    max_leaves=6,
)
# Keys the mapping reads, so that generated values reach every branch, plus some others.
_keys = st.one_of(
    st.sampled_from(
        [
            "gen_ai.operation.name",
            "gen_ai.request.model",
            "gen_ai.response.model",
            "gen_ai.agent.name",
            "agent_name",
            "gen_ai.tool.name",
            "gen_ai.usage.input_tokens",
            "gen_ai.usage.prompt_tokens",
            "gen_ai.usage.output_tokens",
            "gen_ai.usage.completion_tokens",
            "http.response.status_code",
            "http.status_code",
            "peer.service",
            "server.address",
            "net.peer.name",
            "db.system.name",
            "db.system",
            "db.collection.name",
            "gen_ai.data_source.id",
            "error.type",
        ]
    ),
    st.text(max_size=10),
)
# Values that steer the mapping into its branches, mixed with arbitrary ones.
_steering = st.one_of(
    st.sampled_from([*(op.value for op in GenAIOperation), "completion", "embedding", "tool"]),
    st.sampled_from(sorted(VECTOR_DB_SYSTEMS)),
    st.sampled_from([200, 404, 503, "500", 499.0]),
    _any_values,
)
_attributes = st.dictionaries(_keys, _steering, max_size=8)
_event_attrs = st.dictionaries(
    st.one_of(
        st.sampled_from(
            [
                "exception.type",
                "gen_ai.evaluation.name",
                "gen_ai.evaluation.score.value",
                "gen_ai.evaluation.score",
                "gen_ai.evaluation.score.label",
            ]
        ),
        st.text(max_size=6),
    ),
    _any_values,
    max_size=4,
)
_events = st.lists(
    st.builds(
        SpanEvent,
        name=st.sampled_from(["exception", "gen_ai.evaluation.result", "log"]),
        time_ns=st.integers(min_value=0, max_value=2**64 - 1),
        attributes=_event_attrs,
    ),
    max_size=3,
)


@settings(max_examples=400, deadline=None)
@given(
    name=st.one_of(st.sampled_from(["agent run", "chat gpt-4o", ""]), st.text(max_size=12)),
    kind=st.sampled_from(list(SpanKind)),
    service=st.text(min_size=1, max_size=12),
    attributes=_attributes,
    status=st.sampled_from(list(SpanStatus)),
    events=_events,
)
def test_classify_span_is_total_and_always_names_a_component(
    name: str,
    kind: SpanKind,
    service: str,
    attributes: dict[str, Any],
    status: SpanStatus,
    events: list[SpanEvent],
) -> None:
    f = classify_span(name, kind, service, attributes, status, events)
    assert _COMPONENT_PREFIX.match(f.component), f.component
    if f.peer is not None:
        assert f.peer.startswith("service:")
        assert kind == SpanKind.CLIENT
    for tokens in (f.input_tokens, f.output_tokens, f.http_status):
        assert tokens is None or (type(tokens) is int and -(2**63) <= tokens < 2**63)
    if status == SpanStatus.OK:
        assert f.error_type is None
    elif status == SpanStatus.ERROR:
        assert isinstance(f.error_type, str) and f.error_type
    assert all(isinstance(e, Evaluation) for e in f.evaluations)


# --- OTLP/JSON ------------------------------------------------------------------------------


def sv(v: str) -> dict[str, Any]:
    return {"stringValue": v}


def kv(key: str, value: dict[str, Any]) -> dict[str, Any]:
    return {"key": key, "value": value}


def json_span(
    span_id: str = "00f067aa0ba902b7",
    *,
    trace_id: str = "4bf92f3577b34da6a3ce929d0e0e4736",
    name: str = "span",
    start: Any = str(T0),
    end: Any = str(T0 + 1_000_000),
    **extra: Any,
) -> dict[str, Any]:
    return {
        "traceId": trace_id,
        "spanId": span_id,
        "name": name,
        "startTimeUnixNano": start,
        "endTimeUnixNano": end,
        **extra,
    }


def json_request(
    *spans: dict[str, Any], service: str | None = "crm-api", scope: str = "test"
) -> dict[str, Any]:
    resource = [kv("service.name", sv(service))] if service is not None else []
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": resource},
                "scopeSpans": [{"scope": {"name": scope}, "spans": list(spans)}],
            }
        ]
    }


def decode_one(span: dict[str, Any], **request: Any) -> Any:
    batch = decode_json_object(json_request(span, **request))
    assert batch.rejected == 0, batch.reasons
    (only,) = batch.spans
    return only


@pytest.mark.parametrize(
    ("given_kind", "expected"),
    [
        ("SPAN_KIND_SERVER", SpanKind.SERVER),
        ("SPAN_KIND_CLIENT", SpanKind.CLIENT),
        ("SPAN_KIND_INTERNAL", SpanKind.INTERNAL),
        ("SPAN_KIND_UNSPECIFIED", SpanKind.UNSPECIFIED),
        (2, SpanKind.SERVER),
        (3, SpanKind.CLIENT),
        (5, SpanKind.CONSUMER),
        (None, SpanKind.UNSPECIFIED),
    ],
)
def test_json_span_kind_as_enum_name_or_integer(given_kind: Any, expected: SpanKind) -> None:
    extra = {} if given_kind is None else {"kind": given_kind}
    assert decode_one(json_span(**extra)).kind is expected


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("STATUS_CODE_ERROR", SpanStatus.ERROR),
        ("STATUS_CODE_OK", SpanStatus.OK),
        ("STATUS_CODE_UNSET", SpanStatus.UNSET),
        (2, SpanStatus.ERROR),
        (1, SpanStatus.OK),
        (0, SpanStatus.UNSET),
    ],
)
def test_json_status_code_as_enum_name_or_integer(code: Any, expected: SpanStatus) -> None:
    s = decode_one(json_span(status={"code": code, "message": "m"}))
    assert s.status is expected
    assert s.status_message == "m"
    assert s.is_error == (expected is SpanStatus.ERROR)


def test_json_status_error_by_name_feeds_the_error_mapping() -> None:
    s = decode_one(json_span(kind="SPAN_KIND_SERVER", status={"code": "STATUS_CODE_ERROR"}))
    assert s.error_type == "_OTHER"


@pytest.mark.parametrize("bad", ["SPAN_KIND_SIDEWAYS", 9, True, 1.5])
def test_json_unknown_span_kind_is_a_decode_error(bad: Any) -> None:
    with pytest.raises(OTLPDecodeError, match="kind"):
        decode_json_object(json_request(json_span(kind=bad)))


@pytest.mark.parametrize("value", ["120", 120])
def test_json_int_value_as_text_or_number(value: Any) -> None:
    s = decode_one(
        json_span(
            attributes=[
                kv("gen_ai.operation.name", sv("chat")),
                kv("gen_ai.request.model", sv("gpt-4o")),
                kv("gen_ai.usage.input_tokens", {"intValue": value}),
                kv("gen_ai.usage.output_tokens", {"intValue": "7"}),
            ]
        )
    )
    assert s.attributes["gen_ai.usage.input_tokens"] == 120
    assert (s.input_tokens, s.output_tokens) == (120, 7)
    assert s.component == "model:gpt-4o"


def test_json_times_as_numbers_are_accepted() -> None:
    s = decode_one(json_span(start=T0, end=T0 + 10))
    assert (s.start_ns, s.end_ns) == (T0, T0 + 10)


@pytest.mark.parametrize(
    ("given", "check"),
    [
        ("NaN", math.isnan),
        ("Infinity", lambda v: v == math.inf),
        ("-Infinity", lambda v: v == -math.inf),
        (0.25, lambda v: v == 0.25),
        (3, lambda v: v == 3.0 and isinstance(v, float)),
    ],
)
def test_json_double_values(given: Any, check: Any) -> None:
    s = decode_one(json_span(attributes=[kv("x.ratio", {"doubleValue": given})]))
    assert check(s.attributes["x.ratio"])


def test_json_bytes_value_is_base64() -> None:
    raw = b"\x00\xffsentinel"
    s = decode_one(
        json_span(attributes=[kv("x.blob", {"bytesValue": base64.b64encode(raw).decode()})])
    )
    assert s.attributes["x.blob"] == raw


def test_json_bytes_value_that_is_not_base64_is_a_decode_error() -> None:
    with pytest.raises(OTLPDecodeError, match="base64"):
        decode_json_object(json_request(json_span(attributes=[kv("b", {"bytesValue": "%%%"})])))


def test_json_nested_values() -> None:
    s = decode_one(
        json_span(
            attributes=[
                kv(
                    "a",
                    {"arrayValue": {"values": [sv("x"), {"intValue": "2"}, {"boolValue": True}]}},
                ),
                kv("m", {"kvlistValue": {"values": [kv("k", sv("v"))]}}),
                kv("e", {}),
            ]
        )
    )
    assert s.attributes == {"a": ["x", 2, True], "m": {"k": "v"}, "e": None}


def test_json_hex_ids_are_lower_cased_and_all_zero_parent_is_none() -> None:
    s = decode_one(
        json_span(
            "00F067AA0BA902B7",
            trace_id="4BF92F3577B34DA6A3CE929D0E0E4736",
            parentSpanId="0000000000000000",
        )
    )
    assert (s.trace_id, s.span_id, s.parent_span_id) == (
        "4bf92f3577b34da6a3ce929d0e0e4736",
        "00f067aa0ba902b7",
        None,
    )


def test_json_base64_ids_are_a_decode_error() -> None:
    trace_b64 = base64.b64encode(bytes.fromhex("4bf92f3577b34da6a3ce929d0e0e4736")).decode()
    with pytest.raises(OTLPDecodeError, match="hex"):
        decode_json_object(json_request(json_span(trace_id=trace_b64)))


def test_json_rejected_spans_are_counted_with_reasons_and_the_rest_decode() -> None:
    good = [json_span("00000000000000a1"), json_span("00000000000000a2", name="second")]
    bad = [
        json_span("00000000000000b1", trace_id="0" * 32),
        json_span("0" * 16),
        json_span("00000000000000b3", start=str(T0), end=str(T0 - 1)),
        json_span("00000000000000b4", start="0", end="0"),
        json_span("00000000000000b5", trace_id="0" * 32),
    ]
    doc = json_request(bad[0], good[0], *bad[1:], good[1])
    batch = decode_json_object(doc)
    assert [s.span_id for s in batch.spans] == ["00000000000000a1", "00000000000000a2"]
    assert batch.rejected == 5
    assert set(batch.reasons) == {
        "2 span(s) with an all-zero traceId",
        "1 span(s) with an all-zero spanId",
        "1 span(s) ending before they start",
        "1 span(s) without a start time",
    }
    assert "all-zero traceId" in batch.error_message


def test_json_span_without_times_is_rejected() -> None:
    span = json_span()
    del span["startTimeUnixNano"], span["endTimeUnixNano"]
    batch = decode_json_object(json_request(span))
    assert (batch.spans, batch.rejected) == ([], 1)


def test_json_missing_service_name_is_unknown_service() -> None:
    s = decode_one(json_span(), service=None)
    assert s.service == "unknown_service"
    assert s.component == "service:unknown_service"


def test_json_empty_service_name_is_unknown_service() -> None:
    assert decode_one(json_span(), service="").service == "unknown_service"


def test_json_resource_and_scope_are_kept() -> None:
    s = decode_one(json_span(), scope="opentelemetry.instrumentation.httpx")
    assert s.resource == {"service.name": "crm-api"}
    assert s.scope == "opentelemetry.instrumentation.httpx"


def test_json_events_feed_errors_and_evaluations() -> None:
    s = decode_one(
        json_span(
            kind="SPAN_KIND_SERVER",
            status={"code": "STATUS_CODE_ERROR"},
            events=[
                {
                    "name": "exception",
                    "timeUnixNano": str(T0 + 1),
                    "attributes": [kv("exception.type", sv("TimeoutError"))],
                },
                {
                    "name": "gen_ai.evaluation.result",
                    "timeUnixNano": str(T0 + 2),
                    "attributes": [
                        kv("gen_ai.evaluation.name", sv("relevance")),
                        kv("gen_ai.evaluation.score.value", {"doubleValue": 0.5}),
                    ],
                },
            ],
        )
    )
    assert s.error_type == "TimeoutError"
    assert s.evaluations == (Evaluation("relevance", 0.5, None, T0 + 2),)


def test_json_full_mapping_through_the_decoder() -> None:
    spans = [
        json_span(
            "00000000000000c1",
            kind="SPAN_KIND_CLIENT",
            attributes=[
                kv("db.system", sv("postgresql")),
                kv("peer.service", sv("crm-db")),
                kv("http.status_code", {"intValue": 200}),
            ],
        ),
        json_span(
            "00000000000000c2",
            kind=3,
            attributes=[kv("db.system.name", sv("qdrant")), kv("db.collection.name", sv("faq"))],
        ),
        json_span(
            "00000000000000c3",
            attributes=[
                kv("gen_ai.operation.name", sv("execute_tool")),
                kv("gen_ai.tool.name", sv("crm_lookup")),
            ],
        ),
    ]
    batch = decode_json_object(json_request(*spans))
    assert [(s.component, s.peer) for s in batch.spans] == [
        ("service:crm-api", "service:crm-db"),
        ("index:faq", None),
        ("tool:crm_lookup", None),
    ]
    assert batch.spans[0].http_status == 200


@pytest.mark.parametrize(
    "doc",
    [
        [],
        {"resourceSpans": {}},
        {"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "ab"}]}]}]},
        json_request(json_span(attributes=[kv("x", {"stringValue": "a", "intValue": "1"})])),
        json_request(json_span(attributes=[kv("x", {"intValue": "one"})])),
    ],
)
def test_json_malformed_requests_raise(doc: Any) -> None:
    with pytest.raises(OTLPDecodeError):
        decode_json_object(doc)


# --- protobuf -------------------------------------------------------------------------------


def pb_request(
    *spans: trace_pb2.Span, service: str | None = "crm-api"
) -> trace_service_pb2.ExportTraceServiceRequest:
    request = trace_service_pb2.ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    if service is not None:
        a = rs.resource.attributes.add()
        a.key = "service.name"
        a.value.string_value = service
    ss = rs.scope_spans.add()
    ss.scope.name = "test"
    ss.spans.extend(spans)
    return request


def pb_span(
    span_id: bytes = bytes.fromhex("00f067aa0ba902b7"),
    *,
    trace_id: bytes = bytes.fromhex("4bf92f3577b34da6a3ce929d0e0e4736"),
    start: int = T0,
    end: int = T0 + 1_000,
    kind: int = trace_pb2.Span.SPAN_KIND_INTERNAL,
    status: int = trace_pb2.Status.STATUS_CODE_UNSET,
    attributes: Mapping[str, Any] | None = None,
) -> trace_pb2.Span:
    s = trace_pb2.Span(
        trace_id=trace_id,
        span_id=span_id,
        name="pb",
        kind=kind,  # type: ignore[arg-type]
        start_time_unix_nano=start,
        end_time_unix_nano=end,
    )
    s.status.code = status  # type: ignore[assignment]
    for key, value in (attributes or {}).items():
        a = s.attributes.add()
        a.key = key
        if isinstance(value, bool):
            a.value.bool_value = value
        elif isinstance(value, int):
            a.value.int_value = value
        elif isinstance(value, float):
            a.value.double_value = value
        elif isinstance(value, bytes):
            a.value.bytes_value = value
        else:
            a.value.string_value = value
    return s


def test_protobuf_decodes_kind_status_and_the_mapping() -> None:
    span = pb_span(
        kind=trace_pb2.Span.SPAN_KIND_SERVER,
        status=trace_pb2.Status.STATUS_CODE_ERROR,
        attributes={
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.usage.input_tokens": 12,
            "gen_ai.usage.output_tokens": 3,
            "unrelated.key": 1.5,
        },
    )
    (s,) = decode_protobuf(pb_request(span).SerializeToString()).spans
    assert s.kind is SpanKind.SERVER
    assert s.status is SpanStatus.ERROR
    assert s.component == "model:gpt-4o"
    assert (s.input_tokens, s.output_tokens) == (12, 3)
    assert s.error_type == "_OTHER"
    # Attributes the mapping does not read are still there, decoded when asked for.
    assert s.attributes["unrelated.key"] == 1.5
    assert dict(s.attributes)["gen_ai.request.model"] == "gpt-4o"
    assert s.raw == span.SerializeToString()


def test_protobuf_rejects_unusable_spans_and_keeps_the_rest() -> None:
    spans = [
        pb_span(bytes.fromhex("00000000000000a1")),
        pb_span(trace_id=bytes(16)),
        pb_span(bytes(8)),
        pb_span(bytes.fromhex("00000000000000b3"), start=T0, end=T0 - 1),
        pb_span(bytes.fromhex("00000000000000b4"), start=0, end=0),
    ]
    batch = decode_protobuf(pb_request(*spans).SerializeToString())
    assert [s.span_id for s in batch.spans] == ["00000000000000a1"]
    assert batch.rejected == 4
    assert set(batch.reasons) == {
        "1 span(s) with an all-zero traceId",
        "1 span(s) with an all-zero spanId",
        "1 span(s) ending before they start",
        "1 span(s) without a start time",
    }


def test_protobuf_missing_service_name_is_unknown_service() -> None:
    (s,) = decode_protobuf(pb_request(pb_span(), service=None).SerializeToString()).spans
    assert s.service == "unknown_service"
    assert s.component == "service:unknown_service"


def test_protobuf_ids_of_the_wrong_length_are_a_decode_error() -> None:
    with pytest.raises(OTLPDecodeError, match="16"):
        decode_protobuf(pb_request(pb_span(trace_id=b"\x01" * 8)).SerializeToString())


def test_protobuf_unknown_kind_is_a_decode_error() -> None:
    with pytest.raises(OTLPDecodeError, match="kind"):
        decode_protobuf(pb_request(pb_span(kind=9)).SerializeToString())


def test_protobuf_garbage_is_a_decode_error() -> None:
    with pytest.raises(OTLPDecodeError):
        decode_protobuf(b"\xff\xff\xff not protobuf")


def test_json_and_protobuf_decode_to_the_same_spans() -> None:
    doc = json_request(
        json_span(
            "00000000000000d1",
            kind="SPAN_KIND_CLIENT",
            status={"code": "STATUS_CODE_ERROR", "message": "upstream"},
            parentSpanId="00000000000000d0",
            attributes=[
                kv("gen_ai.operation.name", sv("execute_tool")),
                kv("gen_ai.tool.name", sv("refund_api")),
                kv("http.response.status_code", {"intValue": "429"}),
                kv("error.type", sv("rate_limited")),
                kv("x.nested", {"kvlistValue": {"values": [kv("k", {"doubleValue": "NaN"})]}}),
            ],
            events=[
                {
                    "name": "gen_ai.evaluation.result",
                    "timeUnixNano": str(T0),
                    "attributes": [
                        kv("gen_ai.evaluation.name", sv("g")),
                        kv("gen_ai.evaluation.score", {"doubleValue": 1}),
                    ],
                }
            ],
        ),
        json_span(
            "00000000000000d2", kind=2, attributes=[kv("http.status_code", {"intValue": 404})]
        ),
    )
    from_json = decode_json_object(doc).spans
    from_pb = decode_protobuf(encode_protobuf(from_json)).spans
    assert len(from_pb) == 2
    for a, b in zip(from_json, from_pb, strict=True):
        # NaN != NaN: compare everything but the attributes, then those with NaN in mind.
        assert a._replace(attributes={}) == b._replace(attributes={})
        assert set(a.attributes) == set(b.attributes)
    assert math.isnan(from_pb[0].attributes["x.nested"]["k"])
    assert from_pb[0].error_type == "rate_limited"
    assert from_pb[0].evaluations == (Evaluation("g", 1.0, None, T0),)
    assert from_pb[1].error_type is None  # a 404 on a server span
