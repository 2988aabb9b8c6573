"""The store: SQLModel tables on SQLite (WAL) or PostgreSQL, behind ``ports.TelemetryStore``.

The table classes never leave this module: callers get and give the frozen records of
``telemetry`` and ``incidents``. Schema changes go through alembic migrations in
``sentinel/migrations`` (applied by ``open_store`` when ``store.auto_migrate``).

Every method is blocking; the daemon calls them from worker threads. Span writes are the
hot path: they use one multi-row ``INSERT ... ON CONFLICT DO NOTHING`` per batch, so a
retried export never duplicates a span.

What must not live here: decoding of wire formats, queries that belong to a stage (SLIs
are computed from what ``spans()``/``samples()`` return).
"""

from __future__ import annotations

import base64
import functools
import itertools
import json
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Field, SQLModel

from sentinel.adapters.otlp import raw_details, span_to_raw
from sentinel.clock import Clock
from sentinel.errors import StoreError, UnknownIncident
from sentinel.incidents import AuditEntry, Incident, IncidentStatus
from sentinel.ports import (
    DIAGNOSIS_ACTOR,
    AuditAction,
    ComponentSummary,
    OutboxKind,
    OutboxMessage,
    OutboxTicket,
)
from sentinel.rca import Hypothesis
from sentinel.remediation import ActionRecord, ActionState
from sentinel.settings import mask_url
from sentinel.telemetry import (
    ChangeEvent,
    GenAIOperation,
    Sample,
    Span,
    SpanKind,
    SpanStatus,
    evaluations_of,
)


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """Timezone-aware datetimes only: rejects naive values, returns UTC-aware ones (SQLite
    has no timezone type, so values are stored as naive UTC there)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise StoreError(f"naive datetime {value!r} given to the store; use aware UTC")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# --- tables -----------------------------------------------------------------------------


class SpanRow(SQLModel, table=True):
    # Indexed on (trace_id, span_id) and start time only: stages read spans by time
    # window, and every extra index costs ingest (a (component, start) index measured at
    # +8 us of SQLite work per span, a third of the write cost).
    __tablename__ = "spans"

    trace_id: str = Field(primary_key=True, max_length=32)
    span_id: str = Field(primary_key=True, max_length=16)
    parent_span_id: str | None = Field(default=None, max_length=16)
    name: str
    kind: int
    start_ns: int = Field(sa_type=sa.BigInteger, index=True)
    end_ns: int = Field(sa_type=sa.BigInteger)
    service: str
    component: str
    peer: str | None = None
    operation: str | None = None
    status: int
    status_message: str = ""
    error_type: str | None = None
    http_status: int | None = Field(default=None, sa_type=sa.BigInteger)
    input_tokens: int | None = Field(default=None, sa_type=sa.BigInteger)
    output_tokens: int | None = Field(default=None, sa_type=sa.BigInteger)
    scope: str = ""
    # The span as an OTLP protobuf Span message (attributes, events, ... as sent).
    body: bytes = Field(sa_type=sa.LargeBinary)
    resource: str = "{}"  # JSON: the resource's attributes


class EvaluationRow(SQLModel, table=True):
    __tablename__ = "evaluations"
    __table_args__ = (sa.Index("ix_evaluations_component_time", "component", "time_ns"),)

    id: int | None = Field(default=None, primary_key=True)
    trace_id: str = Field(max_length=32)
    span_id: str = Field(max_length=16)
    component: str
    name: str
    score: float | None = None
    label: str | None = None
    time_ns: int = Field(sa_type=sa.BigInteger)


class ChangeRow(SQLModel, table=True):
    __tablename__ = "changes"

    id: str = Field(primary_key=True)
    component: str = Field(primary_key=True)
    time: datetime = Field(sa_type=UTCDateTime, index=True)
    affects: str = "[]"  # JSON list of component ids
    kind: str
    author: str = ""
    summary: str = ""
    repo: str = ""
    path: str = ""
    extra: str = "{}"  # JSON: fields beyond the case format's


class SampleRow(SQLModel, table=True):
    __tablename__ = "samples"
    __table_args__ = (
        sa.UniqueConstraint("metric", "labels", "time_ms", name="uq_samples_series_time"),
        sa.Index("ix_samples_component_time", "component", "time_ms"),
    )

    id: int | None = Field(default=None, primary_key=True)
    metric: str
    labels: str  # JSON object, keys sorted
    component: str | None = None
    time_ms: int = Field(sa_type=sa.BigInteger, index=True)
    value: float | None = None  # NULL stands for NaN, which SQLite cannot store


class IncidentRow(SQLModel, table=True):
    __tablename__ = "incidents"

    id: str = Field(primary_key=True)
    title: str
    status: str = Field(index=True)
    opened_at: datetime = Field(sa_type=UTCDateTime)
    updated_at: datetime = Field(sa_type=UTCDateTime)
    resolved_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    components: str = "[]"  # JSON


class AuditRow(SQLModel, table=True):
    __tablename__ = "audit_log"

    id: int | None = Field(default=None, primary_key=True)
    time: datetime = Field(sa_type=UTCDateTime, index=True)
    actor: str
    action: str
    incident_id: str | None = Field(default=None, index=True)
    detail: str = "{}"  # JSON


class HypothesisRow(SQLModel, table=True):
    # An incident's latest diagnosis, one row per hypothesis; a new diagnosis replaces
    # them all (the audit log keeps what each diagnosis concluded).
    __tablename__ = "hypotheses"

    incident_id: str = Field(primary_key=True, foreign_key="incidents.id", ondelete="CASCADE")
    rank: int = Field(primary_key=True)  # 1 is the most likely cause
    component: str
    fault: str
    confidence: float
    score: float
    change_id: str | None = None
    evidence: str = "[]"  # JSON list of strings
    diagnosed_at: datetime = Field(sa_type=UTCDateTime)


class ActionRow(SQLModel, table=True):
    # One remediation (a playbook acting on an incident): the whole record as JSON, and
    # the columns it is looked up by. Updates compare-and-set on the previous record, so
    # two writers (the daemon and `sentinel approve`) never overwrite each other.
    __tablename__ = "actions"

    key: str = Field(primary_key=True)
    incident_id: str = Field(index=True, foreign_key="incidents.id", ondelete="CASCADE")
    playbook: str
    state: str = Field(index=True)
    created_at: datetime = Field(sa_type=UTCDateTime)
    updated_at: datetime = Field(sa_type=UTCDateTime)
    started_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    record: str  # JSON of remediation.ActionRecord


class TicketRow(SQLModel, table=True):
    # The outbox of an incident's ticket: the content wanted (version bumps on change)
    # and how far delivery got. ``posting``: a post was sent whose outcome is unknown
    # (a crash, a timeout); the sink is asked to find it before posting again.
    __tablename__ = "tickets"

    incident_id: str = Field(primary_key=True, foreign_key="incidents.id", ondelete="CASCADE")
    version: int = 1
    text: str
    blocks: str  # JSON list of Block Kit blocks
    delivered_version: int = 0
    ref: str | None = None  # the sink's reference (Slack: the message ts)
    posting: bool = False
    attempts: int = 0
    next_attempt_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_error: str = ""
    updated_at: datetime = Field(sa_type=UTCDateTime)


class TicketMessageRow(SQLModel, table=True):
    # The outbox of a ticket's thread: messages and files, delivered in id order.
    __tablename__ = "ticket_messages"

    id: int | None = Field(default=None, primary_key=True)
    incident_id: str = Field(index=True, foreign_key="incidents.id", ondelete="CASCADE")
    kind: str  # OutboxKind
    body: str  # the text, or a file's bytes as base64
    filename: str = ""
    created_at: datetime = Field(sa_type=UTCDateTime)
    delivered_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    attempts: int = 0
    next_attempt_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_error: str = ""


class CursorRow(SQLModel, table=True):
    __tablename__ = "cursors"

    key: str = Field(primary_key=True)
    value: str
    updated_at: datetime = Field(sa_type=UTCDateTime)


# The tables as SQLAlchemy Core objects (SQLModel's __table__ is not typed).
SPANS: sa.Table = SpanRow.__table__  # type: ignore[attr-defined]
EVALUATIONS: sa.Table = EvaluationRow.__table__  # type: ignore[attr-defined]
CHANGES: sa.Table = ChangeRow.__table__  # type: ignore[attr-defined]
SAMPLES: sa.Table = SampleRow.__table__  # type: ignore[attr-defined]
INCIDENTS: sa.Table = IncidentRow.__table__  # type: ignore[attr-defined]
AUDIT: sa.Table = AuditRow.__table__  # type: ignore[attr-defined]
CURSORS: sa.Table = CursorRow.__table__  # type: ignore[attr-defined]
HYPOTHESES: sa.Table = HypothesisRow.__table__  # type: ignore[attr-defined]
ACTIONS: sa.Table = ActionRow.__table__  # type: ignore[attr-defined]
TICKETS: sa.Table = TicketRow.__table__  # type: ignore[attr-defined]
TICKET_MESSAGES: sa.Table = TicketMessageRow.__table__  # type: ignore[attr-defined]

# The kill switch's key in the cursors table (small persistent state).
PAUSED_KEY = "remediation.paused"


# --- JSON helpers -----------------------------------------------------------------------


def _default(value: Any) -> Any:
    if isinstance(value, bytes):
        # bytes attribute values are stored as base64 text under a marker key.
        return {"__bytes__": base64.b64encode(value).decode()}
    raise TypeError(f"cannot store {type(value).__name__} value {value!r:.80}")


def _hook(obj: dict[str, Any]) -> Any:
    if len(obj) == 1 and "__bytes__" in obj:
        return base64.b64decode(obj["__bytes__"])
    return obj


def _dumps(value: Any) -> str:
    try:
        return json.dumps(value, default=_default, separators=(",", ":"), allow_nan=True)
    except (TypeError, ValueError) as e:
        raise StoreError(f"cannot store {value!r:.120}: {e}") from e


def _loads(text: str) -> Any:
    return json.loads(text, object_hook=_hook)


# --- the store --------------------------------------------------------------------------


def create_engine_for(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL, a busy timeout and foreign keys."""
    if url.startswith("sqlite"):
        path = url.removeprefix("sqlite:///")
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            # NORMAL is durable across application crashes in WAL mode (only an OS crash
            # can lose the last transactions), at a fraction of FULL's fsync cost.
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            # Span writes touch random pages of the (trace_id, span_id) index: a larger
            # page cache cuts their cost (bench/ingest.py). Bounded: 64 MiB per connection.
            cur.execute("PRAGMA cache_size=-65536")
            cur.close()

        return engine
    return sa.create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)


class SqlStore:
    """``ports.TelemetryStore`` and the incident/audit/cursor store on SQLAlchemy."""

    def __init__(self, engine: Engine, clock: Clock) -> None:
        self.engine = engine
        self.clock = clock
        self._dialect = engine.dialect.name
        self._insert = pg_insert if self._dialect == "postgresql" else sqlite_insert

    @property
    def url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _tx(self, what: str) -> Iterator[Connection]:
        try:
            with self.engine.begin() as conn:
                yield conn
        except SQLAlchemyError as e:
            raise StoreError(f"store {self.url}: {what} failed: {e}") from e

    @contextmanager
    def _read(self, what: str) -> Iterator[Connection]:
        try:
            with self.engine.connect() as conn:
                yield conn
        except SQLAlchemyError as e:
            raise StoreError(f"store {self.url}: {what} failed: {e}") from e

    def ping(self) -> None:
        with self._read("ping") as conn:
            conn.execute(sa.text("SELECT 1"))

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

    @functools.cache  # noqa: B019  # a few (table, width) pairs per store
    def _insert_sql(
        self, table: str, columns: tuple[str, ...], key: tuple[str, ...], n_rows: int
    ) -> str:
        """``INSERT ... VALUES (..), (..) ... ON CONFLICT (key) DO NOTHING`` for ``n_rows``
        rows, in the driver's parameter style. Identifiers come from this module's
        constants; values are bound parameters."""
        mark = "%s" if self._dialect == "postgresql" else "?"
        one = f"({', '.join([mark] * len(columns))})"
        return (
            f"INSERT INTO {table} ({', '.join(columns)}) "  # noqa: S608
            f"VALUES {', '.join([one] * n_rows)} "
            f"ON CONFLICT ({', '.join(key)}) DO NOTHING"
        )

    def _insert_rows(
        self,
        conn: Connection,
        table: str,
        columns: tuple[str, ...],
        key: tuple[str, ...],
        rows: Sequence[tuple[Any, ...]],
    ) -> int:
        """INSERT rows (tuples in ``columns`` order), skipping those whose ``key`` is
        already stored; returns how many were new.

        The ingest hot path. Many rows per statement, straight through the driver: the
        driver's executemany would release and retake the GIL for every row, and while
        the event loop decodes the next request each retake can wait a whole switch
        interval. Also skips SQLAlchemy's per-row parameter processing."""
        per_statement = max(1, _MAX_PARAMS // len(columns))
        new = 0
        for i in range(0, len(rows), per_statement):
            chunk = rows[i : i + per_statement]
            sql = self._insert_sql(table, columns, key, len(chunk))
            params = tuple(itertools.chain.from_iterable(chunk))
            new += max(int(conn.exec_driver_sql(sql, params).rowcount), 0)
        return new

    def _insert_new(
        self,
        conn: Connection,
        table: str,
        key: tuple[str, ...],
        rows: Sequence[dict[str, Any]],
    ) -> int:
        """Like ``_insert_rows`` for rows given as dicts."""
        columns = tuple(rows[0])
        return self._insert_rows(
            conn, table, columns, key, [tuple(r[c] for c in columns) for r in rows]
        )

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

    def span_count(self) -> int:
        with self._read("counting spans") as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(SPANS)).scalar_one())

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

    # -- incidents and audit --

    def put_incident(self, incident: Incident, audit: Sequence[AuditEntry] = ()) -> None:
        """Write an incident and the audit entries that explain its new state in one
        transaction: the record and its trail never disagree after a crash."""
        row = {
            "id": incident.id,
            "title": incident.title,
            "status": incident.status.value,
            "opened_at": incident.opened_at,
            "updated_at": incident.updated_at,
            "resolved_at": incident.resolved_at,
            "components": _dumps(list(incident.components)),
        }
        stmt = self._insert(INCIDENTS).values(row)
        stmt = stmt.on_conflict_do_update(
            index_elements=["id"], set_={k: v for k, v in row.items() if k != "id"}
        )
        with self._tx(f"writing incident {incident.id!r}") as conn:
            conn.execute(stmt)
            for entry in audit:
                conn.execute(_audit_insert(entry))

    def get_incident(self, incident_id: str) -> Incident | None:
        t = INCIDENTS
        with self._read(f"reading incident {incident_id!r}") as conn:
            r = conn.execute(sa.select(t).where(t.c.id == incident_id)).mappings().first()
        return _incident_from_row(r) if r else None

    def incidents(self, *, open_only: bool = False) -> list[Incident]:
        t = INCIDENTS
        q = sa.select(t).order_by(t.c.opened_at.desc())
        if open_only:
            q = q.where(t.c.status != IncidentStatus.RESOLVED.value)
        with self._read("listing incidents") as conn:
            return [_incident_from_row(r) for r in conn.execute(q).mappings().all()]

    def put_hypotheses(
        self,
        incident_id: str,
        hypotheses: Sequence[Hypothesis],
        at: datetime,
        *,
        actor: str = DIAGNOSIS_ACTOR,
    ) -> None:
        """Replace the incident's hypotheses with ``hypotheses`` (best first), diagnosed at
        ``at``, and write the "diagnosed" audit entry naming the top one, in one
        transaction: readers see the old diagnosis or the new one, never a mix."""
        if at.tzinfo is None:
            raise StoreError(f"naive datetime {at!r} given to the store; use aware UTC")
        rows = [
            {
                "incident_id": incident_id,
                "rank": n,
                "component": h.component,
                "fault": h.fault,
                "confidence": h.confidence,
                "score": h.score,
                "change_id": h.change,
                "evidence": _dumps(list(h.evidence)),
                "diagnosed_at": at,
            }
            for n, h in enumerate(hypotheses, start=1)
        ]
        entry = _diagnosed_entry(incident_id, hypotheses, at, actor)
        t = HYPOTHESES
        with self._tx(f"writing the hypotheses of incident {incident_id!r}") as conn:
            self._require_incident(conn, incident_id)
            conn.execute(sa.delete(t).where(t.c.incident_id == incident_id))
            if rows:
                conn.execute(sa.insert(t), rows)
            conn.execute(_audit_insert(entry))

    def hypotheses(self, incident_id: str) -> list[Hypothesis]:
        """The incident's hypotheses of its latest diagnosis, best first; [] if it has not
        been diagnosed."""
        t = HYPOTHESES
        with self._read(f"reading the hypotheses of incident {incident_id!r}") as conn:
            self._require_incident(conn, incident_id)
            q = sa.select(t).where(t.c.incident_id == incident_id).order_by(t.c.rank)
            rows = conn.execute(q).mappings().all()
        return [
            Hypothesis(
                component=r["component"],
                fault=r["fault"],
                confidence=r["confidence"],
                change=r["change_id"],
                evidence=tuple(_loads(r["evidence"])),
                score=r["score"],
            )
            for r in rows
        ]

    def _require_incident(self, conn: Connection, incident_id: str) -> None:
        t = INCIDENTS
        if conn.execute(sa.select(t.c.id).where(t.c.id == incident_id)).first() is None:
            raise UnknownIncident(f"store {self.url}: no incident {incident_id!r}")

    def append_audit(self, entry: AuditEntry) -> None:
        with self._tx("writing the audit log") as conn:
            conn.execute(_audit_insert(entry))

    def audit(self, incident_id: str | None = None) -> list[AuditEntry]:
        t = AUDIT
        q = sa.select(t).order_by(t.c.time, t.c.id)
        if incident_id is not None:
            q = q.where(t.c.incident_id == incident_id)
        with self._read("reading the audit log") as conn:
            rows = conn.execute(q).mappings().all()
        return [
            AuditEntry(
                time=r["time"],
                actor=r["actor"],
                action=r["action"],
                incident_id=r["incident_id"],
                detail=_loads(r["detail"]),
            )
            for r in rows
        ]

    # -- remediation actions and the kill switch --

    def put_action(
        self,
        record: ActionRecord,
        audit: Sequence[AuditEntry] = (),
        *,
        prev: ActionRecord | None = None,
    ) -> bool:
        """Write an action record and the audit entries of its new state atomically.
        ``prev`` None: a new record (False if one with its key exists). Otherwise the
        record must still be ``prev`` in the store (compare-and-set): False, and nothing
        written, when another writer changed it first."""
        text = record.model_dump_json()
        row = {
            "key": record.key,
            "incident_id": record.incident_id,
            "playbook": record.playbook,
            "state": record.state.value,
            "created_at": record.created_at,
            "updated_at": record.updated_at,
            "started_at": record.started_at,
            "record": text,
        }
        t = ACTIONS
        with self._tx(f"writing action {record.key!r}") as conn:
            if prev is None:
                self._require_incident(conn, record.incident_id)
                stmt = (
                    self._insert(t)
                    .values(row)
                    .on_conflict_do_nothing(index_elements=["key"])
                    .returning(t.c.key)
                )
                done = conn.execute(stmt).first() is not None
            else:
                stmt2 = (
                    sa.update(t)
                    .where(t.c.key == record.key, t.c.record == prev.model_dump_json())
                    .values({k: v for k, v in row.items() if k != "key"})
                )
                done = conn.execute(stmt2).rowcount == 1
            if done:
                for entry in audit:
                    conn.execute(_audit_insert(entry))
        return done

    def get_action(self, key: str) -> ActionRecord | None:
        t = ACTIONS
        with self._read(f"reading action {key!r}") as conn:
            text = conn.execute(sa.select(t.c.record).where(t.c.key == key)).scalar_one_or_none()
        return ActionRecord.model_validate_json(text) if text is not None else None

    def actions(
        self, incident_id: str | None = None, *, states: Sequence[ActionState] = ()
    ) -> list[ActionRecord]:
        """Action records, oldest first; of one incident, in some states, when given."""
        t = ACTIONS
        q = sa.select(t.c.record).order_by(t.c.created_at, t.c.key)
        if incident_id is not None:
            q = q.where(t.c.incident_id == incident_id)
        if states:
            q = q.where(t.c.state.in_([s.value for s in states]))
        with self._read("listing actions") as conn:
            texts = conn.execute(q).scalars().all()
        return [ActionRecord.model_validate_json(x) for x in texts]

    def paused(self) -> bool:
        """Whether the kill switch in the store is on (`sentinel pause`)."""
        return self.get_cursor(PAUSED_KEY) == "true"

    def set_paused(self, paused: bool, *, actor: str, reason: str = "") -> None:
        """Turn the kill switch on or off, with its audit entry, in one transaction."""
        now = self.clock.now()
        value = "true" if paused else "false"
        stmt = self._insert(CURSORS).values(key=PAUSED_KEY, value=value, updated_at=now)
        stmt = stmt.on_conflict_do_update(
            index_elements=["key"], set_={"value": value, "updated_at": now}
        )
        entry = AuditEntry(
            time=now,
            actor=actor,
            action=(AuditAction.PAUSED if paused else AuditAction.RESUMED).value,
            detail={"reason": reason} if reason else {},
        )
        with self._tx("writing the kill switch") as conn:
            conn.execute(stmt)
            conn.execute(_audit_insert(entry))

    # -- the ticket outbox --

    def put_ticket(self, incident_id: str, text: str, blocks: Sequence[Any]) -> bool:
        """Want the incident's ticket to say this. Bumps its version (so it is delivered
        again) only when the content changed; True then."""
        now = self.clock.now()
        blocks_json = _dumps(list(blocks))
        t = TICKETS
        with self._tx(f"writing the ticket of incident {incident_id!r}") as conn:
            self._require_incident(conn, incident_id)
            row = conn.execute(
                sa.select(t.c.text, t.c.blocks, t.c.version).where(t.c.incident_id == incident_id)
            ).first()
            if row is None:
                conn.execute(
                    sa.insert(t).values(
                        incident_id=incident_id, text=text, blocks=blocks_json, updated_at=now
                    )
                )
                return True
            if row.text == text and row.blocks == blocks_json:
                return False
            conn.execute(
                sa.update(t)
                .where(t.c.incident_id == incident_id)
                .values(
                    text=text,
                    blocks=blocks_json,
                    version=row.version + 1,
                    updated_at=now,
                    # New content is worth trying at once, whatever the backoff said.
                    next_attempt_at=None,
                )
            )
            return True

    def ticket(self, incident_id: str) -> OutboxTicket | None:
        t = TICKETS
        with self._read(f"reading the ticket of incident {incident_id!r}") as conn:
            r = conn.execute(sa.select(t).where(t.c.incident_id == incident_id)).mappings().first()
        return _ticket_from_row(r) if r else None

    def due_tickets(self, now: datetime) -> list[OutboxTicket]:
        """Tickets whose wanted version is not delivered yet and whose backoff is over."""
        t = TICKETS
        q = (
            sa.select(t)
            .where(t.c.version > t.c.delivered_version)
            .where(sa.or_(t.c.next_attempt_at.is_(None), t.c.next_attempt_at <= now))
            .order_by(t.c.updated_at, t.c.incident_id)
        )
        with self._read("listing tickets to deliver") as conn:
            return [_ticket_from_row(r) for r in conn.execute(q).mappings().all()]

    def ticket_posting(self, incident_id: str) -> None:
        """Record, before the post is sent, that its outcome will be unknown until
        ``ticket_delivered``: after a crash the post is found, not repeated."""
        self._update_ticket(incident_id, posting=True)

    def ticket_delivered(self, incident_id: str, version: int, ref: str) -> None:
        self._update_ticket(
            incident_id,
            delivered_version=version,
            ref=ref,
            posting=False,
            attempts=0,
            next_attempt_at=None,
            last_error="",
        )

    def ticket_failed(self, incident_id: str, next_attempt_at: datetime, error: str) -> None:
        t = TICKETS
        with self._tx(f"writing the ticket of incident {incident_id!r}") as conn:
            conn.execute(
                sa.update(t)
                .where(t.c.incident_id == incident_id)
                .values(
                    attempts=t.c.attempts + 1,
                    next_attempt_at=next_attempt_at,
                    last_error=error[:2000],
                )
            )

    def _update_ticket(self, incident_id: str, **values: Any) -> None:
        t = TICKETS
        with self._tx(f"writing the ticket of incident {incident_id!r}") as conn:
            conn.execute(sa.update(t).where(t.c.incident_id == incident_id).values(**values))

    def add_ticket_message(
        self, incident_id: str, kind: OutboxKind, body: str, filename: str = ""
    ) -> int:
        """Queue a message (or a file, ``body`` base64) for the incident's ticket thread."""
        t = TICKET_MESSAGES
        with self._tx(f"queueing a message for incident {incident_id!r}") as conn:
            self._require_incident(conn, incident_id)
            stmt = (
                sa.insert(t)
                .values(
                    incident_id=incident_id,
                    kind=kind.value,
                    body=body,
                    filename=filename,
                    created_at=self.clock.now(),
                )
                .returning(t.c.id)
            )
            return int(conn.execute(stmt).scalar_one())

    def due_ticket_messages(self, now: datetime) -> list[OutboxMessage]:
        """Undelivered thread messages whose backoff is over, oldest first."""
        t = TICKET_MESSAGES
        q = (
            sa.select(t)
            .where(t.c.delivered_at.is_(None))
            .where(sa.or_(t.c.next_attempt_at.is_(None), t.c.next_attempt_at <= now))
            .order_by(t.c.id)
        )
        with self._read("listing thread messages to deliver") as conn:
            rows = conn.execute(q).mappings().all()
        return [_message_from_row(r) for r in rows]

    def ticket_messages(self, incident_id: str) -> list[OutboxMessage]:
        t = TICKET_MESSAGES
        q = sa.select(t).where(t.c.incident_id == incident_id).order_by(t.c.id)
        with self._read("listing thread messages") as conn:
            rows = conn.execute(q).mappings().all()
        return [_message_from_row(r) for r in rows]

    def ticket_message_delivered(self, message_id: int) -> None:
        t = TICKET_MESSAGES
        with self._tx("marking a thread message delivered") as conn:
            conn.execute(
                sa.update(t)
                .where(t.c.id == message_id)
                .values(delivered_at=self.clock.now(), last_error="")
            )

    def ticket_message_failed(self, message_id: int, next_attempt_at: datetime, error: str) -> None:
        t = TICKET_MESSAGES
        with self._tx("writing a thread message's failure") as conn:
            conn.execute(
                sa.update(t)
                .where(t.c.id == message_id)
                .values(
                    attempts=t.c.attempts + 1,
                    next_attempt_at=next_attempt_at,
                    last_error=error[:2000],
                )
            )

    # -- cursors (ports.CursorStore) --

    def get_cursor(self, key: str) -> str | None:
        t = CURSORS
        with self._read(f"reading cursor {key!r}") as conn:
            v = conn.execute(sa.select(t.c.value).where(t.c.key == key)).scalar_one_or_none()
        return str(v) if v is not None else None

    def set_cursor(self, key: str, value: str) -> None:
        now = self.clock.now()
        stmt = self._insert(CURSORS).values(key=key, value=value, updated_at=now)
        stmt = stmt.on_conflict_do_update(
            index_elements=["key"], set_={"value": value, "updated_at": now}
        )
        with self._tx(f"writing cursor {key!r}") as conn:
            conn.execute(stmt)


_SPAN_COLUMNS = (
    "trace_id",
    "span_id",
    "parent_span_id",
    "name",
    "kind",
    "start_ns",
    "end_ns",
    "service",
    "component",
    "peer",
    "operation",
    "status",
    "status_message",
    "error_type",
    "http_status",
    "input_tokens",
    "output_tokens",
    "scope",
    "body",
    "resource",
)


# Bound parameters per statement: under SQLite's default limit (32766 since 3.32) and
# PostgreSQL's (65535).
_MAX_PARAMS = 10_000
_SPAN_PREFIX = 17
assert Span._fields[:_SPAN_PREFIX] == _SPAN_COLUMNS[:_SPAN_PREFIX]
assert _SPAN_COLUMNS[_SPAN_PREFIX:] == ("scope", "body", "resource")


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


def _without_nul(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """PostgreSQL text cannot hold U+0000: replace it in the text columns (the exact
    name and status message are read back from the span's protobuf body)."""
    if not any(type(v) is str and "\x00" in v for v in row):
        return row
    return tuple(v.replace("\x00", "\ufffd") if type(v) is str else v for v in row)


@dataclass(frozen=True, slots=True)
class SpanRows:
    """Spans as the store's rows: plain tuples and dicts, cheap to send to a writer
    process."""

    rows: list[tuple[Any, ...]]
    evaluations: list[dict[str, Any]]


def span_rows(spans: Sequence[Span], *, postgres: bool) -> SpanRows:
    resource_json: dict[int, str] = {}
    rows: list[tuple[Any, ...]] = []
    evals: list[dict[str, Any]] = []
    evaluated: set[tuple[str, str]] = set()  # a span repeated within the batch
    for s in spans:
        rj = resource_json.get(id(s.resource))
        if rj is None:
            rj = resource_json[id(s.resource)] = _dumps(s.resource)
        # A Span's first fields are the table's first columns, in order (checked at
        # import below): slicing beats building a tuple field by field on this path.
        rows.append((*s[:_SPAN_PREFIX], s.scope, s.raw or span_to_raw(s), rj))
        if not s.evaluations or (s.trace_id, s.span_id) in evaluated:
            continue
        evaluated.add((s.trace_id, s.span_id))
        for ev in s.evaluations:
            evals.append(
                {
                    "trace_id": s.trace_id,
                    "span_id": s.span_id,
                    "component": s.component,
                    "name": ev.name,
                    "score": ev.score,
                    "label": ev.label,
                    "time_ns": ev.time_ns,
                }
            )
    if postgres:
        rows = [_without_nul(r) for r in rows]
    return SpanRows(rows, evals)


def _existing_eval_keys(conn: Connection, keys: set[tuple[str, str]]) -> set[tuple[str, str]]:
    t = EVALUATIONS
    trace_ids = {k[0] for k in keys}
    rows = conn.execute(
        sa.select(t.c.trace_id, t.c.span_id).where(t.c.trace_id.in_(trace_ids)).distinct()
    ).all()
    return {(r[0], r[1]) for r in rows} & keys


def _ns(t: datetime) -> int:
    if t.tzinfo is None:
        raise StoreError(f"naive datetime {t!r} given to the store; use aware UTC")
    return int(t.timestamp()) * 1_000_000_000 + t.microsecond * 1000


def _ms(t: datetime) -> int:
    if t.tzinfo is None:
        raise StoreError(f"naive datetime {t!r} given to the store; use aware UTC")
    return round(t.timestamp() * 1000)


def _from_ns(ns: int | None) -> datetime | None:
    return None if ns is None else datetime.fromtimestamp(ns / 1e9, tz=UTC)


def _from_ms(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, tz=UTC)


def _span_from_row(r: Any) -> Span:
    body = bytes(r["body"])
    details = raw_details(body)
    attributes, events = details.attributes, details.events
    # Evaluations are re-derived from the stored events by the same mapping that
    # produced them at ingest, so the read path cannot drift from the write path.
    evaluations = evaluations_of(events)
    return Span(
        trace_id=r["trace_id"],
        span_id=r["span_id"],
        parent_span_id=r["parent_span_id"],
        name=details.name,
        kind=SpanKind(r["kind"]),
        start_ns=r["start_ns"],
        end_ns=r["end_ns"],
        service=r["service"],
        component=r["component"],
        peer=r["peer"],
        operation=GenAIOperation(r["operation"]) if r["operation"] else None,
        status=SpanStatus(r["status"]),
        status_message=details.status_message,
        error_type=r["error_type"],
        http_status=r["http_status"],
        input_tokens=r["input_tokens"],
        output_tokens=r["output_tokens"],
        evaluations=evaluations,
        attributes=attributes,
        events=events,
        resource=_loads(r["resource"]),
        scope=r["scope"],
        raw=body,
    )


def _audit_insert(entry: AuditEntry) -> sa.Insert:
    return sa.insert(AUDIT).values(
        time=entry.time,
        actor=entry.actor,
        action=entry.action,
        incident_id=entry.incident_id,
        detail=_dumps(entry.detail),
    )


def _diagnosed_entry(
    incident_id: str, hypotheses: Sequence[Hypothesis], at: datetime, actor: str
) -> AuditEntry:
    """The audit record of a diagnosis: the top hypothesis (None when the engine found no
    candidate) and how many there were; the full list is in the hypotheses table."""
    top = hypotheses[0] if hypotheses else None
    return AuditEntry(
        time=at,
        actor=actor,
        action=AuditAction.DIAGNOSED.value,
        incident_id=incident_id,
        detail={
            "top": None
            if top is None
            else {
                "component": top.component,
                "fault": top.fault,
                "confidence": top.confidence,
                "change": top.change,
            },
            "hypotheses": len(hypotheses),
        },
    )


def _message_from_row(r: Any) -> OutboxMessage:
    return OutboxMessage(
        id=r["id"],
        incident_id=r["incident_id"],
        kind=OutboxKind(r["kind"]),
        body=r["body"],
        filename=r["filename"],
        created_at=r["created_at"],
        attempts=r["attempts"],
        delivered_at=r["delivered_at"],
    )


def _ticket_from_row(r: Any) -> OutboxTicket:
    return OutboxTicket(
        incident_id=r["incident_id"],
        version=r["version"],
        delivered_version=r["delivered_version"],
        text=r["text"],
        blocks=tuple(_loads(r["blocks"])),
        ref=r["ref"],
        posting=bool(r["posting"]),
        attempts=r["attempts"],
        next_attempt_at=r["next_attempt_at"],
        last_error=r["last_error"],
    )


def _incident_from_row(r: Any) -> Incident:
    return Incident(
        id=r["id"],
        title=r["title"],
        status=IncidentStatus(r["status"]),
        opened_at=r["opened_at"],
        updated_at=r["updated_at"],
        resolved_at=r["resolved_at"],
        components=tuple(_loads(r["components"])),
    )


METADATA = SQLModel.metadata

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
# Any 64-bit number, the same in every replica: serialises concurrent migrations.
_MIGRATION_LOCK = 0x5E471E1


def migrate(engine: Engine) -> None:
    """Apply pending alembic migrations (``upgrade head``)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                # Several replicas may start at once; only one migrates at a time.
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
    except SQLAlchemyError as e:
        raise StoreError(
            f"store {engine.url.render_as_string(hide_password=True)}: migration failed: {e}"
        ) from e


def open_store(url: str, clock: Clock, *, auto_migrate: bool = True) -> SqlStore:
    """Connect to the store at ``url`` and bring its schema up to date."""
    try:
        engine = create_engine_for(url)
    except (SQLAlchemyError, ValueError) as e:
        raise StoreError(f"store URL {mask_url(url)!r} is not usable: {mask_url(str(e))}") from e
    if auto_migrate:
        try:
            migrate(engine)
        except StoreError:
            engine.dispose()
            raise
    return SqlStore(engine, clock)
