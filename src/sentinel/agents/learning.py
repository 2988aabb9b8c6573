"""The Learning Agent as the daemon runs it: resolved incidents are archived as cases
(``sentinel.learning.archive``), and people's confirmations (or corrections) of the root
cause are recorded and put into the archive's ``[truth]``.

- ``run_once(resolved_incident_ids)``: archive each resolved incident, unless its case is
  archived already with the truth it has now. What was archived is an audit entry
  (``incident_archived``: the path, the truth's basis and the truth itself, the commit),
  so a restart archives nothing twice, and a truth that changed since (a later
  confirmation, a fix verified after resolution) archives the case again.
- ``catch_up()``: the same over every resolved incident of the store (at start-up: an
  incident resolved while the daemon was down, or before a crash, is archived).
- ``confirm(incident_id, component, fault, by)``: a person's word from the CLI or Slack.
  The component must be one of the incident's hypotheses or a component the store knows
  (its spans and samples, and the changes from ``rca.rank.CHANGE_WINDOW`` before the
  onset: a prompt or config is known only from those); the fault defaults to the
  hypothesis' for it. A resolved incident is (re-)archived with the new truth at once.
  Confirming is not gated by ``[approvals]``: it changes no system, only what sentinel
  learns, and the audit log says who said it.

Re-archiving keeps the telemetry first archived and renews only the truth
(``archive_incident(keep_telemetry=True)``): no new queries, and a case keeps what was
seen when its incident resolved.

Everything is blocking (store, files, git) and serialized by one lock: the daemon calls
it from its git worker thread. A failure to archive one incident is logged and the
others go on. ``runner``: how a coroutine (the Prometheus queries) is run from this
thread; the daemon passes one that hands it to the event loop its metric source lives
on, since an httpx client cannot be shared between loops (so never call the agent on
that loop's own thread: it would wait for itself).

What must not live here: the case, truth and commit rules (``learning.archive``), SQL,
Slack, scheduling.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Protocol

import structlog

from sentinel.clock import Clock
from sentinel.errors import SentinelError
from sentinel.incidents import AuditEntry, IncidentStatus, TrackedIncident
from sentinel.learning.archive import (
    ARCHIVED,
    ROOT_CAUSE_CONFIRMED,
    Archived,
    ArchiveStore,
    Confirmation,
    ConfirmationError,
    GitAuthor,
    Runner,
    archive_incident,
    confirmations,
    incident_state,
    truth_for,
    truth_record,
)
from sentinel.ports import MetricSource
from sentinel.rca import Hypothesis
from sentinel.rca.rank import CHANGE_WINDOW
from sentinel.settings import Settings
from sentinel.telemetry import parse_component

__all__ = ["ACTOR", "Confirmed", "LearningAgent", "LearningStore"]

log = structlog.get_logger(__name__)

ACTOR = "learning-agent"
# Known components listed in an error message, at most.
_LIST_AT_MOST = 30


class LearningStore(ArchiveStore, Protocol):
    """What the agent reads and writes (``adapters.db.SqlStore``)."""

    def append_audit(self, entry: AuditEntry) -> None: ...


@dataclass(frozen=True, slots=True)
class Confirmed:
    """What a confirmation did: the confirmation recorded (its fault filled in), the top
    hypothesis it confirms or corrects (None: there was none), whether the incident is
    resolved, and where its case was (re-)archived (None: still open, archiving off, or
    ``archive_error`` says what failed)."""

    confirmation: Confirmation
    top: str | None
    resolved: bool
    archived: Archived | None = None
    archive_error: str = ""

    @property
    def corrected(self) -> bool:
        return self.top != self.confirmation.component


class LearningAgent:
    def __init__(
        self,
        settings: Settings,
        store: LearningStore,
        clock: Clock,
        source: MetricSource | None = None,
        *,
        runner: Runner = asyncio.run,
    ) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.source = source
        self.runner = runner
        s = settings.learning
        self.folder: Path | None = settings.resolve(s.archive_dir) if s.archive_dir else None
        self.lookback = timedelta(minutes=s.lookback_minutes)
        self.author = GitAuthor(settings.remediation.author_name, settings.remediation.author_email)
        self._lock = threading.Lock()

    # --- archiving ------------------------------------------------------------------------

    def run_once(self, resolved_incident_ids: Iterable[str]) -> list[Archived]:
        """Archive each of these incidents that is resolved and not archived yet with the
        truth it has now. Returns what was archived."""
        out: list[Archived] = []
        with self._lock:
            for incident_id in dict.fromkeys(resolved_incident_ids):
                done = self._archive_if_needed(incident_id)
                if done is not None:
                    out.append(done)
        return out

    def catch_up(self) -> list[Archived]:
        """``run_once`` over every resolved incident of the store."""
        if self.folder is None:
            return []
        resolved = [i.id for i in self.store.incidents() if i.status is IncidentStatus.RESOLVED]
        return self.run_once(reversed(resolved))  # oldest first

    def _archive_if_needed(self, incident_id: str) -> Archived | None:
        if self.folder is None:
            return None
        try:
            state = incident_state(self.store, incident_id)
            if state.incident.status is not IncidentStatus.RESOLVED:
                log.debug("incident not resolved; not archived", incident=incident_id)
                return None
            trail = self.store.audit(incident_id)
            truth = truth_for(
                state,
                self.store.hypotheses(incident_id),
                self.store.actions(incident_id),
                confirmations(trail),
            )
            last = _last_archived(trail)
            if last is not None and last.detail.get("record") == truth_record(truth):
                return None
            return self._archive(incident_id)
        except SentinelError as e:
            # One incident that cannot be archived (store down, a window without
            # telemetry) must not stop the others; the next call retries it.
            log.error("incident not archived", incident=incident_id, error=str(e))
            return None

    def _archive(self, incident_id: str) -> Archived:
        """Archive now and write the ``incident_archived`` audit entry. Raises
        ``SentinelError``."""
        assert self.folder is not None
        s = self.settings
        now = self.clock.now()
        done = archive_incident(
            self.store,
            incident_id,
            self.folder,
            lookback=self.lookback,
            now=now,
            source=self.source,
            slis=s.prometheus.slis,
            step=timedelta(seconds=s.detection.step_seconds),
            runner=self.runner,
            author=self.author,
        )
        self.store.append_audit(
            AuditEntry(
                time=now,
                actor=ACTOR,
                action=ARCHIVED,
                incident_id=incident_id,
                detail={
                    "path": str(done.path),
                    "truth": done.truth.basis.value if done.truth is not None else "none",
                    "record": truth_record(done.truth),
                    "committed": done.committed,
                    "commit": done.commit,
                    "note": done.note,
                },
            )
        )
        return done

    # --- confirmations --------------------------------------------------------------------

    def confirm(
        self, incident_id: str, component: str | None, fault: str | None, by: str
    ) -> Confirmed:
        """Record that ``by`` confirms ``component`` (None: the top hypothesis) as the root
        cause of ``incident_id``, with ``fault`` (None: the hypothesis' fault for it, else
        the top one's), and re-archive the incident if it is resolved. Raises
        ``UnknownIncident``, ``ConfirmationError`` (naming what is known),
        ``StoreError``. A failure to archive is logged; the confirmation stands."""
        with self._lock:
            state = incident_state(self.store, incident_id)
            hypotheses = self.store.hypotheses(incident_id)
            top = hypotheses[0] if hypotheses else None
            if component is None:
                if top is None:
                    raise ConfirmationError(
                        f"incident {incident_id!r} has no hypotheses: name the root cause "
                        "(--root-cause COMPONENT)"
                    )
                component = top.component
            component = component.strip()
            self._check_component(state, hypotheses, component)
            named = next((h for h in hypotheses if h.component == component), None)
            source = named or top
            fault = (fault or "").strip() or (source.fault if source is not None else "")
            if not fault:
                raise ConfirmationError(
                    f"incident {incident_id!r} has no hypothesis to take the fault from: "
                    "say it (--fault KIND, e.g. tool_latency)"
                )
            now = self.clock.now()
            confirmation = Confirmation(component=component, fault=fault, by=by, at=now)
            self.store.append_audit(
                AuditEntry(
                    time=now,
                    actor=by,
                    action=ROOT_CAUSE_CONFIRMED,
                    incident_id=incident_id,
                    detail={
                        "component": component,
                        "fault": fault,
                        "top": top.component if top is not None else None,
                        "corrected": top is None or top.component != component,
                    },
                )
            )
            log.info(
                "root cause confirmed",
                incident=incident_id,
                component=component,
                fault=fault,
                by=by,
            )
            resolved = state.incident.status is IncidentStatus.RESOLVED
            done = Confirmed(confirmation, top.component if top is not None else None, resolved)
            if self.folder is None or not resolved:
                return done
            try:
                return dataclasses.replace(done, archived=self._archive(incident_id))
            except SentinelError as e:
                log.error("confirmed incident not archived", incident=incident_id, error=str(e))
                return dataclasses.replace(done, archive_error=str(e))

    def _check_component(
        self, state: TrackedIncident, hypotheses: Sequence[Hypothesis], component: str
    ) -> None:
        try:
            parse_component(component)
        except ValueError as e:
            raise ConfirmationError(f"root cause {component!r}: {e}") from None
        ranked = [h.component for h in hypotheses]
        if component in ranked:
            return
        known = set(ranked) | {c.component for c in self.store.components()}
        incident = state.incident
        end = incident.resolved_at or self.clock.now()
        for change in self.store.changes(state.onset - CHANGE_WINDOW, end):
            known.add(change.component)
            known.update(change.affects)
        if component in known:
            return
        others = sorted(known - set(ranked))
        listed = others[:_LIST_AT_MOST]
        more = f" and {len(others) - len(listed)} more" if len(others) > len(listed) else ""
        raise ConfirmationError(
            f"root cause {component!r} is not a component sentinel knows for incident "
            f"{incident.id!r}; its hypotheses: {', '.join(ranked) or 'none'}; other known "
            f"components: {', '.join(listed) or 'none'}{more}"
        )


def _last_archived(trail: Sequence[AuditEntry]) -> AuditEntry | None:
    return next((e for e in reversed(trail) if e.action == ARCHIVED), None)
