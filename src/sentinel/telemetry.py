"""Telemetry records and the OpenTelemetry semantic-convention mapping.

What lives here: the frozen records every stage passes around (``Span``, ``Evaluation``,
``ChangeEvent``, ``Sample``, ``TopologyEdge``), component ids (``kind:name``), the SLI
kinds (``SliKind``, the vocabulary of ``sentinel.sli`` and of the config), and the pure
function that maps one span's attributes to its component, errors, tokens and evaluator
scores, accepting both the older and the newer GenAI / HTTP / DB attribute names.

What must not live here: wire formats (OTLP protobuf/JSON live in ``adapters/otlp.py``),
storage, or anything that does I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum, StrEnum
from typing import Annotated, Any, NamedTuple

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

# An attribute value as OTLP's AnyValue decodes to Python: str, bool, int, float, bytes
# (kept as bytes in memory, base64 text in JSON), a list of those, or a key/value mapping.
AttrValue = Any
Attributes = Mapping[str, AttrValue]


class ComponentKind(StrEnum):
    AGENT = "agent"
    MODEL = "model"
    TOOL = "tool"
    SERVICE = "service"
    PROMPT = "prompt"
    CONFIG = "config"
    INDEX = "index"


_COMPONENT_RE = re.compile(r"^(agent|model|tool|service|prompt|config|index):(\S.*)$")


def component_id(kind: ComponentKind, name: str) -> str:
    """The component id ``kind:name`` (CASE_FORMAT.md); the name keeps its case."""
    return f"{kind.value}:{name}"


def parse_component(value: str) -> tuple[ComponentKind, str]:
    """Split a component id, rejecting anything that is not ``kind:name`` of a known kind."""
    m = _COMPONENT_RE.match(value)
    if m is None:
        kinds = ", ".join(k.value for k in ComponentKind)
        raise ValueError(f"component id {value!r} is not 'kind:name' with kind one of {kinds}")
    return ComponentKind(m.group(1)), m.group(2)


def _check_component(value: str) -> str:
    parse_component(value)
    return value


ComponentId = Annotated[str, AfterValidator(_check_component)]


class SpanKind(IntEnum):
    """OTLP span kinds, same numbers as the protocol."""

    UNSPECIFIED = 0
    INTERNAL = 1
    SERVER = 2
    CLIENT = 3
    PRODUCER = 4
    CONSUMER = 5


class SpanStatus(IntEnum):
    """OTLP status codes, same numbers as the protocol."""

    UNSET = 0
    OK = 1
    ERROR = 2


class GenAIOperation(StrEnum):
    CHAT = "chat"
    TEXT_COMPLETION = "text_completion"
    GENERATE_CONTENT = "generate_content"
    EMBEDDINGS = "embeddings"
    EXECUTE_TOOL = "execute_tool"
    INVOKE_AGENT = "invoke_agent"
    CREATE_AGENT = "create_agent"
    RETRIEVAL = "retrieval"


MODEL_OPERATIONS = frozenset(
    {
        GenAIOperation.CHAT,
        GenAIOperation.TEXT_COMPLETION,
        GenAIOperation.GENERATE_CONTENT,
        GenAIOperation.EMBEDDINGS,
    }
)


@dataclass(frozen=True, slots=True)
class Evaluation:
    """One ``gen_ai.evaluation.result`` event: an evaluator's score of a span's output."""

    name: str
    score: float | None
    label: str | None
    time_ns: int


@dataclass(frozen=True, slots=True)
class SpanEvent:
    name: str
    time_ns: int
    attributes: Attributes


class Span(NamedTuple):
    """One span, normalised. ``component`` is the thing this span measures; ``peer`` is the
    component a CLIENT span calls (so an uninstrumented callee still appears).

    A NamedTuple rather than a frozen dataclass: it is just as immutable and several
    times cheaper to build, and ingest builds one per span.
    """

    trace_id: str  # 32 lower-case hex
    span_id: str  # 16 lower-case hex
    parent_span_id: str | None
    name: str
    kind: SpanKind
    start_ns: int
    end_ns: int
    service: str
    component: str
    peer: str | None
    operation: GenAIOperation | None
    status: SpanStatus
    status_message: str
    error_type: str | None  # set exactly when the span counts as failed
    http_status: int | None
    input_tokens: int | None
    output_tokens: int | None
    evaluations: tuple[Evaluation, ...]
    attributes: Attributes
    events: tuple[SpanEvent, ...]
    resource: Attributes
    scope: str = ""
    # The span as an OTLP protobuf ``Span`` message, when it arrived that way: stored as
    # is, so ingest never re-encodes what the exporter already encoded. Not compared.
    raw: bytes | None = None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Span):
            return NotImplemented
        return self[:-1] == other[:-1]

    def __ne__(self, other: object) -> bool:
        return not self == other

    @property
    def duration_ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6

    @property
    def is_error(self) -> bool:
        return self.error_type is not None

    @property
    def start(self) -> datetime:
        return datetime.fromtimestamp(self.start_ns / 1e9, tz=UTC)


# --- the semantic-convention mapping ---------------------------------------------------

# The first name present wins; the newer name is listed first.
_OPERATION_KEYS = ("gen_ai.operation.name",)
_MODEL_KEYS = ("gen_ai.request.model", "gen_ai.response.model", "llm.request.model")
_AGENT_KEYS = ("gen_ai.agent.name", "agent_name")  # agent_name: pydantic-ai < 1.0 / logfire
_TOOL_KEYS = ("gen_ai.tool.name", "tool_name")
_INPUT_TOKEN_KEYS = (
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.prompt_tokens",
    "llm.usage.prompt_tokens",
)
_OUTPUT_TOKEN_KEYS = (
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.completion_tokens",
    "llm.usage.completion_tokens",
)
_HTTP_STATUS_KEYS = ("http.response.status_code", "http.status_code")
_PEER_KEYS = ("peer.service", "server.address", "net.peer.name")
_DB_SYSTEM_KEYS = ("db.system.name", "db.system")
_DB_COLLECTION_KEYS = ("db.collection.name", "gen_ai.data_source.id", "db.mongodb.collection")
_EVAL_NAME_KEYS = ("gen_ai.evaluation.name",)
_EVAL_SCORE_KEYS = ("gen_ai.evaluation.score.value", "gen_ai.evaluation.score")
_EVAL_LABEL_KEYS = ("gen_ai.evaluation.score.label", "gen_ai.evaluation.label")

# Every attribute the mapping reads: decoders may pass only these to classify_span.
CLASSIFY_KEYS = frozenset(
    (
        *_OPERATION_KEYS,
        *_MODEL_KEYS,
        *_AGENT_KEYS,
        *_TOOL_KEYS,
        *_INPUT_TOKEN_KEYS,
        *_OUTPUT_TOKEN_KEYS,
        *_HTTP_STATUS_KEYS,
        *_PEER_KEYS,
        *_DB_SYSTEM_KEYS,
        *_DB_COLLECTION_KEYS,
        "error.type",
    )
)

# Operation names some instrumentations used before the conventions settled.
_OPERATION_ALIASES = {
    "completion": GenAIOperation.TEXT_COMPLETION,
    "embedding": GenAIOperation.EMBEDDINGS,
    "tool": GenAIOperation.EXECUTE_TOOL,
    "agent": GenAIOperation.INVOKE_AGENT,
}

# Stores whose client spans are retrievals from an index rather than calls to a service.
VECTOR_DB_SYSTEMS = frozenset(
    {
        "weaviate",
        "qdrant",
        "pinecone",
        "chroma",
        "chromadb",
        "milvus",
        "pgvector",
        "lancedb",
        "vespa",
        "opensearch",
        "elasticsearch",
        "redis_vector",
        "faiss",
        "marqo",
        "vectordb",
    }
)


def _first(attrs: Attributes, keys: Sequence[str]) -> AttrValue:
    get = attrs.get
    for k in keys:
        v = get(k)
        if v is not None and v != "":
            return v
    return None


_INT64 = 2**63


def _as_int(value: AttrValue) -> int | None:
    """An integer attribute (token counts, status codes), or None when it is not one or
    does not fit 64 bits (nothing real does; a store column would reject it)."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        n = value
    elif isinstance(value, float) and value.is_integer():
        n = int(value)
    elif isinstance(value, str):
        try:
            n = int(value)
        except ValueError:
            return None
    else:
        return None
    return n if -_INT64 <= n < _INT64 else None


def _as_float(value: AttrValue) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


_OPERATIONS: dict[str, GenAIOperation] = {
    **{op.value: op for op in GenAIOperation},
    **_OPERATION_ALIASES,
}


def parse_operation(value: AttrValue) -> GenAIOperation | None:
    return _OPERATIONS.get(value) if isinstance(value, str) else None


class SpanFacts(NamedTuple):
    """What the conventions say about one span, before it becomes a ``Span``."""

    component: str
    peer: str | None
    operation: GenAIOperation | None
    error_type: str | None
    http_status: int | None
    input_tokens: int | None
    output_tokens: int | None
    evaluations: tuple[Evaluation, ...] = ()


def classify_span(
    name: str,
    kind: SpanKind,
    service: str,
    attributes: Attributes,
    status: SpanStatus,
    events: Sequence[SpanEvent],
) -> SpanFacts:
    """Map one span to its component, error, tokens and evaluator scores.

    Component rules (CASE_FORMAT.md): GenAI operation first (agent, model, tool, index),
    then retrieval client spans of a vector store (index), then the resource's service.
    A CLIENT span's ``peer`` names the service it calls, so an uninstrumented callee is a
    component too.
    """
    # Plain "kind:" prefixes rather than component_id(): this runs once per ingested span.
    operation = parse_operation(_first(attributes, _OPERATION_KEYS))
    peer_name = _first(attributes, _PEER_KEYS)
    peer: str | None = None
    if kind == SpanKind.CLIENT and isinstance(peer_name, str) and peer_name != service:
        peer = "service:" + peer_name

    component = "service:" + service
    if operation is None:
        if kind == SpanKind.CLIENT:
            db_system = _first(attributes, _DB_SYSTEM_KEYS)
            if isinstance(db_system, str) and db_system.lower() in VECTOR_DB_SYSTEMS:
                collection = _first(attributes, _DB_COLLECTION_KEYS)
                if collection is not None:
                    component = f"index:{collection}"
        elif "agent run" in name and _first(attributes, _AGENT_KEYS):
            # pydantic-ai before the invoke_agent convention: span "agent run" + agent_name.
            operation = GenAIOperation.INVOKE_AGENT
            component = f"agent:{_first(attributes, _AGENT_KEYS)}"
    elif operation in MODEL_OPERATIONS:
        model = _first(attributes, _MODEL_KEYS)
        if model is not None:
            component = f"model:{model}"
        peer = None  # the provider's endpoint is the model's, not a service of ours
    elif operation is GenAIOperation.EXECUTE_TOOL:
        tool = _first(attributes, _TOOL_KEYS)
        if tool is not None:
            component = f"tool:{tool}"
        peer = None
    elif operation is GenAIOperation.INVOKE_AGENT or operation is GenAIOperation.CREATE_AGENT:
        agent = _first(attributes, _AGENT_KEYS)
        component = f"agent:{agent if agent else service}"
        peer = None
    elif operation is GenAIOperation.RETRIEVAL:
        collection = _first(attributes, _DB_COLLECTION_KEYS)
        if collection is not None:
            component = f"index:{collection}"

    http_status = _as_int(_first(attributes, _HTTP_STATUS_KEYS))
    error_type = _error_type(kind, attributes, status, events, http_status)

    evaluations = evaluations_of(events) if events else ()
    return SpanFacts(
        component=component,
        peer=peer,
        operation=operation,
        error_type=error_type,
        http_status=http_status,
        input_tokens=_as_int(_first(attributes, _INPUT_TOKEN_KEYS)),
        output_tokens=_as_int(_first(attributes, _OUTPUT_TOKEN_KEYS)),
        evaluations=evaluations,
    )


def _error_type(
    kind: SpanKind,
    attributes: Attributes,
    status: SpanStatus,
    events: Sequence[SpanEvent],
    http_status: int | None,
) -> str | None:
    """The span's error type if it failed, else None.

    Sources, most specific first: ``error.type``; an ``exception`` event's
    ``exception.type``; an HTTP status that the HTTP conventions call a failure (>= 500 on
    the server side, >= 400 on the client side); and span status ERROR.
    """
    if status == SpanStatus.OK:
        # An explicit OK from the instrumentation overrides everything else (OTel spec).
        return None
    explicit = attributes.get("error.type")
    if isinstance(explicit, str) and explicit:
        return explicit
    if not events and http_status is None:
        return "_OTHER" if status == SpanStatus.ERROR else None
    exception_type = None
    for e in events:
        if e.name == "exception":
            t = e.attributes.get("exception.type")
            exception_type = str(t) if t else "exception"
            break
    http_failed = http_status is not None and (
        http_status >= 500 or (http_status >= 400 and kind != SpanKind.SERVER)
    )
    if exception_type is not None and (status == SpanStatus.ERROR or http_failed):
        return exception_type
    if http_failed:
        return str(http_status)
    if status == SpanStatus.ERROR:
        return exception_type or "_OTHER"
    return None


def evaluations_of(events: Sequence[SpanEvent]) -> tuple[Evaluation, ...]:
    """The evaluator scores among a span's events (``gen_ai.evaluation.result``)."""
    found = (_evaluation(e) for e in events if e.name == "gen_ai.evaluation.result")
    return tuple(ev for ev in found if ev is not None)


def _evaluation(event: SpanEvent) -> Evaluation | None:
    name = _first(event.attributes, _EVAL_NAME_KEYS)
    if not isinstance(name, str):
        return None
    score = _as_float(_first(event.attributes, _EVAL_SCORE_KEYS))
    label = _first(event.attributes, _EVAL_LABEL_KEYS)
    return Evaluation(
        name=name,
        score=score,
        label=str(label) if label is not None else None,
        time_ns=event.time_ns,
    )


# --- change events, metric samples, topology -------------------------------------------


class ChangeKind(StrEnum):
    PROMPT = "prompt"
    CONFIG = "config"
    DEPLOY = "deploy"
    MODEL = "model"
    INDEX = "index"
    OTHER = "other"


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError(f"time {value.isoformat()!r} has no timezone; use e.g. a trailing Z")
    return value.astimezone(UTC)


AwareDatetime = Annotated[datetime, AfterValidator(_aware)]


class ChangeEvent(BaseModel):
    """A deploy, prompt or config commit: one line of changes.jsonl (CASE_FORMAT.md)."""

    model_config = ConfigDict(frozen=True, extra="allow")

    id: str = Field(min_length=1)
    time: AwareDatetime
    component: ComponentId
    affects: tuple[ComponentId, ...] = ()
    kind: ChangeKind = ChangeKind.OTHER
    author: str = ""
    summary: str = ""
    repo: str = ""
    path: str = ""


class TopologyEdge(BaseModel):
    """A call edge known outside the telemetry: one line of topology.jsonl."""

    model_config = ConfigDict(frozen=True, extra="allow")

    caller: ComponentId
    callee: ComponentId


@dataclass(frozen=True, slots=True)
class Sample:
    """One metric sample. ``labels`` excludes ``__name__``; ``component`` is resolved from
    the labels as CASE_FORMAT.md says."""

    metric: str
    labels: tuple[tuple[str, str], ...]  # sorted by key
    component: str | None
    time: datetime
    value: float


@dataclass(frozen=True, slots=True)
class Series:
    """A metric series as a query returns it: its labels (``__name__`` as ``metric``) and
    its points in time order."""

    metric: str
    labels: tuple[tuple[str, str], ...]  # sorted by key, without __name__
    points: tuple[tuple[datetime, float], ...]

    @property
    def component(self) -> str | None:
        return series_component(dict(self.labels))


def series_component(labels: Mapping[str, str]) -> str | None:
    """The component a metric series belongs to: its ``component`` label, else
    ``service:<service_name|service|job>``, else None."""
    c = labels.get("component")
    if c:
        return c
    for key in ("service_name", "service", "job"):
        v = labels.get(key)
        if v:
            return component_id(ComponentKind.SERVICE, v)
    return None


class SliKind(StrEnum):
    """What an SLI measures (``sentinel.sli`` computes them; config names them)."""

    REQUEST_RATE = "request_rate"  # requests per second
    ERROR_RATE = "error_rate"  # share of requests that failed, [0, 1]
    ERROR_RATE_BY_TYPE = "error_rate_by_type"  # share failing with one error type
    LATENCY_P50 = "latency_p50"  # seconds
    LATENCY_P95 = "latency_p95"
    LATENCY_P99 = "latency_p99"
    INPUT_TOKENS_PER_REQUEST = "input_tokens_per_request"
    OUTPUT_TOKENS_PER_REQUEST = "output_tokens_per_request"
    COST_PER_REQUEST = "cost_per_request"  # USD
    TOOL_FAILURE_RATE = "tool_failure_rate"  # [0, 1], tool components only
    STEPS_PER_RUN = "steps_per_run"  # model + tool calls per agent run
    EVAL_SCORE = "eval_score"  # mean evaluator score; qualifier = evaluator
    GUARDRAIL_TRIGGERS = "guardrail_triggers"  # share of requests that tripped a guardrail
    # Share of a component's calls to an instrumented service that failed before reaching
    # it (no span of the callee answered: a gateway's 429, a refused connection); the
    # qualifier is empty for all of them, else the error type.
    REFUSED_CALL_RATE = "refused_call_rate"
    MEMORY_UTILISATION = "memory_utilisation"  # working set / memory limit, [0, 1+]
    MEMORY_WORKING_SET = "memory_working_set"  # bytes, where no container has a limit
    CPU_USAGE = "cpu_usage"  # CPU cores used (CPU seconds per second), all containers

    @property
    def share(self) -> bool:
        """A share of requests in [0, 1] (events are requests; bad ones are counted)."""
        return self in _SHARE_KINDS


_SHARE_KINDS = frozenset(
    {
        SliKind.ERROR_RATE,
        SliKind.ERROR_RATE_BY_TYPE,
        SliKind.TOOL_FAILURE_RATE,
        SliKind.GUARDRAIL_TRIGGERS,
        SliKind.REFUSED_CALL_RATE,
    }
)
