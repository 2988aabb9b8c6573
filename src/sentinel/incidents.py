"""Incidents and the audit trail: the records, their states, and (later) the pure state
machine that moves an incident from open to resolved.

What must not live here: storage (``adapters/db.py``), detection, notification.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from sentinel.telemetry import AwareDatetime


class IncidentStatus(StrEnum):
    OPEN = "open"
    MITIGATING = "mitigating"
    RESOLVED = "resolved"


class Incident(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1)
    title: str
    status: IncidentStatus = IncidentStatus.OPEN
    opened_at: AwareDatetime
    updated_at: AwareDatetime
    resolved_at: AwareDatetime | None = None
    components: tuple[str, ...] = ()


class AuditEntry(BaseModel):
    """One decision or fact in the audit log: who, what, about which incident, and the
    details (hypothesis, confidence, evidence, ...)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    time: AwareDatetime
    actor: str = Field(min_length=1)
    action: str = Field(min_length=1)
    incident_id: str | None = None
    detail: dict[str, Any] = Field(default_factory=dict)
