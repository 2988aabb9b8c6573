"""The ticket outbox, as a mixin of ``store.SqlStore``: each incident's ticket (the
content wanted, and how far delivery got) and its thread's messages and files, kept until
delivered so that a crash or an outage of Slack loses and duplicates nothing.

What must not live here: what a ticket says (``sentinel.tickets``), delivery and backoff
policy (``agents.tickets``), Slack's API (``adapters.slack``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from sentinel.adapters.db.codec import _dumps, _loads
from sentinel.adapters.db.core import _Base
from sentinel.adapters.db.tables import TICKET_MESSAGES, TICKETS
from sentinel.ports import OutboxKind, OutboxMessage, OutboxTicket


class OutboxMixin(_Base):
    """Tickets and their thread messages."""

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
        """Undelivered thread messages to send now, oldest first: an incident's messages
        go out in order, so none of them is due while an earlier one is backing off."""
        t = TICKET_MESSAGES
        q = sa.select(t).where(t.c.delivered_at.is_(None)).order_by(t.c.id)
        with self._read("listing thread messages to deliver") as conn:
            rows = conn.execute(q).mappings().all()
        waiting: set[str] = set()
        due: list[OutboxMessage] = []
        for r in rows:
            if r["incident_id"] in waiting:
                continue
            if r["next_attempt_at"] is not None and r["next_attempt_at"] > now:
                waiting.add(r["incident_id"])
                continue
            due.append(_message_from_row(r))
        return due

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
