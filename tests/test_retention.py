"""Retention (``sentinel.retention``, the store's ``delete_old_*``, ``[retention]``):
against SQLite and a real PostgreSQL, old spans, evaluator scores and samples are
deleted in batches of at most ``batch_rows``, recent ones and those of open incidents
are kept, and ingest goes on between the batches of a run (spans acknowledged during it
are stored). Settings shorter than what the daemon reads are refused.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from sentinel.adapters.db import SqlStore, open_store
from sentinel.clock import FakeClock, SystemClock
from sentinel.errors import ConfigError
from sentinel.incidents import Incident
from sentinel.observability import SelfMetrics
from sentinel.retention import Cutoffs, RetainedTable, cutoffs, run_retention
from sentinel.settings import Settings, load_settings, retention_floor_hours
from sentinel.telemetry import Evaluation, Sample, Span, SpanKind, SpanStatus
from tests.harness import make_settings, running_daemon
from tests.loadgen import stored_per_request, template_request

NOW = datetime(2026, 11, 19, 12, 0, tzinfo=UTC)
OLD = NOW - timedelta(days=10)
RECENT = NOW - timedelta(hours=1)


def _span(n: int, at: datetime, *, scored: bool = False) -> Span:
    ns = int(at.timestamp() * 1e9) + n * 1_000_000
    return Span(
        trace_id=f"{n:032x}",
        span_id=f"{n:016x}",
        parent_span_id=None,
        name="invoke_agent support-agent",
        kind=SpanKind.INTERNAL,
        start_ns=ns,
        end_ns=ns + 5_000_000,
        service="support-agent-svc",
        component="agent:support-agent",
        peer=None,
        operation=None,
        status=SpanStatus.UNSET,
        status_message="",
        error_type=None,
        http_status=None,
        input_tokens=None,
        output_tokens=None,
        evaluations=(Evaluation("faithfulness", 0.9, None, ns + 5_000_000),) if scored else (),
        attributes={},
        events=(),
        resource={},
    )


def _sample(n: int, at: datetime) -> Sample:
    return Sample("up", (("job", "redis"),), "service:redis", at + timedelta(seconds=n), 1.0)


def _count(url: str, table: str) -> int:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as c:
            return int(c.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())
    finally:
        engine.dispose()


def _settings(tmp_path: Path, store_url: str, **retention: object) -> Settings:
    return make_settings(
        tmp_path, store_url, retention={"batch_rows": 4, **retention}, learning={"archive_dir": ""}
    )


def _fill(store: SqlStore) -> None:
    """25 old spans (every other one scored), 5 recent ones (scored), 23 old and 5 recent
    samples."""
    store.add_spans([_span(i, OLD, scored=i % 2 == 0) for i in range(25)])
    store.add_spans([_span(100 + i, RECENT, scored=True) for i in range(5)])
    store.add_samples([_sample(i, OLD) for i in range(23)])
    store.add_samples([_sample(i, RECENT) for i in range(5)])


def test_old_rows_are_deleted_in_batches_and_recent_rows_kept(
    store_url: str, tmp_path: Path
) -> None:
    store = open_store(store_url, FakeClock(NOW))
    try:
        _fill(store)
        batches: list[tuple[RetainedTable, int]] = []
        metrics = SelfMetrics()
        run = run_retention(
            store,
            _settings(tmp_path, store_url),
            NOW,
            metrics=metrics,
            after_batch=lambda table, rows: batches.append((table, rows)),
            pause=lambda _: None,
        )
        assert run.deleted == {
            RetainedTable.SPANS: 25,
            RetainedTable.EVALUATIONS: 13,
            RetainedTable.SAMPLES: 23,
        }
        assert all(rows <= 4 for _, rows in batches)
        # Spans: 6 full batches and one of 1; evaluations: 3 full and one of 1; samples:
        # 5 full and one of 3.
        assert [t for t, _ in batches].count(RetainedTable.SPANS) == 7
        assert [t for t, _ in batches].count(RetainedTable.EVALUATIONS) == 4
        assert [t for t, _ in batches].count(RetainedTable.SAMPLES) == 6
        assert run.batches == len(batches) == 17
        # What is left is exactly the recent telemetry.
        assert {s.span_id for s in store.spans(OLD - timedelta(days=1), NOW)} == {
            f"{100 + i:016x}" for i in range(5)
        }
        assert _count(store_url, "evaluations") == 5
        assert [s.time for s in store.samples(OLD - timedelta(days=1), NOW)] == [
            _sample(i, RECENT).time for i in range(5)
        ]
        assert metrics.retention_deleted.labels(table="spans")._value.get() == 25
        assert metrics.retention_batches._value.get() == 17
        # A second run finds nothing more: one empty batch per table.
        again = run_retention(store, _settings(tmp_path, store_url), NOW, pause=lambda _: None)
        assert again.deleted == dict.fromkeys(RetainedTable, 0)
        assert again.batches == 3
    finally:
        store.close()


def test_telemetry_of_an_open_incident_is_kept(store_url: str, tmp_path: Path) -> None:
    store = open_store(store_url, FakeClock(NOW))
    try:
        _fill(store)
        store.put_incident(
            Incident(id="inc-1", title="old and still open", opened_at=OLD, updated_at=OLD)
        )
        run = run_retention(store, _settings(tmp_path, store_url), NOW, pause=lambda _: None)
        assert run.deleted == dict.fromkeys(RetainedTable, 0)
        assert _count(store_url, "spans") == 30
    finally:
        store.close()


def test_zero_keeps_a_kind_forever(store_url: str, tmp_path: Path) -> None:
    store = open_store(store_url, FakeClock(NOW))
    try:
        _fill(store)
        s = _settings(tmp_path, store_url, spans_hours=0)
        run = run_retention(store, s, NOW, pause=lambda _: None)
        assert run.deleted == {RetainedTable.SAMPLES: 23}
        assert _count(store_url, "spans") == 30
    finally:
        store.close()


def test_ingest_goes_on_between_the_batches_of_a_run(store_url: str, tmp_path: Path) -> None:
    """A daemon ingests while retention runs on the same database: after each batch an
    OTLP request is posted and must be answered 200, i.e. committed, before retention
    goes on; afterwards every acknowledged span is stored and retention did finish."""
    settings = _settings(tmp_path, store_url)
    body = template_request(16, start_ns=int(RECENT.timestamp()) * 1_000_000_000)
    acked: list[int] = []
    with running_daemon(settings, clock=SystemClock()) as d:
        retention_store = open_store(store_url, FakeClock(NOW))
        try:
            _fill(retention_store)

            def ingest(table: RetainedTable, rows: int) -> None:
                n = 1000 + len(acked)
                r = httpx.post(
                    f"{d.url}/v1/traces",
                    content=body.replace(b"\xa5\x5a\xc3\x3c", n.to_bytes(4, "big")),
                    headers={"Content-Type": "application/x-protobuf"},
                    timeout=30,
                )
                assert r.status_code == 200, r.text
                acked.append(n)

            run = run_retention(retention_store, settings, NOW, after_batch=ingest)
        finally:
            retention_store.close()
    assert run.deleted[RetainedTable.SPANS] == 25
    assert len(acked) == run.batches == 17
    stored = {n: k for n, k in stored_per_request(store_url).items() if n >= 1000}
    assert sorted(stored) == acked
    assert sum(stored.values()) == 16 * len(acked)


def test_the_daemon_runs_retention_on_its_schedule(tmp_path: Path) -> None:
    url = "sqlite:///" + str(tmp_path / "sentinel.db")
    store = open_store(url, FakeClock(NOW))
    try:
        _fill(store)
    finally:
        store.close()
    settings = _settings(tmp_path, url, every_seconds=0.2)
    with running_daemon(settings, clock=FakeClock(NOW)) as d:
        batches = 0.0
        for _ in range(100):  # bounded: 100 polls of /metrics, 0.1 s apart
            text = httpx.get(f"{d.url}/metrics", timeout=10).text
            batches = next(
                float(line.split()[1])
                for line in text.splitlines()
                if line.startswith("sentinel_retention_batches_total ")
            )
            if batches > 0:
                break
            time.sleep(0.1)
        assert batches > 0
        assert 'sentinel_retention_deleted_rows_total{table="spans"}' in text
    assert _count(url, "spans") == 5
    assert _count(url, "samples") == 5


# --- settings -----------------------------------------------------------------------------


def test_defaults_keep_a_week() -> None:
    r = Settings().retention
    assert (r.spans_hours, r.samples_hours, r.enabled) == (168.0, 168.0, True)


def test_a_retention_shorter_than_what_the_daemon_reads_is_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text("[retention]\nsamples_hours = 0.25\n")
    with pytest.raises(ConfigError) as e:
        load_settings(cfg, env={})
    assert "retention.samples_hours = 0.25" in str(e.value)
    assert str(cfg) in str(e.value)
    # The floor with the defaults: what detection reads back (a 30-minute baseline before
    # the coarse path's 16-minute recent window) and two steps, past the 45-minute
    # learning lookback.
    assert math.isclose(retention_floor_hours(Settings()), 47 / 60)
    cfg.write_text("[retention]\nsamples_hours = 0.75\n")
    with pytest.raises(ConfigError, match="coarse_recent_minutes"):
        load_settings(cfg, env={})
    cfg.write_text("[retention]\nsamples_hours = 0.8\nspans_hours = 0\n")
    s = load_settings(cfg, env={})
    assert (s.retention.samples_hours, s.retention.spans_hours) == (0.8, 0.0)


def test_cutoffs_move_back_for_the_oldest_open_incident() -> None:
    s = Settings()
    assert cutoffs(s, NOW, []).spans == NOW - timedelta(hours=168)
    opened = NOW - timedelta(days=9)
    inc = Incident(id="i", title="t", opened_at=opened, updated_at=NOW)
    # baseline 30 + the coarse path's recent 16 + learning lookback 45 minutes before
    # its opening
    assert cutoffs(s, NOW, [inc]).samples == opened - timedelta(minutes=91)
    off = Settings.model_validate({"retention": {"spans_hours": 0.0, "samples_hours": 0.0}})
    assert cutoffs(off, NOW, [inc]) == Cutoffs(spans=None, samples=None)
    assert not off.retention.enabled
