"""``ConsoleNotifier`` and ``MemoryNotifier``: a ``ports.Notifier`` that writes to a
stream or a rich Console, and the fake that records.

What must not live here: deciding whom to tell or when (the Remediation Agent, the
playbook's ``notify`` / ``escalate`` steps), Slack (its own adapter), and any executor.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TextIO

import structlog
from rich.console import Console

if TYPE_CHECKING:
    from sentinel.ports import Notifier

__all__ = ["ConsoleNotifier", "MemoryNotifier"]

log = structlog.get_logger(__name__)


class ConsoleNotifier:
    """A ``ports.Notifier`` that writes one clear line (escalations marked) to a text
    stream or a rich Console, and logs it."""

    def __init__(self, out: TextIO | Console) -> None:
        self._out = out

    def notify(self, incident_id: str, message: str, *, escalate: bool = False) -> None:
        head = "ESCALATION" if escalate else "notice"
        # Continuation lines indented: a multi-line message still reads as one notice.
        text = f"[sentinel] {head} for incident {incident_id}: " + message.replace("\n", "\n    ")
        if isinstance(self._out, Console):
            self._out.print(
                text, markup=False, highlight=False, style="bold red" if escalate else None
            )
        else:
            self._out.write(text + "\n")
            self._out.flush()
        log.info("notifier.sent", incident=incident_id, escalate=escalate, message=message)


class MemoryNotifier:
    """The fake ``ports.Notifier``: ``sent`` holds (incident_id, message, escalate)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, bool]] = []

    def notify(self, incident_id: str, message: str, *, escalate: bool = False) -> None:
        self.sent.append((incident_id, message, escalate))


if TYPE_CHECKING:
    # mypy proves the notifiers satisfy their port.
    def _conforms(console: ConsoleNotifier, memory: MemoryNotifier) -> tuple[Notifier, Notifier]:
        return console, memory
