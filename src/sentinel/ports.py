"""The edges of sentinel: one small Protocol per kind of outside system.

Stages and agents depend on these, never on an adapter. Each real adapter in
``sentinel.adapters`` ships with a fake beside it, and a contract test runs the same
body against both.

What must not live here: implementations.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel, ConfigDict

from sentinel.errors import ChangeFeedError
from sentinel.telemetry import ChangeEvent, Sample, Series, Span

if TYPE_CHECKING:  # incidents imports cases, which imports this module
    from sentinel.incidents import AuditEntry, Incident
    from sentinel.llm.records import LlmAgentName, LlmRecord
    from sentinel.playbooks.model import AnyAction, BlastRadius
    from sentinel.rca import Hypothesis


class MetricSource(Protocol):
    """A Prometheus-compatible query API (Prometheus, VictoriaMetrics, Thanos, Mimir)."""

    async def instant(self, query: str, at: datetime | None = None) -> list[Series]:
        """Evaluate ``query`` at one instant; each series holds one point."""
        ...

    async def range(
        self, query: str, start: datetime, end: datetime, step: timedelta
    ) -> list[Series]:
        """Evaluate ``query`` over [start, end] every ``step``."""
        ...


class CursorStore(Protocol):
    """Small persistent key/value state (e.g. the last commit a change feed has seen)."""

    def get_cursor(self, key: str) -> str | None: ...

    def set_cursor(self, key: str, value: str) -> None: ...


@dataclass(frozen=True, slots=True)
class ChangePoll:
    """What one ``ChangeFeed.poll`` found: the new events of the sources that answered,
    oldest first per source, and one error per source that failed (naming it), so one
    broken repository never hides the changes of the others."""

    events: tuple[ChangeEvent, ...] = ()
    failures: tuple[ChangeFeedError, ...] = ()


# Receives a batch of new change events (e.g. the store's add_changes); raising a
# SentinelError leaves them unacknowledged, to be reported again.
ChangeSink = Callable[[Sequence[ChangeEvent]], object]


class ChangeFeed(Protocol):
    """A source of change events (watched git repositories)."""

    def poll(self, sink: ChangeSink | None = None) -> ChangePoll:
        """Change events that appeared since the last poll (persisted, so a restart does
        not report them twice), plus the sources that failed this time. Blocking: call it
        from a worker thread."""
        ...


@dataclass(frozen=True, slots=True)
class ComponentSummary:
    component: str
    spans: int
    errors: int
    first: datetime | None
    last: datetime | None
    samples: int = 0
    as_peer: int = 0  # client spans calling it (an uninstrumented callee has only these)


class TelemetryStore(Protocol):
    """Spans, metric samples and change events. Blocking: call from a worker thread."""

    def add_spans(self, spans: Sequence[Span]) -> int:
        """Store spans; a span already stored (same trace and span id) is skipped.
        Returns how many were new."""
        ...

    def spans(
        self,
        start: datetime,
        end: datetime,
        component: str | None = None,
        *,
        limit: int | None = None,
    ) -> list[Span]:
        """Spans that started in [start, end], oldest first; at most ``limit`` of them
        (the oldest) when given."""
        ...

    def span(self, trace_id: str, span_id: str) -> Span | None:
        """The span with these ids, or None when the store does not hold it."""
        ...

    def add_changes(self, changes: Sequence[ChangeEvent]) -> int: ...

    def changes(self, start: datetime, end: datetime) -> list[ChangeEvent]: ...

    def add_samples(self, samples: Sequence[Sample]) -> int: ...

    def samples(
        self, start: datetime, end: datetime, component: str | None = None
    ) -> list[Sample]: ...

    def components(self) -> list[ComponentSummary]: ...


class AuditAction(StrEnum):
    """Audit actions an ``IncidentStore`` writes itself (a lifecycle event's action is
    ``incidents.EventAction``)."""

    DIAGNOSED = "diagnosed"  # put_hypotheses: detail names the top hypothesis
    PAUSED = "remediation_paused"  # the kill switch turned on (set_paused)
    RESUMED = "remediation_resumed"
    LLM_OUTPUT = "llm_output"  # put_llm_output: detail names the agent, outcome and cost


# Who a diagnosis is attributed to in the audit log unless the caller says otherwise.
DIAGNOSIS_ACTOR = "root-cause-agent"


class IncidentStore(Protocol):
    """Incidents, their hypotheses and the audit log. Blocking: call from a worker
    thread."""

    def put_incident(self, incident: Incident, audit: Sequence[AuditEntry] = ()) -> None:
        """Write the incident and the audit entries of its new state atomically."""
        ...

    def get_incident(self, incident_id: str) -> Incident | None: ...

    def incidents(self, *, open_only: bool = False) -> list[Incident]: ...

    def audit(self, incident_id: str | None = None) -> list[AuditEntry]: ...

    def put_hypotheses(
        self,
        incident_id: str,
        hypotheses: Sequence[Hypothesis],
        at: datetime,
        *,
        actor: str = DIAGNOSIS_ACTOR,
    ) -> None:
        """Replace the incident's hypotheses (best first) with those of a diagnosis made at
        ``at``, and write its ``AuditAction.DIAGNOSED`` entry, atomically. Raises
        ``UnknownIncident`` for an id the store does not hold."""
        ...

    def hypotheses(self, incident_id: str) -> list[Hypothesis]:
        """The hypotheses of the incident's latest diagnosis, best first ([] before its
        first). Raises ``UnknownIncident`` for an id the store does not hold."""
        ...


class LlmOutputStore(Protocol):
    """What sentinel's LLM agents wrote, per incident (``llm.records.LlmRecord``). Blocking."""

    def put_llm_output(self, record: LlmRecord) -> int:
        """Store the record and its ``AuditAction.LLM_OUTPUT`` entry atomically; returns
        the record's id. Raises ``UnknownIncident`` for an id the store does not hold."""
        ...

    def llm_outputs(self, incident_id: str, agent: LlmAgentName | None = None) -> list[LlmRecord]:
        """The incident's records (only ``agent``'s when given), oldest first."""
        ...

    def llm_tokens_used(self, incident_id: str) -> int:
        """Input plus output tokens of all the incident's records (0 when none)."""
        ...


# --- remediation ------------------------------------------------------------------------


class StepResult(BaseModel):
    """What carrying out one step (or its undo) did: the commit it made and where it was
    pushed, or the HTTP status, in words for people in ``detail``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    detail: str = ""
    repo: str | None = None
    commit: str | None = None  # the full id of the commit the step made
    branch: str | None = None  # where the commit was pushed
    status: int | None = None  # an HTTP step's response status


class ActionExecutor(Protocol):
    """Carries out rendered playbook steps (templates already filled in).

    ``key`` is the step's idempotency key (incident + playbook + step). A git step is
    idempotent by it: its commit carries the key in a trailer, so calling ``apply`` again
    after a crash finds the commit (pushing it if the push had not happened) instead of
    making a second one. An HTTP step cannot be found again; the Remediation Agent never
    repeats one whose outcome is unknown. Blocking: call from the git worker thread.
    Raises ``ActionRefused`` (nothing changed: dirty tree, conflict, outside
    ``allowed``) or ``RemediationError``."""

    def apply(
        self, step: AnyAction, *, key: str, incident_id: str, allowed: BlastRadius
    ) -> StepResult: ...

    def revert(
        self, step: AnyAction, result: StepResult, *, key: str, incident_id: str
    ) -> StepResult:
        """Undo a git step by reverting the commit ``result`` names (idempotent by
        ``key``, which the caller makes distinct from the apply's)."""
        ...


class Notifier(Protocol):
    """Where people are told (the console; Slack comes with its stage)."""

    def notify(self, incident_id: str, message: str, *, escalate: bool = False) -> None: ...


# --- tickets ---------------------------------------------------------------------------

# One Block Kit block, as Slack's API takes it (JSON at the network edge).
Block = dict[str, Any]


class OutboxKind(StrEnum):
    TEXT = "text"  # a thread message
    FILE = "file"  # a file for the thread (body: base64)


class OutboxTicket(BaseModel):
    """An incident's ticket as the outbox holds it: the content wanted and how far its
    delivery got."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    incident_id: str
    version: int
    delivered_version: int
    text: str
    blocks: tuple[Block, ...]
    ref: str | None = None
    posting: bool = False
    attempts: int = 0
    next_attempt_at: datetime | None = None
    last_error: str = ""


class OutboxMessage(BaseModel):
    """A message or file waiting for (or delivered to) a ticket's thread."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: int
    incident_id: str
    kind: OutboxKind
    body: str
    filename: str = ""
    created_at: datetime
    attempts: int = 0
    delivered_at: datetime | None = None


class TicketSink(Protocol):
    """Where incident tickets are posted and kept up to date (Slack; the console). Async:
    it talks to a network service. Raises ``NotifyError`` (``retry_after`` set when the
    service asked to wait, e.g. Slack's 429)."""

    async def post(self, incident_id: str, text: str, blocks: Sequence[Block]) -> str:
        """Post a new ticket; returns its reference (Slack: the message ts). The message
        carries the incident id in its metadata, so ``find`` can find it again."""
        ...

    async def find(self, incident_id: str) -> str | None:
        """The reference of the incident's ticket if one was posted (after a crash left a
        post's outcome unknown), else None."""
        ...

    async def update(self, ref: str, text: str, blocks: Sequence[Block]) -> None: ...

    async def reply(self, ref: str, text: str) -> None:
        """Add a message to the ticket's thread."""
        ...

    async def upload(self, ref: str, filename: str, content: bytes, title: str) -> None:
        """Attach a file (the causal graph's picture) to the ticket's thread."""
        ...

    async def tell_user(self, user: str, text: str) -> None:
        """A message only ``user`` sees (Slack: an ephemeral message in the channel)."""
        ...
