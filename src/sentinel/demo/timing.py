"""Time in the demo's fleet: how its spans get clock timestamps.

The daemon judges on a ``ScaledClock`` (real time, ``speed`` times faster); the fleet
runs in real time. Two mappings:

* ``Warp``: real wall-clock time to the clock, an affine map. A trace starts at the
  warped time its root span started, so request rates are real.
* ``TraceClocks``: within a trace, time advances only by the latencies the simulation
  means (``advance``: a model's or a service's response time, in clock seconds) plus
  ``SPAN_OVERHEAD`` per span boundary. Without it, every real millisecond of the
  simulation's own Python work would be 30 clock milliseconds of latency at 30x, and
  the fleet's latency would follow the machine's load instead of its faults.

``VirtualTimes`` (a span processor) records each span's start and end on its trace's
clock; ``TimedExporter`` exports spans with those times.

What must not live here: what the fleet simulates (``demo.fleet``).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from opentelemetry.context import Context
from opentelemetry.sdk.trace import Event, ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

__all__ = ["SPAN_OVERHEAD_NS", "TimedExporter", "TraceClocks", "VirtualTimes", "Warp"]

SPAN_OVERHEAD_NS = 1_000_000  # 1 clock ms per span start or end: a framework's own cost


@dataclass(frozen=True, slots=True)
class Warp:
    """Real wall-clock nanoseconds to the daemon's clock: ``origin_ns`` is the clock's
    time when the real wall clock read ``wall0_ns``, and the clock runs ``speed`` times
    faster."""

    origin_ns: int
    wall0_ns: int
    speed: float

    def __call__(self, t_ns: int) -> int:
        return self.origin_ns + round((t_ns - self.wall0_ns) * self.speed)

    @classmethod
    def from_origin(cls, origin: datetime, wall0_ns: int, speed: float) -> Warp:
        if origin.tzinfo is None:
            raise ValueError(f"the warp origin must be timezone-aware, got {origin!r}")
        if not speed > 0:
            raise ValueError(f"the warp speed must be positive, got {speed!r}")
        return cls(round(origin.timestamp() * 1e9), wall0_ns, speed)


class TraceClocks:
    """One clock per live trace, in clock nanoseconds."""

    def __init__(self) -> None:
        self._now: dict[int, int] = {}
        self._lock = threading.Lock()

    def begin(self, trace_id: int, at_ns: int) -> None:
        with self._lock:
            self._now.setdefault(trace_id, at_ns)

    def advance(self, trace_id: int, seconds: float) -> None:
        """The trace spent ``seconds`` (clock) waiting for a model or a service."""
        with self._lock:
            if trace_id in self._now:
                self._now[trace_id] += round(seconds * 1e9)

    def tick(self, trace_id: int) -> int | None:
        """The trace's time, after one span boundary's overhead; None if unknown."""
        with self._lock:
            if trace_id not in self._now:
                return None
            self._now[trace_id] += SPAN_OVERHEAD_NS
            return self._now[trace_id]

    def end(self, trace_id: int) -> None:
        with self._lock:
            self._now.pop(trace_id, None)

    def __len__(self) -> int:
        return len(self._now)


class VirtualTimes(SpanProcessor):
    """Records each span's start and end on its trace's clock. Add it to a provider
    before the exporting processor: ``on_end`` must run before the span is queued."""

    def __init__(self, clocks: TraceClocks, warp: Warp) -> None:
        self.clocks = clocks
        self.warp = warp
        self.times: dict[tuple[int, int], list[int]] = {}
        self._roots: set[tuple[int, int]] = set()

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        ctx = span.get_span_context()
        key = (ctx.trace_id, ctx.span_id)
        if span.parent is None:
            self.clocks.begin(ctx.trace_id, self.warp(span.start_time or 0))
            self._roots.add(key)
        start = self.clocks.tick(ctx.trace_id)
        if start is not None:
            self.times[key] = [start, start]

    def on_end(self, span: ReadableSpan) -> None:
        ctx = span.context
        if ctx is None:
            return
        key = (ctx.trace_id, ctx.span_id)
        end = self.clocks.tick(ctx.trace_id)
        if end is not None and key in self.times:
            self.times[key][1] = end
        if key in self._roots:
            self._roots.discard(key)
            self.clocks.end(ctx.trace_id)

    def pop(self, span: ReadableSpan) -> tuple[int, int] | None:
        ctx = span.context
        if ctx is None:
            return None
        got = self.times.pop((ctx.trace_id, ctx.span_id), None)
        return (got[0], got[1]) if got is not None else None

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class TimedExporter(SpanExporter):
    """Exports spans through ``inner`` with their trace-clock times; a span without them
    (no trace clock: e.g. one started outside any run) is warped."""

    def __init__(self, inner: SpanExporter, times: VirtualTimes) -> None:
        self.inner = inner
        self.times = times

    def _timed(self, span: ReadableSpan) -> ReadableSpan:
        warp = self.times.warp
        got = self.times.pop(span)
        start, end = (
            got if got is not None else (warp(span.start_time or 0), warp(span.end_time or 0))
        )
        return ReadableSpan(
            name=span.name,
            context=span.context,
            parent=span.parent,
            resource=span.resource,
            attributes=span.attributes,
            # An event (an evaluation, an exception) is dated at the span's end.
            events=[Event(e.name, e.attributes, end) for e in span.events],
            links=span.links,
            kind=span.kind,
            status=span.status,
            start_time=start,
            end_time=end,
            instrumentation_scope=span.instrumentation_scope,
        )

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self.inner.export([self._timed(s) for s in spans])

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)
