"""The demo's ten stages, as a pure function of what the store holds (``Snapshot``):
which are done, when (clock time), and what each found. ``read_snapshot`` reads the
store; ``progress`` and ``summarize`` only look at the snapshot, so they are tested
without a daemon.

What must not live here: display (``demo.run``), anything that changes the store.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path

from sentinel.adapters.db import SqlStore
from sentinel.detection import Anomaly
from sentinel.incidents import Incident, IncidentStatus
from sentinel.learning.archive import ARCHIVED, incident_state
from sentinel.ports import AuditAction
from sentinel.rca import Hypothesis
from sentinel.remediation import ActionRecord, ActionState, Gate

__all__ = [
    "Snapshot",
    "Stage",
    "StageState",
    "StageView",
    "Summary",
    "finished",
    "progress",
    "read_snapshot",
    "summarize",
]


class Stage(StrEnum):
    BASELINE = "baseline learned"
    ANOMALY = "anomaly"
    INCIDENT = "incident"
    HYPOTHESES = "hypotheses"
    TICKET = "ticket"
    APPROVAL = "approval"
    ACTION = "action"
    VERIFICATION = "verification"
    RESOLVED = "resolved"
    ARCHIVED = "eval case archived"


class StageState(StrEnum):
    WAITING = "waiting"
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"


@dataclass(frozen=True, slots=True)
class StageView:
    stage: Stage
    state: StageState
    at: datetime | None = None  # clock time it was reached
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the demo knows at clock time ``now``."""

    now: datetime
    baseline_at: datetime | None = None  # when every SLI series had enough data
    judged: int = 0  # SLI series the Metric Agent judged at its last run
    fault_start: datetime | None = None
    incident: Incident | None = None  # the first incident opened since the fault
    anomalies: tuple[Anomaly, ...] = ()
    hypotheses: tuple[Hypothesis, ...] = ()
    diagnosed_at: datetime | None = None
    ticket_at: datetime | None = None  # when the demo first saw the ticket delivered
    ticket_where: str = ""
    action: ActionRecord | None = None  # the incident's first proposed action
    archived_at: datetime | None = None
    archived_path: str = ""
    archived_truth: str = ""
    false_incidents: tuple[str, ...] = ()  # opened before the fault


def _anomaly(a: Anomaly) -> str:
    what = a.sli.value + (f" ({a.qualifier})" if a.qualifier else "")
    return (
        f"{what} of {a.component}: {a.baseline:.3g} -> {a.observed:.3g} "
        f"(onset {a.onset:%H:%M:%S}, score {a.score:.1f})"
    )


def _hypothesis(i: int, h: Hypothesis) -> str:
    change = f", change {h.change}" if h.change else ""
    return f"{i}. {h.component} {h.fault} {h.confidence:.0%}{change}"


def _approval(a: ActionRecord) -> StageView:
    s = Stage.APPROVAL
    why = "; ".join(a.reasons)
    h = a.hypothesis
    if a.gate is Gate.SUGGEST:
        return StageView(s, StageState.SKIPPED, a.created_at, f"suggestion only: {why}")
    if a.gate is Gate.AUTO:
        return StageView(
            s, StageState.DONE, a.created_at, f"automatic: {a.playbook} at {h.confidence:.0%}"
        )
    if a.state is ActionState.PROPOSED:
        return StageView(s, StageState.WAITING, None, f"{a.playbook} needs a person: {why}")
    if a.state in (ActionState.REJECTED, ActionState.EXPIRED):
        return StageView(s, StageState.FAILED, a.updated_at, f"{a.state.value}: {a.note}")
    return StageView(
        s, StageState.DONE, a.started_at or a.updated_at, f"approved by {a.decided_by}"
    )


def _action(a: ActionRecord) -> StageView:
    s = Stage.ACTION
    if a.applied_at is None:
        if a.state is ActionState.FAILED:
            return StageView(s, StageState.FAILED, a.updated_at, a.note)
        return StageView(s, StageState.WAITING, None, f"{a.playbook}: {a.state.value}")
    done = []
    for step_id in a.step_ids:
        r = a.results.get(step_id)
        if r is None:
            continue
        if r.commit:
            done.append(f"{step_id}: commit {r.commit[:7]} on {r.repo}:{r.branch}: {r.detail}")
        else:
            done.append(f"{step_id}: {r.detail.split(':', 1)[0]}")
    return StageView(s, StageState.DONE, a.applied_at, "; ".join(done) or a.playbook)


def _verification(a: ActionRecord) -> StageView:
    s = Stage.VERIFICATION
    match a.state:
        case ActionState.VERIFIED:
            return StageView(s, StageState.DONE, a.updated_at, a.note or "SLIs recovered")
        case ActionState.UNDONE | ActionState.FAILED:
            return StageView(s, StageState.FAILED, a.updated_at, a.note)
        case _:
            return StageView(s, StageState.WAITING, None, a.note)


def progress(snap: Snapshot) -> tuple[StageView, ...]:
    """The ten stages, in order."""
    views: list[StageView] = []
    views.append(
        StageView(
            Stage.BASELINE,
            StageState.DONE,
            snap.baseline_at,
            f"{snap.judged} SLI series judged against their baselines",
        )
        if snap.baseline_at is not None
        else StageView(Stage.BASELINE, StageState.WAITING, None, f"{snap.judged} SLI series")
    )
    inc = snap.incident
    if inc is None:
        views += [StageView(s, StageState.WAITING) for s in list(Stage)[1:]]
        return tuple(views)
    top = max(snap.anomalies, key=lambda a: a.score, default=None)
    views.append(
        StageView(Stage.ANOMALY, StageState.DONE, inc.opened_at, _anomaly(top) if top else "")
    )
    views.append(
        StageView(
            Stage.INCIDENT,
            StageState.DONE,
            inc.opened_at,
            f"{inc.id}: {len(snap.anomalies)} anomalies on {', '.join(inc.components)}",
        )
    )
    views.append(
        StageView(
            Stage.HYPOTHESES,
            StageState.DONE,
            snap.diagnosed_at,
            "; ".join(_hypothesis(i, h) for i, h in enumerate(snap.hypotheses[:3], 1)),
        )
        if snap.hypotheses
        else StageView(Stage.HYPOTHESES, StageState.WAITING)
    )
    views.append(
        StageView(Stage.TICKET, StageState.DONE, snap.ticket_at, snap.ticket_where)
        if snap.ticket_at is not None
        else StageView(Stage.TICKET, StageState.WAITING)
    )
    resolved = inc.status is IncidentStatus.RESOLVED
    a = snap.action
    if a is None:
        # Nothing proposed: no playbook matches the diagnosis (or none yet).
        state = StageState.SKIPPED if resolved else StageState.WAITING
        detail = "no playbook matches the diagnosis: people act on the ticket" if resolved else ""
        views += [StageView(s, state, None, detail) for s in (Stage.APPROVAL, Stage.ACTION)]
        views.append(StageView(Stage.VERIFICATION, state))
    else:
        views += [_approval(a), _action(a), _verification(a)]
    views.append(
        StageView(Stage.RESOLVED, StageState.DONE, inc.resolved_at, "SLIs back within baseline")
        if resolved
        else StageView(Stage.RESOLVED, StageState.WAITING)
    )
    views.append(
        StageView(
            Stage.ARCHIVED,
            StageState.DONE,
            snap.archived_at,
            f"{snap.archived_path} (truth: {snap.archived_truth})",
        )
        if snap.archived_at is not None
        else StageView(Stage.ARCHIVED, StageState.WAITING)
    )
    return tuple(views)


def finished(views: Sequence[StageView]) -> bool:
    """Every stage is past waiting, or one failed (the demo cannot go on)."""
    return all(v.state is not StageState.WAITING for v in views) or any(
        v.state is StageState.FAILED for v in views
    )


@dataclass(frozen=True, slots=True)
class Summary:
    detection_delay: timedelta | None
    time_to_diagnosis: timedelta | None
    time_to_fix: timedelta | None  # fault start to the fix applied
    time_to_verified: timedelta | None
    top: Hypothesis | None
    right: bool


def summarize(snap: Snapshot, root_cause: str) -> Summary:
    f = snap.fault_start
    inc = snap.incident
    a = snap.action

    def since(t: datetime | None) -> timedelta | None:
        return t - f if t is not None and f is not None else None

    verified = a.updated_at if a is not None and a.state is ActionState.VERIFIED else None
    top = snap.hypotheses[0] if snap.hypotheses else None
    return Summary(
        detection_delay=since(inc.opened_at if inc is not None else None),
        time_to_diagnosis=since(snap.diagnosed_at),
        time_to_fix=since(a.applied_at if a is not None else None),
        time_to_verified=since(verified),
        top=top,
        right=top is not None and top.component == root_cause,
    )


# --- reading the store -------------------------------------------------------------------


def read_snapshot(
    store: SqlStore,
    now: datetime,
    *,
    previous: Snapshot,
    baseline_at: datetime | None,
    judged: int,
    ticket_where: str,
) -> Snapshot:
    """What the store holds now about the demo's incident (the first one opened at or
    after the fault). ``previous`` keeps the times only the demo saw (the ticket's)."""
    fault = previous.fault_start
    incidents = sorted(store.incidents(), key=lambda i: i.opened_at)
    early = tuple(i.id for i in incidents if fault is None or i.opened_at < fault)
    after = [i for i in incidents if fault is not None and i.opened_at >= fault]
    base = Snapshot(
        now=now,
        baseline_at=baseline_at,
        judged=judged,
        fault_start=fault,
        false_incidents=early,
    )
    if not after:
        return base
    inc = after[0]
    anomalies = incident_state(store, inc.id).anomalies
    hypotheses = tuple(store.hypotheses(inc.id))
    trail = store.audit(inc.id)
    diagnosed = [e.time for e in trail if e.action == AuditAction.DIAGNOSED]
    archived = [e for e in trail if e.action == ARCHIVED]
    actions = sorted(store.actions(inc.id), key=lambda r: r.created_at)
    ticket = store.ticket(inc.id)
    ticket_at = previous.ticket_at
    if ticket_at is None and ticket is not None and ticket.ref is not None:
        ticket_at = now
    last = archived[-1] if archived else None
    return replace(
        base,
        incident=inc,
        anomalies=tuple(anomalies),
        hypotheses=hypotheses,
        diagnosed_at=diagnosed[0] if diagnosed else None,
        ticket_at=ticket_at,
        ticket_where=ticket_where,
        action=actions[0] if actions else None,
        archived_at=last.time if last is not None else None,
        archived_path=str(Path(str(last.detail.get("path", "")))) if last is not None else "",
        archived_truth=str(last.detail.get("truth", "")) if last is not None else "",
    )
