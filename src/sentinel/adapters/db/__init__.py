"""The store: SQLModel tables on SQLite (WAL) or PostgreSQL, behind ``ports.TelemetryStore``.

The table classes never leave this package: callers get and give the frozen records of
``telemetry`` and ``incidents``. Schema changes go through alembic migrations in
``sentinel/migrations`` (applied by ``open_store`` when ``store.auto_migrate``).

Every method is blocking; the daemon calls them from worker threads. Span writes are the
hot path: they use one multi-row ``INSERT ... ON CONFLICT DO NOTHING`` per batch, so a
retried export never duplicates a span.

Layout (import from here, not from the modules):

    tables     the schema: table classes, ``sa.Table`` constants, ``METADATA``
    codec      rows <-> records: JSON columns, ns/ms timestamps, ``span_rows``
    core       ``_Base``: engine, clock, transactions, ping, close, batched inserts
    telemetry  spans, changes, samples, components        (mixin)
    incidents  incidents, hypotheses, audit, actions, kill switch, cursors  (mixin)
    outbox     tickets and their thread messages          (mixin)
    learned    versions of the learned state (priors, calibration)  (mixin)
    llm        what sentinel's LLM agents wrote per incident  (mixin)
    lease      the leader lease of replicas, fenced views of the store  (mixin)
    engine     ``create_engine_for``, ``migrate``
    store      ``SqlStore`` composed of the mixins, ``open_store``

What must not live here: decoding of wire formats, queries that belong to a stage (SLIs
are computed from what ``spans()``/``samples()`` return).
"""

from __future__ import annotations

from sentinel.adapters.db.codec import SpanRows, span_rows
from sentinel.adapters.db.engine import MIGRATIONS, create_engine_for, migrate
from sentinel.adapters.db.incidents import PAUSED_KEY
from sentinel.adapters.db.learned import LEARNING_ACTOR, LearnedAction
from sentinel.adapters.db.lease import LEADER_LEASE, Fence, Lease
from sentinel.adapters.db.store import SqlStore, open_store
from sentinel.adapters.db.tables import (
    ACTIONS,
    AUDIT,
    CHANGES,
    CURSORS,
    EVALUATIONS,
    HYPOTHESES,
    INCIDENTS,
    LEARNED_STATE,
    LEASES,
    METADATA,
    SAMPLES,
    SPANS,
    TICKET_MESSAGES,
    TICKETS,
    ActionRow,
    AuditRow,
    ChangeRow,
    CursorRow,
    EvaluationRow,
    HypothesisRow,
    IncidentRow,
    LearnedStateRow,
    SampleRow,
    SpanRow,
    TicketMessageRow,
    TicketRow,
    UTCDateTime,
)

__all__ = [
    "ACTIONS",
    "AUDIT",
    "CHANGES",
    "CURSORS",
    "EVALUATIONS",
    "HYPOTHESES",
    "INCIDENTS",
    "LEADER_LEASE",
    "LEARNED_STATE",
    "LEARNING_ACTOR",
    "LEASES",
    "METADATA",
    "MIGRATIONS",
    "PAUSED_KEY",
    "SAMPLES",
    "SPANS",
    "TICKETS",
    "TICKET_MESSAGES",
    "ActionRow",
    "AuditRow",
    "ChangeRow",
    "CursorRow",
    "EvaluationRow",
    "Fence",
    "HypothesisRow",
    "IncidentRow",
    "LearnedAction",
    "LearnedStateRow",
    "Lease",
    "SampleRow",
    "SpanRow",
    "SpanRows",
    "SqlStore",
    "TicketMessageRow",
    "TicketRow",
    "UTCDateTime",
    "create_engine_for",
    "migrate",
    "open_store",
    "span_rows",
]
