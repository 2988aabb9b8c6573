"""The schema: SQLModel table classes, their ``sa.Table`` constants and ``METADATA``
(alembic's ``target_metadata``), and the ``UTCDateTime`` column type.

These classes never leave the ``db`` package: callers get and give the frozen records of
``telemetry`` and ``incidents``. A change here needs an alembic migration in
``sentinel/migrations``.

What must not live here: queries, conversions between rows and records (``codec`` and
the store's parts), anything that opens a connection.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from sentinel.errors import StoreError


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


class LearnedStateRow(SQLModel, table=True):
    # Every version of what the Learning Agent learned, never updated in place: a new
    # fit or a reset is a new row, and the highest version is the one in use.
    __tablename__ = "learned_state"

    version: int | None = Field(default=None, primary_key=True)
    created_at: datetime = Field(sa_type=UTCDateTime)
    note: str = ""
    state: str  # JSON of learning.priors.LearnedState


class LlmOutputRow(SQLModel, table=True):
    # Every run of sentinel's own LLM agents on an incident (llm.records.LlmRecord),
    # whatever its outcome, never updated: the newest OK one of an agent for the
    # incident's current basis is the one in use; the token columns feed its budget.
    __tablename__ = "llm_outputs"

    id: int | None = Field(default=None, primary_key=True)
    incident_id: str = Field(index=True, foreign_key="incidents.id", ondelete="CASCADE")
    agent: str  # LlmAgentName
    basis: str  # digest of the hypotheses the run was given
    outcome: str  # LlmOutcome
    prompt: str
    prompt_version: str
    model: str
    created_at: datetime = Field(sa_type=UTCDateTime)
    output: str | None = None  # JSON of the validated output; NULL unless OK
    note: str = ""
    input_tokens: int = Field(default=0, sa_type=sa.BigInteger)
    output_tokens: int = Field(default=0, sa_type=sa.BigInteger)
    cost_usd: float = 0.0


class CursorRow(SQLModel, table=True):
    __tablename__ = "cursors"

    key: str = Field(primary_key=True)
    value: str
    updated_at: datetime = Field(sa_type=UTCDateTime)


class LeaseRow(SQLModel, table=True):
    # One row per lease name (the leader lease: "leader"). ``epoch`` is the fencing
    # token: it grows by one whenever the holder changes. ``expires_s`` is in seconds
    # since the epoch on the database's clock, never a replica's (``db.lease``).
    __tablename__ = "leases"

    name: str = Field(primary_key=True)
    holder: str
    epoch: int = Field(sa_type=sa.BigInteger)
    expires_s: float = Field(sa_type=sa.Float(precision=53))
    acquired_s: float = Field(sa_type=sa.Float(precision=53))


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
LEARNED_STATE: sa.Table = LearnedStateRow.__table__  # type: ignore[attr-defined]
LLM_OUTPUTS: sa.Table = LlmOutputRow.__table__  # type: ignore[attr-defined]
LEASES: sa.Table = LeaseRow.__table__  # type: ignore[attr-defined]

METADATA = SQLModel.metadata
