"""The daemon under pressure and at shutdown: back-pressure with a tiny queue and a slow
store, a store that fails and comes back, and SIGTERM on a real `sentinel run` process."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import httpx

from sentinel.adapters.db import SqlStore, create_engine_for, migrate, open_store
from sentinel.clock import SystemClock
from sentinel.errors import StoreError
from sentinel.telemetry import Span
from tests.harness import make_settings, running_daemon
from tests.ports import free_port
from tests.test_receiver import PB, _one_span_request

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
FAR = datetime(2100, 1, 1, tzinfo=UTC)


class SlowStore(SqlStore):
    """The real store, slowed down (or failing) at the write: the edge the queue sits on."""

    def __init__(self, url: str, delay: float) -> None:
        engine = create_engine_for(url)
        migrate(engine)
        super().__init__(engine, SystemClock())
        self.delay = delay
        self.failing = threading.Event()

    def add_spans(self, spans: Sequence[Span]) -> int:
        time.sleep(self.delay)
        if self.failing.is_set():
            raise StoreError("store unavailable (test)")
        return super().add_spans(spans)


def _request(n_spans: int) -> tuple[bytes, str]:
    req = _one_span_request()
    template = req.resource_spans[0].scope_spans[0].spans[0]
    for _ in range(n_spans - 1):
        s = req.resource_spans[0].scope_spans[0].spans.add()
        s.CopyFrom(template)
        s.span_id = os.urandom(8)
    return req.SerializeToString(), template.trace_id.hex()


def _stored_traces(store: SqlStore) -> dict[str, int]:
    counts: dict[str, int] = {}
    for s in store.spans(EPOCH, FAR):
        counts[s.trace_id] = counts.get(s.trace_id, 0) + 1
    return counts


def test_backpressure_refuses_with_retry_after_and_loses_no_acknowledged_span(
    tmp_path: Path,
) -> None:
    settings = make_settings(
        tmp_path, ingest={"queue_max_spans": 40, "write_batch_spans": 40, "retry_after_seconds": 3}
    )
    store = SlowStore(settings.store_url, delay=0.25)
    requests = [_request(10) for _ in range(48)]

    async def fire(url: str) -> list[tuple[int, str, str | None]]:
        async with httpx.AsyncClient(timeout=60) as client:

            async def one(body: bytes, trace: str) -> tuple[int, str, str | None]:
                r = await client.post(f"{url}/v1/traces", content=body, headers=PB)
                return r.status_code, trace, r.headers.get("retry-after")

            return await asyncio.gather(*(one(b, t) for b, t in requests))

    with running_daemon(settings, store=store) as d:
        results = asyncio.run(fire(d.url))
        acked = {t for code, t, _ in results if code == 200}
        refused = [(code, ra) for code, _, ra in results if code != 200]
        stored = _stored_traces(d.store)
        metrics = httpx.get(f"{d.url}/metrics").text

    assert acked, "some requests must get through"
    assert refused, "a 40-span queue in front of a slow store must refuse some of 480 spans"
    assert all(code in (429, 503) and ra == "3" for code, ra in refused)
    # Every acknowledged span is stored, all ten of each request; refused ones were not.
    assert {t: n for t, n in stored.items() if t in acked} == dict.fromkeys(acked, 10)
    assert set(stored) == acked
    assert 'sentinel_ingest_requests_total{code="429"}' in metrics


def test_a_failing_store_gets_503_keeps_queued_spans_and_recovers(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path,
        ingest={"queue_max_spans": 1000, "write_batch_spans": 5, "ack_timeout_seconds": 0.5},
    )
    store = SlowStore(settings.store_url, delay=0.0)
    store.failing.set()
    with running_daemon(settings, store=store) as d:
        url = f"{d.url}/v1/traces"
        body, queued_trace = _request(5)
        r = httpx.post(url, content=body, headers=PB, timeout=30)
        # Not committed within the ack timeout: 503, but the spans stay queued.
        assert r.status_code == 503 and r.headers["retry-after"]
        assert httpx.get(f"{d.url}/readyz").status_code == 503
        # With a full batch already waiting on a failing store, new spans are refused.
        body2, refused_trace = _request(5)
        r2 = httpx.post(url, content=body2, headers=PB, timeout=30)
        assert r2.status_code == 503

        store.failing.clear()
        deadline = time.monotonic() + 30
        while queued_trace not in _stored_traces(d.store) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _stored_traces(d.store) == {queued_trace: 5}
        assert httpx.get(f"{d.url}/readyz").status_code == 200
        # The exporter's retry of the first request is deduplicated.
        assert httpx.post(url, content=body, headers=PB).status_code == 200
        assert httpx.post(url, content=body2, headers=PB).status_code == 200
        assert _stored_traces(d.store) == {queued_trace: 5, refused_trace: 5}


def test_sigterm_stops_accepting_flushes_and_exits_cleanly(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "config.toml"
    config.write_text(
        f"[server]\nport = {port}\n"
        '[store]\nurl = "sqlite:///sentinel.db"\n'
        '[logging]\nformat = "json"\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTINEL_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sentinel.cli", "run", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=tmp_path,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "daemon did not become ready"
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            time.sleep(0.1)
        acked = set()
        for _ in range(20):
            body, trace = _request(25)
            if httpx.post(f"{base}/v1/traces", content=body, headers=PB).status_code == 200:
                acked.add(trace)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = out.decode()
    assert proc.returncode == 0, log
    assert '"queue_drained": true' in log
    store = open_store(f"sqlite:///{tmp_path / 'sentinel.db'}", SystemClock())
    try:
        assert _stored_traces(store) == dict.fromkeys(acked, 25)
    finally:
        store.close()
    assert len(acked) == 20
    assert not any(line.startswith("Traceback") for line in log.splitlines()), log
