"""Incidents, their hypotheses, the audit log, remediation actions, the kill switch and
cursors (``ports.CursorStore``), as a mixin of ``store.SqlStore``.

A record and the audit entries that explain it are written in one transaction. What must
not live here: the incident state machine (``sentinel.incidents``), gating and
remediation decisions (``sentinel.remediation``), the ticket outbox (``outbox``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from sentinel.adapters.db.codec import _dumps, _loads
from sentinel.adapters.db.core import _Base
from sentinel.adapters.db.tables import ACTIONS, AUDIT, CURSORS, HYPOTHESES, INCIDENTS
from sentinel.errors import StoreError
from sentinel.incidents import AuditEntry, Incident, IncidentStatus
from sentinel.ports import DIAGNOSIS_ACTOR, AuditAction
from sentinel.rca import Hypothesis
from sentinel.remediation import ActionRecord, ActionState

# The kill switch's key in the cursors table (small persistent state).
PAUSED_KEY = "remediation.paused"


class IncidentsMixin(_Base):
    """Incidents, hypotheses, audit, actions, the kill switch and cursors."""

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
            self._check_fence(conn, f"writing incident {incident.id!r}")
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
            self._check_fence(conn, f"writing the hypotheses of incident {incident_id!r}")
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
            self._check_fence(conn, f"writing action {record.key!r}")
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
