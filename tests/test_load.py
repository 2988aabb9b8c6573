"""Ingest under load: 16 concurrent OTLP/HTTP exporters for 60 s offering twice what the
store can absorb, against a real ``sentinel run`` process on a real PostgreSQL.

"What the store can absorb" is made real and deterministic on a shared 2-core machine
by the server itself: a statement trigger on ``spans`` sleeps 1 ms per span inserted
(``loadgen.throttle_spans``), so the store absorbs at most 1,000 spans/s whatever the
machine's load (``pg_sleep`` never sleeps less than asked, and the daemon's span writer
writes one batch at a time), a little less with the rows' own cost. The exporters
offer 2,000 spans/s.

What it proves: the receiver sheds load with 429/503 and Retry-After instead of
queueing without bound; every span acknowledged with 200 is in the store (counted per
request after the run); the memory of the daemon's process tree stays bounded by its
queue and does not grow between the second and the last quarter of the run; and the
daemon neither crashed nor stopped answering. Only counts and memory are asserted, no
times. It takes about 75 s.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from sentinel.adapters.db import open_store
from sentinel.clock import SystemClock
from tests.loadgen import DaemonProcess, rss_mb, run_load, stored_per_request, throttle_spans

pytestmark = pytest.mark.postgres

EXPORTERS = 16
SECONDS = 60.0
# An exporter waits for each export's answer (as the OTel SDK's BatchSpanProcessor does),
# so what 16 exporters can have in flight (4,096 spans) is twice the queue.
SPANS_PER_REQUEST = 256
SECONDS_PER_SPAN = 0.001  # the store absorbs at most 1,000 spans/s
OFFERED_SPANS_PER_SECOND = 2 * (1 / SECONDS_PER_SPAN)
QUEUE_MAX_SPANS = 2048
SPAN_AGE_SECONDS = 24 * 3600.0
# What the daemon may hold beyond its idle memory: the queue's decoded spans and the rows
# in flight to the span writer (well under 16 KiB a span each), the request bodies being
# read and decoded, the modules and buffers the first requests load, allocator arenas of
# the writer threads. Measured: +84 MB, flat from the first quarter on (bench/ingest.py
# --load-test). An unbounded queue would hold the ~1,200 spans/s refused here, several
# KiB each, and outgrow it within the run; the growth check below is the sharper one.
MEMORY_BUDGET_MB = 128 + QUEUE_MAX_SPANS * 16 / 1024
# Between the second and the last quarter: allocator noise, not growth.
GROWTH_SLACK_MB = 16


def test_ingest_sheds_load_keeps_every_acknowledged_span_and_bounded_memory(
    postgres_url: str, tmp_path: Path
) -> None:
    open_store(postgres_url, SystemClock()).close()  # the schema, for the trigger
    throttle_spans(postgres_url, SECONDS_PER_SPAN)
    daemon = DaemonProcess(
        postgres_url,
        tmp_path,
        "load",
        f"[ingest]\nqueue_max_spans = {QUEUE_MAX_SPANS}\nwrite_batch_spans = 512\n"
        "retry_after_seconds = 1\n",
    )
    try:
        daemon.wait_ready()
        idle_mb = rss_mb(daemon.proc.pid)
        run = run_load(
            [daemon.proc.pid],
            [daemon.url],
            exporters=EXPORTERS,
            seconds=SECONDS,
            spans_per_request=SPANS_PER_REQUEST,
            spans_per_second=OFFERED_SPANS_PER_SECOND,
            # A day old: outside the Metric Agent's detection window, so its reads (which
            # grow with the spans in that window, not with the queue) do not count here.
            span_age_seconds=SPAN_AGE_SECONDS,
        )
        # Still alive and answering after the load.
        assert daemon.proc.poll() is None, daemon.log_path.read_text()[-2000:]
        assert httpx.get(f"{daemon.url}/readyz", timeout=10).status_code == 200
        metrics = httpx.get(f"{daemon.url}/metrics", timeout=10).text
    finally:
        code = daemon.stop()
    assert code == 0, daemon.log_path.read_text()[-2000:]

    tally = run.tally
    # Load was shed, each refusal telling the exporter when to come back.
    assert tally.unexpected == []
    assert tally.refusals.get(429, 0) > 0, tally.refusals
    assert tally.refusals_without_retry_after == 0
    assert 'sentinel_ingest_spans_rejected_total{reason="queue_full"}' in metrics

    # Every acknowledged span is stored; nothing stored that was not sent.
    stored = stored_per_request(postgres_url)
    assert len(tally.acked) > 0
    missing = {n: stored.get(n, 0) for n in tally.acked if stored.get(n, 0) != SPANS_PER_REQUEST}
    assert missing == {}, f"acked requests not (fully) stored: {sorted(missing.items())[:10]}"
    assert set(stored) <= tally.sent
    # The store was the bottleneck: much of what was offered was not taken.
    assert len(tally.sent) > len(tally.acked)

    # Memory: bounded by the queue, and flat once the queue is full.
    assert len(run.rss_mb) >= 8
    peak = max(run.rss_mb)
    assert peak <= idle_mb + MEMORY_BUDGET_MB, (idle_mb, run.rss_mb)
    _, second, _, last = run.rss_quarters()
    assert max(last) <= max(second) + GROWTH_SLACK_MB, run.rss_mb
