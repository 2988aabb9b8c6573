"""A ticket as plain text (``ticket_text``): Slack's fallback ``text``, the console
notifier and ``sentinel incident``.

What must not live here: what the ticket says (``view``), Slack's blocks (``blocks``).
"""

from __future__ import annotations

from collections.abc import Iterable

from sentinel.rca import percent
from sentinel.tickets.view import ELLIPSIS, StoryView, TicketView, action_phrase, date_time

# SLI lines of the plain text by default (the blocks are bounded by Slack's limits).
MAX_TEXT_SLIS = 20


def ticket_text(view: TicketView, *, max_slis: int | None = MAX_TEXT_SLIS) -> str:
    """The ticket as plain text, several lines, readable in a terminal. ``max_slis``:
    SLI lines shown before "... and N more" (None: all)."""
    lines = [
        f"[{view.status.value}] {view.title}",
        f"incident {view.incident_id} · opened {date_time(view.opened_at)}"
        + (f" · resolved {date_time(view.resolved_at)}" if view.resolved_at else ""),
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
    yield f"  state: {action_phrase(a)}" + (f" · {a.note}" if a.note else "")
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
