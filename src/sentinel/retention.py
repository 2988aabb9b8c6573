"""Retention: telemetry older than ``[retention]`` allows (spans with their evaluator
scores, metric samples) is deleted in short batches by a scheduled daemon job.

Why batches: a single ``DELETE`` of a week of spans would hold SQLite's write lock (or
PostgreSQL's row locks and WAL) for as long as it runs, and the span writer would wait
behind it; one batch of ``batch_rows`` is one short transaction, and between batches
this job pauses as long as the last batch took, so the span writer gets at least half of
the store's write time while retention runs.

What is kept whatever the settings say: the telemetry of incidents still open (from
their opening back over the detection window and the Learning Agent's lookback), which
the Root Cause and Learning Agents read when they diagnose or archive them. Settings
shorter than what the daemon reads on every run are refused at load time
(``settings.retention_floor_hours``).

What must not live here: SQL (the store's ``delete_old_*``), scheduling (``daemon``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum
from typing import Protocol

import structlog

from sentinel.incidents import Incident
from sentinel.observability import SelfMetrics
from sentinel.settings import Settings

log = structlog.get_logger(__name__)

# Between batches, pause at least this long (and as long as the last batch took).
MIN_PAUSE_SECONDS = 0.01


class RetainedTable(Enum):
    SPANS = "spans"
    EVALUATIONS = "evaluations"
    SAMPLES = "samples"


class RetentionStore(Protocol):
    def delete_old_spans(self, before: datetime, limit: int) -> int: ...
    def delete_old_evaluations(self, before: datetime, limit: int) -> int: ...
    def delete_old_samples(self, before: datetime, limit: int) -> int: ...
    def incidents(self, *, open_only: bool = False) -> list[Incident]: ...


@dataclass(frozen=True)
class Cutoffs:
    """Delete what is older than these (None: keep everything of that kind)."""

    spans: datetime | None
    samples: datetime | None


def cutoffs(settings: Settings, now: datetime, open_incidents: Sequence[Incident]) -> Cutoffs:
    """Pure: the ages ``[retention]`` allows, moved back to keep what open incidents may
    still need: their onset lies within the recent window before they opened, and their
    evidence and archive reach back a baseline and the learning lookback from it."""
    r, det = settings.retention, settings.detection
    keep_from: datetime | None = None
    if open_incidents:
        margin = timedelta(minutes=det.reach_minutes + settings.learning.lookback_minutes)
        keep_from = min(i.opened_at for i in open_incidents) - margin

    def cut(hours: float) -> datetime | None:
        if hours <= 0:
            return None
        at = now - timedelta(hours=hours)
        return at if keep_from is None else min(at, keep_from)

    return Cutoffs(spans=cut(r.spans_hours), samples=cut(r.samples_hours))


@dataclass
class RetentionRun:
    """What one run deleted, by table, in how many batches (DELETE statements)."""

    deleted: dict[RetainedTable, int] = field(default_factory=dict)
    batches: int = 0


def run_retention(
    store: RetentionStore,
    settings: Settings,
    now: datetime,
    *,
    metrics: SelfMetrics | None = None,
    after_batch: Callable[[RetainedTable, int], None] | None = None,
    pause: Callable[[float], None] = time.sleep,
) -> RetentionRun:
    """Delete, batch by batch, until no row older than the cutoffs is left. Blocking:
    the daemon runs it on a worker thread. ``after_batch(table, rows)`` is called after
    each batch (tests: ingest between batches). A ``StoreError`` ends the run; what was
    deleted stays deleted and the next run carries on."""
    cut = cutoffs(settings, now, store.incidents(open_only=True))
    limit = settings.retention.batch_rows
    work: list[tuple[RetainedTable, datetime, Callable[[datetime, int], int]]] = []
    if cut.spans is not None:
        work.append((RetainedTable.SPANS, cut.spans, store.delete_old_spans))
        work.append((RetainedTable.EVALUATIONS, cut.spans, store.delete_old_evaluations))
    if cut.samples is not None:
        work.append((RetainedTable.SAMPLES, cut.samples, store.delete_old_samples))
    run = RetentionRun()
    for table, before, delete in work:
        total = 0
        while True:
            started = time.monotonic()
            rows = delete(before, limit)
            took = time.monotonic() - started
            run.batches += 1
            total += rows
            if metrics is not None:
                metrics.retention_deleted.labels(table=table.value).inc(rows)
                metrics.retention_batches.inc()
            if after_batch is not None:
                after_batch(table, rows)
            if rows < limit:
                break
            pause(max(MIN_PAUSE_SECONDS, took))
        run.deleted[table] = total
    log.info(
        "retention run",
        spans_before=cut.spans.isoformat() if cut.spans else None,
        samples_before=cut.samples.isoformat() if cut.samples else None,
        batches=run.batches,
        **{f"{t.value}_deleted": n for t, n in run.deleted.items()},
    )
    return run
