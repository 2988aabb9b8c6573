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

The package: ``view`` (the views, ``build_ticket``, the wording), ``blocks``
(``ticket_blocks``), ``text`` (``ticket_text``). Everything here is pure: no I/O, no
clock.

What must not live here: posting or updating tickets (``adapters/slack.py``, the
``TicketSink`` port), reading the store, deciding anything (``sentinel.remediation``),
handling the buttons' clicks (``api.py``).
"""

from sentinel.rca import percent
from sentinel.tickets.blocks import (
    ACTIONS_BLOCK_ID,
    APPROVE_ACTION_ID,
    CONFIRM_ACTION_ID,
    CONFIRM_BLOCK_PREFIX,
    HEADER_LIMIT,
    MAX_BLOCKS,
    REJECT_ACTION_ID,
    SECTION_LIMIT,
    ticket_blocks,
)
from sentinel.tickets.text import MAX_TEXT_SLIS, ticket_text
from sentinel.tickets.view import (
    MAX_EVIDENCE,
    MAX_HYPOTHESES,
    ActionView,
    HypothesisLine,
    SliLine,
    StepLine,
    StoryView,
    TicketView,
    build_ticket,
    describe_change,
    format_value,
    result_text,
    sli_line,
    sli_name,
    step_summary,
)

__all__ = [
    "ACTIONS_BLOCK_ID",
    "APPROVE_ACTION_ID",
    "CONFIRM_ACTION_ID",
    "CONFIRM_BLOCK_PREFIX",
    "HEADER_LIMIT",
    "MAX_BLOCKS",
    "MAX_EVIDENCE",
    "MAX_HYPOTHESES",
    "MAX_TEXT_SLIS",
    "REJECT_ACTION_ID",
    "SECTION_LIMIT",
    "ActionView",
    "HypothesisLine",
    "SliLine",
    "StepLine",
    "StoryView",
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
