"""Live mode of the simulator: a simulated fleet played in real or accelerated time
against a running sentinel daemon, as a real fleet would feed it.

``LiveRun(spec, clock, endpoint)`` generates the case of ``spec`` up front with
``simulate_case`` (a 50-minute case is a few MB), starting at the clock's now aligned down
to a whole second, so it sends exactly the spans case mode writes for that start; the
fault comes at the plan's usual offset. ``run()`` blocks (run it in a thread to stop it):

* every ``export_interval`` real seconds it POSTs the spans that have ended on the clock
  to ``{endpoint}/v1/traces`` as protobuf OTLP/HTTP, at most ``max_batch`` per request. A
  batch refused with 429/502/503/504 (after Retry-After) or lost to a connection error
  (after a doubling backoff) is sent again, whole, before any later one; after
  ``RetryPolicy.attempts`` failures in a row, or at once on any other answer, it raises
  ``LiveExportError``, whose report counts what got through.
* with a ``metrics_port`` (0: any free one), it serves ``/metrics`` in the Prometheus text
  format: every series at its latest sample at or before the clock's now, without
  timestamps, so Prometheus stamps scrapes with real time, which with a speed above 1 is
  not the simulated time.
* it ends once the window is over on the clock and the spans in flight at its end have
  been sent, or when stopped: what has ended is sent, the metrics server is closed.

What must not live here: the simulation (``engine``, ``output``) or the OTLP codec.
"""

from __future__ import annotations

import bisect
import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
from google.protobuf.message import DecodeError
from google.rpc import status_pb2  # type: ignore[import-untyped]
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from sentinel.adapters.otlp import encode_protobuf
from sentinel.clock import Clock
from sentinel.errors import SimulationError
from sentinel.sim.faults import FaultSpec, plan_fault
from sentinel.sim.output import METRIC_TYPES, simulate_case
from sentinel.telemetry import Sample, Span

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_RETRYABLE = frozenset({429, 502, 503, 504})
_SUFFIXES = ("_total", "_bucket", "_count", "_sum")


class LiveExportError(SimulationError):
    """The daemon refused spans, or stayed unreachable; ``report`` says what got through."""

    def __init__(self, message: str, report: LiveReport) -> None:
        super().__init__(message)
        self.report = report


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 6  # failed sends of one batch in a row before giving up
    backoff: float = 0.25  # real seconds before the 2nd send, doubling after each failure
    max_wait: float = 30.0  # cap on one wait, Retry-After included
    timeout: float = 10.0  # per request


@dataclass(frozen=True, slots=True)
class LiveReport:
    start: datetime  # the simulated window, on the clock
    end: datetime
    fault_start: datetime
    target: str  # the component the fault hits (its root cause may be a prompt or config)
    root_cause: str
    spans_total: int
    spans_sent: int
    spans_rejected: int  # sent but refused one by one (the daemon's partial_success)
    spans_failed: int  # in a batch given up on
    batches: int  # requests answered 200
    retries: int  # sends repeated after a refusal or connection error
    at: datetime  # clock time of the report (the run's end, for the last one)
    stopped: bool  # not every span sent (yet, for progress reports)

    @property
    def spans_unsent(self) -> int:
        return self.spans_total - self.spans_sent - self.spans_failed

    @property
    def fault_started(self) -> bool:
        return self.at >= self.fault_start


class LiveRun:
    """One live simulation; see the module docstring. Use as a context manager, or call
    ``run()`` (which closes everything when it returns) after constructing it."""

    def __init__(
        self,
        spec: FaultSpec,
        clock: Clock,
        endpoint: str,
        *,
        token: str | None = None,
        metrics_port: int | None = None,
        metrics_host: str = "127.0.0.1",
        stop: threading.Event | None = None,
        export_interval: float = 1.0,
        max_batch: int = 2000,
        retry: RetryPolicy = RetryPolicy(),
    ) -> None:
        self.url = traces_url(endpoint)
        if not export_interval > 0 or max_batch < 1 or retry.attempts < 1:
            raise ValueError(
                f"export_interval={export_interval!r}, max_batch={max_batch!r}, "
                f"retry.attempts={retry.attempts!r}: all must be positive"
            )
        self.clock = clock
        self.export_interval = export_interval
        self.max_batch = max_batch
        self.retry = retry
        self.spec = replace(spec, start=clock.now().astimezone(UTC).replace(microsecond=0))
        # simulate_case draws the plan first from the same generator: the same target.
        self.target = plan_fault(self.spec, random.Random(self.spec.seed)).target  # noqa: S311
        case = simulate_case(self.spec)
        assert case.truth is not None
        self.truth = case.truth
        self.case_id = case.meta.id
        self.start, self.end = case.meta.start, case.meta.end
        self._spans = sorted(case.spans, key=_end_ns)
        self._metrics = _Exposition(case.samples) if metrics_port is not None else None
        del case  # the samples live on in the exposition's arrays only
        self._stop = stop or threading.Event()
        self._headers = {"Content-Type": "application/x-protobuf"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._cursor = self._sent = self._rejected = self._failed = 0
        self._batches = self._retries = 0
        self._server: ThreadingHTTPServer | None = None
        self._server_thread: threading.Thread | None = None
        self.metrics_port: int | None = None  # the bound one when 0 was asked for
        if self._metrics is not None:
            self._server = ThreadingHTTPServer(
                (metrics_host, metrics_port or 0), _handler(self._metrics, clock)
            )
            self._server.daemon_threads = True
            self.metrics_port = int(self._server.server_address[1])
            self._server_thread = threading.Thread(
                target=self._server.serve_forever, name="sim-metrics", daemon=True
            )
            self._server_thread.start()

    def stop(self) -> None:
        """Ask ``run()`` to send what has ended and return (from any thread)."""
        self._stop.set()

    def run(self, *, on_progress: Callable[[LiveReport], None] | None = None) -> LiveReport:
        """Play the case; ``on_progress`` gets a report after each export tick."""
        try:
            with httpx.Client(timeout=self.retry.timeout, headers=self._headers) as client:
                while True:
                    now = self.clock.now()
                    self._export_due(client, _ns(now))
                    if on_progress is not None:
                        on_progress(self.report(now))
                    over = now >= self.end and self._cursor == len(self._spans)
                    if over or self._stop.is_set():
                        return self.report(now)
                    self._stop.wait(self.export_interval)
        finally:
            self.close()

    def report(self, now: datetime | None = None) -> LiveReport:
        return LiveReport(
            start=self.start,
            end=self.end,
            fault_start=self.truth.fault_start,
            target=self.target,
            root_cause=self.truth.root_cause,
            spans_total=len(self._spans),
            spans_sent=self._sent,
            spans_rejected=self._rejected,
            spans_failed=self._failed,
            batches=self._batches,
            retries=self._retries,
            at=now or self.clock.now(),
            stopped=self._cursor < len(self._spans),
        )

    def close(self) -> None:
        """Close the metrics server and join its thread (idempotent)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._server_thread is not None:
            self._server_thread.join()
            self._server_thread = None

    def __enter__(self) -> LiveRun:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _export_due(self, client: httpx.Client, now_ns: int) -> None:
        due = bisect.bisect_right(self._spans, now_ns, key=_end_ns)
        while self._cursor < due:
            hi = min(due, self._cursor + self.max_batch)
            if not self._send(client, self._spans[self._cursor : hi]):
                return  # stopped while waiting to retry: the batch stays unsent
            self._cursor = hi

    def _send(self, client: httpx.Client, batch: Sequence[Span]) -> bool:
        """Send ``batch`` until the daemon takes it (True) or the run is stopped (False);
        raise ``LiveExportError`` when giving up."""
        body = encode_protobuf(batch)
        backoff = self.retry.backoff
        for attempt in range(1, self.retry.attempts + 1):
            try:
                r = client.post(self.url, content=body)
            except httpx.TransportError as e:
                why, hint = f"{type(e).__name__}: {e}", None
            else:
                if r.status_code == 200:
                    self._sent += len(batch)
                    self._rejected += _rejected(r.content)
                    self._batches += 1
                    return True
                why = f"HTTP {r.status_code}: {_message(r)}"
                if r.status_code not in _RETRYABLE:
                    self._failed += len(batch)
                    raise LiveExportError(
                        f"{self.url!r} refused a batch of {len(batch)} spans ({why}); "
                        f"{self._sent} of {len(self._spans)} spans were sent",
                        self.report(),
                    )
                hint = _retry_after(r.headers.get("retry-after"))
            if attempt == self.retry.attempts:
                break
            self._retries += 1
            if self._stop.wait(min(self.retry.max_wait, backoff if hint is None else hint)):
                return False
            backoff *= 2
        self._failed += len(batch)
        raise LiveExportError(
            f"gave up sending spans to {self.url!r} after {self.retry.attempts} attempts "
            f"({why}); {self._sent} of {len(self._spans)} spans were sent",
            self.report(),
        )


def run_live(
    spec: FaultSpec,
    clock: Clock,
    endpoint: str,
    *,
    metrics_port: int | None = None,
    token: str | None = None,
    on_progress: Callable[[LiveReport], None] | None = None,
    stop: threading.Event | None = None,
) -> LiveReport:
    """``LiveRun(...).run()`` in one call (blocking)."""
    live = LiveRun(spec, clock, endpoint, token=token, metrics_port=metrics_port, stop=stop)
    return live.run(on_progress=on_progress)


def traces_url(endpoint: str) -> str:
    """``{endpoint}/v1/traces`` (an endpoint already ending so is taken as is); raises
    ``ValueError`` for anything but an absolute http(s) URL."""
    try:
        url = httpx.URL(endpoint)
    except httpx.InvalidURL as e:
        raise ValueError(f"endpoint {endpoint!r} is not a URL: {e}") from e
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(f"endpoint {endpoint!r} is not an http(s) URL like http://host:4318")
    path = url.path.rstrip("/")
    return str(url.copy_with(path=path if path.endswith("/v1/traces") else path + "/v1/traces"))


def _end_ns(span: Span) -> int:
    return span.end_ns


def _ns(t: datetime) -> int:
    return (t - _EPOCH) // timedelta(microseconds=1) * 1000


def _retry_after(value: str | None) -> float | None:
    # Seconds only: an HTTP-date would need the real wall clock; the backoff stands in.
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _message(r: httpx.Response) -> str:
    try:
        text = str(status_pb2.Status.FromString(r.content).message) or r.text
    except DecodeError:
        text = r.text
    text = " ".join(text.split())
    return text if len(text) <= 200 else text[:200] + "..."


def _rejected(body: bytes) -> int:
    try:
        response = trace_service_pb2.ExportTraceServiceResponse.FromString(body)
    except DecodeError:
        return 0
    return int(response.partial_success.rejected_spans)


class _Exposition:
    """The case's series, compact (one shared tuple of times, one tuple of values each),
    and their values at a time as Prometheus text."""

    def __init__(self, samples: Sequence[Sample]) -> None:
        grouped: dict[tuple[str, str], dict[str, tuple[list[float], list[float]]]] = {}
        for s in samples:
            type_name, kind = _family(s.metric)
            line = s.metric + _labels(s.labels)
            times, values = grouped.setdefault((type_name, kind), {}).setdefault(line, ([], []))
            times.append((s.time - _EPOCH).total_seconds())
            values.append(s.value)
        shared: dict[tuple[float, ...], tuple[float, ...]] = {}
        self.families = [
            (
                f"# HELP {type_name} Simulated by sentinel.\n# TYPE {type_name} {kind}\n",
                [
                    (line, shared.setdefault(tuple(times), tuple(times)), tuple(values))
                    for line, (times, values) in sorted(series.items())
                ],
            )
            for (type_name, kind), series in sorted(grouped.items())
        ]

    def at(self, now: datetime) -> str:
        t = (now - _EPOCH).total_seconds()
        out: list[str] = []
        for header, series in self.families:
            out.append(header)
            for line, times, values in series:
                i = bisect.bisect_right(times, t) - 1
                if i >= 0:
                    out.append(f"{line} {values[i]!r}\n")
        return "".join(out)


def _family(metric: str) -> tuple[str, str]:
    """The name a ``# TYPE`` line gives ``metric``'s family in format 0.0.4, and its type
    (counters are named with ``_total`` there)."""
    if metric in METRIC_TYPES:
        return metric, METRIC_TYPES[metric]
    for suffix in _SUFFIXES:
        base = metric.removesuffix(suffix)
        if base != metric and base in METRIC_TYPES:
            kind = METRIC_TYPES[base]
            return (metric if kind == "counter" else base), kind
    return metric, "untyped"


def _labels(labels: tuple[tuple[str, str], ...]) -> str:
    if not labels:
        return ""
    escaped = (
        (k, v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")) for k, v in labels
    )
    return "{" + ",".join(f'{k}="{v}"' for k, v in escaped) + "}"


def _handler(exposition: _Exposition, clock: Clock) -> type[BaseHTTPRequestHandler]:
    class MetricsHandler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404, "only /metrics is served here")
                return
            body = exposition.at(clock.now()).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # one stderr line per scrape otherwise

    return MetricsHandler
