"""The Remediation Agent as the daemon runs it: after each Metric Agent run, every open
incident's top hypothesis is matched to a playbook and gated (``sentinel.remediation``),
approved actions are carried out step by step through the ``ActionExecutor``, applied
actions are verified against the incident's SLIs, and an action that did not help is
undone. People are told through the ``Notifier``.

Safety (ARCHITECTURE.md's invariants):

1. A record is persisted before anything is done: an action's state, and the step about
   to run, are written first. A step whose outcome a crash left unknown is applied again
   only when its executor can find the earlier application by its idempotency key (git:
   the commit's trailer); an HTTP or notify step is never repeated, the action fails and
   people are told.
2. Only ``Gate.AUTO`` proposals approve themselves. The kill switch (config or store) is
   read again before every step and every undo: while it is on, nothing at all runs.
3. Verification failure undoes the applied steps in reverse order, and people are told.
4. Every decision goes to the audit log with the record: who, what, why, the hypothesis,
   its confidence and evidence.

Record updates compare-and-set on the previous record, so a concurrent ``sentinel
approve`` (or a Slack click) and the agent never overwrite each other's decision. Several
daemons on one store: only the leader runs the agent (``sentinel.cluster``), and ``fence``
(the leader lease's check) is called right before every step and every undo is applied:
an ex-leader that was paused past its lease raises ``LeaseLost`` instead of acting after
another replica took over. The new leader resumes the records as a restarted daemon would.

Everything here is blocking (store, git): the daemon runs ``run_once`` on its one git
worker thread. What must not live here: the decisions themselves (``sentinel.remediation``),
git or HTTP (``adapters.executors``), SQL, scheduling.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

import structlog

from sentinel.clock import Clock
from sentinel.errors import ActionRefused, RemediationError
from sentinel.incidents import AuditEntry, TrackedIncident
from sentinel.learning.priors import order_playbooks, playbook_success
from sentinel.llm.bounds import gate_ranking
from sentinel.llm.story import current_investigation
from sentinel.observability import SelfMetrics
from sentinel.playbooks.model import (
    GIT_ACTIONS,
    ActionKind,
    AnyAction,
    Playbook,
    TemplateContext,
)
from sentinel.ports import (
    ActionExecutor,
    IncidentStore,
    LlmOutputStore,
    Notifier,
    TelemetryStore,
)
from sentinel.rca import Hypothesis
from sentinel.remediation import (
    STARTED,
    TERMINAL,
    ActionRecord,
    ActionState,
    Gate,
    Verdict,
    advance,
    guardrail_violations,
    moved_off,
    propose,
    step_key,
    verification_gap,
    verify,
)
from sentinel.settings import Settings
from sentinel.sli import SliKey, SliSeries

log = structlog.get_logger(__name__)

ACTOR = "remediation-agent"
# A git step failing on a transient error (remote unreachable) is tried again on later
# runs, at most this many times in all, then the action fails and people are told.
MAX_ATTEMPTS = 3
# How far back a hypothesis' linked change is looked up (its repo and path).
CHANGE_LOOKBACK = timedelta(hours=24)


class RemediationEvent(StrEnum):
    """Audit-log actions of the Remediation Agent."""

    PROPOSED = "action_proposed"
    APPROVED = "action_approved"
    REJECTED = "action_rejected"
    STARTED = "action_started"
    STEP_APPLIED = "step_applied"
    STEP_FAILED = "step_failed"
    APPLIED = "action_applied"
    VERIFIED = "action_verified"
    STEP_UNDONE = "step_undone"
    UNDONE = "action_undone"
    FAILED = "action_failed"
    DEFERRED = "action_deferred"
    EXPIRED = "action_expired"


class ActionStore(TelemetryStore, IncidentStore, LlmOutputStore, Protocol):
    """What the agent reads and writes (``adapters.db.SqlStore``)."""

    def put_action(
        self,
        record: ActionRecord,
        audit: Sequence[AuditEntry] = (),
        *,
        prev: ActionRecord | None = None,
    ) -> bool: ...

    def get_action(self, key: str) -> ActionRecord | None: ...

    def actions(
        self, incident_id: str | None = None, *, states: Sequence[ActionState] = ()
    ) -> list[ActionRecord]: ...

    def paused(self) -> bool: ...


def verified_moved_off(store: ActionStore, incident_id: str) -> frozenset[str]:
    """What the incident's verified fixes took out of the users' path (``moved_off``):
    its resolution does not wait for those components' SLIs."""
    out: frozenset[str] = frozenset()
    for record in store.actions(incident_id, states=[ActionState.VERIFIED]):
        out |= moved_off(record.steps)
    return out


@dataclass
class RemediationRun:
    """What one run did, by action key (for logs and tests)."""

    proposed: list[str] = field(default_factory=list)
    applied: list[str] = field(default_factory=list)
    verified: list[str] = field(default_factory=list)
    undone: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)  # paused, cooldown, or retrying

    def incidents(self) -> list[str]:
        """The incidents whose actions this run changed."""
        keys = [
            *self.proposed,
            *self.applied,
            *self.verified,
            *self.undone,
            *self.failed,
            *self.expired,
        ]
        # An action key is "<incident>/<playbook>"; playbook names hold no "/".
        return sorted({k.rsplit("/", 1)[0] for k in keys})


def hypothesis_detail(h: Hypothesis) -> dict[str, Any]:
    return {
        "component": h.component,
        "fault": h.fault,
        "confidence": h.confidence,
        "change": h.change,
        "evidence": list(h.evidence),
    }


def action_entry(
    event: RemediationEvent, record: ActionRecord, now: datetime, *, actor: str, **detail: Any
) -> AuditEntry:
    """The audit entry of a decision about an action: who, what, the hypothesis acted
    on (component, fault, confidence, evidence) and the details."""
    return AuditEntry(
        time=now,
        actor=actor,
        action=event.value,
        incident_id=record.incident_id,
        detail={
            "action": record.key,
            "playbook": record.playbook,
            "hypothesis": hypothesis_detail(record.hypothesis),
            **detail,
        },
    )


class Decided(StrEnum):
    """What a person's approve or reject did."""

    DONE = "done"  # the action moved to approved or rejected
    ALREADY = "already"  # it was already so (a duplicate click): nothing changed
    TOO_LATE = "too_late"  # decided otherwise, expired, or running already
    SUGGESTION = "suggestion"  # a suggestion only: it cannot be approved


def decide_action(
    store: ActionStore,
    key: str,
    *,
    approve: bool,
    actor: str,
    reason: str = "",
    now: datetime,
) -> tuple[Decided, ActionRecord]:
    """Approve or reject the proposed action ``key`` for ``actor``, with its audit entry,
    compare-and-set: of two clicks at once, one decides and the other sees ``ALREADY``
    (same decision) or ``TOO_LATE``. Raises ``RemediationError`` for an unknown key.
    Authorization is the caller's (``agents.approvals``)."""
    want = ActionState.APPROVED if approve else ActionState.REJECTED
    for _ in range(3):  # a concurrent writer may move it between our read and write
        record = store.get_action(key)
        if record is None:
            raise RemediationError(f"no action {key!r}")
        if record.state is want or (approve and record.state in STARTED):
            return Decided.ALREADY, record
        if record.state is not ActionState.PROPOSED:
            return Decided.TOO_LATE, record
        if approve and record.gate is Gate.SUGGEST:
            return Decided.SUGGESTION, record
        event = RemediationEvent.APPROVED if approve else RemediationEvent.REJECTED
        new = advance(record, want, now, decided_by=actor)
        entry = action_entry(
            event, record, now, actor=actor, state=want.value, **({"why": reason} if reason else {})
        )
        if store.put_action(new, [entry], prev=record):
            return Decided.DONE, new
    record = store.get_action(key)
    assert record is not None
    return Decided.TOO_LATE, record


@dataclass(frozen=True)
class Undo:
    """What undoing an action's applied steps did: in words, whether an undo failed,
    and whether a step that cannot be undone stays applied."""

    note: str
    failed: bool = False
    kept: bool = False


class _Lost(Exception):
    """Another writer changed the record first: leave it to them this run."""


class RemediationAgent:
    def __init__(
        self,
        settings: Settings,
        store: ActionStore,
        executor: ActionExecutor,
        notifier: Notifier,
        clock: Clock,
        *,
        playbooks: Sequence[Playbook],
        metrics: SelfMetrics | None = None,
        fence: Callable[[], None] = lambda: None,
    ) -> None:
        """``fence``: raises (``LeaseLost``) unless this replica may act now; called
        right before every step or undo is applied."""
        self.fence = fence
        self.settings = settings
        self.policy = settings.remediation
        self.store = store
        self.executor = executor
        self.notifier = notifier
        self.clock = clock
        self.playbooks = {p.name: p for p in playbooks}
        self.metrics = metrics

    # --- the kill switch ----------------------------------------------------------------

    def paused(self) -> bool:
        """Either switch: the config's, or the store's (`sentinel pause`)."""
        return self.policy.paused or self.store.paused()

    # --- one run --------------------------------------------------------------------------

    def run_once(
        self,
        open_incidents: Sequence[TrackedIncident],
        slis: Mapping[SliKey, SliSeries],
        now: datetime,
        judged_at: datetime | None = None,
    ) -> RemediationRun:
        """Propose for open incidents, run approved actions, verify applied ones.

        ``now`` stamps what this run does (proposals, steps, verdicts); ``judged_at``
        (default ``now``) is how far ``slis`` are complete, the time verification judges
        at. The daemon's judged time trails its clock by the ingest lag: stamping records
        with it dated an automatic fix before the incident it fixed had opened."""
        judged = now if judged_at is None else judged_at
        run = RemediationRun()
        by_id = {i.id: i for i in open_incidents}
        live = self.store.actions(states=[s for s in ActionState if s not in TERMINAL])
        busy = {r.incident_id for r in live}
        for incident in open_incidents:
            if incident.id not in busy:
                self._propose(incident, now, run)
        for record in self.store.actions(states=[ActionState.PROPOSED]):
            self._guarded(self._expire, record, now, run)
        for record in self.store.actions(states=[ActionState.APPROVED, ActionState.RUNNING]):
            self._guarded(self._execute, record, now, run)
        for record in self.store.actions(states=[ActionState.APPLIED, ActionState.VERIFYING]):
            self._guarded(
                self._verify, record, by_id.get(record.incident_id), slis, now, judged, run
            )
        return run

    def _guarded(self, fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        except _Lost:
            log.info("action changed by another writer; left to it", action=args[0].key)

    # --- proposing ------------------------------------------------------------------------

    def _context(self, incident: TrackedIncident, h: Hypothesis, now: datetime) -> TemplateContext:
        repo = path = None
        if h.change is not None:
            for c in self.store.changes(incident.onset - CHANGE_LOOKBACK, now):
                if c.id == h.change:
                    repo, path = c.repo or None, c.path or None
        return TemplateContext(
            incident_id=incident.id,
            component=h.component,
            fault=h.fault,
            change_id=h.change,
            change_repo=repo,
            change_path=path,
        )

    def _propose(self, incident: TrackedIncident, now: datetime, run: RemediationRun) -> None:
        engine = self.store.hypotheses(incident.id)
        if not engine:
            return
        # An investigation may point the action at another hypothesis, never with more
        # confidence than the engine gave it: the LLM cannot pass a gate on its own.
        investigation = current_investigation(self.store.llm_outputs(incident.id), engine)
        hypotheses = gate_ranking(engine, investigation, self.settings.llm.max_confidence_shift)
        top = hypotheses[0]
        tried = {r.playbook for r in self.store.actions(incident.id)}
        history = self.store.actions(states=list(ActionState))
        # The playbooks that worked best on this fault before come first (learned).
        candidates = order_playbooks(
            [p for name, p in self.playbooks.items() if name not in tried],
            top.fault,
            playbook_success(history),
        )
        proposal, skipped = propose(
            candidates,
            incident.id,
            top,
            self._context(incident, top, now),
            history=history,
            paused=self.paused(),
            policy=self.policy,
            now=now,
        )
        for why in skipped:
            log.debug("playbook passed over", incident=incident.id, why=why)
        if proposal is None:
            return
        record = proposal.record
        entry = self._entry(
            RemediationEvent.PROPOSED,
            record,
            now,
            gate=record.gate.value,
            reasons=list(record.reasons),
            steps=[s.model_dump(mode="json", by_alias=True) for s in record.steps],
        )
        if not self.store.put_action(record, [entry]):
            return  # proposed already (another replica, or a run that crashed after it)
        if self.metrics is not None:
            self.metrics.remediation_events.labels(event=entry.action, gate=record.gate.value).inc()
        run.proposed.append(record.key)
        log.info(
            "remediation proposed",
            action=record.key,
            gate=record.gate.value,
            confidence=round(top.confidence, 3),
            reasons=list(record.reasons),
        )
        self._tell(record, _proposal_message(record))
        if record.gate is Gate.AUTO:
            self._move(
                record,
                ActionState.APPROVED,
                now,
                RemediationEvent.APPROVED,
                decided_by=ACTOR,
                why="confidence at or above the auto threshold",
            )

    def _expire(self, record: ActionRecord, now: datetime, run: RemediationRun) -> None:
        """A proposal nobody decided on within ``approvals.expire_minutes`` expires; one
        that needed an approval is escalated."""
        wait = timedelta(minutes=self.settings.approvals.expire_minutes)
        if now - record.created_at < wait:
            return
        why = f"nobody decided within {wait.total_seconds() / 60:g} min"
        self._move(record, ActionState.EXPIRED, now, RemediationEvent.EXPIRED, why=why, note=why)
        run.expired.append(record.key)
        if record.gate is Gate.APPROVE:
            self._tell(
                record,
                f"{record.playbook} was not approved: {why}; the approval expired. "
                "A person must look.",
                escalate=True,
            )

    # --- approvals (from the CLI and Slack) -------------------------------------------------

    def decide(self, key: str, *, approve: bool, actor: str, reason: str = "") -> ActionRecord:
        """A person approves or rejects a proposed action (``decide_action``; the caller
        has checked that ``actor`` may)."""
        outcome, record = decide_action(
            self.store, key, approve=approve, actor=actor, reason=reason, now=self.clock.now()
        )
        if outcome is Decided.DONE and self.metrics is not None:
            event = RemediationEvent.APPROVED if approve else RemediationEvent.REJECTED
            self.metrics.remediation_events.labels(event=event.value, gate=record.gate.value).inc()
        return record

    # --- executing ------------------------------------------------------------------------

    def _execute(self, record: ActionRecord, now: datetime, run: RemediationRun) -> None:
        playbook = self.playbooks.get(record.playbook)
        if self.paused():
            run.waiting.append(record.key)
            return
        if record.state is ActionState.APPROVED and playbook is None:
            # Approved under a playbook that has since been removed or broken: what it
            # allowed is no longer known, so it does not run.
            self._fail(record, now, run, f"playbook {record.playbook!r} is no longer loaded")
            return
        if record.state is ActionState.APPROVED:
            assert playbook is not None
            history = [
                r for r in self.store.actions(states=list(ActionState)) if r.key != record.key
            ]
            blocked = guardrail_violations(playbook, history, now)
            if blocked:
                if record.note != "; ".join(blocked):
                    self._save(
                        record,
                        record.model_copy(update={"note": "; ".join(blocked)}),
                        self._entry(RemediationEvent.DEFERRED, record, now, reasons=blocked),
                    )
                run.waiting.append(record.key)
                return
            record = self._move(record, ActionState.RUNNING, now, RemediationEvent.STARTED)
        for sid, step in zip(record.step_ids, record.steps, strict=True):
            if sid in record.results:
                continue
            if self.paused():  # read again before every step
                run.waiting.append(record.key)
                return
            if record.running_step == sid and not _repeatable(step):
                # A run stopped while this step was under way (a crash): its outcome is
                # unknown and it cannot be found again, so it is never sent twice.
                self._fail(
                    record,
                    now,
                    run,
                    f"step {sid!r} ({step.action.value}) was "
                    "interrupted; its outcome is unknown and it is not repeated",
                )
                return
            # A replica that lost the leader lease never applies a step; asked before the
            # step is marked under way, so the new leader finds it not started.
            self.fence()
            if record.running_step != sid:
                record = self._save(
                    record,
                    record.model_copy(
                        update={"running_step": sid, "attempts": 0, "updated_at": now}
                    ),
                )
            try:
                result = self.executor.apply(
                    step,
                    key=step_key(record.incident_id, record.playbook, sid),
                    incident_id=record.incident_id,
                    allowed=record.allowed,
                )
            except ActionRefused as e:
                self._fail(record, now, run, f"step {sid!r} refused: {e}")
                return
            except RemediationError as e:
                attempts = record.attempts + 1
                if step.action in GIT_ACTIONS and attempts < MAX_ATTEMPTS:
                    record = self._save(
                        record,
                        record.model_copy(
                            update={"attempts": attempts, "updated_at": now, "note": str(e)}
                        ),
                        self._entry(
                            RemediationEvent.STEP_FAILED,
                            record,
                            now,
                            step=sid,
                            error=str(e),
                            attempt=attempts,
                            retry=True,
                        ),
                    )
                    run.waiting.append(record.key)
                    # Not applied, and said so: the log, the counter (by _save) and the
                    # people, who may want to act before the next attempt.
                    log.warning(
                        "remediation step failed; retried next run",
                        action=record.key,
                        step=sid,
                        attempt=attempts,
                        of=MAX_ATTEMPTS,
                        error=str(e),
                    )
                    self._tell(
                        record,
                        f"{record.playbook}: step {sid!r} failed and is NOT applied "
                        f"(attempt {attempts} of {MAX_ATTEMPTS}; retried at the next run): {e}",
                    )
                    return
                self._fail(record, now, run, f"step {sid!r} failed: {e}")
                return
            results = {**record.results, sid: result}
            record = self._save(
                record,
                record.model_copy(
                    update={
                        "results": results,
                        "running_step": None,
                        "attempts": 0,
                        "updated_at": now,
                    }
                ),
                self._entry(
                    RemediationEvent.STEP_APPLIED,
                    record,
                    now,
                    step=sid,
                    result=result.model_dump(mode="json"),
                ),
            )
        record = self._move(record, ActionState.APPLIED, now, RemediationEvent.APPLIED)
        record = self._move(record, ActionState.VERIFYING, now, None)
        run.applied.append(record.key)
        self._tell(
            record,
            f"{record.playbook} applied for the incident "
            f"({_results_text(record)}); verifying within "
            f"{record.verification.window_minutes:g} min",
        )

    def _fail(self, record: ActionRecord, now: datetime, run: RemediationRun, why: str) -> None:
        """Undo what the action already applied (best effort), then mark it failed and
        escalate to people."""
        undo_note = ""
        if record.results and self.paused():
            undo_note = "the steps already applied stay applied (remediation is paused)"
        elif record.results:
            record, undo = self._undo_steps(record, now)
            undo_note = undo.note
        note = why + (f"; {undo_note}" if undo_note else "")
        self._move(
            record,
            ActionState.FAILED,
            now,
            RemediationEvent.FAILED,
            note=note,
            running_step=None,
            why=note,
        )
        run.failed.append(record.key)
        log.error("remediation failed", action=record.key, why=note)
        self._tell(record, f"{record.playbook} FAILED: {note}. A person must look.", escalate=True)

    # --- verifying and undoing ----------------------------------------------------------

    def _verify(
        self,
        record: ActionRecord,
        incident: TrackedIncident | None,
        slis: Mapping[SliKey, SliSeries],
        now: datetime,
        judged_at: datetime,
        run: RemediationRun,
    ) -> None:
        if record.state is ActionState.APPLIED:  # a crash between apply and verify
            record = self._move(record, ActionState.VERIFYING, now, None)
        assert record.applied_at is not None
        if incident is None:
            verdict = Verdict.VERIFIED  # resolved: its SLIs stayed back within baseline
        else:
            verdict = verify(
                incident,
                slis,
                judged_at,
                record.applied_at,
                record.verification,
                self.settings.detection,
                self.settings.slo,
                moved_off(record.steps),
            )
        if verdict is Verdict.PENDING:
            return
        why = ""
        if verdict is Verdict.FAILED and incident is not None:
            gap = verification_gap(
                incident,
                slis,
                judged_at,
                record.verification,
                self.settings.detection,
                self.settings.slo,
                moved_off(record.steps),
            )
            why = f". Not back: {gap}" if gap else ""
        if verdict is Verdict.VERIFIED:
            self._move(
                record,
                ActionState.VERIFIED,
                now,
                RemediationEvent.VERIFIED,
                note="the incident's SLIs are back within baseline",
            )
            run.verified.append(record.key)
            self._tell(
                record, f"{record.playbook} verified: the incident's SLIs are back within baseline"
            )
            return
        if self.paused():
            run.waiting.append(record.key)
            return
        record, undo = self._undo_steps(record, now)
        undo_note = undo.note
        if undo.failed or undo.kept:
            # Not everything was reversed: the action failed, and people must look.
            what = "its undo failed" if undo.failed else "part of it cannot be undone"
            self._move(
                record,
                ActionState.FAILED,
                now,
                RemediationEvent.FAILED,
                note=f"did not help, and {what}: {undo_note}{why}",
            )
            run.failed.append(record.key)
            self._tell(
                record,
                f"{record.playbook} did not help within "
                f"{record.verification.window_minutes:g} min, and {what}: "
                f"{undo_note}{why}. A person must look.",
                escalate=True,
            )
            return
        self._move(
            record,
            ActionState.UNDONE,
            now,
            RemediationEvent.UNDONE,
            note=f"did not help within {record.verification.window_minutes:g} min; "
            + undo_note
            + why,
        )
        run.undone.append(record.key)
        self._tell(
            record,
            f"{record.playbook} did not help within "
            f"{record.verification.window_minutes:g} min, so it was undone "
            f"({undo_note}){why}",
            escalate=True,
        )

    def _undo_steps(self, record: ActionRecord, now: datetime) -> tuple[ActionRecord, Undo]:
        """Undo the applied steps, last first, recording each."""
        said: list[str] = []
        failed = kept = False
        for i in reversed(range(len(record.steps))):
            sid, step = record.step_ids[i], record.steps[i]
            result = record.results.get(sid)
            if result is None or sid in record.undo_results:
                continue
            key = step_key(record.incident_id, record.playbook, sid) + "/undo"
            undo_action = record.undo[i] if i < len(record.undo) else None
            self.fence()
            try:
                if i < len(record.revert) and record.revert[i]:
                    done = self.executor.revert(
                        step, result, key=key, incident_id=record.incident_id
                    )
                elif undo_action is not None:
                    done = self.executor.apply(
                        undo_action, key=key, incident_id=record.incident_id, allowed=record.allowed
                    )
                else:
                    if step.action not in (ActionKind.NOTIFY, ActionKind.ESCALATE):
                        said.append(f"{sid} cannot be undone and stays applied")
                        kept = True
                    continue
            except RemediationError as e:
                said.append(f"undo of {sid} failed: {e}")
                failed = True
                continue
            undone = {**record.undo_results, sid: done}
            record = self._save(
                record,
                record.model_copy(update={"undo_results": undone, "updated_at": now}),
                self._entry(
                    RemediationEvent.STEP_UNDONE,
                    record,
                    now,
                    step=sid,
                    result=done.model_dump(mode="json"),
                ),
            )
            said.append(f"{sid} undone" + (f" by {done.commit[:12]}" if done.commit else ""))
        return record, Undo("; ".join(said), failed=failed, kept=kept)

    # --- persistence and telling --------------------------------------------------------

    def _entry(
        self,
        event: RemediationEvent,
        record: ActionRecord,
        now: datetime,
        *,
        actor: str = ACTOR,
        **detail: Any,
    ) -> AuditEntry:
        return action_entry(event, record, now, actor=actor, **detail)

    def _save(
        self, prev: ActionRecord, new: ActionRecord, entry: AuditEntry | None = None
    ) -> ActionRecord:
        if not self.store.put_action(new, [entry] if entry else [], prev=prev):
            raise _Lost
        if entry is not None and self.metrics is not None:
            # Every audited event is counted once it is stored (sentinel_remediation_events).
            self.metrics.remediation_events.labels(event=entry.action, gate=new.gate.value).inc()
        return new

    def _move(
        self,
        record: ActionRecord,
        to: ActionState,
        now: datetime,
        event: RemediationEvent | None,
        *,
        actor: str = ACTOR,
        why: str = "",
        **changes: Any,
    ) -> ActionRecord:
        new = advance(record, to, now, **changes)
        entry = None
        if event is not None:
            entry = self._entry(
                event, record, now, actor=actor, state=to.value, **({"why": why} if why else {})
            )
        return self._save(record, new, entry)

    def _tell(self, record: ActionRecord, message: str, *, escalate: bool = False) -> None:
        self.notifier.notify(record.incident_id, message, escalate=escalate)


def _repeatable(step: AnyAction) -> bool:
    """Whether applying the step again after an unknown outcome is safe: git steps are
    found again by their idempotency key instead of being applied twice."""
    return step.action in GIT_ACTIONS


def _proposal_message(record: ActionRecord) -> str:
    h = record.hypothesis
    head = (
        f"root cause {h.component} ({h.fault}, confidence {h.confidence:.2f}): "
        f"playbook {record.playbook} "
    )
    if record.gate is Gate.AUTO:
        return head + "runs automatically"
    if record.gate is Gate.APPROVE:
        return head + f"needs approval (action {record.key}): " + "; ".join(record.reasons)
    return head + "is suggested only: " + "; ".join(record.reasons)


def _results_text(record: ActionRecord) -> str:
    parts = []
    for sid, r in record.results.items():
        parts.append(f"{sid}: {r.detail or 'done'}" + (f" [{r.commit[:12]}]" if r.commit else ""))
    return "; ".join(parts)
