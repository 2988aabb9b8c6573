"""People approving or rejecting remediation actions, from Slack or the CLI, with one
authorization and one audit trail.

- ``authorized``: whether an actor (``slack:<user id>`` or ``cli:<login>``) may decide:
  listed in ``[approvals] users``, or (Slack) a member of one of ``slack_groups``.
- ``resolve_action``: the action a person means: its key, or an incident id with one
  proposed action.
- ``decide_as``: authorization, then ``agents.remediation.decide_action`` (compare-and-
  set, so duplicate clicks are harmless), then the ticket refreshed. A refusal is written
  to the audit log too.
- ``GroupMembers``: the members of the Slack user groups, looked up through Slack and
  kept for a few minutes.

What must not live here: Slack's wire format (``adapters.slack``), the state machine
(``sentinel.remediation``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

import structlog

from sentinel.agents.remediation import ActionStore, Decided, decide_action
from sentinel.agents.tickets import TicketStore, refresh_ticket
from sentinel.clock import Clock
from sentinel.errors import NotifyError, RemediationError, SentinelError
from sentinel.incidents import AuditEntry
from sentinel.remediation import ActionRecord, ActionState
from sentinel.settings import ApprovalSettings

log = structlog.get_logger(__name__)

REFUSED = "approval_refused"  # the audit action of a refused decision
# How long Slack user group memberships are trusted before they are looked up again.
GROUPS_TTL = timedelta(minutes=5)


class ApprovalStore(ActionStore, TicketStore, Protocol):
    """The store of ``decide_as``: actions, tickets, the audit log."""

    def append_audit(self, entry: AuditEntry) -> None: ...


def authorized(actor: str, settings: ApprovalSettings, group_members: Iterable[str] = ()) -> bool:
    """Whether ``actor`` may approve or reject: listed by name, or a Slack user in one of
    the configured user groups (``group_members``: their user ids)."""
    if actor in settings.users:
        return True
    kind, _, who = actor.partition(":")
    return kind == "slack" and who in set(group_members)


def resolve_action(store: ActionStore, ident: str) -> ActionRecord:
    """The action ``ident`` names: an action key (``<incident>/<playbook>``), or an
    incident id whose one proposed action is meant. Raises ``RemediationError`` saying
    what there is instead."""
    record = store.get_action(ident)
    if record is not None:
        return record
    proposed = [
        r for r in store.actions(ident, states=[ActionState.PROPOSED]) if r.incident_id == ident
    ]
    if len(proposed) == 1:
        return proposed[0]
    if not proposed:
        others = [f"{r.key} ({r.state.value})" for r in store.actions(ident)]
        where = f"; its actions: {', '.join(others)}" if others else ""
        raise RemediationError(f"no proposed action for {ident!r}{where}")
    keys = ", ".join(r.key for r in proposed)
    raise RemediationError(f"incident {ident!r} has several proposed actions: name one of {keys}")


@dataclass(frozen=True)
class Outcome:
    """What a person's decision did, and what to tell them."""

    decided: Decided | None  # None: refused (not authorized)
    record: ActionRecord
    message: str


def decide_as(
    store: ApprovalStore,
    settings: ApprovalSettings,
    ident: str,
    *,
    approve: bool,
    actor: str,
    now: datetime,
    reason: str = "",
    group_members: Iterable[str] = (),
) -> Outcome:
    """``actor`` approves or rejects the action ``ident`` names, if allowed. Blocking.
    Raises ``RemediationError`` for an unknown action."""
    record = resolve_action(store, ident)
    verb = "approve" if approve else "reject"
    if not authorized(actor, settings, group_members):
        store.append_audit(
            AuditEntry(
                time=now,
                actor=actor,
                action=REFUSED,
                incident_id=record.incident_id,
                detail={"action": record.key, "wanted": verb},
            )
        )
        log.warning("approval refused", actor=actor, action=record.key, wanted=verb)
        return Outcome(
            None,
            record,
            f"You may not {verb} remediation actions ({actor} is not in [approvals] users "
            "or an approver group). Ask an approver.",
        )
    decided, now_record = decide_action(
        store, record.key, approve=approve, actor=actor, reason=reason, now=now
    )
    if decided is Decided.DONE:
        refresh_ticket(store, record.incident_id)
    return Outcome(decided, now_record, _message(decided, now_record, verb))


def _message(decided: Decided, record: ActionRecord, verb: str) -> str:
    if decided is Decided.DONE:
        past = "approved: it runs at the next run" if verb == "approve" else "rejected"
        return f"{record.key} {past}."
    if decided is Decided.ALREADY:
        by = f" by {record.decided_by}" if record.decided_by else ""
        return f"{record.key} was already {record.state.value}{by}; nothing changed."
    if decided is Decided.SUGGESTION:
        return f"{record.key} is a suggestion only and cannot be approved: " + "; ".join(
            record.reasons
        )
    return f"Too late to {verb} {record.key}: it is {record.state.value}."


class GroupMembers:
    """The user ids of the configured Slack user groups, looked up with ``lookup`` and
    kept for ``GROUPS_TTL``. A failed lookup keeps the last answer (or none): a Slack
    outage never grants an approval, it only may refuse one."""

    def __init__(
        self,
        groups: Iterable[str],
        lookup: Callable[[str], Awaitable[frozenset[str]]],
        clock: Clock,
    ) -> None:
        self.groups = tuple(groups)
        self.lookup = lookup
        self.clock = clock
        self._members: frozenset[str] = frozenset()
        self._at: datetime | None = None

    async def get(self) -> frozenset[str]:
        now = self.clock.now()
        if not self.groups or (self._at is not None and now - self._at < GROUPS_TTL):
            return self._members
        found: set[str] = set()
        try:
            for g in self.groups:
                found |= await self.lookup(g)
        except NotifyError as e:
            log.error("slack user group lookup failed", error=str(e))
            return self._members
        self._members, self._at = frozenset(found), now
        return self._members


class Teller(Protocol):
    """Where a refusal or a "too late" goes: only to the person who clicked."""

    async def tell_user(self, user: str, text: str) -> None: ...


class ClickHandler:
    """A click on a ticket's Approve or Reject button (Socket Mode or HTTP, already
    acknowledged): authorization, the decision, and a private answer when it did not
    decide anything. ``after``: what to do once something was decided (deliver the
    outbox, so the ticket loses its buttons soon)."""

    def __init__(
        self,
        store: ApprovalStore,
        settings: ApprovalSettings,
        teller: Teller,
        groups: GroupMembers,
        clock: Clock,
        after: Callable[[], Awaitable[object]] | None = None,
        confirm: Callable[[str, str, str], Awaitable[str]] | None = None,
    ) -> None:
        """``confirm(incident_id, component, actor)``: record a root cause chosen in the
        ticket's menu (the Learning Agent's), returning what to tell the person."""
        self.store = store
        self.settings = settings
        self.teller = teller
        self.groups = groups
        self.clock = clock
        self.after = after
        self.confirm_cause = confirm

    async def choose_cause(self, incident_id: str, component: str, *, user_id: str) -> str:
        """Someone chose the root cause in a ticket's menu: the same people who may
        approve may confirm. What they are told (privately) is returned."""
        actor = f"slack:{user_id}"
        if not authorized(actor, self.settings, await self.groups.get()):
            refusal = AuditEntry(
                time=self.clock.now(),
                actor=actor,
                action=REFUSED,
                incident_id=incident_id,
                detail={"wanted": "confirm", "component": component},
            )
            await asyncio.to_thread(self.store.append_audit, refusal)
            log.warning("confirmation refused", actor=actor, incident=incident_id)
            text = f"You may not confirm root causes ({actor} is not an approver). Ask an approver."
        elif self.confirm_cause is None:
            text = "Confirming root causes is off (no archive configured)."
        else:
            try:
                text = await self.confirm_cause(incident_id, component, actor)
            except SentinelError as e:
                text = str(e)
            else:
                if self.after is not None:
                    await self.after()
        await self.teller.tell_user(user_id, text)
        return text

    async def click(self, action_key: str, *, approve: bool, user_id: str) -> Outcome | None:
        members = await self.groups.get()
        try:
            outcome = await asyncio.to_thread(
                decide_as,
                self.store,
                self.settings,
                action_key,
                approve=approve,
                actor=f"slack:{user_id}",
                now=self.clock.now(),
                reason="" if approve else "rejected in Slack",
                group_members=members,
            )
        except RemediationError as e:  # an action that no longer exists
            await self.teller.tell_user(user_id, str(e))
            return None
        if outcome.decided is Decided.DONE:
            if self.after is not None:
                await self.after()
        else:
            await self.teller.tell_user(user_id, outcome.message)
        return outcome
