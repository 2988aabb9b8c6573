"""What an incident ticket says, for people: the SLIs that moved (before and after, in
their units), the likely causes ranked with their confidence and evidence, the proposed
fix with its gate and why, and where the incident stands, in one line.

- ``build_ticket``: an incident, its anomalies, its hypotheses and its action (if any)
  to a ``TicketView``, every value already worded and in its unit;
- ``ticket_blocks``: the view as Slack Block Kit blocks (header, "What is wrong",
  "Likely causes", "Proposed fix", a status line), with Approve / Reject buttons only
  while an action waits for a person's approval. Slack's limits (header 150 characters,
  section 3,000, 50 blocks) are respected by cutting with "…", never by failing;
- ``ticket_text``: the same ticket as plain text (Slack's fallback ``text``, the console
  notifier, ``sentinel incident``).

Everything here is pure: no I/O, no clock. What must not live here: posting or updating
tickets (``adapters/slack.py``, the ``TicketSink`` port), reading the store, deciding
anything (``sentinel.remediation``), handling the buttons' clicks (``api.py``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
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
from sentinel.ports import Block, StepResult
from sentinel.rca import Hypothesis, percent
from sentinel.remediation import ActionRecord, ActionState, Gate
from sentinel.telemetry import AwareDatetime, SliKind

__all__ = [
    "ACTIONS_BLOCK_ID",
    "APPROVE_ACTION_ID",
    "CONFIRM_ACTION_ID",
    "CONFIRM_BLOCK_PREFIX",
    "MAX_EVIDENCE",
    "MAX_HYPOTHESES",
    "REJECT_ACTION_ID",
    "ActionView",
    "HypothesisLine",
    "SliLine",
    "StepLine",
    "TicketView",
    "build_ticket",
    "describe_change",
    "format_value",
    "percent",
    "result_text",
    "sli_line",
    "sli_name",
    "step_summary",
    "ticket_blocks",
    "ticket_text",
]

# The buttons' action ids, which the Slack interactivity handler dispatches on; each
# button's ``value`` is the action's key (``ActionRecord.key``).
APPROVE_ACTION_ID = "sentinel_approve"
REJECT_ACTION_ID = "sentinel_reject"
# The root-cause select menu: its action id, and its block id's prefix (then the incident).
CONFIRM_ACTION_ID = "sentinel_confirm"
CONFIRM_BLOCK_PREFIX = "sentinel_confirm:"
ACTIONS_BLOCK_ID = "sentinel_action"

MAX_HYPOTHESES = 5  # hypotheses a ticket shows
MAX_EVIDENCE = 3  # evidence lines per hypothesis
# SLI lines of the plain text by default (the blocks are bounded by Slack's limits).
MAX_TEXT_SLIS = 20

# Slack's limits (https://api.slack.com/reference/block-kit/blocks).
HEADER_LIMIT = 150
SECTION_LIMIT = 3000
CONTEXT_LIMIT = 3000
MAX_BLOCKS = 50
CONFIRM_TITLE_LIMIT = 100
CONFIRM_TEXT_LIMIT = 300
# One evidence or reason line in a block: long lines must not crowd out the others.
LINE_LIMIT = 300

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
            f"({self.change}) since {_clock(self.onset)}"
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
        parts.append(_action_phrase(action))
    return " · ".join(parts)


def _action_phrase(a: ActionView) -> str:
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


def _clock(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%H:%M UTC")


def _when(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


# --- Slack blocks ---------------------------------------------------------------------------


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + ELLIPSIS


def _esc(text: str) -> str:
    """Text safe inside Slack mrkdwn: &, < and > are its control characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _fit(head: str, lines: Sequence[str], limit: int, *, what: str = "more") -> str:
    """``head`` and as many of ``lines`` as fit in ``limit`` characters, then a line
    saying how many were left out."""
    text = head
    for n, line in enumerate(lines):
        candidate = f"{text}\n{line}" if text else line
        after = len(lines) - n - 1
        # Room must remain for the "and N more" line that would follow this one.
        reserve = len(f"\n{ELLIPSIS} and {after} {what}") if after else 0
        if len(candidate) + reserve > limit:
            if not text:  # not even the first line fits: cut it
                return _clip(line, limit)
            return _clip(f"{text}\n{ELLIPSIS} and {len(lines) - n} {what}", limit)
        text = candidate
    return _clip(text, limit)


def _section(text: str) -> Block:
    return {"type": "section", "text": {"type": "mrkdwn", "text": _clip(text, SECTION_LIMIT)}}


def _plain(text: str, limit: int) -> dict[str, object]:
    return {"type": "plain_text", "text": _clip(text, limit), "emoji": True}


def ticket_blocks(view: TicketView) -> list[Block]:
    """The ticket as Slack Block Kit blocks. Approve / Reject buttons (``value``: the
    action's key) only while the action waits for an approval."""
    icon = ":white_check_mark:" if view.status is IncidentStatus.RESOLVED else ":rotating_light:"
    blocks: list[Block] = [
        {"type": "header", "text": _plain(f"{icon} {view.title}", HEADER_LIMIT)},
    ]
    if view.story is not None:
        blocks.append(_section(_story_text(view.story)))
    wrong = [
        f"• {_esc(s.name)} of `{_esc(s.component)}`: {_esc(s.before)} → *{_esc(s.after)}* "
        f"({_esc(s.change)}) since {_clock(s.onset)}"
        for s in view.slis
    ]
    blocks.append(
        _section(
            _fit("*What is wrong*", wrong or ["_no anomaly recorded_"], SECTION_LIMIT, what="more")
        )
    )
    blocks.append(_section(_fit("*Likely causes*", _cause_lines(view), SECTION_LIMIT)))
    if view.action is not None:
        blocks.append(_section(_fix_text(view.action)))
    elif view.hypotheses:
        blocks.append(
            _section("*Proposed fix*\nNo playbook fits the top hypothesis: a person should look.")
        )
    if view.awaiting_approval:
        assert view.action is not None
        blocks.append(_buttons(view, view.action))
    if view.hypotheses:
        blocks.append(_confirm_menu(view))
    context = f"{view.status_line} · incident `{view.incident_id}` · opened {_when(view.opened_at)}"
    if view.resolved_at is not None:
        context += f" · resolved {_when(view.resolved_at)}"
    if view.confirmed is not None:
        context += f" · root cause confirmed: {view.confirmed}"
    blocks.append(
        {
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": _clip(_esc(context), CONTEXT_LIMIT)}],
        }
    )
    # The layout above has at most seven blocks; the guard keeps the limit if it grows.
    return blocks[: MAX_BLOCKS - 1] + blocks[-1:] if len(blocks) > MAX_BLOCKS else blocks


def _story_text(story: StoryView) -> str:
    lines: list[str] = []
    if story.summary:
        lines.append(_esc(story.summary))
    if story.likely_cause:
        lines.append(f"*Likely cause:* {_esc(story.likely_cause)}")
    if story.next_checks:
        lines.append("*Check next:*")
        lines.extend(f"• {_esc(_clip(c, LINE_LIMIT))}" for c in story.next_checks)
    if story.investigation:
        lines.append("*Investigator's re-ranking* (advisory; gates use the engine's confidence):")
        lines.extend(f"{_esc(_clip(x, LINE_LIMIT))}" for x in story.investigation)
    if story.note:
        lines.append(f"_{_esc(story.note)}_")
    if story.source:
        lines.append(f"_written by {_esc(story.source)}_")
    return _fit("*Summary*", lines, SECTION_LIMIT, what="more lines")


def _cause_lines(view: TicketView) -> list[str]:
    if not view.hypotheses:
        return ["_No hypothesis yet: the diagnosis has not run or found no candidate._"]
    lines: list[str] = []
    for h in view.hypotheses:
        change = f", change `{_esc(h.change)}`" if h.change else ""
        lines.append(
            f"{h.rank}. *{_esc(h.component)}*: {_esc(h.fault)}, *{_esc(h.percent)}*{change}"
            + "".join(f"\n      ◦ {_esc(_clip(e, LINE_LIMIT))}" for e in h.evidence)
            + (f"\n      ◦ _and {h.more_evidence} more_" if h.more_evidence else "")
        )
    if view.more_hypotheses:
        lines.append(f"_and {view.more_hypotheses} less likely hypotheses_")
    return lines


def _fix_text(a: ActionView) -> str:
    head = (
        f"*Proposed fix*: playbook `{_esc(a.playbook)}` for *{_esc(a.component)}* "
        f"({_esc(a.fault)}, {_esc(percent(a.confidence))}): {a.how}."
    )
    lines: list[str] = []
    if a.reasons:
        lines.append("*Why not automatic:*")
        lines.extend(f"• {_esc(_clip(r, LINE_LIMIT))}" for r in a.reasons)
    if a.steps:
        lines.append("*Steps:*")
        lines.extend(
            f"{n}. {_esc(_clip(s.what, LINE_LIMIT))}"
            + (f" → {_esc(_clip(s.result, LINE_LIMIT))}" if s.result else "")
            + (f" (undone: {_esc(_clip(s.undo, LINE_LIMIT))})" if s.undo else "")
            for n, s in enumerate(a.steps, start=1)
        )
    state = f"*State:* {_action_phrase(a)}"
    if a.note:
        state += f" · {_esc(_clip(a.note, LINE_LIMIT))}"
    if a.track_record:
        state += f"\n*Track record:* {_esc(a.track_record)}"
    # The state goes first among the details so that cutting never hides it.
    return _fit(head + "\n" + state, lines, SECTION_LIMIT, what="more lines")


def _buttons(view: TicketView, a: ActionView) -> Block:
    steps = "; ".join(s.what for s in a.steps)
    confirm_text = f"Playbook {a.playbook} will run on incident {view.incident_id}: {steps}"
    return {
        "type": "actions",
        "block_id": ACTIONS_BLOCK_ID,
        "elements": [
            {
                "type": "button",
                "action_id": APPROVE_ACTION_ID,
                "text": _plain("Approve", 75),
                "style": "primary",
                "value": a.key,
                "confirm": {
                    "title": _plain("Run this fix?", CONFIRM_TITLE_LIMIT),
                    "text": _plain(confirm_text, CONFIRM_TEXT_LIMIT),
                    "confirm": _plain("Approve and run", 30),
                    "deny": _plain("Cancel", 30),
                },
            },
            {
                "type": "button",
                "action_id": REJECT_ACTION_ID,
                "text": _plain("Reject", 75),
                "style": "danger",
                "value": a.key,
            },
        ],
    }


def _confirm_menu(view: TicketView) -> Block:
    """A select menu to confirm (or correct) the root cause among the hypotheses: what
    the Learning Agent archives as the incident's truth."""
    options = [
        {
            "text": _plain(f"#{h.rank} {h.component} ({h.fault})", 75),
            "value": h.component,
        }
        for h in view.hypotheses
    ]
    menu: Block = {
        "type": "static_select",
        "action_id": CONFIRM_ACTION_ID,
        "placeholder": _plain("Confirm the root cause", 150),
        "options": options,
    }
    chosen = next((o for o in options if o["value"] == view.confirmed), None)
    if chosen is not None:
        menu["initial_option"] = chosen
    # The incident rides in the block id: a select's value is only the option's.
    return {
        "type": "actions",
        "block_id": (CONFIRM_BLOCK_PREFIX + view.incident_id)[:255],
        "elements": [menu],
    }


# --- plain text -------------------------------------------------------------------------------


def ticket_text(view: TicketView, *, max_slis: int | None = MAX_TEXT_SLIS) -> str:
    """The ticket as plain text, several lines, readable in a terminal. ``max_slis``:
    SLI lines shown before "... and N more" (None: all)."""
    lines = [
        f"[{view.status.value}] {view.title}",
        f"incident {view.incident_id} · opened {_when(view.opened_at)}"
        + (f" · resolved {_when(view.resolved_at)}" if view.resolved_at else ""),
        f"status: {view.status_line}",
        "",
    ]
    lines.extend(_story_lines(view.story))
    lines.append("What is wrong:")
    slis = view.slis if max_slis is None else view.slis[:max_slis]
    lines.extend(f"  - {s.text}" for s in slis)
    if len(slis) < len(view.slis):
        lines.append(f"  {ELLIPSIS} and {len(view.slis) - len(slis)} more")
    if not view.slis:
        lines.append("  (no anomaly recorded)")
    lines.append("Likely causes:")
    if view.confirmed is not None:
        lines.append(f"  root cause confirmed: {view.confirmed}")
    if not view.hypotheses:
        lines.append("  (no hypothesis yet)")
    for h in view.hypotheses:
        lines.append(f"  {h.text}")
        lines.extend(f"       - {e}" for e in h.evidence)
        if h.more_evidence:
            lines.append(f"       {ELLIPSIS} and {h.more_evidence} more")
    if view.more_hypotheses:
        lines.append(f"  {ELLIPSIS} and {view.more_hypotheses} less likely hypotheses")
    lines.extend(_fix_lines(view))
    return "\n".join(lines)


def _story_lines(story: StoryView | None) -> Iterable[str]:
    if story is None:
        return
    if story.summary:
        yield f"Summary: {story.summary}"
    if story.likely_cause:
        yield f"Likely cause: {story.likely_cause}"
    if story.next_checks:
        yield "Check next:"
        yield from (f"  - {c}" for c in story.next_checks)
    if story.investigation:
        yield "Investigator's re-ranking (advisory; gates use the engine's confidence):"
        yield from (f"  {x}" for x in story.investigation)
    if story.note:
        yield f"({story.note})"
    if story.source:
        yield f"(written by {story.source})"
    yield ""


def _fix_lines(view: TicketView) -> Iterable[str]:
    a = view.action
    if a is None:
        if view.hypotheses:
            yield "Proposed fix: none (no playbook fits the top hypothesis)"
        return
    yield (
        f"Proposed fix: playbook {a.playbook} for {a.component} ({a.fault}, "
        f"{percent(a.confidence)}): {a.how}"
    )
    yield f"  state: {_action_phrase(a)}" + (f" · {a.note}" if a.note else "")
    if a.track_record:
        yield f"  track record: {a.track_record}"
    if a.reasons:
        yield "  why not automatic:"
        yield from (f"    - {r}" for r in a.reasons)
    if a.steps:
        yield "  steps:"
        yield from (f"    {n}. {s.text}" for n, s in enumerate(a.steps, start=1))
    if a.awaiting_approval:
        yield f"  awaiting approval: action {a.key}"
