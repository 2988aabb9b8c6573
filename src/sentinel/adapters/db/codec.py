"""Conversions between the store's rows and the domain's records: the JSON columns,
timestamps as integer ns/ms, spans as rows (``span_rows``, built in the ingest process
and possibly written by another) and back (``_span_from_row``).

Pure functions of their inputs: what must not live here is anything that touches a
connection or an engine.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sentinel.adapters.otlp import raw_details, span_to_raw
from sentinel.errors import StoreError
from sentinel.telemetry import GenAIOperation, Span, SpanKind, SpanStatus, evaluations_of

# --- JSON helpers -----------------------------------------------------------------------


def _default(value: Any) -> Any:
    if isinstance(value, bytes):
        # bytes attribute values are stored as base64 text under a marker key.
        return {"__bytes__": base64.b64encode(value).decode()}
    raise TypeError(f"cannot store {type(value).__name__} value {value!r:.80}")


def _hook(obj: dict[str, Any]) -> Any:
    if len(obj) == 1 and "__bytes__" in obj:
        return base64.b64decode(obj["__bytes__"])
    return obj


def _dumps(value: Any) -> str:
    try:
        return json.dumps(value, default=_default, separators=(",", ":"), allow_nan=True)
    except (TypeError, ValueError) as e:
        raise StoreError(f"cannot store {value!r:.120}: {e}") from e


def _loads(text: str) -> Any:
    return json.loads(text, object_hook=_hook)


# --- timestamps -------------------------------------------------------------------------


def _ns(t: datetime) -> int:
    if t.tzinfo is None:
        raise StoreError(f"naive datetime {t!r} given to the store; use aware UTC")
    return int(t.timestamp()) * 1_000_000_000 + t.microsecond * 1000


def _ms(t: datetime) -> int:
    if t.tzinfo is None:
        raise StoreError(f"naive datetime {t!r} given to the store; use aware UTC")
    return round(t.timestamp() * 1000)


def _from_ns(ns: int | None) -> datetime | None:
    return None if ns is None else datetime.fromtimestamp(ns / 1e9, tz=UTC)


def _from_ms(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, tz=UTC)


# --- spans ------------------------------------------------------------------------------

_SPAN_COLUMNS = (
    "trace_id",
    "span_id",
    "parent_span_id",
    "name",
    "kind",
    "start_ns",
    "end_ns",
    "service",
    "component",
    "peer",
    "operation",
    "status",
    "status_message",
    "error_type",
    "http_status",
    "input_tokens",
    "output_tokens",
    "scope",
    "body",
    "resource",
)

_SPAN_PREFIX = 17
assert Span._fields[:_SPAN_PREFIX] == _SPAN_COLUMNS[:_SPAN_PREFIX]
assert _SPAN_COLUMNS[_SPAN_PREFIX:] == ("scope", "body", "resource")


def _without_nul(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """PostgreSQL text cannot hold U+0000: replace it in the text columns (the exact
    name and status message are read back from the span's protobuf body)."""
    if not any(type(v) is str and "\x00" in v for v in row):
        return row
    return tuple(v.replace("\x00", "\ufffd") if type(v) is str else v for v in row)


@dataclass(frozen=True, slots=True)
class SpanRows:
    """Spans as the store's rows: plain tuples and dicts, cheap to send to a writer
    process."""

    rows: list[tuple[Any, ...]]
    evaluations: list[dict[str, Any]]


def span_rows(spans: Sequence[Span], *, postgres: bool) -> SpanRows:
    resource_json: dict[int, str] = {}
    rows: list[tuple[Any, ...]] = []
    evals: list[dict[str, Any]] = []
    evaluated: set[tuple[str, str]] = set()  # a span repeated within the batch
    for s in spans:
        rj = resource_json.get(id(s.resource))
        if rj is None:
            rj = resource_json[id(s.resource)] = _dumps(s.resource)
        # A Span's first fields are the table's first columns, in order (checked at
        # import below): slicing beats building a tuple field by field on this path.
        rows.append((*s[:_SPAN_PREFIX], s.scope, s.raw or span_to_raw(s), rj))
        if not s.evaluations or (s.trace_id, s.span_id) in evaluated:
            continue
        evaluated.add((s.trace_id, s.span_id))
        for ev in s.evaluations:
            evals.append(
                {
                    "trace_id": s.trace_id,
                    "span_id": s.span_id,
                    "component": s.component,
                    "name": ev.name,
                    "score": ev.score,
                    "label": ev.label,
                    "time_ns": ev.time_ns,
                }
            )
    if postgres:
        rows = [_without_nul(r) for r in rows]
    return SpanRows(rows, evals)


def _span_from_row(r: Any) -> Span:
    body = bytes(r["body"])
    details = raw_details(body)
    attributes, events = details.attributes, details.events
    # Evaluations are re-derived from the stored events by the same mapping that
    # produced them at ingest, so the read path cannot drift from the write path.
    evaluations = evaluations_of(events)
    return Span(
        trace_id=r["trace_id"],
        span_id=r["span_id"],
        parent_span_id=r["parent_span_id"],
        name=details.name,
        kind=SpanKind(r["kind"]),
        start_ns=r["start_ns"],
        end_ns=r["end_ns"],
        service=r["service"],
        component=r["component"],
        peer=r["peer"],
        operation=GenAIOperation(r["operation"]) if r["operation"] else None,
        status=SpanStatus(r["status"]),
        status_message=details.status_message,
        error_type=r["error_type"],
        http_status=r["http_status"],
        input_tokens=r["input_tokens"],
        output_tokens=r["output_tokens"],
        evaluations=evaluations,
        attributes=attributes,
        events=events,
        resource=_loads(r["resource"]),
        scope=r["scope"],
        raw=body,
    )
