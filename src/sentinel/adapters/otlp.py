"""OTLP trace codec: ``ExportTraceServiceRequest`` bodies (protobuf or OTLP/JSON, as the
OpenTelemetry protocol defines them) to normalised ``telemetry.Span`` records, and back.

Decoding is strict about structure (a body that is not a well-formed request raises
``OTLPDecodeError``, which the receiver turns into HTTP 400 with nothing stored) and
lenient about content: a span that is well-formed but unusable (all-zero ids, end before
start) is counted as rejected and reported through ``partial_success``.

OTLP/JSON differs from protobuf's canonical JSON mapping: trace and span ids are hex, not
base64, and enums may be integers. This module parses the JSON itself rather than through
``json_format``, which would mis-decode the ids.

What must not live here: HTTP handling (``api.py``), storage, semantic conventions
(``telemetry.classify_span``).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from google.protobuf.message import DecodeError
from google.rpc import status_pb2  # type: ignore[import-untyped]
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from sentinel.errors import OTLPDecodeError
from sentinel.redact import Redactor
from sentinel.telemetry import (
    CLASSIFY_KEYS,
    Attributes,
    Span,
    SpanEvent,
    SpanKind,
    SpanStatus,
    classify_span,
)

ZERO_TRACE = "0" * 32
ZERO_SPAN = "0" * 16
_HEX = frozenset("0123456789abcdefABCDEF")
GRPC_INVALID_ARGUMENT = 3
GRPC_UNAUTHENTICATED = 16
GRPC_RESOURCE_EXHAUSTED = 8
GRPC_UNAVAILABLE = 14


@dataclass(frozen=True, slots=True)
class DecodedBatch:
    """The spans of one request, and what was rejected from it and why."""

    spans: list[Span]
    rejected: int
    reasons: tuple[str, ...]

    @property
    def error_message(self) -> str:
        return "; ".join(self.reasons)


class _Rejections:
    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def add(self, reason: str) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1

    def batch(self, spans: list[Span]) -> DecodedBatch:
        reasons = tuple(f"{n} span(s) {why}" for why, n in sorted(self.counts.items()))
        return DecodedBatch(spans=spans, rejected=sum(self.counts.values()), reasons=reasons)


def _reject_reason(trace_id: str, span_id: str, start_ns: int, end_ns: int) -> str | None:
    if trace_id == ZERO_TRACE:
        return "with an all-zero traceId"
    if span_id == ZERO_SPAN:
        return "with an all-zero spanId"
    if start_ns <= 0:
        return "without a start time"
    if end_ns < start_ns:
        return "ending before they start"
    return None


def _service_of(resource: Attributes) -> str:
    name = resource.get("service.name")
    return str(name) if name else "unknown_service"


def _make_span(
    *,
    trace_id: str,
    span_id: str,
    parent: str | None,
    name: str,
    kind: SpanKind,
    start_ns: int,
    end_ns: int,
    attributes: Attributes,
    events: tuple[SpanEvent, ...],
    status: SpanStatus,
    status_message: str,
    resource: Attributes,
    service: str,
    scope: str,
) -> Span:
    facts = classify_span(
        name=name,
        kind=kind,
        service=service,
        attributes=attributes,
        status=status,
        events=events,
    )
    return Span(
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=parent,
        name=name,
        kind=kind,
        start_ns=start_ns,
        end_ns=end_ns,
        service=service,
        component=facts.component,
        peer=facts.peer,
        operation=facts.operation,
        status=status,
        status_message=status_message,
        error_type=facts.error_type,
        http_status=facts.http_status,
        input_tokens=facts.input_tokens,
        output_tokens=facts.output_tokens,
        evaluations=facts.evaluations,
        attributes=attributes,
        events=events,
        resource=resource,
        scope=scope,
    )


# --- protobuf ---------------------------------------------------------------------------


def _pb_value(v: common_pb2.AnyValue) -> Any:
    which = v.WhichOneof("value")
    if which == "string_value":
        return v.string_value
    if which is None:
        return None
    if which == "array_value":
        return [_pb_value(x) for x in v.array_value.values]
    if which == "kvlist_value":
        return {kv.key: _pb_value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, which)


def _pb_attrs(kvs: Iterable[common_pb2.KeyValue]) -> dict[str, Any]:
    return {kv.key: _pb_value(kv.value) for kv in kvs}


class PbAttributes(Mapping[str, Any]):
    """A span's attributes, decoded from protobuf on first use.

    Ingest reads only the few attributes the conventions need (``CLASSIFY_KEYS``) and
    stores the span's protobuf bytes as they came, so most spans never pay for turning
    every attribute into Python objects.
    """

    __slots__ = ("_decoded", "_kvs")

    def __init__(self, kvs: Iterable[common_pb2.KeyValue]) -> None:
        self._kvs: Iterable[common_pb2.KeyValue] | None = kvs
        self._decoded: dict[str, Any] | None = None

    def _dict(self) -> dict[str, Any]:
        if self._decoded is None:
            assert self._kvs is not None
            self._decoded = _pb_attrs(self._kvs)
            self._kvs = None
        return self._decoded

    def __getitem__(self, key: str) -> Any:
        return self._dict()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._dict())

    def __len__(self) -> int:
        return len(self._dict())

    def __repr__(self) -> str:
        return repr(self._dict())


def _redact_pb(v: common_pb2.AnyValue, redactor: Redactor) -> None:
    """Redact the strings of ``v`` in place (nested arrays and key-value lists too)."""
    which = v.WhichOneof("value")
    if which == "string_value":
        text = v.string_value
        clean = redactor.text(text)
        if clean is not text:
            v.string_value = clean
    elif which == "array_value":
        for x in v.array_value.values:
            _redact_pb(x, redactor)
    elif which == "kvlist_value":
        for kv in v.kvlist_value.values:
            _redact_pb(kv.value, redactor)


def _redact_nothing(_v: common_pb2.AnyValue) -> None:
    pass


def _redact_pb_rest(s: trace_pb2.Span, redactor: Redactor) -> None:
    """Redact, in place, the content attributes of the events of ``s`` and its status
    message (its own attributes are redacted in ``decode_protobuf``'s loop)."""
    for e in s.events:
        for kv in e.attributes:
            if redactor.covers(kv.key):
                _redact_pb(kv.value, redactor)
    if s.status.message:
        s.status.message = redactor.text(s.status.message)


def decode_protobuf(body: bytes, redactor: Redactor | None = None) -> DecodedBatch:
    """Decode a binary ``ExportTraceServiceRequest``; with ``redactor``, prompts and
    messages are redacted before anything is read from them."""
    try:
        request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
    except DecodeError as e:
        raise OTLPDecodeError(f"body is not a protobuf ExportTraceServiceRequest: {e}") from e
    if body and not request.resource_spans:
        # Bytes that happen to parse (protobuf skips unknown fields) but carry nothing we
        # know: almost surely not OTLP at all.
        raise OTLPDecodeError(
            f"body of {len(body)} bytes decodes to an ExportTraceServiceRequest with no "
            "resourceSpans: not an OTLP trace request"
        )
    spans: list[Span] = []
    rejections = _Rejections()
    classify_keys = CLASSIFY_KEYS
    # Attributes whose values are redacted (prompts, messages): before ``raw`` is taken.
    covered: dict[str, bool] | None = None
    covers: Callable[[str], bool] = bool
    redact_value: Callable[[common_pb2.AnyValue], None] = _redact_nothing
    if redactor is not None:
        covered, covers = redactor.covered, redactor.covers
        redact_value = partial(_redact_pb, redactor=redactor)
    for ri, rs in enumerate(request.resource_spans):
        resource = _pb_attrs(rs.resource.attributes)
        service = _service_of(resource)
        for si, ss in enumerate(rs.scope_spans):
            scope = ss.scope.name
            for pi, s in enumerate(ss.spans):
                trace_raw, span_raw, parent_raw = s.trace_id, s.span_id, s.parent_span_id
                if len(trace_raw) != 16 or len(span_raw) != 8 or len(parent_raw) not in (0, 8):
                    where = f"resourceSpans[{ri}].scopeSpans[{si}].spans[{pi}]"
                    raise OTLPDecodeError(
                        f"{where}: ids must be 16 (traceId) and 8 (spanId, parentSpanId) "
                        f"bytes, got {len(trace_raw)}, {len(span_raw)}, {len(parent_raw)}"
                    )
                trace_id = trace_raw.hex()
                span_id = span_raw.hex()
                start_ns, end_ns = s.start_time_unix_nano, s.end_time_unix_nano
                reason = _reject_reason(trace_id, span_id, start_ns, end_ns)
                if reason is not None:
                    rejections.add(reason)
                    continue
                if redactor is not None and (s.events or s.status.message):
                    _redact_pb_rest(s, redactor)
                st = s.status
                kind_n, status_n = s.kind, st.code
                if kind_n not in _KINDS or status_n not in _STATUSES:
                    where = f"resourceSpans[{ri}].scopeSpans[{si}].spans[{pi}]"
                    raise OTLPDecodeError(
                        f"{where}: unknown span kind {kind_n!r} or status code {status_n!r}"
                    )
                # The hot loop of ingest: only the attributes the conventions read are
                # turned into Python values; the rest stay in ``raw`` until asked for.
                attrs = s.attributes
                known = {}
                for kv in attrs:
                    key = kv.key
                    if key in classify_keys:
                        known[key] = _pb_value(kv.value)
                    elif covered is not None:
                        hit = covered.get(key)
                        if hit or (hit is None and covers(key)):
                            redact_value(kv.value)
                events = (
                    tuple(
                        SpanEvent(e.name, e.time_unix_nano, _pb_attrs(e.attributes))
                        for e in s.events
                    )
                    if s.events
                    else ()
                )
                kind, status = _KINDS[kind_n], _STATUSES[status_n]
                name = s.name
                facts = classify_span(name, kind, service, known, status, events)
                parent = parent_raw.hex() if parent_raw and parent_raw != _ZERO_SPAN_BYTES else None
                spans.append(
                    Span(
                        trace_id,
                        span_id,
                        parent,
                        name,
                        kind,
                        start_ns,
                        end_ns,
                        service,
                        facts.component,
                        facts.peer,
                        facts.operation,
                        status,
                        st.message,
                        facts.error_type,
                        facts.http_status,
                        facts.input_tokens,
                        facts.output_tokens,
                        facts.evaluations,
                        PbAttributes(attrs),
                        events,
                        resource,
                        scope,
                        s.SerializeToString(),
                    )
                )
    return rejections.batch(spans)


@dataclass(frozen=True, slots=True)
class RawDetails:
    """What a stored protobuf ``Span`` message holds beyond the indexed columns."""

    name: str
    status_message: str
    attributes: dict[str, Any]
    events: tuple[SpanEvent, ...]


def raw_details(raw: bytes) -> RawDetails:
    p = trace_pb2.Span.FromString(raw)
    events = tuple(
        SpanEvent(name=e.name, time_ns=e.time_unix_nano, attributes=_pb_attrs(e.attributes))
        for e in p.events
    )
    return RawDetails(p.name, p.status.message, _pb_attrs(p.attributes), events)


def span_to_raw(s: Span) -> bytes:
    """The span as a protobuf ``Span`` message (what ``Span.raw`` holds)."""
    if s.raw is not None:
        return s.raw
    p = trace_pb2.Span()
    _fill_pb_span(s, p)
    return p.SerializeToString()


_KINDS = {int(k): k for k in SpanKind}
_STATUSES = {int(k): k for k in SpanStatus}
_ZERO_SPAN_BYTES = bytes(8)


# --- OTLP/JSON --------------------------------------------------------------------------


def _expect(value: Any, typ: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(value, typ) or (isinstance(value, bool) and typ is not bool):
        names = typ.__name__ if isinstance(typ, type) else " or ".join(t.__name__ for t in typ)
        raise OTLPDecodeError(f"{where}: expected {names}, got {value!r:.80}")
    return value


def _json_list(obj: Mapping[str, Any], key: str, where: str) -> list[Any]:
    value = obj.get(key, [])
    return list(_expect(value, list, f"{where}.{key}"))


def _json_int(value: Any, where: str) -> int:
    # OTLP/JSON encodes 64-bit integers as strings; accept numbers too.
    if isinstance(value, bool):
        raise OTLPDecodeError(f"{where}: expected an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            pass
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise OTLPDecodeError(f"{where}: expected an integer, got {value!r:.80}")


def _json_hex_id(value: Any, nbytes: int, where: str, *, optional: bool = False) -> str | None:
    if value is None or value == "":
        if optional:
            return None
        raise OTLPDecodeError(f"{where}: missing")
    if not isinstance(value, str) or len(value) != 2 * nbytes or not _HEX.issuperset(value):
        raise OTLPDecodeError(
            f"{where}: {value!r:.80} is not {2 * nbytes} hex characters "
            "(OTLP/JSON ids are hex, not base64)"
        )
    return value.lower()


def _json_enum(value: Any, enum_type: Any, prefix: str, where: str) -> int:
    if value is None:
        return 0
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return int(enum_type(value))
        except ValueError:
            pass
    if isinstance(value, str):
        name = value.removeprefix(prefix)
        if name in enum_type.__members__:
            return int(enum_type[name])
    raise OTLPDecodeError(f"{where}: {value!r:.80} is not a valid {enum_type.__name__}")


def _json_value(v: Any, where: str) -> Any:
    if not isinstance(v, dict):
        raise OTLPDecodeError(f"{where}: expected an AnyValue object, got {v!r:.80}")
    if not v:
        return None
    if len(v) != 1:
        raise OTLPDecodeError(f"{where}: AnyValue must have exactly one field, got {sorted(v)}")
    ((key, val),) = v.items()
    if key == "stringValue":
        return _expect(val, str, where)
    if key == "boolValue":
        return _expect(val, bool, where)
    if key == "intValue":
        return _json_int(val, where)
    if key == "doubleValue":
        if isinstance(val, int | float) and not isinstance(val, bool):
            return float(val)
        if val in ("NaN", "Infinity", "-Infinity"):
            return float(val)
        raise OTLPDecodeError(f"{where}: expected a number, got {val!r:.80}")
    if key == "bytesValue":
        try:
            return base64.b64decode(_expect(val, str, where), validate=True)
        except binascii.Error as e:
            raise OTLPDecodeError(f"{where}: bytesValue is not base64: {e}") from e
    if key == "arrayValue":
        values = _json_list(_expect(val, dict, where), "values", where)
        return [_json_value(x, f"{where}.values[{i}]") for i, x in enumerate(values)]
    if key == "kvlistValue":
        values = _json_list(_expect(val, dict, where), "values", where)
        return _json_attrs(values, where)
    raise OTLPDecodeError(f"{where}: unknown AnyValue field {key!r}")


def _json_attrs(kvs: list[Any], where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for i, kv in enumerate(kvs):
        w = f"{where}[{i}]"
        kv = _expect(kv, dict, w)
        key = _expect(kv.get("key"), str, f"{w}.key")
        out[key] = _json_value(kv.get("value", {}), f"{w}.value")
    return out


def decode_json(body: bytes, redactor: Redactor | None = None) -> DecodedBatch:
    """Decode an OTLP/JSON ``ExportTraceServiceRequest``; with ``redactor``, prompts and
    messages are redacted."""
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise OTLPDecodeError(f"body is not valid JSON: {e}") from e
    return decode_json_object(doc, redactor)


def decode_json_object(doc: Any, redactor: Redactor | None = None) -> DecodedBatch:
    """Decode an already-parsed OTLP/JSON request (one line of a case's traces.jsonl)."""
    _expect(doc, dict, "request")
    spans: list[Span] = []
    rejections = _Rejections()
    for ri, rs in enumerate(_json_list(doc, "resourceSpans", "request")):
        rw = f"resourceSpans[{ri}]"
        _expect(rs, dict, rw)
        res = _expect(rs.get("resource", {}), dict, f"{rw}.resource")
        resource = _json_attrs(
            _json_list(res, "attributes", f"{rw}.resource"), f"{rw}.resource.attributes"
        )
        service = _service_of(resource)
        for si, ss in enumerate(_json_list(rs, "scopeSpans", rw)):
            sw = f"{rw}.scopeSpans[{si}]"
            _expect(ss, dict, sw)
            scope_obj = _expect(ss.get("scope", {}), dict, f"{sw}.scope")
            scope = _expect(scope_obj.get("name", ""), str, f"{sw}.scope.name")
            for pi, s in enumerate(_json_list(ss, "spans", sw)):
                w = f"{sw}.spans[{pi}]"
                _expect(s, dict, w)
                trace_id = _json_hex_id(s.get("traceId"), 16, f"{w}.traceId")
                span_id = _json_hex_id(s.get("spanId"), 8, f"{w}.spanId")
                parent = _json_hex_id(s.get("parentSpanId"), 8, f"{w}.parentSpanId", optional=True)
                assert trace_id is not None and span_id is not None
                start_ns = _json_int(s.get("startTimeUnixNano", 0), f"{w}.startTimeUnixNano")
                end_ns = _json_int(s.get("endTimeUnixNano", 0), f"{w}.endTimeUnixNano")
                name = _expect(s.get("name", ""), str, f"{w}.name")
                kind = SpanKind(_json_enum(s.get("kind"), SpanKind, "SPAN_KIND_", f"{w}.kind"))
                st = _expect(s.get("status", {}), dict, f"{w}.status")
                status = SpanStatus(
                    _json_enum(st.get("code"), SpanStatus, "STATUS_CODE_", f"{w}.status.code")
                )
                status_message = _expect(st.get("message", ""), str, f"{w}.status.message")
                attributes = _json_attrs(_json_list(s, "attributes", w), f"{w}.attributes")
                events = tuple(
                    SpanEvent(
                        name=_expect(e.get("name", ""), str, f"{w}.events[{ei}].name"),
                        time_ns=_json_int(
                            e.get("timeUnixNano", 0), f"{w}.events[{ei}].timeUnixNano"
                        ),
                        attributes=_json_attrs(
                            _json_list(e, "attributes", f"{w}.events[{ei}]"),
                            f"{w}.events[{ei}].attributes",
                        ),
                    )
                    for ei, e in enumerate(
                        _expect(x, dict, f"{w}.events[{i}]")
                        for i, x in enumerate(_json_list(s, "events", w))
                    )
                )
                reason = _reject_reason(trace_id, span_id, start_ns, end_ns)
                if reason is not None:
                    rejections.add(reason)
                    continue
                if redactor is not None:
                    attributes = redactor.attributes(attributes)
                    events = tuple(
                        SpanEvent(e.name, e.time_ns, redactor.attributes(e.attributes))
                        for e in events
                    )
                    status_message = redactor.text(status_message)
                spans.append(
                    _make_span(
                        trace_id=trace_id,
                        span_id=span_id,
                        parent=parent if parent != ZERO_SPAN else None,
                        name=name,
                        kind=kind,
                        start_ns=start_ns,
                        end_ns=end_ns,
                        attributes=attributes,
                        events=events,
                        status=status,
                        status_message=status_message,
                        resource=resource,
                        service=service,
                        scope=scope,
                    )
                )
    return rejections.batch(spans)


# --- encoding (case files, tests, benchmarks) ------------------------------------------


def _group(spans: Sequence[Span]) -> dict[tuple[str, str], list[Span]]:
    """Spans grouped by (resource, scope), keeping first-seen order."""
    groups: dict[tuple[str, str], list[Span]] = {}
    for s in spans:
        key = (json.dumps(_jsonable(s.resource), sort_keys=True), s.scope)
        groups.setdefault(key, []).append(s)
    return groups


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, Mapping):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _json_any(v: Any) -> dict[str, Any]:
    if isinstance(v, bool):
        return {"boolValue": v}
    if isinstance(v, int):
        return {"intValue": str(v)}
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            return {
                "doubleValue": "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")
            }
        return {"doubleValue": v}
    if isinstance(v, bytes):
        return {"bytesValue": base64.b64encode(v).decode()}
    if isinstance(v, list | tuple):
        return {"arrayValue": {"values": [_json_any(x) for x in v]}}
    if isinstance(v, Mapping):
        return {"kvlistValue": {"values": _json_kvs(v)}}
    if v is None:
        return {}
    return {"stringValue": str(v)}


def _json_kvs(attrs: Attributes) -> list[dict[str, Any]]:
    return [{"key": k, "value": _json_any(v)} for k, v in attrs.items()]


def encode_json(spans: Sequence[Span]) -> dict[str, Any]:
    """An OTLP/JSON ``ExportTraceServiceRequest`` holding ``spans``."""
    by_resource: dict[str, dict[str, Any]] = {}
    for (res_key, scope), group in _group(spans).items():
        rs = by_resource.get(res_key)
        if rs is None:
            rs = {"resource": {"attributes": _json_kvs(group[0].resource)}, "scopeSpans": []}
            by_resource[res_key] = rs
        rs["scopeSpans"].append({"scope": {"name": scope}, "spans": [_json_span(s) for s in group]})
    return {"resourceSpans": list(by_resource.values())}


def _json_span(s: Span) -> dict[str, Any]:
    out: dict[str, Any] = {
        "traceId": s.trace_id,
        "spanId": s.span_id,
        "name": s.name,
        "kind": int(s.kind),
        "startTimeUnixNano": str(s.start_ns),
        "endTimeUnixNano": str(s.end_ns),
        "attributes": _json_kvs(s.attributes),
        "status": {
            "code": int(s.status),
            **({"message": s.status_message} if s.status_message else {}),
        },
    }
    if s.parent_span_id:
        out["parentSpanId"] = s.parent_span_id
    if s.events:
        out["events"] = [
            {"name": e.name, "timeUnixNano": str(e.time_ns), "attributes": _json_kvs(e.attributes)}
            for e in s.events
        ]
    return out


def _pb_any(v: Any, out: common_pb2.AnyValue) -> None:
    if isinstance(v, bool):
        out.bool_value = v
    elif isinstance(v, int):
        out.int_value = v
    elif isinstance(v, float):
        out.double_value = v
    elif isinstance(v, bytes):
        out.bytes_value = v
    elif isinstance(v, list | tuple):
        out.array_value.SetInParent()
        for x in v:
            _pb_any(x, out.array_value.values.add())
    elif isinstance(v, Mapping):
        out.kvlist_value.SetInParent()
        _pb_kvs(v, out.kvlist_value.values)
    elif v is not None:
        out.string_value = str(v)


def _pb_kvs(attrs: Attributes, out: Any) -> None:
    for k, v in attrs.items():
        kv = out.add()
        kv.key = k
        _pb_any(v, kv.value)


def encode_protobuf(spans: Sequence[Span]) -> bytes:
    """A binary ``ExportTraceServiceRequest`` holding ``spans``."""
    request = trace_service_pb2.ExportTraceServiceRequest()
    by_resource: dict[str, Any] = {}
    for (res_key, scope), group in _group(spans).items():
        rs = by_resource.get(res_key)
        if rs is None:
            rs = request.resource_spans.add()
            _pb_kvs(group[0].resource, rs.resource.attributes)
            by_resource[res_key] = rs
        ss = rs.scope_spans.add()
        ss.scope.name = scope
        for s in group:
            _fill_pb_span(s, ss.spans.add())
    return request.SerializeToString()


def _fill_pb_span(s: Span, p: trace_pb2.Span) -> None:
    if s.raw is not None:
        p.ParseFromString(s.raw)
        return
    p.trace_id = bytes.fromhex(s.trace_id)
    p.span_id = bytes.fromhex(s.span_id)
    if s.parent_span_id:
        p.parent_span_id = bytes.fromhex(s.parent_span_id)
    p.name = s.name
    p.kind = trace_pb2.Span.SpanKind.ValueType(int(s.kind))
    p.start_time_unix_nano = s.start_ns
    p.end_time_unix_nano = s.end_ns
    _pb_kvs(s.attributes, p.attributes)
    p.status.code = trace_pb2.Status.StatusCode.ValueType(int(s.status))
    p.status.message = s.status_message
    for e in s.events:
        pe = p.events.add()
        pe.name = e.name
        pe.time_unix_nano = e.time_ns
        _pb_kvs(e.attributes, pe.attributes)


# --- responses --------------------------------------------------------------------------


def export_response(batch: DecodedBatch | None, *, as_json: bool) -> bytes:
    """The 200 body: an ``ExportTraceServiceResponse``, with ``partial_success`` when
    spans were rejected."""
    if as_json:
        doc: dict[str, Any] = {}
        if batch is not None and batch.rejected:
            doc["partialSuccess"] = {
                "rejectedSpans": str(batch.rejected),
                "errorMessage": batch.error_message,
            }
        return json.dumps(doc).encode()
    resp = trace_service_pb2.ExportTraceServiceResponse()
    if batch is not None and batch.rejected:
        resp.partial_success.rejected_spans = batch.rejected
        resp.partial_success.error_message = batch.error_message
    return resp.SerializeToString()


def status_body(code: int, message: str, *, as_json: bool) -> bytes:
    """A ``google.rpc.Status`` body, as OTLP/HTTP requires for 4xx/5xx responses."""
    if as_json:
        return json.dumps({"code": code, "message": message}).encode()
    body: bytes = status_pb2.Status(code=code, message=message).SerializeToString()
    return body
