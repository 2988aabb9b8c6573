"""The telemetry half of ``ports.TelemetryStore``: spans (the ingest hot path), change
events, metric samples and the component overview, as a mixin of ``store.SqlStore``.

What must not live here: decoding of wire formats (``adapters.otlp``), row conversions
(``codec``), queries that belong to a stage (SLIs are computed from what
``spans()``/``samples()`` return).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from sentinel.adapters.db.codec import (
    _SPAN_COLUMNS,
    SpanRows,
    _dumps,
    _from_ms,
    _from_ns,
    _loads,
    _ms,
    _ns,
    _span_from_row,
    span_rows,
)
from sentinel.adapters.db.core import _Base
from sentinel.adapters.db.tables import CHANGES, EVALUATIONS, SAMPLES, SPANS
from sentinel.ports import ComponentSummary
from sentinel.telemetry import ChangeEvent, Sample, Span


class TelemetryMixin(_Base):
    """Spans, changes, samples and components."""

    # -- spans --

    def add_spans(self, spans: Sequence[Span]) -> int:
        if not spans:
            return 0
        return self.insert_span_rows(span_rows(spans, postgres=self._dialect == "postgresql"))

    def insert_span_rows(self, batch: SpanRows) -> int:
        """Write rows made by ``span_rows`` (possibly in another process); returns how many
        spans were new."""
        rows, evals = batch.rows, batch.evaluations
        if not rows:
            return 0
        with self._tx(f"writing {len(rows)} spans") as conn:
            if self._dialect == "postgresql":
                new = _copy_spans_pg(conn, rows)
            else:
                new = self._insert_rows(conn, "spans", _SPAN_COLUMNS, ("trace_id", "span_id"), rows)
            if evals:
                if new == len(rows):
                    conn.execute(sa.insert(EVALUATIONS), evals)
                else:
                    # Some spans were already stored (a retried export): keep only the
                    # evaluations of spans that have none yet.
                    keys = {(e["trace_id"], e["span_id"]) for e in evals}
                    have = _existing_eval_keys(conn, keys)
                    fresh = [e for e in evals if (e["trace_id"], e["span_id"]) not in have]
                    if fresh:
                        conn.execute(sa.insert(EVALUATIONS), fresh)
        return int(new)

    def spans(
        self,
        start: datetime,
        end: datetime,
        component: str | None = None,
        *,
        trace_id: str | None = None,
        limit: int | None = None,
    ) -> list[Span]:
        t = SPANS
        q = (
            sa.select(t)
            .where(t.c.start_ns >= _ns(start), t.c.start_ns <= _ns(end))
            .order_by(t.c.start_ns, t.c.trace_id, t.c.span_id)
        )
        if component is not None:
            q = q.where(t.c.component == component)
        if trace_id is not None:
            q = q.where(t.c.trace_id == trace_id)
        if limit is not None:
            q = q.limit(limit)
        with self._read("reading spans") as conn:
            rows = conn.execute(q).mappings().all()
        return [_span_from_row(r) for r in rows]

    def span(self, trace_id: str, span_id: str) -> Span | None:
        """The span with these ids (the stored, lower-case hex), or None."""
        t = SPANS
        q = sa.select(t).where(t.c.trace_id == trace_id, t.c.span_id == span_id)
        with self._read(f"reading span {trace_id!r}/{span_id!r}") as conn:
            r = conn.execute(q).mappings().first()
        return None if r is None else _span_from_row(r)

    def span_count(self) -> int:
        with self._read("counting spans") as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(SPANS)).scalar_one())

    # -- retention: one short DELETE per call, so a writer waits one batch at most --

    def delete_old_spans(self, before: datetime, limit: int) -> int:
        """Delete up to ``limit`` spans that started before ``before``; how many went."""
        return self._delete_batch("spans", "start_ns", _ns(before), limit)

    def delete_old_evaluations(self, before: datetime, limit: int) -> int:
        """Delete up to ``limit`` evaluator scores given before ``before``."""
        return self._delete_batch("evaluations", "time_ns", _ns(before), limit)

    def delete_old_samples(self, before: datetime, limit: int) -> int:
        """Delete up to ``limit`` metric samples taken before ``before``."""
        return self._delete_batch("samples", "time_ms", _ms(before), limit)

    def _delete_batch(self, table: str, time_column: str, before: int, limit: int) -> int:
        """Rows picked by the time column (indexed for spans and samples), deleted by
        their physical address: PostgreSQL's ctid through ``= ANY(ARRAY(...))``, which
        plans as a TID scan (``IN (subquery)`` may hash-join the whole table), SQLite's
        rowid. Telemetry rows are never updated, so the address cannot move between the
        subquery and the delete. Names come from this module, values are bound."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit!r}")
        if self._dialect == "postgresql":
            sql = (
                f"DELETE FROM {table} WHERE ctid = ANY(ARRAY("  # noqa: S608
                f"SELECT ctid FROM {table} WHERE {time_column} < :before LIMIT :limit))"
            )
        else:
            sql = (
                f"DELETE FROM {table} WHERE rowid IN ("  # noqa: S608
                f"SELECT rowid FROM {table} WHERE {time_column} < :before LIMIT :limit)"
            )
        with self._tx(f"deleting {table} older than {before!r} (retention)") as conn:
            result = conn.execute(sa.text(sql), {"before": before, "limit": limit})
            return max(int(result.rowcount), 0)

    # -- changes --

    def add_changes(self, changes: Sequence[ChangeEvent]) -> int:
        if not changes:
            return 0
        known = set(ChangeEvent.model_fields)
        rows = [
            {
                "id": c.id,
                "component": c.component,
                "time": c.time,
                "affects": _dumps(list(c.affects)),
                "kind": c.kind.value,
                "author": c.author,
                "summary": c.summary,
                "repo": c.repo,
                "path": c.path,
                "extra": _dumps({k: v for k, v in (c.model_extra or {}).items() if k not in known}),
            }
            for c in changes
        ]
        t = CHANGES
        # Through SQLAlchemy (not _insert_new): "time" needs its type's bind processing.
        stmt = (
            self._insert(t)
            .on_conflict_do_nothing(index_elements=["id", "component"])
            .returning(t.c.id)
        )
        with self._tx(f"writing {len(rows)} changes") as conn:
            return len(conn.execute(stmt, rows).all())

    def changes(self, start: datetime, end: datetime) -> list[ChangeEvent]:
        t = CHANGES
        q = sa.select(t).where(t.c.time >= start, t.c.time <= end).order_by(t.c.time, t.c.id)
        with self._read("reading changes") as conn:
            rows = conn.execute(q).mappings().all()
        return [
            ChangeEvent.model_validate(
                {
                    **_loads(r["extra"]),
                    "id": r["id"],
                    "time": r["time"],
                    "component": r["component"],
                    "affects": _loads(r["affects"]),
                    "kind": r["kind"],
                    "author": r["author"],
                    "summary": r["summary"],
                    "repo": r["repo"],
                    "path": r["path"],
                }
            )
            for r in rows
        ]

    # -- samples --

    def add_samples(self, samples: Sequence[Sample]) -> int:
        if not samples:
            return 0
        label_json: dict[tuple[tuple[str, str], ...], str] = {}
        rows = []
        for s in samples:
            lj = label_json.get(s.labels)
            if lj is None:
                lj = label_json[s.labels] = _dumps(dict(s.labels))
            rows.append(
                {
                    "metric": s.metric,
                    "labels": lj,
                    "component": s.component,
                    "time_ms": _ms(s.time),
                    "value": None if math.isnan(s.value) else s.value,
                }
            )
        with self._tx(f"writing {len(rows)} samples") as conn:
            return self._insert_new(conn, "samples", ("metric", "labels", "time_ms"), rows)

    def samples(self, start: datetime, end: datetime, component: str | None = None) -> list[Sample]:
        t = SAMPLES
        q = (
            sa.select(t)
            .where(
                t.c.time_ms >= _ms(start),
                t.c.time_ms <= _ms(end),
            )
            .order_by(t.c.metric, t.c.labels, t.c.time_ms)
        )
        if component is not None:
            q = q.where(t.c.component == component)
        with self._read("reading samples") as conn:
            rows = conn.execute(q).mappings().all()
        label_cache: dict[str, tuple[tuple[str, str], ...]] = {}
        out = []
        for r in rows:
            labels = label_cache.get(r["labels"])
            if labels is None:
                labels = label_cache[r["labels"]] = tuple(sorted(_loads(r["labels"]).items()))
            out.append(
                Sample(
                    metric=r["metric"],
                    labels=labels,
                    component=r["component"],
                    time=datetime.fromtimestamp(r["time_ms"] / 1000, tz=UTC),
                    value=math.nan if r["value"] is None else r["value"],
                )
            )
        return out

    # -- overview --

    def components(self) -> list[ComponentSummary]:
        """Every component the store knows: from spans (own and as a CLIENT span's
        peer) and from metric samples."""
        sp = SPANS
        sm = SAMPLES
        out: dict[str, dict[str, Any]] = {}

        def entry(c: str) -> dict[str, Any]:
            return out.setdefault(
                c,
                {"spans": 0, "errors": 0, "first": None, "last": None, "samples": 0, "as_peer": 0},
            )

        def widen(e: dict[str, Any], first: datetime | None, last: datetime | None) -> None:
            if first is not None:
                e["first"] = first if e["first"] is None else min(e["first"], first)
            if last is not None:
                e["last"] = last if e["last"] is None else max(e["last"], last)

        with self._read("listing components") as conn:
            for c, n, errs, lo, hi in conn.execute(
                sa.select(
                    sp.c.component,
                    sa.func.count(),
                    sa.func.count(sp.c.error_type),
                    sa.func.min(sp.c.start_ns),
                    sa.func.max(sp.c.start_ns),
                ).group_by(sp.c.component)
            ):
                e = entry(c)
                e["spans"], e["errors"] = int(n), int(errs)
                widen(e, _from_ns(lo), _from_ns(hi))
            for c, n, lo, hi in conn.execute(
                sa.select(
                    sp.c.peer,
                    sa.func.count(),
                    sa.func.min(sp.c.start_ns),
                    sa.func.max(sp.c.start_ns),
                )
                .where(sp.c.peer.is_not(None))
                .group_by(sp.c.peer)
            ):
                e = entry(c)
                e["as_peer"] = int(n)
                widen(e, _from_ns(lo), _from_ns(hi))
            for c, n, lo, hi in conn.execute(
                sa.select(
                    sm.c.component,
                    sa.func.count(),
                    sa.func.min(sm.c.time_ms),
                    sa.func.max(sm.c.time_ms),
                )
                .where(sm.c.component.is_not(None))
                .group_by(sm.c.component)
            ):
                e = entry(c)
                e["samples"] = int(n)
                widen(e, _from_ms(lo), _from_ms(hi))
        return [ComponentSummary(component=c, **v) for c, v in sorted(out.items())]


def _copy_spans_pg(conn: Connection, rows: Sequence[tuple[Any, ...]]) -> int:
    """PostgreSQL's fast path: COPY into a per-session temporary table, then one
    INSERT ... SELECT that skips spans already stored. A multi-row INSERT of the same
    rows measured 3x slower (the server parses thousands of parameters per statement)."""
    cols = ", ".join(_SPAN_COLUMNS)
    driver = conn.connection.driver_connection
    assert driver is not None
    with driver.cursor() as cur:
        cur.execute(
            "CREATE TEMP TABLE IF NOT EXISTS spans_in "
            "(LIKE spans INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
        )
        with cur.copy(f"COPY spans_in ({cols}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        cur.execute(
            f"INSERT INTO spans ({cols}) SELECT {cols} FROM spans_in "  # noqa: S608
            "ON CONFLICT (trace_id, span_id) DO NOTHING"
        )
        return max(int(cur.rowcount), 0)


def _existing_eval_keys(conn: Connection, keys: set[tuple[str, str]]) -> set[tuple[str, str]]:
    t = EVALUATIONS
    trace_ids = {k[0] for k in keys}
    rows = conn.execute(
        sa.select(t.c.trace_id, t.c.span_id).where(t.c.trace_id.in_(trace_ids)).distinct()
    ).all()
    return {(r[0], r[1]) for r in rows} & keys
