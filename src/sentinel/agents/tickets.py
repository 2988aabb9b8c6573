"""Incident tickets as the daemon keeps them: written to the store's outbox first, then
delivered to a ``TicketSink`` (Slack, or the console) with retries.

- ``refresh_ticket``: what an incident's ticket should say now (its anomalies, ranked
  hypotheses and latest action, rendered by ``sentinel.tickets``), written to the outbox
  when it changed. Called after every agent run that may change it, and after a person
  approves or rejects.
- ``OutboxNotifier``: the ``Notifier`` the agents tell people through: each message goes
  to the ticket's thread, by way of the outbox.
- ``deliver_once``: delivers what the outbox holds. A ticket is posted once and then
  updated in place; a post whose outcome is unknown (a crash, a timeout) is looked for
  (``TicketSink.find``) before it is sent again, so a restart never duplicates a ticket.
  Failures back off exponentially, or as long as Retry-After asks, persisted, so nothing
  is lost across a restart. An incident's thread messages go out in order, after its
  ticket (none overtakes one that is backing off); one delivered just before a crash may
  be delivered again (at least once).
- ``ConsoleSink``: the sink without Slack: tickets and thread messages printed.

What must not live here: ticket content (``sentinel.tickets``), Slack's API
(``adapters.slack``), SQL.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol, TextIO

import structlog

from sentinel.errors import NotifyError, UnknownIncident
from sentinel.incidents import Incident, fold, lifecycle_events
from sentinel.learning.archive import confirmations
from sentinel.learning.priors import Beta, PlaybookKey, playbook_success, success_of
from sentinel.llm.story import story_view
from sentinel.observability import SelfMetrics
from sentinel.ports import (
    Block,
    IncidentStore,
    LlmOutputStore,
    OutboxKind,
    OutboxMessage,
    OutboxTicket,
    TelemetryStore,
    TicketSink,
)
from sentinel.remediation import ActionRecord, ActionState
from sentinel.settings import LlmSettings
from sentinel.tickets import build_ticket, ticket_blocks, ticket_text

# The investigator's bound when the caller has no settings at hand (a CLI confirmation).
DEFAULT_MAX_SHIFT = LlmSettings().max_confidence_shift

log = structlog.get_logger(__name__)

# The first retry waits this long; each failure doubles it, up to the configured cap.
FIRST_BACKOFF_SECONDS = 2.0


class TicketStore(TelemetryStore, IncidentStore, LlmOutputStore, Protocol):
    """What the ticket desk reads and writes (``adapters.db.SqlStore``)."""

    def actions(
        self, incident_id: str | None = None, *, states: Sequence[ActionState] = ()
    ) -> list[ActionRecord]: ...

    def put_ticket(self, incident_id: str, text: str, blocks: Sequence[Block]) -> bool: ...

    def ticket(self, incident_id: str) -> OutboxTicket | None: ...

    def due_tickets(self, now: datetime) -> list[OutboxTicket]: ...

    def ticket_posting(self, incident_id: str) -> None: ...

    def ticket_delivered(self, incident_id: str, version: int, ref: str) -> None: ...

    def ticket_failed(self, incident_id: str, next_attempt_at: datetime, error: str) -> None: ...

    def add_ticket_message(
        self, incident_id: str, kind: OutboxKind, body: str, filename: str = ""
    ) -> int: ...

    def due_ticket_messages(self, now: datetime) -> list[OutboxMessage]: ...

    def ticket_messages(self, incident_id: str) -> list[OutboxMessage]: ...

    def ticket_message_delivered(self, message_id: int) -> None: ...

    def ticket_message_failed(
        self, message_id: int, next_attempt_at: datetime, error: str
    ) -> None: ...


def refresh_ticket(
    store: TicketStore,
    incident: Incident | str,
    success: Mapping[PlaybookKey, Beta] | None = None,
    *,
    max_shift: float = DEFAULT_MAX_SHIFT,
) -> bool:
    """Write what the incident's ticket should say now to the outbox; True when it
    changed (and will be delivered). Blocking. ``success``: the playbooks' track
    records (``playbook_success`` of every action), when the caller has them already.
    ``max_shift``: ``llm.max_confidence_shift``, for the investigator's bounded ranking."""
    record = store.get_incident(incident) if isinstance(incident, str) else incident
    if record is None:
        raise UnknownIncident(f"no incident {incident!r}")
    trail = store.audit(record.id)
    state = fold(lifecycle_events(trail))
    anomalies = state.anomalies if state is not None else ()
    actions = store.actions(record.id)
    confirmed = confirmations(trail)
    action = actions[-1] if actions else None
    track = ""
    if action is not None:
        # How this playbook fared on this fault before, from every action of the store.
        if success is None:
            success = playbook_success(store.actions(states=list(ActionState)))
        beta = success_of(success, action.playbook, action.hypothesis.fault)
        track = f"{action.playbook} for {action.hypothesis.fault}: {beta.text}"
    hypotheses = store.hypotheses(record.id)
    view = build_ticket(
        record,
        anomalies,
        hypotheses,
        action,
        confirmed.component if confirmed is not None else None,
        track,
        story_view(store.llm_outputs(record.id), hypotheses, max_shift),
    )
    return store.put_ticket(record.id, ticket_text(view), ticket_blocks(view))


class OutboxNotifier:
    """``ports.Notifier``: every message goes to its incident ticket's thread, through
    the outbox (delivered by ``deliver_once``)."""

    def __init__(self, store: TicketStore) -> None:
        self.store = store

    def notify(self, incident_id: str, message: str, *, escalate: bool = False) -> None:
        text = f"ESCALATION: {message}" if escalate else message
        self.store.add_ticket_message(incident_id, OutboxKind.TEXT, text)
        log.info("incident message queued", incident=incident_id, escalate=escalate)


def incident_picture(store: TicketStore, incident_id: str, now: datetime) -> bytes | None:
    """The PNG of a stored incident's causal graph with its hypotheses; None before it is
    diagnosed. Blocking (reads its spans and draws)."""
    from sentinel.rca.picture import incident_graph_png  # matplotlib: only when drawing

    state = fold(lifecycle_events(store.audit(incident_id)))
    hypotheses = store.hypotheses(incident_id)
    if state is None or not hypotheses:
        return None
    return incident_graph_png(store, state, hypotheses, now)


def queue_file(store: TicketStore, incident_id: str, filename: str, content: bytes) -> int:
    """Queue a file (the causal graph's picture) for the ticket's thread."""
    body = base64.b64encode(content).decode("ascii")
    return store.add_ticket_message(incident_id, OutboxKind.FILE, body, filename)


@dataclass
class Delivery:
    """What one ``deliver_once`` did."""

    posted: list[str] = field(default_factory=list)  # incident ids
    found: list[str] = field(default_factory=list)  # posts found again after a crash
    updated: list[str] = field(default_factory=list)
    messages: list[int] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # what went wrong, in words


def backoff(attempts: int, error: NotifyError, cap_seconds: float) -> timedelta:
    """How long to wait after the ``attempts``-th failure (1 for the first): what the
    service asked for, else exponential; the cap for errors retrying cannot fix soon."""
    if error.retry_after is not None:
        return timedelta(seconds=min(max(error.retry_after, 0.0), cap_seconds))
    if not error.retryable:
        return timedelta(seconds=cap_seconds)
    return timedelta(seconds=min(FIRST_BACKOFF_SECONDS * 2 ** (attempts - 1), cap_seconds))


async def deliver_once(
    store: TicketStore, sink: TicketSink, now: datetime, *, cap_seconds: float
) -> Delivery:
    """Deliver the due tickets, then the due thread messages of tickets already posted.
    Store calls run in worker threads (they block); the sink's are awaited."""
    done = Delivery()
    for t in await asyncio.to_thread(store.due_tickets, now):
        try:
            await _deliver_ticket(store, sink, t, done)
        except NotifyError as e:
            wait = backoff(t.attempts + 1, e, cap_seconds)
            await asyncio.to_thread(store.ticket_failed, t.incident_id, now + wait, str(e))
            done.failed.append(f"ticket of {t.incident_id}: {e}")
            log.warning(
                "ticket delivery failed; retrying later",
                incident=t.incident_id,
                error=str(e),
                retry_in_seconds=wait.total_seconds(),
            )
    blocked: set[str] = set()  # incidents whose earlier message failed: keep the order
    for m in await asyncio.to_thread(store.due_ticket_messages, now):
        if m.incident_id in blocked:
            continue
        ticket = await asyncio.to_thread(store.ticket, m.incident_id)
        if ticket is None or ticket.ref is None:
            blocked.add(m.incident_id)  # its ticket is not posted yet
            continue
        try:
            if m.kind is OutboxKind.FILE:
                content = base64.b64decode(m.body)
                await sink.upload(ticket.ref, m.filename, content, m.filename)
            else:
                await sink.reply(ticket.ref, m.body)
        except NotifyError as e:
            blocked.add(m.incident_id)
            wait = backoff(m.attempts + 1, e, cap_seconds)
            await asyncio.to_thread(store.ticket_message_failed, m.id, now + wait, str(e))
            done.failed.append(f"message {m.id} of {m.incident_id}: {e}")
            log.warning(
                "thread message delivery failed; retrying later",
                incident=m.incident_id,
                error=str(e),
                retry_in_seconds=wait.total_seconds(),
            )
            continue
        await asyncio.to_thread(store.ticket_message_delivered, m.id)
        done.messages.append(m.id)
    return done


async def _deliver_ticket(
    store: TicketStore, sink: TicketSink, t: OutboxTicket, done: Delivery
) -> None:
    ref = t.ref
    if ref is None and t.posting:
        # A post was sent before and its outcome never recorded: find it, never post twice.
        try:
            ref = await sink.find(t.incident_id)
        except NotifyError as e:
            if e.retryable:
                raise
            # The channel cannot be searched (no history scope): a second ticket is
            # better than none.
            log.warning("cannot look for a lost ticket; posting again", error=str(e))
        if ref is not None:
            done.found.append(t.incident_id)
    if ref is None:
        await asyncio.to_thread(store.ticket_posting, t.incident_id)
        ref = await sink.post(t.incident_id, t.text, t.blocks)
        await asyncio.to_thread(store.ticket_delivered, t.incident_id, t.version, ref)
        done.posted.append(t.incident_id)
        log.info("ticket posted", incident=t.incident_id, ref=ref)
        return
    await sink.update(ref, t.text, t.blocks)
    await asyncio.to_thread(store.ticket_delivered, t.incident_id, t.version, ref)
    done.updated.append(t.incident_id)


class ConsoleSink:
    """``ports.TicketSink`` without Slack: tickets and their threads printed to a text
    stream, each ticket once in full and again whenever it changes."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def _print(self, text: str) -> None:
        self.out.write(text.rstrip("\n") + "\n")
        self.out.flush()

    async def post(self, incident_id: str, text: str, blocks: Sequence[Block]) -> str:
        self._print(f"=== ticket {incident_id} ===\n{text}")
        return incident_id

    async def find(self, incident_id: str) -> str | None:
        # A console cannot be searched; printing a ticket twice loses nothing.
        return None

    async def update(self, ref: str, text: str, blocks: Sequence[Block]) -> None:
        self._print(f"=== ticket {ref} (updated) ===\n{text}")

    async def reply(self, ref: str, text: str) -> None:
        self._print(f"[{ref}] {text}")

    async def upload(self, ref: str, filename: str, content: bytes, title: str) -> None:
        self._print(f"[{ref}] file {filename} ({len(content)} bytes): {title}")

    async def tell_user(self, user: str, text: str) -> None:
        self._print(f"(to {user}) {text}")


class TicketDesk:
    """The daemon's ticket work: after each agent run, refresh the tickets of the
    incidents it touched (and queue the causal graph's picture once an incident is first
    diagnosed); on its own schedule, deliver the outbox to the sink."""

    def __init__(
        self,
        store: TicketStore,
        sink: TicketSink,
        *,
        cap_seconds: float,
        picture: Callable[[str], bytes | None] | None = None,
        metrics: SelfMetrics | None = None,
        max_shift: float = DEFAULT_MAX_SHIFT,
    ) -> None:
        """``picture``: the PNG of an incident's causal graph (None when it has none);
        blocking, called from a worker thread. ``max_shift``:
        ``llm.max_confidence_shift``."""
        self.max_shift = max_shift
        self.store = store
        self.sink = sink
        self.cap_seconds = cap_seconds
        self.picture = picture
        self.metrics = metrics
        self._pictured: set[str] = set()

    def refresh(self, incident_ids: Iterable[str]) -> list[str]:
        """Refresh these incidents' tickets; the ids whose ticket changed. Blocking."""
        changed: list[str] = []
        ids = list(dict.fromkeys(incident_ids))
        if not ids:
            return changed
        # Every action of the store, read once for all the tickets' track records.
        success = playbook_success(self.store.actions(states=list(ActionState)))
        for incident_id in ids:
            try:
                if refresh_ticket(self.store, incident_id, success, max_shift=self.max_shift):
                    changed.append(incident_id)
                self._queue_picture(incident_id)
            except UnknownIncident:
                continue
        return changed

    def _queue_picture(self, incident_id: str) -> None:
        if self.picture is None or incident_id in self._pictured:
            return
        if not self.store.hypotheses(incident_id):
            return  # not diagnosed yet
        self._pictured.add(incident_id)
        if any(m.kind is OutboxKind.FILE for m in self.store.ticket_messages(incident_id)):
            return  # queued before a restart
        png = self.picture(incident_id)
        if png is not None:
            queue_file(self.store, incident_id, f"{incident_id}-graph.png", png)

    async def deliver(self, now: datetime) -> Delivery:
        done = await deliver_once(self.store, self.sink, now, cap_seconds=self.cap_seconds)
        if self.metrics is not None:
            m = self.metrics
            for what, n in (
                ("posted", len(done.posted)),
                ("updated", len(done.updated)),
                ("found", len(done.found)),
                ("message", len(done.messages)),
            ):
                if n:
                    m.tickets_delivered.labels(what=what).inc(n)
            if done.failed:
                m.ticket_failures.inc(len(done.failed))
        return done
