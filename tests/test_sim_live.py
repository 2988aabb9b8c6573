"""Tests of the simulator's live mode (``sentinel.sim.live``): a live run delivers to a real
daemon exactly the spans case mode makes, each once it has ended on the shared clock; its
``/metrics`` is Prometheus text with the case's families; refusals are retried until every
batch lands once; an unreachable or refusing endpoint ends the run with a clear error;
``simulate --live`` on the command line.

What must not live here: the simulation itself (``test_sim.py``) or the receiver
(``test_receiver.py``).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import Result
from google.rpc import status_pb2  # type: ignore[import-untyped]
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from prometheus_client.parser import text_string_to_metric_families

from sentinel.adapters.otlp import decode_protobuf
from sentinel.cases import FaultKind
from sentinel.cli import app
from sentinel.clock import Clock, ScaledClock, SystemClock
from sentinel.sim import (
    FaultSpec,
    LiveExportError,
    LiveReport,
    LiveRun,
    RetryPolicy,
    Topology,
    simulate_case,
)
from sentinel.sim.live import traces_url
from sentinel.sim.output import METRIC_TYPES
from sentinel.telemetry import Span
from tests.harness import make_settings, running_daemon

# The shortest window a case may have; ~470 spans in support's sampled traces.
SPEC = FaultSpec(topology=Topology.SUPPORT, fault=FaultKind.PROMPT_REGRESSION, seed=3, minutes=10)
FAST = RetryPolicy(attempts=3, backoff=0.05, max_wait=2.0, timeout=2.0)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
CLI_ENV = {
    "COLUMNS": "250",
    "NO_COLOR": "1",
    "SENTINEL_CONFIG": None,
    "SENTINEL_INGEST_TOKEN": None,
}


def ns(t: datetime) -> int:
    return (t - EPOCH) // timedelta(microseconds=1) * 1000


def scaled(speed: float) -> ScaledClock:
    return ScaledClock(SystemClock().now(), speed)


def key(s: Span) -> tuple[Any, ...]:
    return (s.trace_id, s.span_id, s.parent_span_id, s.name, s.start_ns, s.end_ns, s.component)


class Background:
    """``live.run()`` in a thread; ``join()`` returns its report or raises its error."""

    def __init__(self, live: LiveRun, progress: list[LiveReport] | None = None) -> None:
        self.box: list[LiveReport | BaseException] = []
        self.thread = threading.Thread(target=self._work, args=(live, progress))
        self.thread.start()

    def _work(self, live: LiveRun, progress: list[LiveReport] | None) -> None:
        try:
            self.box.append(live.run(on_progress=None if progress is None else progress.append))
        except BaseException as e:  # noqa: BLE001  # re-raised in the test thread
            self.box.append(e)

    def join(self) -> LiveReport:
        self.thread.join(30)
        assert not self.thread.is_alive(), "the live run did not end"
        if isinstance(self.box[0], BaseException):
            raise self.box[0]
        return self.box[0]


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = httpx.get(f"http://127.0.0.1:{port}/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(r.text):
        assert family.type == METRIC_TYPES[family.name], family.name
        for s in family.samples:
            values[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return values


# --- against a real daemon ------------------------------------------------------------------


def test_a_live_run_gives_the_daemon_the_spans_of_case_mode_and_serves_metrics(
    tmp_path: Path,
) -> None:
    clock = scaled(150)  # 10 simulated minutes in 4 s
    progress: list[LiveReport] = []
    with running_daemon(make_settings(tmp_path), clock=clock) as daemon:
        live = LiveRun(SPEC, clock, daemon.url, metrics_port=0, export_interval=0.5)
        assert live.metrics_port
        run = Background(live, progress)
        first = scrape(live.metrics_port)
        time.sleep(1.0)  # 150 simulated seconds: 10 metric steps
        second = scrape(live.metrics_port)
        assert httpx.get(f"http://127.0.0.1:{live.metrics_port}/other").status_code == 404
        report = run.join()
        stored = daemon.store.spans(live.start - timedelta(hours=1), live.end + timedelta(hours=1))

    case = simulate_case(live.spec)
    assert live.spec.start == live.start == case.meta.start
    assert live.start.microsecond == 0
    assert case.truth is not None and report.fault_start == case.truth.fault_start
    assert sorted(map(key, stored)) == sorted(map(key, case.spans))
    assert report.spans_sent == report.spans_total == len(case.spans) > 0
    assert (report.spans_failed, report.spans_rejected, report.retries) == (0, 0, 0)
    assert not report.stopped and report.at >= live.end
    assert all(s.start_ns >= ns(live.start) and s.end_ns <= ns(report.at) for s in stored)
    # Spans went out as they ended, over the run, not all at once.
    assert report.batches >= 4
    sent = [p.spans_sent for p in progress]
    assert sent == sorted(sent) and 0 < sent[len(sent) // 2] < len(case.spans)
    # Reports before the fault and after it (how many of each depends on how busy the
    # machine is: export ticks are real-time).
    assert [p.fault_started for p in progress].count(False) >= 1
    assert progress[-1].fault_started

    # /metrics holds every series of the case, each at a value the case has for it.
    series: dict[tuple[str, tuple[tuple[str, str], ...]], set[float]] = {}
    for s in case.samples:
        series.setdefault((s.metric, s.labels), set()).add(s.value)
    assert set(first) == set(second) == set(series)
    assert all(v in series[k] for k, v in (*first.items(), *second.items()))
    counters = [k for k in first if k[0].endswith(("_total", "_count", "_sum", "_bucket"))]
    assert all(second[k] >= first[k] for k in counters)
    assert any(second[k] > first[k] for k in counters)
    # The server is closed with the run.
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{live.metrics_port}/metrics")


# --- against a scripted endpoint ----------------------------------------------------------


@dataclass
class Received:
    real: float  # time.monotonic() on arrival
    clock: datetime
    status: int
    headers: dict[str, str]
    body: bytes
    spans: list[Span] = field(default_factory=list)


@dataclass
class Endpoint:
    url: str
    received: list[Received]

    def accepted(self) -> list[Span]:
        return [s for r in self.received if r.status == 200 for s in r.spans]


@contextmanager
def scripted_endpoint(
    clock: Clock, answers: list[tuple[int, dict[str, str]]]
) -> Iterator[Endpoint]:
    """An OTLP/HTTP endpoint answering its first requests with ``answers`` (status,
    headers; a ``google.rpc.Status`` body), then 200 to every request."""
    endpoint = Endpoint("", [])
    script = list(answers)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            status, headers = script.pop(0) if script else (200, {})
            received = Received(time.monotonic(), clock.now(), status, dict(self.headers), body)
            if status == 200:
                received.spans = decode_protobuf(body).spans
                reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
            else:
                reply = status_pb2.Status(code=8, message="come back later").SerializeToString()
            endpoint.received.append(received)
            self.send_response(status)
            for name, value in {"Content-Type": "application/x-protobuf", **headers}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    endpoint.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield endpoint
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_refused_batches_are_sent_again_until_each_lands_once() -> None:
    clock = scaled(400)
    answers = [(429, {"Retry-After": "1"}), (503, {})]
    with scripted_endpoint(clock, answers) as endpoint:
        live = LiveRun(SPEC, clock, endpoint.url, token="s3cret", export_interval=0.2, retry=FAST)
        report = live.run()

    case = simulate_case(live.spec)
    ids = Counter((s.trace_id, s.span_id) for s in endpoint.accepted())
    assert set(ids) == {(s.trace_id, s.span_id) for s in case.spans}
    assert set(ids.values()) == {1}
    assert (report.spans_sent, report.retries, report.spans_failed) == (len(case.spans), 2, 0)
    assert report.batches == sum(r.status == 200 for r in endpoint.received)
    first, second, third = endpoint.received[:3]
    assert [first.status, second.status, third.status] == [429, 503, 200]
    assert second.real - first.real >= 0.95  # Retry-After: 1
    assert third.real - second.real < 0.9  # no Retry-After: the backoff
    assert first.body == second.body == third.body  # the same batch, taken once
    assert first.spans == second.spans == [] and third.spans
    for r in endpoint.received:
        assert r.headers["Content-Type"] == "application/x-protobuf"
        assert r.headers["Authorization"] == "Bearer s3cret"
        # Each span is sent once its end has passed on the clock.
        assert all(s.end_ns <= ns(r.clock) for s in r.spans)


def test_an_endpoint_refusing_for_good_ends_the_run_with_the_reason() -> None:
    clock = scaled(600)
    with scripted_endpoint(clock, [(401, {})]) as endpoint:
        live = LiveRun(SPEC, clock, endpoint.url, export_interval=0.1, retry=FAST)
        with pytest.raises(LiveExportError) as caught:
            live.run()
    message = str(caught.value)
    assert "HTTP 401: come back later" in message and endpoint.url in message
    assert caught.value.report.spans_sent == 0
    assert caught.value.report.spans_failed > 0
    assert len(endpoint.received) == 1  # not retried


def test_an_unreachable_endpoint_fails_after_bounded_retries() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    live = LiveRun(
        SPEC,
        scaled(600),
        f"http://127.0.0.1:{port}",
        metrics_port=0,
        export_interval=0.1,
        retry=FAST,
    )
    metrics_port = live.metrics_port
    t0 = time.monotonic()
    with pytest.raises(LiveExportError) as caught:
        live.run()
    assert time.monotonic() - t0 < 5
    message = str(caught.value)
    assert f"http://127.0.0.1:{port}/v1/traces" in message
    assert "after 3 attempts (ConnectError" in message
    report = caught.value.report
    assert report.spans_sent == 0 and report.spans_failed > 0 and report.retries == 2
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{metrics_port}/metrics")


def test_stop_ends_the_run_early_and_cleanly() -> None:
    clock = scaled(1)
    stop = threading.Event()
    with scripted_endpoint(clock, []) as endpoint:
        live = LiveRun(SPEC, clock, endpoint.url, metrics_port=0, stop=stop)
        run = Background(live)
        assert scrape(live.metrics_port or 0)
        t0 = time.monotonic()
        stop.set()
        report = run.join()
    assert time.monotonic() - t0 < 2
    assert report.stopped and report.spans_unsent > 0 and report.at < live.end
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{live.metrics_port}/metrics")


@pytest.mark.parametrize("endpoint", ["localhost:4318", "127.0.0.1:4318", "ftp://h", "http://"])
def test_an_endpoint_that_is_no_http_url_is_refused(endpoint: str) -> None:
    with pytest.raises(ValueError, match="is not an http"):
        LiveRun(SPEC, scaled(1), endpoint)


@pytest.mark.parametrize(
    ("endpoint", "url"),
    [
        ("http://h:4318", "http://h:4318/v1/traces"),
        ("http://h:4318/", "http://h:4318/v1/traces"),
        ("https://h/otlp", "https://h/otlp/v1/traces"),
        ("http://h:4318/v1/traces", "http://h:4318/v1/traces"),
    ],
)
def test_traces_url(endpoint: str, url: str) -> None:
    assert traces_url(endpoint) == url


# --- the command line ---------------------------------------------------------------------


def invoke(*args: str) -> Result:
    from typer.testing import CliRunner

    return CliRunner().invoke(app, list(args), env=CLI_ENV)


def sim_args(*extra: str) -> list[str]:
    spec = ["--topology", "support", "--fault", "prompt_regression", "--seed", "3"]
    return ["simulate", *spec, "--minutes", "10", *extra]


def test_simulate_live_plays_the_case_to_a_daemon(tmp_path: Path) -> None:
    with running_daemon(make_settings(tmp_path)) as daemon:
        result = invoke(*sim_args("--live", "--endpoint", daemon.url, "--speed", "400"))
        count = daemon.store.span_count()
    assert result.exit_code == 0, (result.output, result.exception)
    truth = json.loads(result.stdout.splitlines()[0])
    start = datetime.fromisoformat(truth["start"])
    case = simulate_case(replace(SPEC, start=start))
    assert case.truth is not None
    assert truth["fault_start"] == case.truth.fault_start.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert (truth["target"], truth["root_cause"]) == ("agent:support-agent", case.truth.root_cause)
    assert truth["endpoint"] == f"{daemon.url}/v1/traces"
    assert truth["case"] == case.meta.id and truth["metrics"] is None
    n = len(case.spans)
    assert count == n
    assert "live run done at" in result.stdout and f"{n}/{n} spans sent" in result.stdout
    assert "fault started on agent:support-agent" in result.output
    assert "400x" in result.output  # the note on simulated time


def test_simulate_needs_out_in_case_mode() -> None:
    result = invoke(*sim_args())
    assert result.exit_code == 2
    assert "simulate needs --out DIR" in result.output and "Traceback" not in result.output


def test_simulate_live_refuses_out_and_bad_endpoints(tmp_path: Path) -> None:
    both = invoke(*sim_args("--live", "--out", str(tmp_path / "c")))
    assert both.exit_code == 2 and "--out" in both.output
    bad = invoke(*sim_args("--live", "--endpoint", "localhost:4318"))
    assert bad.exit_code == 2
    assert "endpoint 'localhost:4318' is not an http(s) URL" in " ".join(bad.output.split())


def test_simulate_names_the_bad_choice_and_the_valid_ones() -> None:
    fault = invoke("simulate", "--topology", "support", "--fault", "nope", "--seed", "1", "--live")
    text = " ".join(fault.output.split())
    assert fault.exit_code == 2 and "Traceback" not in text
    assert "--fault 'nope' is not one of:" in text and "prompt_regression" in text
    topo = invoke(
        "simulate", "--topology", "mesh", "--fault", "tool_errors", "--seed", "1", "--live"
    )
    text = " ".join(topo.output.split())
    assert topo.exit_code == 2 and "--topology 'mesh' is not one of:" in text
    assert "multi_agent" in text
