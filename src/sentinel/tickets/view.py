"""What a ticket says, worded: the views (``TicketView`` and its lines), ``build_ticket``
(an incident, its anomalies, hypotheses and action to a view, every value in its unit),
and the wording shared by the renderers (values, changes, action phrases, times).

What must not live here: rendering (``blocks``, ``text``), I/O, the clock.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import assert_never

from pydantic import BaseModel, ConfigDict

from sentinel.detection import Anomaly, Detector
from sentinel.incidents import Incident, IncidentStatus
from sentinel.playbooks.model import (
    AnyAction,
    Escalate,
    GitopsRollback,
    Http,
    ModelFailover,
    Notify,
    ShadowMode,
    Throttle,
)
from sentinel.ports import StepResult
from sentinel.rca import Hypothesis, percent
from sentinel.remediation import ActionRecord, ActionState, Gate
from sentinel.telemetry import AwareDatetime, SliKind

MAX_HYPOTHESES = 5  # hypotheses a ticket shows
MAX_EVIDENCE = 3  # evidence lines per hypothesis

ELLIPSIS = "…"


class _View(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SliLine(_View):
    """One anomalous SLI, worded: ``name`` of ``component``, ``before`` -> ``after``
    (``change``) since ``onset``."""

    component: str
    sli: SliKind
    qualifier: str = ""
    detector: Detector = Detector.LEVEL_SHIFT
    slo: str = ""
    onset: AwareDatetime
    name: str  # "p95 latency", "error rate (rate_limited)", "bad events of SLO 'x' (...)"
    before: str  # the baseline, in its unit
    after: str  # the value observed since the onset, in its unit
    change: str  # "x6.9", "+27.1 pp", "-85%", "new error type"

    @property
    def text(self) -> str:
        return (
            f"{self.name} of {self.component} {self.before} -> {self.after} "
            f"({self.change}) since {clock_time(self.onset)}"
        )


class HypothesisLine(_View):
    rank: int  # 1 is the most likely cause
    component: str
    fault: str
    confidence: float
    change: str | None = None
    evidence: tuple[str, ...] = ()  # the first MAX_EVIDENCE lines
    more_evidence: int = 0  # lines left out

    @property
    def percent(self) -> str:
        return percent(self.confidence)

    @property
    def text(self) -> str:
        change = f", change {self.change}" if self.change else ""
        return f"{self.rank}. {self.component}: {self.fault}, {self.percent}{change}"


class StepLine(_View):
    """One step of an action: what it does, and what it did (and its undo) if it ran."""

    id: str
    action: str  # the action kind, e.g. gitops_rollback
    what: str  # e.g. "revert 9b08923 in agent-config"
    result: str = ""  # empty until the step ran
    undo: str = ""  # what undoing it did, if it was undone

    @property
    def text(self) -> str:
        done = f" -> {self.result}" if self.result else ""
        undone = f"; undone: {self.undo}" if self.undo else ""
        return f"{self.id}: {self.what}{done}{undone}"


class ActionView(_View):
    key: str
    playbook: str
    component: str  # of the hypothesis acted on
    fault: str
    confidence: float
    gate: Gate
    state: ActionState
    reasons: tuple[str, ...] = ()  # why the gate is not freer
    decided_by: str | None = None
    note: str = ""
    steps: tuple[StepLine, ...] = ()
    # How this playbook fared on this fault before (learned), e.g. "3 of 4 worked".
    track_record: str = ""

    @property
    def awaiting_approval(self) -> bool:
        """The one state in which the ticket offers Approve / Reject buttons."""
        return self.state is ActionState.PROPOSED and self.gate is Gate.APPROVE

    @property
    def how(self) -> str:
        """Whether and how it runs, in words."""
        match self.gate:
            case Gate.AUTO:
                return "runs automatically"
            case Gate.APPROVE:
                return "runs once a person approves it"
            case Gate.SUGGEST:
                return "a suggestion only: sentinel will not run it"
            case _:
                assert_never(self.gate)


class StoryView(_View):
    """What sentinel's LLM agents added to the ticket: advisory text, never what the
    ranking above or any gate rests on."""

    summary: str = ""
    likely_cause: str = ""
    next_checks: tuple[str, ...] = ()
    # The investigator's re-ranking, bounded: "1. tool:x 55 % (engine 40 %): reason".
    investigation: tuple[str, ...] = ()
    # Why some LLM text is missing (timeout, budget, refused output, unreachable).
    note: str = ""
    source: str = ""  # "narrative.v1 · openai:gpt-4o"


class TicketView(_View):
    """Everything a ticket says, worded; rendered by ``ticket_blocks`` and
    ``ticket_text``."""

    incident_id: str
    title: str
    status: IncidentStatus
    opened_at: AwareDatetime
    resolved_at: AwareDatetime | None = None
    components: tuple[str, ...] = ()
    slis: tuple[SliLine, ...] = ()
    hypotheses: tuple[HypothesisLine, ...] = ()  # the top MAX_HYPOTHESES
    more_hypotheses: int = 0  # hypotheses left out
    action: ActionView | None = None
    status_line: str  # "open · diagnosed · action awaiting approval"
    confirmed: str | None = None  # the root cause a person confirmed, if any
    story: StoryView | None = None  # from the LLM agents, when configured

    @property
    def awaiting_approval(self) -> bool:
        return self.action is not None and self.action.awaiting_approval


# --- building the view --------------------------------------------------------------------


def build_ticket(
    incident: Incident,
    anomalies: Sequence[Anomaly],
    hypotheses: Sequence[Hypothesis],
    action: ActionRecord | None,
    confirmed: str | None = None,
    track_record: str = "",
    story: StoryView | None = None,
) -> TicketView:
    """The ticket of ``incident``: its anomalies (earliest onset first), its hypotheses
    (best first, as ranked; the top ``MAX_HYPOTHESES``), the action proposed for it and
    the root cause a person confirmed."""
    ordered = sorted(anomalies, key=lambda a: (a.onset, a.component, a.sli, a.qualifier))
    shown = [
        HypothesisLine(
            rank=n,
            component=h.component,
            fault=h.fault,
            confidence=h.confidence,
            change=h.change,
            evidence=h.evidence[:MAX_EVIDENCE],
            more_evidence=max(0, len(h.evidence) - MAX_EVIDENCE),
        )
        for n, h in enumerate(hypotheses[:MAX_HYPOTHESES], start=1)
    ]
    view = _action_view(action) if action is not None else None
    if view is not None and track_record:
        view = view.model_copy(update={"track_record": track_record})
    return TicketView(
        incident_id=incident.id,
        title=incident.title,
        status=incident.status,
        opened_at=incident.opened_at,
        resolved_at=incident.resolved_at,
        components=incident.components,
        slis=tuple(sli_line(a) for a in ordered),
        hypotheses=tuple(shown),
        more_hypotheses=max(0, len(hypotheses) - MAX_HYPOTHESES),
        action=view,
        status_line=_status_line(incident.status, bool(hypotheses), view),
        confirmed=confirmed,
        story=story,
    )


def _status_line(status: IncidentStatus, diagnosed: bool, action: ActionView | None) -> str:
    parts = [status.value, "diagnosed" if diagnosed else "no hypothesis yet"]
    if action is not None:
        parts.append(action_phrase(action))
    return " · ".join(parts)


def action_phrase(a: ActionView) -> str:
    by = f" by {a.decided_by}" if a.decided_by else ""
    match a.state:
        case ActionState.PROPOSED:
            match a.gate:
                case Gate.AUTO:
                    return "action about to run automatically"
                case Gate.APPROVE:
                    return "action awaiting approval"
                case Gate.SUGGEST:
                    return "action suggested only"
                case _:
                    assert_never(a.gate)
        case ActionState.APPROVED:
            return f"action approved{by}"
        case ActionState.REJECTED:
            return f"action rejected{by}"
        case ActionState.EXPIRED:
            return "action expired: nobody decided in time"
        case ActionState.RUNNING:
            return "action running"
        case ActionState.APPLIED:
            return "action applied"
        case ActionState.VERIFYING:
            return "action verifying"
        case ActionState.VERIFIED:
            return "action verified"
        case ActionState.UNDONE:
            return "action undone"
        case ActionState.FAILED:
            return "action failed"
        case _:
            assert_never(a.state)


def _action_view(r: ActionRecord) -> ActionView:
    steps = tuple(
        StepLine(
            id=sid,
            action=step.action.value,
            what=step_summary(step),
            result=result_text(r.results[sid]) if sid in r.results else "",
            undo=result_text(r.undo_results[sid]) if sid in r.undo_results else "",
        )
        for sid, step in zip(r.step_ids, r.steps, strict=True)
    )
    return ActionView(
        key=r.key,
        playbook=r.playbook,
        component=r.hypothesis.component,
        fault=r.hypothesis.fault,
        confidence=r.hypothesis.confidence,
        gate=r.gate,
        state=r.state,
        reasons=r.reasons,
        decided_by=r.decided_by,
        note=r.note,
        steps=steps,
    )


def step_summary(step: AnyAction) -> str:
    """What a rendered step does, in a few words."""
    match step:
        case GitopsRollback():
            return f"revert {step.change} in {step.repo}"
        case Throttle():
            where = (
                f" ({step.git.path})"
                if step.git is not None
                else (f" ({step.http.method.value} {step.http.url})" if step.http else "")
            )
            return f"throttle {step.target} to {step.requests_per_minute:g} requests/min{where}"
        case ShadowMode():
            return f"put {step.target} in shadow mode ({step.git.path})"
        case ModelFailover():
            to = step.fallback or "its configured fallback"
            agent = f" for agent {step.agent}" if step.agent else ""
            return f"fail {step.model} over to {to}{agent} ({step.git.path})"
        case Http():
            return f"{step.call.method.value} {step.call.url}"
        case Notify():
            return f"notify: {step.message}"
        case Escalate():
            return f"escalate: {step.message}"
        case _:
            assert_never(step)


def result_text(r: StepResult) -> str:
    """What a step (or its undo) did, in a few words."""
    parts = [r.detail or "done"]
    if r.commit:
        parts.append(f"commit {r.commit[:12]}" + (f" on {r.branch}" if r.branch else ""))
    if r.status is not None:
        parts.append(f"HTTP {r.status}")
    return "; ".join(parts)


# --- SLIs in words and units ----------------------------------------------------------------

_SLI_NAMES: dict[SliKind, str] = {
    SliKind.REQUEST_RATE: "request rate",
    SliKind.ERROR_RATE: "error rate",
    SliKind.ERROR_RATE_BY_TYPE: "error rate",
    SliKind.LATENCY_P50: "p50 latency",
    SliKind.LATENCY_P95: "p95 latency",
    SliKind.LATENCY_P99: "p99 latency",
    SliKind.INPUT_TOKENS_PER_REQUEST: "input tokens per request",
    SliKind.OUTPUT_TOKENS_PER_REQUEST: "output tokens per request",
    SliKind.COST_PER_REQUEST: "cost per request",
    SliKind.TOOL_FAILURE_RATE: "tool failure rate",
    SliKind.STEPS_PER_RUN: "steps per run",
    SliKind.EVAL_SCORE: "eval score",
    SliKind.GUARDRAIL_TRIGGERS: "guardrail trigger rate",
    SliKind.REFUSED_CALL_RATE: "calls refused before reaching the callee",
    SliKind.MEMORY_UTILISATION: "memory use",
    SliKind.MEMORY_WORKING_SET: "memory working set",
    SliKind.CPU_USAGE: "CPU usage",
}


def sli_name(kind: SliKind, qualifier: str = "") -> str:
    """The SLI in words, with its qualifier (error type, evaluator): "eval score
    (faithfulness)"."""
    name = _SLI_NAMES[kind]
    return f"{name} ({qualifier})" if qualifier else name


def sli_line(a: Anomaly) -> SliLine:
    """One anomaly, worded. A burn-rate alert's baseline is its SLO's error budget (the
    share of bad events allowed) and its observed value the share of bad events."""
    if a.detector is Detector.BURN_RATE:
        name = f"bad events of SLO {a.slo!r} ({sli_name(a.sli, a.qualifier)})"
        before, after = _percent_value(a.baseline), _percent_value(a.observed)
        change = (
            f"burning the budget x{_sig(a.observed / a.baseline, 2)}"
            if a.baseline > 0
            else "over budget"
        )
    else:
        name = sli_name(a.sli, a.qualifier)
        before, after = format_value(a.sli, a.baseline), format_value(a.sli, a.observed)
        change = (
            "new error type"
            if a.detector is Detector.EMERGENCE
            else describe_change(a.sli, a.baseline, a.observed)
        )
    return SliLine(
        component=a.component,
        sli=a.sli,
        qualifier=a.qualifier,
        detector=a.detector,
        slo=a.slo,
        onset=a.onset,
        name=name,
        before=before,
        after=after,
        change=change,
    )


def format_value(kind: SliKind, v: float) -> str:
    """An SLI value in its unit: latencies in ms or s, shares in %, tokens, $, cores,
    bytes."""
    if not math.isfinite(v):
        return str(v)
    match kind:
        case SliKind.LATENCY_P50 | SliKind.LATENCY_P95 | SliKind.LATENCY_P99:
            # 0.9996 s is "1 s", not "1,000 ms".
            return f"{_sig(v * 1000)} ms" if abs(v) < 0.9995 else f"{_sig(v)} s"
        case (
            SliKind.ERROR_RATE
            | SliKind.ERROR_RATE_BY_TYPE
            | SliKind.TOOL_FAILURE_RATE
            | SliKind.GUARDRAIL_TRIGGERS
            | SliKind.REFUSED_CALL_RATE
        ):
            return _percent_value(v)
        case SliKind.REQUEST_RATE:
            return f"{_sig(v)} req/s"
        case SliKind.INPUT_TOKENS_PER_REQUEST | SliKind.OUTPUT_TOKENS_PER_REQUEST:
            return f"{_sig(v)} tokens"
        case SliKind.COST_PER_REQUEST:
            return f"${_sig(v)}"
        case SliKind.STEPS_PER_RUN:
            return f"{_sig(v)} steps"
        case SliKind.EVAL_SCORE:
            return _sig(v)
        case SliKind.MEMORY_UTILISATION:
            return f"{_percent_value(v)} of limit"
        case SliKind.MEMORY_WORKING_SET:
            return _bytes(v)
        case SliKind.CPU_USAGE:
            return f"{_sig(v)} cores"
        case _:
            assert_never(kind)


def describe_change(kind: SliKind, before: float, after: float) -> str:
    """How far the SLI moved: percentage points for shares, the difference for scores,
    a factor ("x6.9") for big rises, a percentage for the rest."""
    if kind.share or kind is SliKind.MEMORY_UTILISATION:
        return f"{_signed((after - before) * 100)} pp"
    if kind is SliKind.EVAL_SCORE:
        return _signed(after - before)
    if before <= 0:
        return "up from 0" if after > 0 else "unchanged"
    ratio = after / before
    if ratio >= 1.5:
        return f"x{_sig(ratio, 2)}"
    return f"{_signed((ratio - 1) * 100, digits=2)}%"


def _sig(v: float, digits: int = 3) -> str:
    """``v`` to ``digits`` significant digits, without an exponent or trailing zeros;
    thousands separated."""
    if v == 0 or not math.isfinite(v):
        return "0" if v == 0 else str(v)
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(v))))
    if decimals == 0:
        return f"{round(v):,}"
    text = f"{v:.{decimals}f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _signed(v: float, digits: int = 3) -> str:
    text = _sig(abs(v), digits)
    if text == "0":
        return "±0"
    return ("-" if v < 0 else "+") + text


def _percent_value(share: float) -> str:
    return f"{_sig(share * 100)}%"


def _bytes(v: float) -> str:
    size = abs(v)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{_sig(math.copysign(size, v))} {unit}"
        size /= 1024
    return f"{_sig(math.copysign(size, v))} TiB"


def clock_time(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%H:%M UTC")


def date_time(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
