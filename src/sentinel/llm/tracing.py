"""sentinel watching itself: its own pydantic-ai agents traced with the OpenTelemetry
GenAI conventions (agent run, model request and tool spans, token usage) and exported as
OTLP/HTTP where ``[llm] export_traces_to`` says, which may be sentinel's own receiver.

What must not live here: the agents (``llm.agents``), what is done with the spans.
"""

from __future__ import annotations

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from pydantic_ai.models.instrumented import InstrumentationSettings

__all__ = ["SERVICE_NAME", "self_tracing"]

SERVICE_NAME = "sentinel"


def self_tracing(
    endpoint: str, *, headers: dict[str, str] | None = None
) -> tuple[InstrumentationSettings, TracerProvider]:
    """Instrumentation for the agents, exporting to ``endpoint`` (an OTLP/HTTP traces
    URL) on its own tracer provider: the process's global one is left alone. Shut the
    provider down on exit so that the last spans are sent."""
    provider = TracerProvider(resource=Resource.create({"service.name": SERVICE_NAME}))
    provider.add_span_processor(
        # Few spans (a handful per incident): sent within a second, not batched for long.
        BatchSpanProcessor(
            OTLPSpanExporter(endpoint=endpoint, headers=headers or {}), schedule_delay_millis=1000
        )
    )
    # Prompts and completions stay in: they are what a person debugging sentinel's own
    # agents needs. They hold incident evidence, so export only where that may go.
    return InstrumentationSettings(tracer_provider=provider), provider
