"""The Remediation Agent's decisions, as pure functions of typed data.

- ``propose``: which playbook fits an incident's top hypothesis, its steps rendered,
  and the gate it passes: ``Gate.AUTO`` (runs alone), ``APPROVE`` (asks a person) or
  ``SUGGEST`` (shown, never run), with every reason it did not get a freer gate.
- ``guardrail_violations``: cooldown and runs per hour, from the playbook's history.
- ``ActionRecord`` and ``advance``: the persisted state machine of one remediation
  (proposed -> approved -> running -> applied -> verifying -> verified | undone | failed;
  rejected or expired from proposed), illegal moves refused.
- ``verify``: whether the incident's SLIs came back within baseline after the fix
  (``verification_gap``: what keeps it from it).

Safety invariant 2 of ARCHITECTURE.md lives in ``decide``: automatic execution needs the
confidence at or above the effective auto threshold, the playbook allowing auto, the
kill switch off, cooldown and rate limits respected and the blast radius within policy.

What must not live here: I/O, the clock, executing anything (``adapters.executors``),
scheduling and persistence (``agents.remediation``).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from sentinel.errors import IllegalTransition, PlaybookError
from sentinel.incidents import TrackedIncident, recovery_gap
from sentinel.playbooks.model import (
    AnyAction,
    BlastRadius,
    GitFile,
    GitopsRollback,
    ModelFailover,
    Playbook,
    ShadowMode,
    TemplateContext,
    Throttle,
    Verification,
    render_action,
)
from sentinel.ports import StepResult
from sentinel.rca import Hypothesis
from sentinel.settings import DetectionSettings, RemediationSettings, SloSettings
from sentinel.sli import SliKey, SliSeries

__all__ = [
    "ActionRecord",
    "ActionState",
    "Gate",
    "Proposal",
    "Verdict",
    "action_key",
    "advance",
    "blast_radius_violations",
    "decide",
    "effective_blast_radius",
    "effective_gates",
    "glob_match",
    "guardrail_violations",
    "matches",
    "propose",
    "step_key",
    "touched",
    "verification_gap",
    "verify",
]


class Gate(StrEnum):
    AUTO = "auto"  # runs without a person
    APPROVE = "approve"  # runs once a person approves
    SUGGEST = "suggest"  # shown to people, never run


class ActionState(StrEnum):
    PROPOSED = "proposed"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"  # nobody decided within approvals.expire_minutes
    RUNNING = "running"
    APPLIED = "applied"
    VERIFYING = "verifying"
    VERIFIED = "verified"
    UNDONE = "undone"
    FAILED = "failed"


_NEXT: Mapping[ActionState, frozenset[ActionState]] = {
    ActionState.PROPOSED: frozenset(
        {ActionState.APPROVED, ActionState.REJECTED, ActionState.EXPIRED}
    ),
    ActionState.APPROVED: frozenset({ActionState.RUNNING, ActionState.FAILED}),
    ActionState.RUNNING: frozenset({ActionState.APPLIED, ActionState.FAILED}),
    ActionState.APPLIED: frozenset({ActionState.VERIFYING}),
    ActionState.VERIFYING: frozenset(
        {ActionState.VERIFIED, ActionState.UNDONE, ActionState.FAILED}
    ),
    ActionState.REJECTED: frozenset(),
    ActionState.EXPIRED: frozenset(),
    ActionState.VERIFIED: frozenset(),
    ActionState.UNDONE: frozenset(),
    ActionState.FAILED: frozenset(),
}
TERMINAL = frozenset(s for s, nxt in _NEXT.items() if not nxt)
# States in which an action has touched, or may have touched, the outside world.
STARTED = frozenset(
    {
        ActionState.RUNNING,
        ActionState.APPLIED,
        ActionState.VERIFYING,
        ActionState.VERIFIED,
        ActionState.UNDONE,
    }
)


def action_key(incident_id: str, playbook: str) -> str:
    """The id of one remediation: one playbook acting on one incident."""
    return f"{incident_id}/{playbook}"


def step_key(incident_id: str, playbook: str, step: str) -> str:
    """A step's idempotency key (incident + playbook + step): what the executor finds an
    earlier application by."""
    return f"{incident_id}/{playbook}/{step}"


class ActionRecord(BaseModel):
    """One remediation as persisted: what was decided and why, its rendered steps, how
    far it got, and what each step did. Every change is written before it is acted on."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key: str
    incident_id: str
    playbook: str
    hypothesis: Hypothesis
    gate: Gate
    reasons: tuple[str, ...] = ()  # why the gate is not freer (empty for AUTO)
    state: ActionState = ActionState.PROPOSED
    step_ids: tuple[str, ...]
    steps: tuple[AnyAction, ...]  # rendered
    undo: tuple[AnyAction | None, ...] = ()  # per step: a rendered undo action, if any
    revert: tuple[bool, ...] = ()  # per step: undone by reverting its commit
    # What the steps may touch (the playbook's blast radius within the config's), fixed
    # when proposed: the executor refuses anything outside it.
    allowed: BlastRadius = BlastRadius()
    verification: Verification = Verification()
    results: dict[str, StepResult] = Field(default_factory=dict)
    undo_results: dict[str, StepResult] = Field(default_factory=dict)
    running_step: str | None = None  # the step being applied (or undone) right now
    attempts: int = 0  # failed tries of the running step (transient errors)
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    applied_at: datetime | None = None
    decided_by: str | None = None  # who approved or rejected it
    note: str = ""  # the last thing worth telling people (failure, verdict)


def advance(record: ActionRecord, to: ActionState, at: datetime, **changes: object) -> ActionRecord:
    """The record moved to state ``to`` at ``at`` (with other fields changed). Raises
    ``IllegalTransition`` naming both states when the move is not allowed."""
    if to not in _NEXT[record.state]:
        raise IllegalTransition(
            f"action {record.key!r}: cannot go from {record.state.value!r} to {to.value!r}"
        )
    update: dict[str, object] = {"state": to, "updated_at": at, **changes}
    if to is ActionState.RUNNING and record.started_at is None:
        update["started_at"] = at
    if to is ActionState.APPLIED:
        update["applied_at"] = at
    return record.model_copy(update=update)


# --- matching and proposing ----------------------------------------------------------------


def glob_match(value: str, patterns: Iterable[str]) -> bool:
    """Whether ``value`` matches one of the shell-style globs (``*`` crosses ``/`` and
    ``:``; ``**`` is the same as ``*``)."""
    return any(fnmatch.fnmatchcase(value, p.replace("**", "*")) for p in patterns)


def matches(playbook: Playbook, hypothesis: Hypothesis) -> bool:
    m = playbook.match
    return (
        hypothesis.fault in {f.value for f in m.faults}
        and glob_match(hypothesis.component, m.components)
        and hypothesis.confidence >= m.min_confidence
    )


def _apart(value: float, threshold: float) -> tuple[str, str]:
    """Both numbers with as few decimals (at least 2) as tell them apart: "0.9994 is below
    0.9999", never "1.00 is below 1.00"."""
    for digits in range(2, 7):
        a, b = f"{value:.{digits}f}", f"{threshold:.{digits}f}"
        if a != b:
            return a, b
    return f"{value:.6f}", f"{threshold:.6f}"


def effective_gates(playbook: Playbook, policy: RemediationSettings) -> tuple[float, float]:
    """The (auto, approve) thresholds that apply: the playbook's, never looser than the
    config's unless the config allows it."""
    g = playbook.gates
    if policy.allow_looser_gates:
        return g.auto_above, g.approve_above
    return max(g.auto_above, policy.auto_above), max(g.approve_above, policy.approve_above)


def touched(
    steps: Sequence[AnyAction], ctx: TemplateContext, policy: RemediationSettings
) -> tuple[set[str], set[str]]:
    """The repositories and paths the rendered steps will change (a rollback's, from the
    change it reverts; the executor checks the commit's own paths again)."""
    repos: set[str] = set()
    paths: set[str] = set()
    for s in steps:
        if isinstance(s, GitopsRollback):
            repos.add(s.repo)
            if ctx.change_path:
                paths.add(ctx.change_path)
        elif isinstance(s, Throttle | ShadowMode | ModelFailover):
            target: GitFile | None = s.git
            if target is not None:
                repos.add(target.repo or policy.config_repo)
                paths.add(target.path)
    return repos, paths


def effective_blast_radius(playbook: Playbook, policy: RemediationSettings) -> BlastRadius:
    """What an action may touch: within both the playbook's blast radius and the
    config's. Path globs are intersected conservatively (a glob is kept when it lies
    inside a glob of the other side), so the result never allows more than either."""
    br = playbook.guardrails.blast_radius
    paths = {g for g in br.paths if glob_match(g, policy.allowed_paths)}
    paths |= {g for g in policy.allowed_paths if glob_match(g, br.paths)}
    if br.repos and policy.allowed_repos:
        repos = tuple(r for r in br.repos if r in policy.allowed_repos) or ("",)
    else:
        repos = br.repos or policy.allowed_repos
    # An empty repo list means "any"; a list holding only "" matches no repository.
    return BlastRadius(components=br.components, repos=repos, paths=tuple(sorted(paths)) or ("",))


def blast_radius_violations(
    playbook: Playbook,
    hypothesis: Hypothesis,
    steps: Sequence[AnyAction],
    ctx: TemplateContext,
    policy: RemediationSettings,
) -> list[str]:
    """What the steps would touch outside the playbook's blast radius or the config's."""
    br = playbook.guardrails.blast_radius
    out: list[str] = []
    for where, patterns in (("playbook", br.components), ("config", policy.allowed_components)):
        if not glob_match(hypothesis.component, patterns):
            out.append(f"component {hypothesis.component!r} is outside the {where}'s blast radius")
    repos, paths = touched(steps, ctx, policy)
    for repo in sorted(repos):
        if br.repos and repo not in br.repos:
            out.append(f"repo {repo!r} is outside the playbook's blast radius {list(br.repos)}")
        if policy.allowed_repos and repo not in policy.allowed_repos:
            out.append(f"repo {repo!r} is not in remediation.allowed_repos")
    for path in sorted(paths):
        if not glob_match(path, br.paths):
            out.append(f"path {path!r} is outside the playbook's blast radius {list(br.paths)}")
        if not glob_match(path, policy.allowed_paths):
            out.append(f"path {path!r} is not in remediation.allowed_paths")
    return out


def guardrail_violations(
    playbook: Playbook, history: Iterable[ActionRecord], now: datetime
) -> list[str]:
    """Cooldown and runs-per-hour limits the playbook would break by starting at ``now``
    (``history``: its earlier records; only those that started count)."""
    g = playbook.guardrails
    starts = sorted(
        r.started_at
        for r in history
        if r.playbook == playbook.name and r.started_at is not None and r.started_at <= now
    )
    out: list[str] = []
    if starts and now - starts[-1] < timedelta(seconds=g.cooldown_seconds):
        out.append(
            f"cooldown: {playbook.name!r} last started at {starts[-1].isoformat()}, "
            f"less than {g.cooldown_seconds:g} s ago"
        )
    hour = [t for t in starts if now - t < timedelta(hours=1)]
    if len(hour) >= g.max_runs_per_hour:
        out.append(
            f"rate limit: {playbook.name!r} started {len(hour)} time(s) in the last hour "
            f"(max_runs_per_hour = {g.max_runs_per_hour})"
        )
    return out


def decide(
    playbook: Playbook,
    confidence: float,
    *,
    paused: bool,
    guardrails: Sequence[str],
    blast_radius: Sequence[str],
    policy: RemediationSettings,
) -> tuple[Gate, tuple[str, ...]]:
    """The gate an action passes, and every reason it did not pass a freer one."""
    auto_above, approve_above = effective_gates(playbook, policy)
    reasons: list[str] = []
    if confidence < auto_above:
        c, t = _apart(confidence, auto_above)
        reasons.append(f"confidence {c} is below the auto threshold {t}")
    if not playbook.gates.allow_auto:
        reasons.append(f"playbook {playbook.name!r} does not allow automatic runs")
    if paused:
        reasons.append("remediation is paused (kill switch)")
    reasons.extend(guardrails)
    reasons.extend(blast_radius)
    if playbook.guardrails.dry_run:
        reasons.append(f"playbook {playbook.name!r} is a dry run: described, never run")
    if not reasons:
        return Gate.AUTO, ()
    if blast_radius or playbook.guardrails.dry_run:
        return Gate.SUGGEST, tuple(reasons)
    if confidence >= approve_above:
        return Gate.APPROVE, tuple(reasons)
    c, t = _apart(confidence, approve_above)
    reasons.append(f"confidence {c} is below the approval threshold {t}")
    return Gate.SUGGEST, tuple(reasons)


class Proposal(BaseModel):
    """A playbook fitted to a hypothesis: the record to persist, still PROPOSED."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    playbook: Playbook
    record: ActionRecord


def _render(
    playbook: Playbook, ctx: TemplateContext
) -> tuple[list[AnyAction], list[AnyAction | None], list[bool]]:
    steps: list[AnyAction] = []
    undo: list[AnyAction | None] = []
    revert: list[bool] = []
    for sid, step in zip(playbook.step_ids(), playbook.steps, strict=True):
        steps.append(render_action(step, ctx))
        how = playbook.undo_of(sid)
        if isinstance(how, str):  # UndoStrategy
            undo.append(None)
            revert.append(how == "revert")
        else:
            undo.append(render_action(how, ctx))
            revert.append(False)
    return steps, undo, revert


def propose(
    playbooks: Sequence[Playbook],
    incident_id: str,
    hypothesis: Hypothesis,
    ctx: TemplateContext,
    *,
    history: Sequence[ActionRecord],
    paused: bool,
    policy: RemediationSettings,
    now: datetime,
) -> tuple[Proposal | None, tuple[str, ...]]:
    """The first playbook (in the given order) that matches the hypothesis and whose
    templates render for it, with its gate; and why each earlier matching playbook was
    passed over (a template the hypothesis cannot fill, such as a rollback without a
    linked change). ``(None, reasons)`` when none fits."""
    skipped: list[str] = []
    for pb in playbooks:
        if not matches(pb, hypothesis):
            continue
        try:
            steps, undo, revert = _render(pb, ctx)
        except PlaybookError as e:
            skipped.append(f"playbook {pb.name!r} does not apply: {e}")
            continue
        gate, reasons = decide(
            pb,
            hypothesis.confidence,
            paused=paused,
            guardrails=guardrail_violations(pb, history, now),
            blast_radius=blast_radius_violations(pb, hypothesis, steps, ctx, policy),
            policy=policy,
        )
        record = ActionRecord(
            key=action_key(incident_id, pb.name),
            incident_id=incident_id,
            playbook=pb.name,
            hypothesis=hypothesis,
            gate=gate,
            reasons=reasons,
            step_ids=tuple(pb.step_ids()),
            steps=tuple(steps),
            undo=tuple(undo),
            revert=tuple(revert),
            verification=pb.verification,
            allowed=effective_blast_radius(pb, policy),
            created_at=now,
            updated_at=now,
        )
        return Proposal(playbook=pb, record=record), tuple(skipped)
    return None, tuple(skipped)


# --- verification --------------------------------------------------------------------------


class Verdict(StrEnum):
    VERIFIED = "verified"  # the SLIs are back within baseline
    PENDING = "pending"  # not yet, and the window is still open
    FAILED = "failed"  # the window closed without recovery: undo


def moved_off(steps: Sequence[AnyAction]) -> frozenset[str]:
    """The components these steps take out of the users' path: the model agents fail
    over from, the version put in shadow."""
    out: set[str] = set()
    for step in steps:
        if isinstance(step, ModelFailover):
            out.add(f"model:{step.model}")
        elif isinstance(step, ShadowMode):
            out.add(step.target)
    return frozenset(out)


def verify(
    incident: TrackedIncident,
    slis: Mapping[SliKey, SliSeries],
    now: datetime,
    applied_at: datetime,
    spec: Verification,
    detection: DetectionSettings,
    slos: Sequence[SloSettings] = (),
    moved_off: frozenset[str] = frozenset(),
) -> Verdict:
    """Whether the fix worked: the incident's SLIs (those of ``spec.slis`` when given)
    all back within their baseline for ``spec.hold_minutes`` of points taken after the
    fix, except those of the components the fix moved traffic off (``moved_off``, see
    ``incidents.recovered``). Missing data is not recovery."""
    held = now - applied_at >= timedelta(minutes=_hold_minutes(spec, detection))
    if held and verification_gap(incident, slis, now, spec, detection, slos, moved_off) is None:
        return Verdict.VERIFIED
    if now - applied_at >= timedelta(minutes=spec.window_minutes):
        return Verdict.FAILED
    return Verdict.PENDING


def _hold_minutes(spec: Verification, detection: DetectionSettings) -> float:
    # Only points after the fix count: the hold window must fit after it. And it holds
    # at least the points recovery needs (``persistence_points``): a shorter hold could
    # never be verified.
    return max(spec.hold_minutes, detection.persistence_points * detection.step_seconds / 60)


def verification_gap(
    incident: TrackedIncident,
    slis: Mapping[SliKey, SliSeries],
    now: datetime,
    spec: Verification,
    detection: DetectionSettings,
    slos: Sequence[SloSettings] = (),
    moved_off: frozenset[str] = frozenset(),
) -> str | None:
    """What keeps the fix from being verified at ``now``, over the hold window, for
    people (a verdict of FAILED says it); None when nothing does."""
    chosen = incident
    if spec.slis:
        kinds = set(spec.slis)
        kept = tuple(a for a in incident.anomalies if a.sli in kinds)
        chosen = incident.model_copy(update={"anomalies": kept or incident.anomalies})
    settings = detection.model_copy(update={"resolve_minutes": _hold_minutes(spec, detection)})
    return recovery_gap(chosen, slis, now, settings, slos, moved_off)
