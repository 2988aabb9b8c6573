"""A ticket as Slack Block Kit blocks (``ticket_blocks``): header, "What is wrong",
"Likely causes", "Proposed fix", a status line, with Approve / Reject buttons only while
an action waits for a person, and the root-cause menu. Slack's limits are respected by
cutting with "…", never by failing.

What must not live here: what the ticket says (``view``), posting it (``adapters.slack``).
"""

from __future__ import annotations

from collections.abc import Sequence

from sentinel.incidents import IncidentStatus
from sentinel.ports import Block
from sentinel.rca import percent
from sentinel.tickets.view import (
    ELLIPSIS,
    ActionView,
    StoryView,
    TicketView,
    action_phrase,
    clock_time,
    date_time,
)

# The buttons' action ids, which the Slack interactivity handler dispatches on; each
# button's ``value`` is the action's key (``ActionRecord.key``).
APPROVE_ACTION_ID = "sentinel_approve"
REJECT_ACTION_ID = "sentinel_reject"
# The root-cause select menu: its action id, and its block id's prefix (then the incident).
CONFIRM_ACTION_ID = "sentinel_confirm"
CONFIRM_BLOCK_PREFIX = "sentinel_confirm:"
ACTIONS_BLOCK_ID = "sentinel_action"

# Slack's limits (https://api.slack.com/reference/block-kit/blocks).
HEADER_LIMIT = 150
SECTION_LIMIT = 3000
CONTEXT_LIMIT = 3000
MAX_BLOCKS = 50
CONFIRM_TITLE_LIMIT = 100
CONFIRM_TEXT_LIMIT = 300
# One evidence or reason line in a block: long lines must not crowd out the others.
LINE_LIMIT = 300


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
        f"({_esc(s.change)}) since {clock_time(s.onset)}"
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
    context = (
        f"{view.status_line} · incident `{view.incident_id}` · opened {date_time(view.opened_at)}"
    )
    if view.resolved_at is not None:
        context += f" · resolved {date_time(view.resolved_at)}"
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
    state = f"*State:* {action_phrase(a)}"
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
