"""Faults survived (issue 10), each injected for real on this machine: a real Prometheus
stopped or slowed past its timeout (a loopback proxy in front of it), the real PostgreSQL
restarted under OTLP load, the git remote gone during a rollback, and SQLite's disk full
(a small tmpfs). Each must give a clear log line and a /metrics counter, no crash and no
lost data, and the product carries on once the fault is gone.

What must not live here: the adapters' own failure contracts, tested where they live
(tests/test_prometheus.py, test_span_writer.py, test_executors.py, test_daemon.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from structlog.testing import capture_logs

from sentinel.adapters.db import open_store
from sentinel.adapters.executors import Executor, GitOps, MemoryNotifier
from sentinel.adapters.prometheus import prometheus_from_settings
from sentinel.agents.metric import MetricAgent
from sentinel.agents.remediation import MAX_ATTEMPTS, RemediationAgent, RemediationEvent
from sentinel.clock import FakeClock
from sentinel.incidents import IncidentStatus
from sentinel.observability import SelfMetrics
from sentinel.openmetrics import write_openmetrics
from sentinel.remediation import ActionState
from sentinel.telemetry import Sample
from tests.fixtures.postgres import PostgresServer
from tests.fixtures.prometheus import PrometheusServer
from tests.harness import make_settings as daemon_settings
from tests.harness import running_daemon
from tests.test_daemon import _request, _stored_traces
from tests.test_receiver import PB
from tests.test_remediation_agent import (
    PROMPT_GOOD,
    T0,
    Daemon,
    bundled,
    events,
    latency,
    make_remote,
    make_settings,
    seed_incident,
)

# --- the git remote unreachable during a rollback -----------------------------------------


def counted(metrics: SelfMetrics, event: str) -> float:
    total = 0.0
    for family in metrics.registry.collect():
        if family.name == "sentinel_remediation_events":
            for s in family.samples:
                if s.name.endswith("_total") and s.labels["event"] == event:
                    total += s.value
    return total


class Remediation(Daemon):
    metrics: SelfMetrics


@pytest.fixture
def rollback(tmp_path: Path) -> Iterator[tuple[Remediation, list[str]]]:
    """The Remediation Agent of a daemon on a real git remote whose path is renamed away
    right after sentinel commits its revert (before the push): the fault of a rollback
    the remote dropped in the middle. Yields it and the commits made."""
    remote = make_remote(tmp_path)
    made: list[str] = []

    def remote_goes_away(sha: str) -> None:
        made.append(sha)
        if remote.path.exists():
            remote.path.rename(tmp_path / "away.git")

    s = make_settings(tmp_path, remote)
    clock = FakeClock(T0)
    store = open_store("sqlite:///" + str(tmp_path / "sentinel.db"), clock)
    notifier = MemoryNotifier()
    gitops = GitOps(
        s.remediation, s.changes.repos, tmp_path / "gitops", clock, after_commit=remote_goes_away
    )
    executor = Executor(gitops, notifier)
    metrics = SelfMetrics()
    agent = RemediationAgent(
        s, store, executor, notifier, clock, playbooks=bundled(), metrics=metrics
    )
    d = Remediation(tmp_path, remote, s, store, notifier, agent, executor)
    d.metrics = metrics
    try:
        yield d, made
    finally:
        executor.close()
        store.close()


def test_a_rollback_whose_remote_vanished_is_not_applied_is_told_and_pushed_once_when_back(
    rollback: tuple[Remediation, list[str]],
) -> None:
    world, made = rollback
    inc = seed_incident(world.store, world.remote, 0.95)
    before = world.remote.commits()
    now = T0 + timedelta(minutes=3)
    with capture_logs() as logs:
        run = world.agent.run_once([inc], latency(now, now), now)

    assert run.applied == [] and len(made) == 1  # committed locally, the push failed
    (record,) = world.store.actions("inc-1")
    assert record.state is ActionState.RUNNING and "rollback" not in record.results
    assert events(world.store)[-1] == RemediationEvent.STEP_FAILED
    (line,) = [e for e in logs if e["event"] == "remediation step failed; retried next run"]
    assert line["log_level"] == "warning" and line["step"] == "rollback"
    assert line["attempt"] == 1 and "push" in line["error"]
    assert counted(world.metrics, "step_failed") == 1
    assert counted(world.metrics, "action_applied") == 0
    told = [m for _, m, _ in world.notifier.sent]
    assert any("'rollback' failed and is NOT applied (attempt 1 of" in m for m in told)
    assert not any("applied for the incident" in m for m in told)

    # The remote is back: the commit already made is pushed, not a second revert.
    (world.root / "away.git").rename(world.remote.path)
    later = now + timedelta(minutes=1)
    run = world.agent.run_once([inc], latency(now, later), later)
    assert run.applied == ["inc-1/rollback-bad-change"]
    assert world.remote.commits()[: len(made)] == made
    assert len(world.remote.commits()) == len(before) + 1
    assert world.remote.show("prompts/support.md") == PROMPT_GOOD
    # And never again, whatever runs next.
    for minutes in (2, 3):
        world.agent.run_once([inc], latency(now, later), now + timedelta(minutes=minutes))
    assert len(world.remote.commits()) == len(before) + 1
    assert counted(world.metrics, "action_applied") == 1
    assert events(world.store).count(RemediationEvent.APPLIED) == 1


def test_a_remote_that_stays_away_fails_the_action_and_escalates_it(
    rollback: tuple[Remediation, list[str]],
) -> None:
    world, made = rollback
    inc = seed_incident(world.store, world.remote, 0.95)
    now = T0 + timedelta(minutes=3)
    with capture_logs() as logs:
        for attempt in range(MAX_ATTEMPTS):
            world.agent.run_once([inc], latency(now, now), now + timedelta(minutes=attempt))

    (record,) = world.store.actions("inc-1")
    assert record.state is ActionState.FAILED and "rollback" not in record.results
    assert len(made) == 1  # one local commit, never a second one
    assert counted(world.metrics, "step_failed") == MAX_ATTEMPTS - 1
    assert counted(world.metrics, "action_failed") == 1
    assert [e["event"] for e in logs if e["log_level"] == "error"] == ["remediation failed"]
    escalations = [m for _, m, escalate in world.notifier.sent if escalate]
    assert escalations and "FAILED" in escalations[-1] and "agent-config" in escalations[-1]
    assert not world.remote.path.exists()


# --- the disk full for SQLite ---------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 3 MiB tmpfs: SQLite's disk, filled for real."""
    where = tmp_path / "disk"
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs at {where} (needs root): {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        # Lazy: the daemon's writer process may still hold the database open.
        subprocess.run(["umount", "-l", str(where)], check=False)


def metric(text: str, name: str) -> float:
    """The value of one sample line of /metrics (0 when absent)."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def ready(client: httpx.Client, url: str) -> None:
    """Wait until the daemon stores spans (its writer process is up): a request retried
    until it is acknowledged, as an exporter would."""
    body, _ = _request(1)
    for _ in range(100):
        if client.post(url, content=body, headers=PB).status_code == 200:
            return
        time.sleep(0.1)
    pytest.fail(f"{url} never stored a span")


def test_a_full_disk_refuses_spans_it_cannot_store_and_stores_again_once_space_is_freed(
    small_disk: Path,
) -> None:
    # Room for the store to start; 1 MiB of it given back once the disk is full.
    ballast = small_disk / "ballast"
    ballast.write_bytes(os.urandom(1024 * 1024))
    settings = daemon_settings(
        small_disk,
        ingest={"write_batch_spans": 200, "ack_timeout_seconds": 1.0, "retry_after_seconds": 4},
    )
    acked: list[str] = []
    refused: list[str] = []
    with capture_logs() as logs, running_daemon(settings) as d:
        url = f"{d.url}/v1/traces"
        with httpx.Client(timeout=30) as client:
            ready(client, url)
            for _ in range(2000):  # the 2 MiB left fill within a few dozen requests
                body, trace = _request(100)
                r = client.post(url, content=body, headers=PB)
                if r.status_code == 200:
                    acked.append(trace)
                    continue
                assert r.status_code == 503 and r.headers["retry-after"] == "4"
                refused.append(trace)
                if len(refused) == 3:
                    break
            assert len(refused) == 3, "the disk never filled up"
            # Every span acknowledged so far is in the store, with the disk full now.
            stored = _stored_traces(d.store)
            assert {t: stored.get(t) for t in acked} == dict.fromkeys(acked, 100)
            text = client.get(f"{d.url}/metrics").text
            assert metric(text, 'sentinel_store_errors_total{op="write_spans"}') >= 1
            assert metric(text, 'sentinel_ingest_requests_total{code="503"}') >= 3
            assert client.get(f"{d.url}/readyz").status_code == 503

            ballast.unlink()
            # The queued batch is written on a retry; new spans are taken again.
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                body, trace = _request(100)
                if client.post(url, content=body, headers=PB).status_code == 200:
                    acked.append(trace)
                    break
                time.sleep(0.2)
            else:
                pytest.fail("no span was stored again after space was freed")
            stored = _stored_traces(d.store)
    assert {t: stored.get(t) for t in acked} == dict.fromkeys(acked, 100)
    failed = [e for e in logs if e["event"] == "store write failed; spans kept in the queue"]
    assert failed and "full" in failed[0]["error"]
    assert any(e["event"] == "store writes recovered" for e in logs)


# --- PostgreSQL restarted under load ---------------------------------------------------------


@dataclass
class Load:
    """OTLP exporters on threads, each sending requests of ``spans`` spans (one trace
    each) until stopped, at most ``max_requests`` each; what each request got is kept."""

    url: str
    spans: int = 20
    senders: int = 3
    max_requests: int = 5000
    stop: threading.Event = field(default_factory=threading.Event)
    answers: list[tuple[str, int, str | None]] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        self._threads = [threading.Thread(target=self._send) for _ in range(self.senders)]
        for t in self._threads:
            t.start()

    def _send(self) -> None:
        try:
            with httpx.Client(timeout=60) as client:
                for _ in range(self.max_requests):
                    if self.stop.is_set():
                        return
                    body, trace = _request(self.spans)
                    r = client.post(self.url, content=body, headers=PB)
                    with self._lock:
                        self.answers.append((trace, r.status_code, r.headers.get("retry-after")))
                    if r.status_code != 200:
                        time.sleep(0.05)  # an exporter backs off
        except BaseException as e:  # noqa: BLE001  # reported by the test
            self.errors.append(e)

    def count(self, code: int) -> int:
        with self._lock:
            return sum(1 for _, c, _ in self.answers if c == code)

    def wait_for(self, code: int, n: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while self.count(code) < n:
            assert not self.errors, self.errors
            if time.monotonic() > deadline:
                pytest.fail(f"fewer than {n} answers {code} within {timeout} s: {self.count(code)}")
            time.sleep(0.05)

    def finish(self) -> None:
        self.stop.set()
        for t in self._threads:
            t.join(120)
        assert not any(t.is_alive() for t in self._threads)
        assert not self.errors, self.errors


def agent_runs(url: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    return metric(text, 'sentinel_metric_agent_runs_total{outcome="ok"}')


@pytest.mark.postgres
def test_postgres_restarted_under_load_refuses_while_down_and_loses_no_acknowledged_span(
    postgres_server: PostgresServer,
    postgres_url: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = daemon_settings(
        tmp_path,
        postgres_url,
        ingest={"write_batch_spans": 200, "ack_timeout_seconds": 1.0, "retry_after_seconds": 2},
        # The Metric Agent runs often, so that it meets the outage.
        detection={"interval_seconds": 0.2, "step_seconds": 1.0, "ingest_lag_seconds": 0.0},
    )
    caplog.set_level(logging.ERROR, logger="apscheduler")
    with capture_logs() as logs, running_daemon(settings) as d:
        url = f"{d.url}/v1/traces"
        with httpx.Client(timeout=30) as client:
            ready(client, url)
        load = Load(url)
        load.start()
        try:
            load.wait_for(200, 20)

            def outage() -> None:
                load.wait_for(503, 3)  # refused while the store is down

            postgres_server.restart(while_down=outage)
            ok_runs = agent_runs(d.url)
            acked_before = load.count(200)
            load.wait_for(200, acked_before + 20)  # ingest resumes
        finally:
            load.finish()
        deadline = time.monotonic() + 60
        while agent_runs(d.url) <= ok_runs and time.monotonic() < deadline:
            time.sleep(0.1)
        assert agent_runs(d.url) > ok_runs, "the Metric Agent did not run again after the outage"
        text = httpx.get(f"{d.url}/metrics").text
        stored = _stored_traces(d.store)

    acked = [t for t, code, _ in load.answers if code == 200]
    refused = [(code, ra) for _, code, ra in load.answers if code != 200]
    # Every span acknowledged with 200 is in the store, all of each request.
    assert {t: stored.get(t) for t in acked} == dict.fromkeys(acked, load.spans)
    # Refused with 503 (store down) or 429, always with Retry-After; never another answer.
    assert refused and all(code in (429, 503) and ra == "2" for code, ra in refused)
    assert metric(text, 'sentinel_store_errors_total{op="write_spans"}') >= 1
    assert metric(text, 'sentinel_job_failures_total{job="metric_agent"}') >= 1
    events = [e["event"] for e in logs]
    assert "store write failed; spans kept in the queue" in events
    assert "store writes recovered" in events
    assert any(e["event"] == "job failed" and e["job"] == "metric_agent" for e in logs)
    assert not caplog.records, "a job raised something other than a SentinelError"


# --- Prometheus down, or slow past its timeout -------------------------------------------


class Proxy:
    """A loopback TCP proxy in front of a Prometheus: it forwards to ``upstream`` (a port
    that can change: a restarted Prometheus) and holds each chunk a client sends for
    ``delay`` seconds (a Prometheus slower than the client's timeout). A client whose
    upstream is down sees its connection closed."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.delay = 0.0
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port: int = self._listener.getsockname()[1]
        self._threads: list[threading.Thread] = []
        self._accept = threading.Thread(target=self._serve)
        self._accept.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            t = threading.Thread(target=self._connection, args=(client,))
            self._threads.append(t)
            t.start()

    def _connection(self, client: socket.socket) -> None:
        with contextlib.ExitStack() as stack:
            stack.enter_context(client)
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream), timeout=2)
            except OSError:
                return  # Prometheus is down: the client's connection is closed
            stack.enter_context(upstream)
            back = threading.Thread(target=self._pump, args=(upstream, client, False))
            back.start()
            self._pump(client, upstream, True)
            back.join()

    def _pump(self, src: socket.socket, dst: socket.socket, slow: bool) -> None:
        src.settimeout(0.2)
        while not self._stop.is_set():
            try:
                data = src.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if not data:
                break
            if slow and self.delay and self._stop.wait(self.delay):
                break
            try:
                dst.sendall(data)
            except OSError:
                break
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._stop.set()
        self._accept.join(5)
        for t in self._threads:
            t.join(5)
        self._listener.close()


STALE = "metric source failed; its SLIs are stale this run"
T_PROM = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)


def slow_minutes(minute: float) -> float:
    return 0.5 if 45 <= minute < 55 else 0.1  # ten minutes five times slower


@pytest.fixture
def latency_file(tmp_path: Path) -> Path:
    samples = [
        Sample(
            "api_latency_p50_seconds",
            (("job", "api"),),
            None,
            T_PROM + timedelta(seconds=15 * i),
            slow_minutes(i / 4),
        )
        for i in range(4 * 100)
    ]
    path = tmp_path / "latency.om"
    path.write_text(write_openmetrics(samples), encoding="utf-8")
    return path


@pytest.mark.prometheus
def test_prometheus_down_then_slow_degrades_runs_never_resolves_and_carries_on_when_back(
    tmp_path: Path, latency_file: Path
) -> None:
    first = PrometheusServer(latency_file, tmp_path / "prom-1")
    second = PrometheusServer(latency_file, tmp_path / "prom-2")
    proxy = Proxy(int(first.start().rsplit(":", 1)[1]))
    s = daemon_settings(
        tmp_path,
        detection={"ingest_lag_seconds": 0.0, "interval_seconds": 60.0},
        prometheus={
            "url": f"http://127.0.0.1:{proxy.port}",
            "timeout_seconds": 0.5,
            "retries": 0,
            "slis": [
                {
                    "component": "service:api",
                    "sli": "latency_p50",
                    "query": 'api_latency_p50_seconds{job="api"}',
                }
            ],
        },
    )
    store = open_store(s.store_url, FakeClock(T_PROM))
    metrics = SelfMetrics()
    clock = FakeClock(T_PROM + timedelta(minutes=44))
    source = prometheus_from_settings(s)
    assert source is not None
    agent = MetricAgent(s, store, clock, source=source, metrics=metrics)

    async def walk(minutes: int) -> list[str]:
        """Run the agent once a minute; the outcome of each run."""
        outcomes = []
        for _ in range(minutes):
            clock.advance(60)
            run = await agent.run_once()
            outcomes.append("degraded" if run.failures else "ok")
        return outcomes

    def failures() -> float:
        return metrics.metric_source_failures.labels(source="prometheus")._value.get()

    async def scenario() -> None:
        async with source:
            assert await walk(8) == ["ok"] * 8  # to 52 min: the slowdown is an incident
            (incident,) = store.incidents()
            assert await walk(5) == ["ok"] * 5  # to 57 min: back to normal for 2 minutes

            first.stop()  # Prometheus down
            with capture_logs() as down_logs:
                assert await walk(14) == ["degraded"] * 14  # to 71 min
            assert failures() == 14

            # Back, but slower than the timeout.
            proxy.upstream = int(second.start().rsplit(":", 1)[1])
            proxy.delay = 2.0
            with capture_logs() as slow_logs:
                assert await walk(4) == ["degraded"] * 4  # to 75 min: past resolve_minutes
            assert failures() == 18
            status = store.get_incident(incident.id)
            assert status is not None and status.status is IncidentStatus.OPEN

            proxy.delay = 0.0  # Prometheus well again: the outage is read back, calm
            run = await agent.run_once()
            assert not run.failures
            assert [type(e).__name__ for e in run.events] == ["IncidentResolved"]
            for logs, why in ((down_logs, "prometheus"), (slow_logs, "ReadTimeout")):
                stale = [
                    e
                    for e in logs
                    if e["event"] == "metric source failed; its SLIs are stale this run"
                ]
                assert stale and all(e["log_level"] == "error" for e in stale)
                assert why in stale[0]["error"]

    try:
        asyncio.run(scenario())
    finally:
        proxy.close()
        first.stop()
        second.stop()
        store.close()
    assert metrics.metric_agent_runs.labels(outcome="degraded")._value.get() == 18
    assert metrics.metric_agent_runs.labels(outcome="ok")._value.get() == 14
